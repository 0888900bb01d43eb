"""The harness on a foreign app run as a separate process (``--ws-base-url``): faults through the proxy."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from harness import WebSocketTestHelper


def test_the_generic_profile_is_the_default_for_a_running_app(ws_helper: WebSocketTestHelper) -> None:
    """Not the reference server (its /health says so): the generic profile, no hook needed."""
    assert ws_helper.profile.name == "generic"
    assert ws_helper.server.faults is not None and ws_helper.server.faults.where == "proxy"
    ws_helper.expect_frame("welcome")
    ws_helper.publish("", "from a page of another process")
    ws_helper.expect_frame("chat", match={"text": "from a page of another process"})


def test_close_with_a_code_through_the_proxy(ws_helper: WebSocketTestHelper) -> None:
    """The proxy writes a genuine close frame to the page: code, reason, clean."""
    handle = ws_helper.faults.close(4001, "kicked")
    assert (handle.depth, handle.where) == ("server", "proxy")
    closed = ws_helper.wait_for_socket_closed()
    assert (closed.code, closed.reason, closed.clean) == (4001, "kicked", True)
    ws_helper.wait_for_error_details("kicked")  # the app's own reaction to 4001


def test_rejected_and_held_handshakes_are_counted_by_the_page(ws_helper: WebSocketTestHelper) -> None:
    """The proxy answers the upgrade with 503, then holds one: the page counts its attempts."""
    with ws_helper.faults.reject_handshakes(503, count=1):
        ws_helper.faults.close(1011, "restarting")
        ws_helper.wait_for_reconnect_info(1)
        assert ws_helper.advance_to_next_reconnect() == 500
        closed = ws_helper.wait_for_socket_closed()
        assert not closed.opened and closed.code == 1006
        ws_helper.wait_for_reconnect_info(2)
    with ws_helper.faults.hold_handshakes():
        assert ws_helper.advance_to_next_reconnect() == 1000
        ws_helper.wait_for_connection_status("connecting")
    ws_helper.wait_for_socket_open()
    ws_helper.expect_frame("welcome")


@pytest.mark.parametrize("status", ["error", "connecting", "disconnected"])
def test_set_connection_status_through_the_proxy(ws_helper: WebSocketTestHelper, status: str) -> None:
    """Every status, and back, on a page whose server knows nothing of the harness."""
    ws_helper.set_connection_status(status)  # type: ignore[arg-type]
    ws_helper.set_connection_status("connected")
    ws_helper.wait_for_connection_status("connected")


def test_simulate_error_through_the_proxy(ws_helper: WebSocketTestHelper) -> None:
    """The proxy injects the app's error frame between two of the server's frames."""
    ws_helper.simulate_error("quota exceeded")
    ws_helper.wait_for_error_details("quota exceeded")


def test_message_and_network_faults_on_the_foreign_page(ws_helper: WebSocketTestHelper) -> None:
    """Message depth drops the app's own frame type; network depth blackholes the socket."""
    ws_helper.expect_frame("welcome")
    with ws_helper.faults.drop("chat", count=1) as dropped:
        ws_helper.publish("", "lost")
        ws_helper.expect_frame("chat", match={"text": "lost"})  # journaled as it arrived, then dropped
        assert dropped.applied == 1
    ws_helper.publish("", "kept")
    messages = ws_helper.page.get_by_test_id("messages")
    expect(messages).to_contain_text("kept")
    assert "lost" not in messages.inner_text()
    with ws_helper.faults.blackhole():
        ws_helper.publish("", "held")
        ws_helper.expect_no_frame("chat", match={"text": "held"}, within=0.3)
    ws_helper.expect_frame("chat", match={"text": "held"})


def test_ws_client_against_the_process(ws_helper: WebSocketTestHelper, ws_client) -> None:
    """A Python party speaks the app's protocol directly."""
    carol = ws_client()
    carol.expect("welcome")
    carol.send({"type": "chat", "user": "carol", "text": "hello"})
    ws_helper.expect_frame("chat", match={"user": "carol"})
    carol.send("ping")
    assert carol.expect(text=re.compile("^pong$")) == "pong"
