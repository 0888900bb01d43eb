"""The harness on a foreign page, in-process (``--ws-app``): no hook in the page, frames of its own."""

from __future__ import annotations

import re

import pytest

from harness import WebSocketTestHelper


def test_the_page_is_ready_without_any_hook_and_frames_are_typed_by_their_key(ws_helper: WebSocketTestHelper) -> None:
    """Readiness is the page's load and its first open socket; frames are flat JSON."""
    welcome = ws_helper.expect_frame("welcome")
    assert welcome["client"] == ws_helper.client_id
    assert ws_helper.sockets[0].state == "open"
    ws_helper.wait_for_connection_status("connected")


def test_match_compares_the_whole_frame_and_text_frames_match_by_text(ws_helper: WebSocketTestHelper) -> None:
    """A dict ``match`` is a subset of the whole flat frame; ``text=`` matches non-JSON frames."""
    ws_helper.publish("ignored: the app has no channel input", "hello there")
    sent = ws_helper.expect_frame("chat", direction="sent", match={"text": "hello there"})
    assert sent["user"] == "guest"
    echoed = ws_helper.expect_frame("chat", match={"user": "guest", "text": "hello there"})
    assert isinstance(echoed["id"], int)
    ws_helper.advance_clock(20_000)  # the page's ping interval
    assert ws_helper.expect_frame(direction="sent", text="ping") == "ping"
    assert ws_helper.expect_frame(text=re.compile(r"^po")) == "pong"


def test_expect_no_frame_sees_text_frames(ws_helper: WebSocketTestHelper) -> None:
    """A check that cannot fail is a bug: a text frame fails ``expect_no_frame()``."""
    ws_helper.expect_frame("welcome")
    ws_helper.advance_clock(20_000)
    ws_helper.expect_frame(direction="sent", text="ping")
    with pytest.raises(AssertionError, match="pong"):
        ws_helper.expect_no_frame(within=2)


@pytest.mark.ws_allow_invalid_frames
def test_the_apps_own_schema_flags_a_bad_frame(ws_helper: WebSocketTestHelper) -> None:
    """``ws_frame_schema``: a frame the schema refuses is a violation (failing at teardown unless marked)."""
    ws_helper.faults.inject({"type": "chat", "user": "mallory"}, direction="to_client")  # no text
    ws_helper.journal.wait_for(lambda f: f.violation is not None, "the bad frame to be journaled")
    [violation] = ws_helper.journal.violations()
    assert "text" in violation.error
    with pytest.raises(AssertionError, match="violated the protocol"):
        ws_helper.journal.check()


def test_server_close_with_a_code_is_seen_by_the_page(ws_helper: WebSocketTestHelper) -> None:
    """Server depth through FaultMiddleware: a genuine close frame with code and reason."""
    handle = ws_helper.faults.close(4001, "kicked by test")
    assert (handle.depth, handle.where) == ("server", "server")  # FaultMiddleware, in the app's process
    closed = ws_helper.wait_for_socket_closed()
    assert (closed.code, closed.reason, closed.clean) == (4001, "kicked by test", True)
    ws_helper.wait_for_connection_status("disconnected")


def test_reconnect_backoff_in_virtual_time(ws_helper: WebSocketTestHelper) -> None:
    """The page's own setTimeout backoff, stepped timer by timer: 500 ms, then 1000 ms.

    The app counts an attempt when it schedules it, so the page shows ``Retries: 1``
    as soon as the close arrives, and ``Retries: 2`` once the rejected attempt failed.
    """
    ws_helper.faults.reject_handshakes(503)
    ws_helper.faults.close(1011, "boom")
    ws_helper.wait_for_reconnect_info(1)
    assert ws_helper.advance_to_next_reconnect() == 500
    ws_helper.wait_for_socket_closed()
    assert not ws_helper.sockets[-1].opened  # rejected: never opened
    ws_helper.wait_for_reconnect_info(2)
    assert ws_helper.advance_to_next_reconnect() == 1000
    ws_helper.wait_for_reconnect_info(3)


def test_held_handshake_keeps_the_page_connecting(ws_helper: WebSocketTestHelper) -> None:
    """A held handshake: the page's socket stays CONNECTING until the hold ends."""
    with ws_helper.faults.hold_handshakes():
        ws_helper.faults.close(1001, "going away")
        ws_helper.advance_to_next_reconnect()
        ws_helper.wait_for_connection_status("connecting")
        assert ws_helper.sockets[-1].state == "connecting"
    ws_helper.wait_for_socket_open()
    ws_helper.wait_for_connection_status("connected")


@pytest.mark.parametrize("status", ["error", "connecting", "disconnected", "connected"])
def test_set_connection_status_on_a_foreign_page(ws_helper: WebSocketTestHelper, status: str) -> None:
    """Every status in real mode, then back to connected: the page reaches each by itself."""
    ws_helper.set_connection_status(status)  # type: ignore[arg-type]
    expected = {"error": "disconnected", "connecting": "connecting", "disconnected": "disconnected"}
    if status in expected:
        ws_helper.wait_for_connection_status(expected[status])
    ws_helper.set_connection_status("connected")
    ws_helper.wait_for_connection_status("connected")
    ws_helper.expect_frame("welcome")


def test_simulate_error_pushes_the_apps_error_frame(ws_helper: WebSocketTestHelper) -> None:
    """``ws_error_frame`` (default ``{"type": "error", "message": ...}``) pushed by the server."""
    ws_helper.simulate_error("disk full")
    ws_helper.wait_for_error_details("disk full")


def test_ws_client_speaks_the_apps_protocol(ws_helper: WebSocketTestHelper, ws_client) -> None:
    """A generic WsClient: the page's chat reaches a Python party and back."""
    bob = ws_client()
    bob.expect("welcome")
    bob.send({"type": "chat", "user": "bob", "text": "hi page"})
    ws_helper.expect_frame("chat", match={"user": "bob", "text": "hi page"})
    ws_helper.publish("", "hi bob")
    bob.expect("chat", match={"user": "guest", "text": "hi bob"})


def test_synthetic_mode_is_refused_for_a_page_without_listeners(pytester: pytest.Pytester) -> None:
    """The generic profile has no listeners for the seed's window events: a clear error."""
    from harness import ConfigurationError, WsConfig
    from harness.helper import WebSocketTestHelper as Helper

    class _Server:
        http_url = page_http_url = "http://127.0.0.1:1"

    helper = Helper(None, _Server(), WsConfig(app="x:y"), mode="synthetic")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="own listeners"):
        helper.initialize()


def test_network_faults_reach_the_foreign_page(ws_helper: WebSocketTestHelper) -> None:
    """Network depth through the fault proxy: a reset ends the page's socket with 1006."""
    ws_helper.expect_frame("welcome")
    handle = ws_helper.faults.reset()
    assert handle.depth == "network"
    closed = ws_helper.wait_for_socket_closed()
    assert (closed.code, closed.clean) == (1006, False)


def test_a_socket_that_bypasses_the_proxy_makes_network_faults_an_error(
    ws_helper: WebSocketTestHelper, ws_server
) -> None:
    """A page whose WebSocket URL is hard-coded past the proxy: the fault fails naming the URL and the fix."""
    direct = ws_server.ws_url(ws_helper.client_id)  # the app itself, not the proxy in front of it
    ws_helper.reload(ws=direct)
    ws_helper.wait_for_socket_open()
    assert ws_helper.sockets[-1].url == direct
    from harness import ConfigurationError

    with pytest.raises(ConfigurationError, match="bypassing it") as info:
        ws_helper.faults.latency(100)
    assert direct in str(info.value)
    assert ws_helper.faults.active == []
