"""The frame journal and the helper's pure parts, without a browser.

Spec: every frame is validated against the models of its direction; a
failing validator or interceptor never loses a frame (it is forwarded
unchanged and the failure fails the check); a stall's held frames go back
to the socket they came from, or are discarded when it has closed;
``wait_for`` does not consume;
status and attempt texts match whole words and whole numbers; extra page
query parameters are merged into the configured page URL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness import FrameJournal, WsConfig
from harness.app.nova import validate_directed
from harness.browser.helper import WebSocketTestHelper, _number_text, _word
from harness.faults.messages import Stall
from reference_server.protocol import make_message
from tests._routes import FakeEnd, FakeRoute


def _frame(type_: str, data: dict[str, Any] | None = None) -> str:
    return json.dumps(make_message(type_, data, client_id="c1"))


def test_frames_are_validated_against_their_direction() -> None:
    journal = FrameJournal(validator=validate_directed)
    journal.record(0, "ws://x", "sent", _frame("ping"))
    journal.record(0, "ws://x", "received", _frame("pong"))
    assert journal.violations() == []

    journal.record(0, "ws://x", "sent", _frame("pong"))  # a server message sent by the page
    journal.record(0, "ws://x", "received", _frame("ping"))  # a client message received
    assert [v.frame.index for v in journal.violations()] == [2, 3]
    with pytest.raises(AssertionError, match="2 frame\\(s\\) violated the protocol"):
        journal.check()


def test_validate_directed_raises_value_errors() -> None:
    validate_directed(_frame("ping"), "sent")
    with pytest.raises(ValueError):
        validate_directed(_frame("ping"), "received")
    with pytest.raises(ValueError):
        validate_directed(b"\x00", "sent")


def test_a_failing_interceptor_forwards_the_frame_unchanged_and_fails_the_check() -> None:
    journal = FrameJournal()
    forwarded: list[str | bytes] = []

    def broken(frame: Any) -> None:
        raise RuntimeError("interceptor bug")

    journal.interceptors.append(broken)
    raw = _frame("ping")
    journal._forward(0, "ws://x", "sent", raw, forwarded.append)

    assert forwarded == [raw]
    with pytest.raises(AssertionError, match="interceptor bug"):
        journal.check()


def test_interceptors_drop_duplicate_or_rewrite() -> None:
    journal = FrameJournal()
    forwarded: list[str | bytes] = []
    journal.interceptors.append(lambda f: [] if f.type == "pong" else None)
    journal.interceptors.append(lambda f: [f.raw, f.raw] if f.type == "subscribed" else None)
    journal._forward(0, "ws://x", "received", _frame("pong"), forwarded.append)
    journal._forward(
        0,
        "ws://x",
        "received",
        _frame("subscribed", {"channel": "a", "last_seq": 0}),
        forwarded.append,
    )
    journal._forward(
        0, "ws://x", "received", _frame("unsubscribed", {"channel": "a"}), forwarded.append
    )
    assert [json.loads(p)["type"] for p in forwarded] == [
        "subscribed",
        "subscribed",
        "unsubscribed",
    ]
    assert len(journal.frames) == 3  # the journal records what arrived, once


def test_a_failing_validator_is_a_violation_not_a_lost_frame() -> None:
    def validator(raw: str | bytes) -> object:
        raise KeyError("validator bug")

    journal = FrameJournal(validator=validator)
    forwarded: list[str | bytes] = []
    journal._forward(0, "ws://x", "sent", _frame("ping"), forwarded.append)
    assert len(forwarded) == 1
    assert "validator failed" in (journal.violations()[0].error)


def test_wait_for_does_not_consume() -> None:
    journal = FrameJournal(default_timeout=0.2)
    journal.record(0, "ws://x", "received", _frame("pong"))
    found = journal.wait_for(lambda f: f.type == "pong", "a pong")
    assert journal.expect("pong").index == found.index


def test_wait_for_says_what_it_waited_for() -> None:
    journal = FrameJournal()
    with pytest.raises(AssertionError, match="expected the answer within 0.0 s"):
        journal.wait_for(lambda f: False, "the answer", timeout=0.01)


@pytest.mark.parametrize(
    ("word", "text", "matches"),
    [
        ("connected", "connected", True),
        ("connected", "disconnected", False),
        ("connected", "Status: connected (2)", True),
        ("error", "error", True),
        ("error", "no-error", False),
    ],
)
def test_status_words_match_whole_words(word: str, text: str, matches: bool) -> None:
    assert bool(_word(word).search(text)) is matches


@pytest.mark.parametrize(
    ("n", "text", "matches"),
    [
        (1, "Reconnection attempts: 1", True),
        (1, "Reconnection attempts: 1\nLast reconnection: 12:00:00", True),
        (1, "Reconnection attempts: 10", False),
        (0, "Reconnection attempts: 0 Last reconnection: Never", True),
    ],
)
def test_attempt_counts_match_whole_numbers(n: int, text: str, matches: bool) -> None:
    assert bool(_number_text("Reconnection attempts: ", n).search(text)) is matches


class _Server:
    http_url = "http://127.0.0.1:1"
    faults = None

    def page_url(self, client_id: str) -> str:
        return WsConfig().page_url(self.http_url, client_id)


def test_page_query_is_merged_into_the_configured_page_url() -> None:
    helper = WebSocketTestHelper(object(), _Server(), WsConfig(), client_id="abc")  # type: ignore[arg-type]
    assert helper._page_url() == "http://127.0.0.1:1/?client_id=abc"
    helper.page_query.update(jitter="none", op_timeout=1000)
    assert helper._page_url() == "http://127.0.0.1:1/?client_id=abc&jitter=none&op_timeout=1000"
    helper.page_query["client_id"] = "other"  # a parameter given twice: the query wins
    assert helper._page_url().count("client_id=") == 1


def test_violations_can_be_recorded_without_failing_the_check() -> None:
    journal = FrameJournal(validator=validate_directed)
    journal.record(0, "ws://x", "received", "not json")
    journal.check(violations=False)
    assert len(journal.violations()) == 1
    with pytest.raises(AssertionError, match="ws_allow_invalid_frames"):
        journal.check()


# ------------------------------------------------------------------ a stall's release, routed


def _publish(content: str) -> str:
    return _frame("publish", {"channel": "stalled", "content": content})


def _socket(journal: FrameJournal, n: int) -> FakeRoute:
    """A page socket opened through the journal's route (connection index ``n``)."""
    route = FakeRoute(f"ws://x/ws?client_id=c1&socket={n}")
    journal._on_socket(route)
    assert journal.connections[n] == route.url
    return route


def _ends(route: FakeRoute, direction: str) -> tuple[FakeEnd, FakeEnd]:
    """(where the test emits a frame going ``direction``, where the journal forwards it)."""
    return (route, route.server) if direction == "to_server" else (route.server, route)


@pytest.mark.parametrize("direction", ["to_server", "to_client"])
def test_a_stall_releases_each_frame_on_its_socket_and_discards_a_closed_sockets(
    direction: str,
) -> None:
    journal = FrameJournal(validate=False)
    old, older_open, latest = (_socket(journal, n) for n in range(3))
    stall = Stall(direction=direction)
    remove = journal.add_rule(stall)

    held = [
        (old, "old 1"),
        (older_open, "open 1"),
        (latest, "latest 1"),
        (old, "old 2"),
        (older_open, "open 2"),
    ]
    for route, content in held:
        _ends(route, direction)[0].emit(_publish(content))
    assert stall.applied == 5
    routes = (old, older_open, latest)
    assert all(_ends(r, direction)[1].sent == [] for r in routes), "held, not sent"

    old.server.closed_by_peer(1011, "restarting")  # the first socket ends while frames are held
    assert old.closed_with == (1011, "restarting"), "the close still reaches the page"
    remove()

    def contents(end: FakeEnd) -> list[str]:
        return [json.loads(raw)["data"]["content"] for raw in end.sent]

    assert contents(_ends(old, direction)[1]) == [], "a closed socket's held frames are lost"
    assert contents(_ends(older_open, direction)[1]) == ["open 1", "open 2"], "not to the latest"
    assert contents(_ends(latest, direction)[1]) == ["latest 1"]
    assert (stall.released, stall.discarded) == (3, 2)
    assert "3 held frame(s) released, 2 discarded (their socket had closed)" in stall.describe()
    journal.check(violations=False)


def test_a_socket_the_page_closed_gets_none_of_its_held_frames() -> None:
    journal = FrameJournal(validate=False)
    first, second = _socket(journal, 0), _socket(journal, 1)
    remove = journal.add_rule(Stall(direction="to_client"))
    first.server.emit(_publish("to the first page socket"))

    first.closed_by_peer(1000, "bye")  # the page closed it
    assert first.server.closed_with == (1000, "bye"), "the close still reaches the server"
    remove()
    assert first.sent == [] and second.sent == []


def test_a_send_that_fails_during_the_release_does_not_raise_and_discards_that_socket() -> None:
    journal = FrameJournal(validate=False)
    closing, live = _socket(journal, 0), _socket(journal, 1)
    stall = Stall(direction="to_server")
    remove = journal.add_rule(stall)
    for route, content in [(closing, "a"), (live, "b"), (closing, "c")]:
        route.emit(_publish(content))

    closing.server.fail_sends = True  # closing as the release runs: no close event yet
    remove()
    assert [json.loads(raw)["data"]["content"] for raw in live.server.sent] == ["b"]
    assert (stall.released, stall.discarded) == (1, 2)


def test_frames_pass_again_after_the_release_on_their_own_socket() -> None:
    journal = FrameJournal(validate=False)
    first, second = _socket(journal, 0), _socket(journal, 1)
    journal.add_rule(Stall(direction="to_server"))()
    first.emit(_publish("after"))
    assert len(first.server.sent) == 1 and second.server.sent == []
