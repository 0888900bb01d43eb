"""The fault facade (``ws_helper.faults``) without a browser: handles, bookkeeping, misuse.

The depths are real (a reference server's ``/__harness`` control, a fault
proxy in front of it, a frame journal); only the page is missing, so what a
fault does to a browser is proven in e2e/test_faults_*.py instead.  The last
test runs a consumer project with pytester to show faults are undone at
teardown even when the test fails.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from harness import (
    ConfigurationError,
    FaultControl,
    FaultHandle,
    Faults,
    FrameJournal,
    HarnessError,
)
from harness.control import FaultControlError
from harness.proxy import FaultProxy
from tests._routes import FakeRoute
from tests.conftest import TEST_TOKEN, LiveServer


@dataclass
class FakeServer:
    """What the facade reads of a ``ServerUnderTest``: its fault control and its proxy."""

    faults: FaultControl | None
    proxy: FaultProxy | None


@dataclass
class FakeHelper:
    """What the facade reads of a ``WebSocketTestHelper``: no page needed."""

    server: FakeServer
    client_id: str = "unit-client"
    journal: FrameJournal = field(default_factory=FrameJournal)


@pytest.fixture
def control(live_server: LiveServer) -> Iterator[FaultControl]:
    client = FaultControl(live_server.http_url, TEST_TOKEN)
    yield client
    client.close()


@pytest.fixture
def proxy(live_server: LiveServer) -> Iterator[FaultProxy]:
    with FaultProxy(upstream=("127.0.0.1", live_server.port), seed=7) as running:
        yield running


@pytest.fixture
def helper(control: FaultControl, proxy: FaultProxy) -> FakeHelper:
    return FakeHelper(FakeServer(control, proxy))


def faults_of(helper: FakeHelper) -> Faults:
    return Faults(
        helper.client_id, helper.journal, server_faults=helper.server.faults, proxy=cast(Any, helper.server.proxy)
    )


def rules(control: FaultControl, client_id: str = "unit-client") -> dict[str, Any]:
    """The server's rules for the client (None per kind when absent)."""
    return cast(dict[str, Any], control.client_info(client_id)["rules"])


def journal_rules(journal: FrameJournal) -> list[Any]:
    return list(journal._rules)  # no public view of the rules: they are the facade's business


# ------------------------------------------------------------------ handles and bookkeeping


def test_each_call_returns_a_handle_naming_its_depth_and_active_lists_them_oldest_first(
    helper: FakeHelper, control: FaultControl, proxy: FaultProxy
) -> None:
    faults = faults_of(helper)
    dropped = faults.drop("pong", count=2)
    slow = faults.latency(100, jitter=10)
    rejected = faults.reject_handshakes(503, count=3)

    assert faults.active == [dropped, slow, rejected]
    assert [h.depth for h in faults.active] == ["message", "network", "server"]
    assert str(dropped) == "message: drop pong frame to_client, 0/2 applied"
    assert str(slow).startswith("network: latency 100 ms")
    assert str(rejected) == "server: rejecting the next 3 handshake(s) with HTTP 503"
    assert dropped.applied == 0 and slow.applied is None
    assert len(proxy.toxics()) == 1
    assert rules(control)["reject"] == {"status": 503, "remaining": 3, "body": ""}
    assert len(journal_rules(helper.journal)) == 1


def test_clear_undoes_everything_and_each_undo_is_idempotent(
    helper: FakeHelper, control: FaultControl, proxy: FaultProxy
) -> None:
    faults = faults_of(helper)
    handles = [
        faults.stall(direction="to_server"),
        faults.blackhole(),
        faults.profile("satellite"),
        faults.hold_handshakes(),
        faults.reject_handshakes(403),
        faults.refuse_connections(),
    ]
    faults.clear()

    assert faults.active == []
    assert not any(h.active for h in handles)
    assert proxy.toxics() == []
    assert rules(control) == {"reject": None, "hold": None, "delay": None, "drop": None}
    assert journal_rules(helper.journal) == []
    for handle in handles:
        handle.undo()  # again: nothing happens, nothing raises
    faults.clear()


def test_a_handle_is_a_context_manager_that_undoes_on_exit_even_on_error(
    helper: FakeHelper, proxy: FaultProxy
) -> None:
    faults = faults_of(helper)
    with pytest.raises(RuntimeError), faults.bandwidth(64) as handle:
        assert isinstance(handle, FaultHandle) and handle.active
        assert [t.directions for t in proxy.toxics()] == [("upstream", "downstream")]
        raise RuntimeError("the test failed inside the block")
    assert not handle.active and faults.active == [] and proxy.toxics() == []


def test_two_equal_faults_are_two_handles(helper: FakeHelper, proxy: FaultProxy) -> None:
    faults = faults_of(helper)
    first, second = faults.latency(50), faults.latency(50)
    second.undo()
    assert faults.active == [first] and first.active
    assert len(proxy.toxics()) == 1


def test_one_off_faults_have_nothing_to_undo(helper: FakeHelper, proxy: FaultProxy) -> None:
    faults = faults_of(helper)
    helper.journal.record(0, "ws://x/debug/unit-client", "received", "{}")
    helper.journal._on_socket(FakeRoute("ws://x/debug/unit-client"))  # as the page opens a socket
    handle = faults.inject({"type": "pong", "data": {}, "timestamp": "2026-01-01T00:00:00Z", "client_id": "c"})
    assert handle.depth == "message" and not handle.active and faults.active == []


def test_profile_is_one_handle_over_latency_and_bandwidth_each_way(
    helper: FakeHelper, proxy: FaultProxy
) -> None:
    faults = faults_of(helper)
    with faults.profile("3g") as profile:
        assert faults.active == [profile]
        assert "profile 3g: 281.25 ms" in str(profile)
        assert [(t.toxic.kind, t.directions) for t in proxy.toxics()] == [
            ("latency", ("upstream", "downstream")),
            ("bandwidth", ("downstream",)),
            ("bandwidth", ("upstream",)),
        ]
    assert proxy.toxics() == []


def test_a_profile_that_fails_half_way_leaves_nothing_behind(
    helper: FakeHelper, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = faults_of(helper)
    real_add = proxy.add_toxic
    calls = 0

    def add_toxic(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("the proxy went away")
        return real_add(*args, **kwargs)

    monkeypatch.setattr(proxy, "add_toxic", add_toxic)
    with pytest.raises(RuntimeError, match="went away"):
        faults.profile("flaky-wifi")
    assert faults.active == [] and proxy.toxics() == []


# ------------------------------------------------------------------ server rules


@pytest.mark.parametrize("per_rule_removal", [True, False], ids=["remove-rule", "server-without-it"])
def test_undoing_a_reject_keeps_the_other_rules_as_they_stand(
    helper: FakeHelper, control: FaultControl, per_rule_removal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not per_rule_removal:  # an app whose /__harness cannot remove one rule: clear, then re-set

        def unsupported(client_id: str, kind: str) -> None:
            raise FaultControlError("DELETE answered 405: Method Not Allowed", 405)

        monkeypatch.setattr(control, "remove_rule", unsupported)
    faults = faults_of(helper)
    control.drop("unit-client", types=["pong"], count=2)  # set outside the facade
    control.delay("unit-client", 50, types=["pong"])
    held = faults.hold_handshakes()
    rejected = faults.reject_handshakes(503, count=3)

    rejected.undo()
    now = rules(control)
    assert now["reject"] is None
    assert now["hold"] == {"timeout_ms": None} and held.active
    assert now["delay"] == {"ms": 50, "types": ["pong"]}
    assert now["drop"] == {"types": ["pong"], "remaining": 2, "dropped": 0}


def test_undoing_a_hold_removes_only_the_hold(helper: FakeHelper, control: FaultControl) -> None:
    faults = faults_of(helper)
    rejected = faults.reject_handshakes(503, count=2)
    faults.hold_handshakes().undo()
    assert rules(control)["hold"] is None
    assert rules(control)["reject"] == {"status": 503, "remaining": 2, "body": ""}
    assert faults.active == [rejected]


def _open_upgrade(port: int, client_id: str) -> socket.socket:
    """Start a WebSocket handshake by hand and leave it waiting for the server's answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /debug/{client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    return sock


def _held(control: FaultControl, client_id: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while control.client_info(client_id)["held_handshakes"] != count:
        assert time.monotonic() < deadline, f"expected {count} held handshake(s) of {client_id}"
        time.sleep(0.01)  # polling the server's count, with a deadline


def test_undoing_a_reject_leaves_a_held_handshake_held_and_a_reject_meets_it_on_release(
    live_server: LiveServer, control: FaultControl, proxy: FaultProxy
) -> None:
    cid = f"held-{os.urandom(4).hex()}"
    faults = faults_of(FakeHelper(FakeServer(control, proxy), client_id=cid))
    held = faults.hold_handshakes()
    waiting = _open_upgrade(live_server.port, cid)
    try:
        _held(control, cid, 1)
        faults.reject_handshakes(503, count=1).undo()
        _held(control, cid, 1)  # still waiting: only the reject rule went
        assert rules(control, cid)["hold"] == {"timeout_ms": None} and held.active
        faults.reject_handshakes(503, count=1)
        held.undo()
        assert waiting.recv(12) == b"HTTP/1.1 503"  # the reject rule set while it waited
        later = _open_upgrade(live_server.port, cid)
        try:
            assert later.recv(12) == b"HTTP/1.1 101"  # the one rejection was counted
        finally:
            later.close()
    finally:
        waiting.close()
        faults.clear()


def test_a_newer_reject_replaces_the_older_one(helper: FakeHelper, control: FaultControl) -> None:
    faults = faults_of(helper)
    older = faults.reject_handshakes(503, count=1)
    newer = faults.reject_handshakes(403)
    assert not older.active and faults.active == [newer]

    older.undo()  # it no longer owns the server's rule: the newer one stays
    assert rules(control)["reject"] == {"status": 403, "remaining": None, "body": ""}
    newer.undo()
    assert rules(control)["reject"] is None


def test_a_used_up_reject_is_undone_without_touching_the_server(
    helper: FakeHelper, control: FaultControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = faults_of(helper)
    rejected = faults.reject_handshakes(503, count=1)
    control.clear("unit-client")  # as if the one rejection had happened
    control.drop("unit-client", count=1)
    rejected.undo()
    assert rules(control)["drop"] == {"types": None, "remaining": 1, "dropped": 0}


# ------------------------------------------------------------------ misuse


@pytest.mark.parametrize(
    ("call", "alternative"),
    [
        (lambda f: f.close(1011), "faults.reset() at the network depth"),
        (lambda f: f.abort(), "At the network depth, faults.reset()"),
        (lambda f: f.reject_handshakes(503), "At the network depth, faults.refuse_connections()"),
        (lambda f: f.hold_handshakes(), "At the network depth, faults.blackhole()"),
    ],
)
def test_a_server_fault_without_fault_control_names_the_depth_that_would_do_it(
    proxy: FaultProxy, call: Any, alternative: str
) -> None:
    faults = faults_of(FakeHelper(FakeServer(None, proxy)))
    with pytest.raises(ConfigurationError, match="is a server-depth fault") as info:
        call(faults)
    assert alternative in str(info.value)
    assert "--ws-harness-token" in str(info.value)


@pytest.mark.parametrize(
    ("call", "alternative"),
    [
        (lambda f: f.latency(100), "At the message depth, faults.delay(ms)"),
        (lambda f: f.blackhole(), "At the message depth, faults.stall()"),
        (lambda f: f.reset(), "At the server depth, faults.abort()"),
        (lambda f: f.limit_data(10), "At the server depth, faults.abort()"),
        (lambda f: f.refuse_connections(), "At the server depth, faults.reject_handshakes()"),
        (lambda f: f.profile("3g"), "At the message depth, faults.delay(ms)"),
        (lambda f: f.slice(5), "No other depth splits frames"),
        (lambda f: f.bandwidth(10), "No other depth limits the rate"),
    ],
)
def test_a_network_fault_without_the_proxy_names_the_depth_that_would_do_it(
    control: FaultControl, call: Any, alternative: str
) -> None:
    faults = faults_of(FakeHelper(FakeServer(control, None)))
    with pytest.raises(ConfigurationError, match="is a network-depth fault") as info:
        call(faults)
    assert alternative in str(info.value)
    assert "--ws-proxy=false" in str(info.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda f: f.drop("pong", direction="sideways"),
        lambda f: f.delay(10, direction="up"),
        lambda f: f.duplicate(direction="downstream"),
        lambda f: f.stall("in"),
        lambda f: f.inject("{}", direction="nowhere"),
    ],
)
def test_an_unknown_message_direction_lists_the_valid_ones(helper: FakeHelper, call: Any) -> None:
    with pytest.raises(ConfigurationError, match="unknown direction") as info:
        call(faults_of(helper))
    assert "'to_client'" in str(info.value) and "'to_server'" in str(info.value)
    assert faults_of(helper).active == []


def test_message_faults_act_on_one_direction(helper: FakeHelper) -> None:
    with pytest.raises(ConfigurationError, match="call it twice"):
        faults_of(helper).drop(direction="both")


@pytest.mark.parametrize(
    "call", [lambda f: f.latency(10, direction="sideways"), lambda f: f.bandwidth(10, direction="up")]
)
def test_an_unknown_network_direction_lists_the_valid_ones(helper: FakeHelper, call: Any) -> None:
    with pytest.raises(ConfigurationError, match="unknown direction") as info:
        call(faults_of(helper))
    assert "'both'" in str(info.value) and "'to_client'" in str(info.value)


def test_limit_data_counts_one_direction(helper: FakeHelper) -> None:
    with pytest.raises(ConfigurationError, match="one direction"):
        faults_of(helper).limit_data(100, direction="both")


def test_an_unknown_profile_lists_the_known_ones(helper: FakeHelper) -> None:
    with pytest.raises(ConfigurationError, match="unknown network profile 'dialup'") as info:
        faults_of(helper).profile("dialup")
    assert "3g, flaky-wifi, satellite, slow-3g" in str(info.value)


def test_reset_without_a_live_socket_says_so_instead_of_doing_nothing(helper: FakeHelper) -> None:
    with pytest.raises(HarnessError, match="no live WebSocket of client 'unit-client'"):
        faults_of(helper).reset()


def test_inject_before_the_page_has_a_socket_says_to_load_it(helper: FakeHelper) -> None:
    with pytest.raises(ConfigurationError, match="load the page first"):
        faults_of(helper).inject({"type": "pong"})
    assert helper.journal.frames == [], "a frame that was never sent must not be journaled"


def test_bad_values_are_refused_before_anything_starts(helper: FakeHelper, proxy: FaultProxy) -> None:
    faults = faults_of(helper)
    calls: list[Callable[[], FaultHandle]] = [
        lambda: faults.latency(-1),
        lambda: faults.drop(count=0),
        lambda: faults.delay(-5),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert faults.active == [] and proxy.toxics() == []


# ------------------------------------------------------------------ teardown (pytester)


def test_faults_are_undone_at_teardown_even_when_the_test_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_teardown="""
        def test_fails_with_faults_on(ws_faults, ws_server):
            ws_faults.latency(100)
            ws_faults.drop("pong")
            ws_faults.reject_handshakes(503)
            ws_faults.hold_handshakes()
            assert len(ws_server.proxy.toxics()) == 1
            assert False, "the test fails with every depth faulted"

        def test_the_next_test_finds_nothing_left(ws_server):
            assert ws_server.proxy.toxics() == []
            assert ws_server.faults.state() == {"rules": {}, "held_handshakes": {}}
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", timeout=180)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*the test fails with every depth faulted*"])


def test_an_undone_stall_says_how_many_held_frames_it_released_and_discarded(
    helper: FakeHelper,
) -> None:
    old, new = FakeRoute("ws://x/debug/unit-client"), FakeRoute("ws://x/debug/unit-client")
    helper.journal._on_socket(old)
    helper.journal._on_socket(new)
    stall = faults_of(helper).stall(direction="to_server")
    ping = json.dumps(
        {"type": "ping", "data": {}, "timestamp": "2026-01-01T00:00:00Z", "client_id": "c"}
    )
    old.emit(ping)
    new.emit(ping)
    old.server.closed_by_peer(1011, "gone")

    stall.undo()
    assert old.server.sent == [] and new.server.sent == [ping]
    assert str(stall) == (
        "message: stall every frame to_server, 1 held frame(s) released, "
        "1 discarded (their socket had closed)"
    )


def test_an_injected_frame_is_journaled_and_sent_on_the_latest_socket(helper: FakeHelper) -> None:
    older, latest = FakeRoute("ws://x/debug/unit-client"), FakeRoute("ws://x/debug/unit-client")
    helper.journal._on_socket(older)
    helper.journal._on_socket(latest)
    message = {"type": "ping", "data": {}, "timestamp": "2026-01-01T00:00:00Z", "client_id": "c"}
    faults_of(helper).inject(message, direction="to_server")
    assert latest.server.sent == [json.dumps(message)] and latest.sent == []
    assert older.server.sent == [] and older.sent == []
    assert [(f.direction, f.connection) for f in helper.journal.frames] == [("sent", 1)]
