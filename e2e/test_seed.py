"""The seed project's test, translated line for line, in real and in synthetic mode.

Depth: *real* — server (the ``/__harness`` fault control fails the live socket,
rejects handshakes with HTTP 503 and holds them open) with the page's own
backoff in virtual time; *synthetic* — UI (the seed's ``websocket-status`` and
``websocket-message`` window events; nothing happens on the socket).
"""

from __future__ import annotations

import pytest

from harness import FaultControl, WebSocketTestHelper


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("real", marks=pytest.mark.ws_mode("real")),
        pytest.param("synthetic", marks=pytest.mark.ws_mode("synthetic")),
    ],
)
def test_should_handle_connection_errors_with_backoff(
    ws_helper: WebSocketTestHelper, mode: str
) -> None:
    """should handle connection errors with backoff.

    Depth: server in real mode (1011 close, HTTP 503 rejections, held handshakes),
    UI in synthetic mode (``websocket-status`` / ``websocket-message`` events).
    Each ``error`` after ``connecting`` is one more failed attempt, as the
    attempt counter shows.
    """
    ws_helper.set_connection_status("error")
    ws_helper.simulate_error("Network error")

    for attempt in range(1, 4):
        ws_helper.set_connection_status("connecting")
        ws_helper.wait_for_reconnect_info(attempt)
        ws_helper.set_connection_status("error")
        ws_helper.wait_for_error_details("Network error")

    ws_helper.set_connection_status("connected")
    ws_helper.authenticate("valid-test-key")
    ws_helper.wait_for_auth_status("Authenticated")


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param("real", marks=pytest.mark.ws_mode("real")),
        pytest.param("synthetic", marks=pytest.mark.ws_mode("synthetic")),
    ],
)
def test_simulate_error_while_connected(ws_helper: WebSocketTestHelper, mode: str) -> None:
    """``simulate_error`` on a live connection.

    Depth: server in real mode (a genuine ``error`` frame pushed on the socket),
    UI in synthetic mode (the ``websocket-message`` event; no frame).
    """
    ws_helper.simulate_error("Disk full")

    ws_helper.wait_for_error_details("internal_error: Disk full")
    errors = ws_helper.journal.find("error", match={"message": "Disk full"})
    assert len(errors) == (1 if mode == "real" else 0)
    ws_helper.wait_for_connection_status("connected")


def test_the_seed_flow_on_an_authenticated_page(ws_helper: WebSocketTestHelper) -> None:
    """The same cycle once the user is authenticated: every failed attempt still counts.

    Depth: server.  A handshake the server holds is never let through to fail
    later (the page would re-authenticate on it and reset its counter): it
    stays unanswered until the page's own open timeout gives it up.
    """
    ws_helper.authenticate()
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.set_connection_status("error")

    for attempt in range(1, 4):
        ws_helper.set_connection_status("connecting")
        ws_helper.wait_for_reconnect_info(attempt)
        ws_helper.set_connection_status("error")
    ws_helper.set_connection_status("connecting")
    ws_helper.set_connection_status("disconnected")
    ws_helper.wait_for_reconnect_info(5)
    ws_helper.wait_for_connection_status("disconnected")

    ws_helper.set_connection_status("connected")
    ws_helper.wait_for_auth_status("Authenticated")  # again, with the accepted key
    ws_helper.wait_for_reconnect_info(0)
    assert len(ws_helper.journal.find("auth_success")) == 2


def test_connection_states_keep_the_tests_frame_faults(
    ws_helper: WebSocketTestHelper, faults: FaultControl
) -> None:
    """``disconnected`` and ``connecting`` change handshake rules only; ``connected`` lifts all.

    Depth: server (a ``drop`` rule on ``pong`` frames set by the test).
    """
    ws_helper.authenticate()
    ws_helper.wait_for_auth_status("Authenticated")
    faults.drop(ws_helper.client_id, types=["pong"])

    for status in ("disconnected", "connecting"):
        ws_helper.set_connection_status(status)
        rules = faults.client_info(ws_helper.client_id)["rules"]
        assert rules["drop"]["types"] == ["pong"], (status, rules)
        assert rules["hold"] is not None, (status, rules)

    ws_helper.set_connection_status("connected")
    ws_helper.wait_for_auth_status("Authenticated")
    assert faults.client_info(ws_helper.client_id)["rules"]["drop"] is None
