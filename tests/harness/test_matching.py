"""Frame matching (pure) and the frame journal without a browser."""

from __future__ import annotations

import json
import threading

import pytest

from harness.app.nova import validate_directed
from harness.errors import ConfigurationError, WaitTimeoutError
from harness.journal import FrameJournal
from harness.matching import frame_matches, subset_matches
from reference_server.protocol import make_message


def test_subset_matching_is_recursive() -> None:
    assert subset_matches({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 2, "d": 3}, "e": 4})
    assert not subset_matches({"b": {"c": 3}}, {"b": {"c": 2}})
    assert not subset_matches({"a": 1}, [1])


def test_frame_matches_type_dict_and_predicate() -> None:
    msg = {"type": "pong", "data": {"x": 1}}
    assert frame_matches(msg, type="pong", match={"x": 1})
    assert not frame_matches(msg, type="ping")
    assert frame_matches(msg, match=lambda m: m["data"]["x"] == 1)


def _frame(type_: str, data: dict[str, object] | None = None) -> str:
    return json.dumps(make_message(type_, data, client_id="c1"))


def test_journal_expect_sees_history_and_consumes_each_frame_once() -> None:
    journal = FrameJournal(default_timeout=0.2)
    journal.record(0, "ws://x", "received", _frame("pong"))
    journal.record(0, "ws://x", "received", _frame("pong"))
    first = journal.expect("pong")
    second = journal.expect("pong")
    assert first.index != second.index
    with pytest.raises(WaitTimeoutError, match="expected a received frame of type 'pong'"):
        journal.expect("pong", timeout=0.05)


def test_journal_expect_waits_for_future_frames() -> None:
    journal = FrameJournal(default_timeout=2)
    timer = threading.Timer(0.05, lambda: journal.record(1, "ws://x", "sent", _frame("ping")))
    timer.start()
    try:
        frame = journal.expect("ping", direction="to_server")
    finally:
        timer.cancel()
    assert frame.connection == 1 and frame.direction == "sent"


def test_journal_flags_protocol_violations() -> None:
    journal = FrameJournal(validator=validate_directed)
    journal.record(0, "ws://x", "received", '{"type": "pong"}')
    journal.record(0, "ws://x", "sent", b"\x00\x01")
    journal.record(0, "ws://x", "received", _frame("pong"))
    assert len(journal.violations()) == 2
    with pytest.raises(AssertionError, match="2 frame\\(s\\) violated the protocol"):
        journal.check()


def test_journal_without_validation_accepts_anything() -> None:
    journal = FrameJournal(validate=False)
    journal.record(0, "ws://x", "received", "not json")
    journal.check()


def test_expect_none_fails_on_a_matching_frame() -> None:
    journal = FrameJournal()
    journal.record(0, "ws://x", "received", _frame("pong"))
    journal.expect_none("ping", within=0.01)
    with pytest.raises(AssertionError, match="expected no received frame"):
        journal.expect_none("pong", within=0.01)


def test_unknown_direction_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="'received' \\(or 'to_client'\\)"):
        FrameJournal().expect("pong", direction="inbound")
