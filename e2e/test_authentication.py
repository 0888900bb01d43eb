"""Authentication: success, a wrong key (4001, no reconnect), the authentication timeout (4002).

Depths: the success and wrong-key tests use no fault at all (the real server
answers the real key); the 4002 tests use the server (see each docstring).
Time: virtual, except where a test says it measures the server's own timer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from playwright.sync_api import expect

from harness import FaultControl, NovaClient, WebSocketTestHelper

#: Five minutes of virtual time: far beyond the longest backoff delay (30 s).
LONG_MS = 5 * 60 * 1000


def assert_no_reconnect(ws_helper: WebSocketTestHelper, sockets: int) -> None:
    """After a terminal close: five virtual minutes go by and the page opens no socket."""
    for _ in ws_helper.journal.find("connection_established", unconsumed=True):
        ws_helper.expect_frame("connection_established")  # the ones before the close
    next_reconnect = ws_helper.page.get_by_test_id(ws_helper.config.test_ids.next_reconnect)
    expect(next_reconnect).to_contain_text("Automatic reconnection is off")
    ws_helper.advance_clock(LONG_MS)
    state = ws_helper.state()
    assert state["status"] == "error", state["statusHistory"][-3:]
    assert state["nextReconnectAt"] is None
    ws_helper.expect_no_frame("connection_established", within=0.3)
    assert len(ws_helper.connections) == sockets, ws_helper.connections


def test_authentication_succeeds_with_a_valid_key(ws_helper: WebSocketTestHelper) -> None:
    """The user types the test key and clicks Authenticate. Depth: none (the real server)."""
    ws_helper.expect_frame("connection_established", match={"client_id": ws_helper.client_id})
    ws_helper.authenticate("valid-test-key")
    ws_helper.wait_for_auth_status("Authenticated")

    sent = ws_helper.expect_frame("connect", direction="sent", match={"api_key": "valid-test-key"})
    assert sent["data"]["metadata"]["type"] == "browser"
    reply = ws_helper.expect_frame("auth_success", match={"client_id": ws_helper.client_id})
    assert reply["id"] == sent["id"]
    assert reply["data"]["metadata"]["permissions"] == ["read", "write"]
    ws_helper.wait_for_connection_status("connected")
    ws_helper.wait_for_reconnect_info(0)
    expect(ws_helper.page.get_by_test_id("auth-permissions")).to_have_text(
        "Permissions: read, write"
    )
    expect(
        ws_helper.page.get_by_test_id(ws_helper.config.test_ids.client_metadata)
    ).to_contain_text("read, write")
    # One connection, one connect: the key never travels in the URL.
    assert len(ws_helper.connections) == 1
    assert "valid-test-key" not in ws_helper.connections[0]


def test_wrong_key_fails_with_4001_and_does_not_reconnect(ws_helper: WebSocketTestHelper) -> None:
    """A wrong key: ``auth_failed``, close 4001, no reconnection. Depth: none (the real server)."""
    ws_helper.authenticate("not-a-valid-key")

    ws_helper.wait_for_auth_status("Authentication failed")
    error = ws_helper.expect_frame("error", match={"code": "auth_failed"})
    assert (
        ws_helper.expect_frame("connect", direction="sent")["id"] == error["data"]["operation_id"]
    )
    ws_helper.wait_for_connection_status("error")
    ws_helper.wait_for_error_details("authentication failed")
    codes = ws_helper.page.get_by_test_id(ws_helper.config.test_ids.error_details).get_by_test_id(
        "error-code"
    )
    expect(codes.filter(has_text="4001")).to_have_count(1)
    ws_helper.wait_for_reconnect_info(0)
    assert_no_reconnect(ws_helper, sockets=1)

    # The user corrects the key: a new connection, authenticated.
    ws_helper.authenticate("valid-test-key")
    ws_helper.wait_for_auth_status("Authenticated")
    assert len(ws_helper.connections) == 2


def test_auth_timeout_closes_4002_and_the_page_stops(
    ws_helper: WebSocketTestHelper, faults: FaultControl
) -> None:
    """The page sits unauthenticated until the server gives up: 4002, no reconnection.

    Depth: server. The shared server's authentication timer runs in real time
    (10 s by default), so the close it sends at expiry is produced on demand by
    the fault control API: the same code and reason (``4002`` "authentication
    timeout") on the same live socket.  The timer itself is covered in real
    time by ``test_the_server_enforces_its_advertised_auth_timeout`` below.
    """
    established = ws_helper.expect_frame("connection_established")
    assert established["data"]["auth_timeout_ms"] > 0
    ws_helper.wait_for_auth_status("Not authenticated")

    faults.close_socket(ws_helper.client_id, code=4002, reason="authentication timeout")

    ws_helper.wait_for_connection_status("error")
    ws_helper.wait_for_error_details("authentication timeout")
    codes = ws_helper.page.get_by_test_id(ws_helper.config.test_ids.error_details).get_by_test_id(
        "error-code"
    )
    expect(codes.filter(has_text="4002")).to_have_count(1)
    ws_helper.wait_for_auth_status("Not authenticated")
    assert_no_reconnect(ws_helper, sockets=1)

    # Authenticate opens a new connection and sends the key once it is established.
    ws_helper.authenticate()
    ws_helper.wait_for_auth_status("Authenticated")
    assert len(ws_helper.connections) == 2


def test_the_server_enforces_its_advertised_auth_timeout(
    ws_client: Callable[..., NovaClient],
) -> None:
    """No ``connect`` within ``auth_timeout_ms``: the server closes with 4002.

    Depth: none; protocol level (a ``ws_client`` that never authenticates),
    in real time, because this is the server's own timer: it costs the
    server's timeout (10 s by default) of wall time, spent idle, so under
    ``-n 2`` the other worker runs meanwhile.
    """
    client = ws_client(authenticate=False)
    established = next(m for m in client.messages if m["type"] == "connection_established")
    timeout_s = established["data"]["auth_timeout_ms"] / 1000
    start = time.monotonic()

    code = client.wait_closed(timeout=timeout_s + 5)

    elapsed = time.monotonic() - start
    assert code == 4002
    assert client.close_reason == "authentication timeout"
    assert elapsed >= timeout_s - 0.5, (
        f"closed after {elapsed:.1f} s, before the advertised {timeout_s} s"
    )
