"""A page that opens its socket on a click, with URLs that name no client: faults keyed by cookie."""

from __future__ import annotations

from harness import WebSocketTestHelper


def _connect(ws_helper: WebSocketTestHelper) -> None:
    ws_helper.page.get_by_test_id("connect").click()
    ws_helper.wait_for_socket_open()


def test_the_helper_does_not_wait_for_a_socket_the_page_opens_later(ws_helper: WebSocketTestHelper) -> None:
    """``ws_wait_for_socket = false``: set-up returns with no socket; the test opens it."""
    assert ws_helper.sockets == []
    ws_helper.wait_for_connection_status("disconnected")
    _connect(ws_helper)
    welcome = ws_helper.expect_frame("welcome")
    assert welcome["client"] != ws_helper.client_id  # the page's own id: the URL does not carry the test's


def test_server_faults_find_the_tests_socket_by_its_cookie(ws_helper: WebSocketTestHelper) -> None:
    """Close with a code and a rejected handshake reach this page although its URL names no client."""
    _connect(ws_helper)
    ws_helper.faults.reject_handshakes(503, count=1)
    ws_helper.faults.close(1011, "by cookie")
    closed = ws_helper.wait_for_socket_closed()
    assert (closed.code, closed.reason) == (1011, "by cookie")
    assert ws_helper.advance_to_next_reconnect() == 500
    assert not ws_helper.wait_for_socket_closed().opened  # the rejected one
    ws_helper.advance_to_next_reconnect()
    ws_helper.wait_for_socket_open()
    ws_helper.expect_frame("welcome")


def test_this_directory_has_a_server_of_its_own(ws_helper: WebSocketTestHelper, ws_server) -> None:
    """A second ws_config in one session gets its own server, not the first one's."""
    assert ws_server.config.page_path == "/?lazy=1"
    assert ws_server.config.keyed_by_cookie
