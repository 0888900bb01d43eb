"""The test-mode hooks: ``websocket-status``, ``websocket-message`` and ``window.__novaWs``.

Depth: UI (synthetic) — window events the page listens to in test mode only.
"""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import ClientPage, unique_id

# Channels unique to this run: the browser tests share one server per worker.
GENERAL = unique_id("general")


def test_websocket_status_event_drives_the_status(client_page: ClientPage) -> None:
    client_page.open()
    expect(client_page.by("connection-status")).to_have_text("connected")

    client_page.dispatch("websocket-status", {"status": "error", "error": "Simulated outage"})

    expect(client_page.by("connection-status")).to_have_text("error")
    expect(client_page.by("error-details")).to_contain_text("Simulated outage")
    # Counted like a real lost connection, but nothing is scheduled and the socket stays.
    expect(client_page.by("reconnect-info")).to_contain_text("Reconnection attempts: 1")
    expect(client_page.by("reconnect-info")).not_to_contain_text("Never")
    expect(client_page.by("next-reconnect")).to_have_text("No reconnect scheduled")
    latest = client_page.by("status-history-entry").first
    expect(latest).to_contain_text("error")
    expect(latest).to_contain_text("Simulated outage")
    for status in ("connecting", "disconnected", "connected"):
        client_page.dispatch("websocket-status", {"status": status})
        expect(client_page.by("connection-status")).to_have_text(status)
    expect(client_page.by("reconnect-info")).to_contain_text("Reconnection attempts: 2")
    state = client_page.state()
    assert [e["status"] for e in state["statusHistory"][-4:]] == ["error", "connecting", "disconnected", "connected"]
    assert state["connected"] is True and state["connecting"] is False


def test_websocket_message_event_is_handled_as_if_received(client_page: ClientPage) -> None:
    client_page.open()
    client_page.authenticate()
    client_page.subscribe(GENERAL)
    client_page.expect_subscribed(GENERAL)

    client_page.dispatch("websocket-message", {
        "type": "error",
        "data": {"code": "internal_error", "message": "Injected failure"},
        "timestamp": "2025-01-01T12:00:00.000Z",
        "client_id": client_page.client_id,
    })
    expect(client_page.by("error-details")).to_contain_text("Injected failure")
    expect(client_page.by("error-entry").first.get_by_test_id("error-code")).to_have_text("internal_error")

    message = {
        "type": "channel_message",
        "data": {
            "channel": GENERAL, "seq": 7, "message_id": "hook-1", "sender": "someone",
            "content": "hello from a hook", "sent_at": "2025-01-01T12:00:00.000Z",
        },
        "timestamp": "2025-01-01T12:00:00.000Z",
        "client_id": client_page.client_id,
    }
    client_page.dispatch("websocket-message", message)
    client_page.dispatch("websocket-message", message)  # a duplicate: shown once
    item = client_page.message_items(GENERAL)
    expect(item).to_have_count(1)
    expect(item).to_contain_text("hello from a hook")
    expect(item).to_have_attribute("data-state", "received")
    expect(item.get_by_test_id("message-state")).to_have_text("received")
    assert client_page.state()["subscriptions"][GENERAL]["lastSeq"] == 7

    # The detail may also be the raw JSON text of a frame.
    client_page.dispatch("websocket-message", '{"type": "pong", "data": {}, "timestamp": "2025-01-01T12:00:00.000Z", "client_id": "x"}')
    client_page.dispatch("websocket-message", "not json")
    expect(client_page.by("error-details")).to_contain_text("not JSON")


def test_get_state_returns_a_copy(client_page: ClientPage) -> None:
    client_page.open()
    expect(client_page.by("connection-status")).to_have_text("connected")
    copy_is_detached = client_page.page.evaluate(
        "() => { const s = window.__novaWs.getState(); s.status = 'error'; return window.__novaWs.getState().status; }"
    )
    assert copy_is_detached == "connected"
    state = client_page.state()
    for key in (
        "status", "connected", "connecting", "clientId", "clientMetadata", "channels", "subscriptions",
        "lastError", "reconnectAttempts", "lastReconnect", "nextReconnectDelay", "statusHistory",
        "authStatus", "pendingOperations",
    ):
        assert key in state, key


def test_hooks_are_absent_outside_test_mode(page: Page, server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(test_mode=False)
    page.goto(f"{server.http_url}/?client_id={unique_id('prod')}")
    expect(page.get_by_test_id("connection-status")).to_have_text("connected")
    assert page.evaluate("() => typeof window.__novaWs") == "undefined"

    page.evaluate(
        "() => window.dispatchEvent(new CustomEvent('websocket-status', {detail: {status: 'error', error: 'x'}}))"
    )
    expect(page.get_by_test_id("connection-status")).to_have_text("connected")
    expect(page.get_by_test_id("error-details")).to_have_text("No errors")


def test_a_status_set_by_event_is_not_overwritten_by_the_transport_until_a_user_action(
    client_page: ClientPage,
) -> None:
    client_page.open(virtual_time=True)
    client_page.authenticate()

    client_page.dispatch("websocket-status", {"status": "error", "error": "Synthetic failure"})
    client_page.faults.close_socket(1011, "real close meanwhile")
    client_page.wait_for_state("s.nextReconnectDelay !== null", "the real close to be handled")
    expect(client_page.by("connection-status")).to_have_text("error")
    assert client_page.state()["statusSource"] == "test-event"

    client_page.by("reconnect-button").click()
    expect(client_page.by("auth-status")).to_have_text("Authenticated")
    expect(client_page.by("connection-status")).to_have_text("connected")
    assert client_page.state()["statusSource"] == "transport"
