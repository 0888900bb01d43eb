"""Server faults on the page's own connection, as the browser and its UI see them.

Depth: server (``ws_faults`` calls the reference server's ``/__harness``
fault control, keyed by this test's client id: the server itself closes,
aborts, rejects or holds, so close codes and handshake failures are
genuine).  Time: the page's, virtual (backoff and open timeouts fire only
when the test advances the clock).
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from e2e.ui import authenticated, by, channel_row, error_codes
from harness import Faults, WebSocketTestHelper


def test_three_rejected_handshakes_are_counted_then_the_page_connects(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, channel: str
) -> None:
    """``reject_handshakes(503, count=3)``: three failed attempts on the counter, the fourth connects.

    Depth: server (it answers the upgrade requests with HTTP 503, which the
    browser reports as a close with 1006 before the socket ever opens).  The
    user disconnects and reconnects by hand, so only the rejections count.
    """
    authenticated(ws_helper)
    ws_helper.subscribe(channel)
    expect(channel_row(ws_helper, channel)).to_have_attribute("data-state", "subscribed")
    ids = ws_helper.config.test_ids
    by(ws_helper, ids.disconnect_button).click()
    ws_helper.wait_for_connection_status("disconnected")
    rejected = ws_faults.reject_handshakes(503, count=3)
    assert ws_faults.active == [rejected]

    by(ws_helper, ids.reconnect_button).click()
    ws_helper.wait_for_reconnect_info(1)
    for attempts in (2, 3):
        ws_helper.advance_to_next_reconnect()
        ws_helper.wait_for_reconnect_info(attempts)
    ws_helper.wait_for_connection_status("disconnected")
    expect(error_codes(ws_helper).first).to_have_text("1006")
    # Three sockets after the first were rejected: none got a single frame.
    assert len(ws_helper.connections) == 4
    assert {f.connection for f in ws_helper.frames} == {0}

    ws_helper.advance_to_next_reconnect()
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.wait_for_connection_status("connected")
    ws_helper.wait_for_reconnect_info(0)
    assert len(ws_helper.connections) == 5
    ws_helper.expect_frame("subscribe", direction="sent", match={"channel": channel})
    ws_helper.expect_frame("subscribe", direction="sent", match={"channel": channel})
    expect(channel_row(ws_helper, channel)).to_have_attribute("data-state", "subscribed")
    rejected.undo()
    assert ws_faults.active == []


def test_a_held_handshake_shows_connecting_until_undone(
    ws_helper: WebSocketTestHelper, ws_faults: Faults
) -> None:
    """``hold_handshakes``: the reconnect's upgrade gets no answer, the page shows CONNECTING.

    Depth: server (it keeps the upgrade request open without answering).
    Undoing the fault lets the held handshake proceed; the page
    re-authenticates by itself.
    """
    authenticated(ws_helper)
    held = ws_faults.hold_handshakes()
    ws_faults.close(1012, "restarting")
    ws_helper.wait_for_reconnect_info(1)
    ws_helper.advance_to_next_reconnect()

    ws_helper.wait_for_connection_status("connecting")
    control = ws_helper.server.faults
    assert control is not None
    ws_helper.expect_frame("connection_established")  # the first connection's
    # The upgrade request may still be on its way: wait until the server holds it,
    # while the page gets no connection_established.
    deadline = time.monotonic() + ws_helper.config.timeout
    while control.client_info(ws_helper.client_id).get("held_handshakes", 0) < 1:
        assert time.monotonic() < deadline, "the server never held the page's handshake"
        ws_helper.expect_no_frame("connection_established", within=0.05)
    ws_helper.expect_no_frame("connection_established", within=0.3)
    ws_helper.wait_for_connection_status("connecting")
    assert ws_helper.state()["status"] == "connecting"

    held.undo()
    ws_helper.wait_for_connection_status("connected")
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.wait_for_reconnect_info(0)


@pytest.mark.parametrize(
    ("code", "reason", "reconnects"),
    [
        (1011, "boom", True),
        (1001, "", True),
        (4003, "replaced", False),
        (1008, "policy", False),
    ],
)
def test_a_server_close_code_reaches_the_page(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, code: int, reason: str, reconnects: bool
) -> None:
    """``close(code, reason)``: the page shows the code, and reconnects unless the code forbids it.

    Depth: server (a genuine close frame from the server).
    """
    authenticated(ws_helper)
    handle = ws_faults.close(code, reason)
    assert not handle.active and ws_faults.active == []

    expect(error_codes(ws_helper).first).to_have_text(str(code))
    assert ws_helper.state()["errors"][0]["code"] == code
    if reconnects:
        ws_helper.wait_for_connection_status("disconnected")
        ws_helper.wait_for_reconnect_info(1)
        ws_helper.advance_to_next_reconnect()
        ws_helper.wait_for_auth_status("Authenticated")
    else:
        ws_helper.wait_for_connection_status("error")
        assert ws_helper.state()["autoReconnect"] is False
        assert ws_helper.state()["nextReconnectAt"] is None
    if reason:
        ws_helper.wait_for_error_details(reason)
        assert ws_helper.state()["errors"][0]["details"] == {"close_code": code, "reason": reason}


def test_an_abort_shows_1006_and_the_page_reconnects(
    ws_helper: WebSocketTestHelper, ws_faults: Faults
) -> None:
    """``abort()``: the server drops the TCP connection without a close frame: 1006.

    Depth: server.
    """
    authenticated(ws_helper)
    ws_faults.abort()
    ws_helper.wait_for_connection_status("disconnected")
    expect(error_codes(ws_helper).first).to_have_text("1006")
    ws_helper.wait_for_reconnect_info(1)
    ws_helper.advance_to_next_reconnect()
    ws_helper.wait_for_auth_status("Authenticated")
    assert len(ws_helper.connections) == 2
