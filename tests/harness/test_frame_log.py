"""The pure frame log as the generic profile uses it: a dotted type key, whole-frame matching, text frames.

No browser and no socket: frames are recorded by hand, as the Playwright
route shim records them.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.errors import WaitTimeoutError
from harness.frames import FrameLog

#: Seconds a wait may take in these tests before it fails.
TIMEOUT = 5.0

URL = "ws://127.0.0.1:9/ws"
CHAT = {"meta": {"kind": "chat"}, "user": "ann", "text": "hi"}
TYPING = {"meta": {"kind": "typing"}, "user": "bob"}
BINARY = b"\x00\x01\xff"


def _log(**kwargs: Any) -> FrameLog:
    return FrameLog(type_key="meta.kind", match_in=None, default_timeout=TIMEOUT, **kwargs)


def _received(log: FrameLog, raw: str | bytes | dict[str, Any]) -> None:
    log.record(0, URL, "received", json.dumps(raw) if isinstance(raw, dict) else raw)


@pytest.fixture
def log() -> FrameLog:
    """A log holding, received in order: a chat, the text ``ping``, a typing frame, a binary frame."""
    frames = _log()
    frames.open_connection(URL)
    for raw in (CHAT, "ping", TYPING, BINARY):
        _received(frames, raw)
    return frames


@pytest.fixture
def timers() -> Iterator[list[threading.Timer]]:
    """Timers the test starts; cancelled and joined at teardown so none outlives its test."""
    started: list[threading.Timer] = []
    try:
        yield started
    finally:
        for timer in started:
            timer.cancel()
            timer.join(TIMEOUT)


def _later(timers: list[threading.Timer], action: Any, delay: float = 0.05) -> None:
    timer = threading.Timer(delay, action)
    timers.append(timer)
    timer.start()


# ------------------------------------------------------------------ typing and matching


def test_frames_are_typed_by_the_dotted_key(log: FrameLog) -> None:
    assert [f.type for f in log.frames] == ["chat", None, "typing", None]
    plain = _log()
    plain.record(0, URL, "received", json.dumps({"type": "chat"}))
    assert plain.frames[0].type is None  # "type" is not the key here


def test_expect_by_type(log: FrameLog) -> None:
    assert log.expect("typing").message == TYPING
    assert log.expect("chat").message == CHAT


def test_match_is_against_the_whole_frame(log: FrameLog) -> None:
    assert log.expect(match={"user": "bob"}).message == TYPING
    assert log.expect(match={"meta": {"kind": "chat"}, "text": "hi"}).message == CHAT
    assert log.find(match={"data": {"user": "ann"}}) == []


def test_match_may_be_a_predicate_on_the_whole_frame(log: FrameLog) -> None:
    assert log.expect(match=lambda m: m.get("user") == "bob").message == TYPING


def test_text_exact_on_text_frames(log: FrameLog) -> None:
    assert log.expect(text="ping").raw == "ping"
    assert log.expect(text=json.dumps(CHAT)).message == CHAT


def test_text_regex_on_text_frames(log: FrameLog) -> None:
    assert log.expect(text=re.compile(r"^pi")).raw == "ping"
    assert log.expect(text=re.compile(r'"user": "bob"')).message == TYPING


def test_text_predicate_on_text_and_binary_frames(log: FrameLog) -> None:
    assert log.expect(text=lambda raw: raw == BINARY).raw == BINARY
    assert log.expect(text=lambda raw: isinstance(raw, str) and raw.endswith("g")).raw == "ping"


def test_text_strings_and_regexes_never_match_a_binary_frame(log: FrameLog) -> None:
    assert log.find(text=re.compile(".*", re.DOTALL)) == log.frames[:3]
    assert log.find(text=BINARY.decode("latin-1")) == []


def test_type_and_text_together_need_both(log: FrameLog) -> None:
    assert log.find("chat", text=re.compile("hi")) == [log.frames[0]]
    assert log.find("typing", text=re.compile("hi")) == []


# ------------------------------------------------------------------ consume once


def test_each_frame_satisfies_one_expect_across_text_and_json(log: FrameLog) -> None:
    assert [log.expect(timeout=0).raw for _ in range(4)] == [json.dumps(CHAT), "ping", json.dumps(TYPING), BINARY]
    with pytest.raises(WaitTimeoutError):
        log.expect(timeout=0)


def test_a_frame_taken_by_text_is_not_taken_again_by_type(log: FrameLog) -> None:
    assert log.expect(text=re.compile("chat")).message == CHAT
    with pytest.raises(WaitTimeoutError):
        log.expect("chat", timeout=0)
    assert log.expect().raw == "ping"  # the next frame nobody took yet


# ------------------------------------------------------------------ expect_none


def test_expect_none_without_criteria_fails_on_a_text_frame() -> None:
    frames = _log()
    frames.record(0, URL, "received", "ping")
    with pytest.raises(AssertionError, match="expected no received frame within 0 s, got #0 conn0: ping"):
        frames.expect_none(within=0)


def test_expect_none_without_criteria_fails_on_a_binary_frame() -> None:
    frames = _log()
    frames.record(0, URL, "received", BINARY)
    with pytest.raises(AssertionError, match=r"got #0 conn0: <binary 3 bytes>"):
        frames.expect_none(within=0)


def test_expect_none_with_text_fails_on_that_text_only(log: FrameLog) -> None:
    log.expect_none(text="pong", within=0)
    with pytest.raises(AssertionError, match="with text 'ping'"):
        log.expect_none(text="ping", within=0)


def test_expect_none_ignores_frames_already_expected_and_the_other_direction(log: FrameLog) -> None:
    for _ in range(4):
        log.expect()
    log.record(0, URL, "sent", "ping")
    log.expect_none(within=0)
    with pytest.raises(AssertionError):
        log.expect_none(direction="sent", within=0)


# ------------------------------------------------------------------ timeouts


def test_a_timeout_says_what_was_asked_and_lists_every_frame(log: FrameLog) -> None:
    with pytest.raises(WaitTimeoutError) as info:
        log.expect(text="x", timeout=0)
    message = str(info.value)
    assert "expected a received frame with text 'x' within 0.0 s" in message
    assert "frames journaled (4)" in message
    for shown in (json.dumps(CHAT), "#1 conn0 <- ping", json.dumps(TYPING), "#3 conn0 <- <binary 3 bytes>"):
        assert shown in message, shown


@pytest.mark.parametrize(
    ("kwargs", "asked"),
    [
        ({"type": "welcome"}, "of type 'welcome'"),
        ({"match": {"user": "eve"}}, "matching {'user': 'eve'}"),
        ({"text": re.compile("^po")}, "with text /^po/"),
        ({"type": "chat", "text": "bye"}, "of type 'chat' with text 'bye'"),
    ],
)
def test_a_timeout_names_each_criterion(log: FrameLog, kwargs: dict[str, Any], asked: str) -> None:
    with pytest.raises(WaitTimeoutError, match=re.escape(f"expected a received frame {asked} within")):
        log.expect(**kwargs, timeout=0)


# ------------------------------------------------------------------ validation


def _refuse_typing(raw: str | bytes, direction: str) -> None:
    if isinstance(raw, str) and "typing" in raw:
        raise ValueError("typing frames are not part of this protocol")


def test_a_validator_error_is_a_violation_and_check_lists_it() -> None:
    frames = _log(validator=_refuse_typing)
    _received(frames, CHAT)
    _received(frames, TYPING)
    assert [f.violation for f in frames.frames] == [None, "typing frames are not part of this protocol"]
    with pytest.raises(AssertionError) as info:
        frames.check()
    message = str(info.value)
    assert "1 frame(s) violated the protocol" in message
    assert f"#1 conn0 received: {json.dumps(TYPING)}" in message
    assert "typing frames are not part of this protocol" in message
    assert "ws_allow_invalid_frames" in message
    frames.check(violations=False)


def _buggy(raw: str | bytes, direction: str) -> None:
    raise KeyError("user")


def test_a_validator_bug_is_a_violation_not_a_lost_frame() -> None:
    frames = _log(validator=_buggy)
    _received(frames, CHAT)
    assert frames.expect("chat").message == CHAT
    assert frames.frames[0].violation == "the validator failed: KeyError('user')"
    with pytest.raises(AssertionError, match=r"the validator failed: KeyError\('user'\)"):
        frames.check()


def test_without_validation_the_validator_is_not_called() -> None:
    frames = _log(validator=_buggy, validate=False)
    _received(frames, CHAT)
    frames.check()


# ------------------------------------------------------------------ waits woken by record()


def test_expect_without_a_pump_is_woken_by_a_record_from_another_thread(
    log: FrameLog, timers: list[threading.Timer]
) -> None:
    _later(timers, lambda: _received(log, {"meta": {"kind": "welcome"}}))
    started = time.monotonic()
    assert log.expect("welcome", timeout=TIMEOUT).type == "welcome"
    assert time.monotonic() - started < TIMEOUT


def test_text_expect_is_woken_by_a_binary_record(log: FrameLog, timers: list[threading.Timer]) -> None:
    _later(timers, lambda: _received(log, b"late"))
    assert log.expect(text=lambda raw: raw == b"late", timeout=TIMEOUT).raw == b"late"


def test_expect_none_is_failed_by_a_frame_recorded_while_it_waits(
    log: FrameLog, timers: list[threading.Timer]
) -> None:
    arrived = threading.Event()

    def record() -> None:
        _received(log, "late")
        arrived.set()

    _later(timers, record)
    with pytest.raises(AssertionError, match="late"):
        log.expect_none(text="late", within=TIMEOUT)
    assert arrived.is_set()


def test_wait_for_is_woken_and_does_not_consume(log: FrameLog, timers: list[threading.Timer]) -> None:
    _later(timers, lambda: _received(log, "pong"))
    frame = log.wait_for(lambda f: f.text == "pong", "a pong", timeout=TIMEOUT)
    assert log.expect(text="pong", timeout=0) == frame
