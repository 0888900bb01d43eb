"""Reconnection: server-side closes, backoff in virtual time, close codes, heartbeat.

Depth: server (the /__harness API closes, aborts, rejects handshakes and drops
frames on the real server), time: Playwright's clock, paused after load.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.conftest import VALID_KEY, ClientPage, unique_id

# Channels unique to this run: the browser tests share one server per worker.
GENERAL = unique_id("general")


def test_server_side_close_counts_up_then_reconnects_reauthenticates_and_resubscribes(
    client_page: ClientPage,
) -> None:
    client_page.open(virtual_time=True, jitter="none")
    client_page.authenticate()
    client_page.subscribe(GENERAL)
    client_page.expect_subscribed(GENERAL)

    client_page.faults.close_socket(1011, "maintenance")

    expect(client_page.by("connection-status")).to_have_text("disconnected")
    expect(client_page.by("reconnect-info")).to_contain_text("Reconnection attempts: 1")
    expect(client_page.by("reconnect-info")).not_to_contain_text("Never")
    expect(client_page.by("next-reconnect")).to_contain_text("Next reconnect in 1000 ms")
    expect(client_page.by("error-details")).to_contain_text("maintenance")
    assert client_page.state()["lastError"] == "maintenance"

    client_page.advance(999)
    assert len(client_page.sockets) == 1, "reconnected before the backoff delay was over"
    client_page.advance(1)

    expect(client_page.by("auth-status")).to_have_text("Authenticated")
    expect(client_page.by("connection-status")).to_have_text("connected")
    client_page.expect_subscribed(GENERAL)
    assert len(client_page.sockets) == 2
    connects = client_page.wait_for_sent("connect", 2)
    assert {c["data"]["api_key"] for c in connects} == {VALID_KEY}
    first, again = client_page.wait_for_sent("subscribe", 2)
    assert "since_seq" not in first["data"]
    assert again["data"] == {"channel": GENERAL, "since_seq": 0}
    # The attempt counter resets once authenticated again; the time of the last one stays.
    expect(client_page.by("reconnect-info")).to_contain_text("Reconnection attempts: 0")
    expect(client_page.by("reconnect-info")).not_to_contain_text("Never")
    expect(client_page.by("next-reconnect")).to_have_text("No reconnect scheduled")


def test_failing_attempts_back_off_exponentially_up_to_the_cap(client_page: ClientPage) -> None:
    client_page.open(virtual_time=True, jitter="none")
    client_page.authenticate()
    client_page.faults.reject(503)
    client_page.faults.close_socket(1011, "down")

    for attempt, delay in enumerate([1000, 2000, 4000, 8000, 16000, 30000, 30000], start=1):
        expect(client_page.by("reconnect-info")).to_contain_text(f"Reconnection attempts: {attempt}")
        expect(client_page.by("next-reconnect")).to_contain_text(f"Next reconnect in {delay} ms")
        assert client_page.state()["nextReconnectDelay"] == delay
        client_page.advance(delay)  # the attempt is refused with HTTP 503

    expect(client_page.by("reconnect-info")).to_contain_text("Reconnection attempts: 8")
    client_page.faults.clear()
    client_page.advance_to_reconnect()
    expect(client_page.by("auth-status")).to_have_text("Authenticated")
    expect(client_page.by("reconnect-info")).to_contain_text("Reconnection attempts: 0")


def test_a_seed_replays_the_jittered_delays(client_page: ClientPage) -> None:
    client_page.open(virtual_time=True, jitter="full")
    client_page.authenticate()
    expected = client_page.page.evaluate(
        """async () => {
          const { backoffDelay, createRandom } = await import('/static/store.js');
          return backoffDelay(0, { baseMs: 1000, capMs: 30000, jitter: 'full' }, createRandom(7).next);
        }"""
    )
    delays = []
    for _ in range(2):
        client_page.page.evaluate("() => window.__novaWs.seed(7)")
        client_page.faults.close_socket(1011, "again")
        client_page.wait_for_state("s.nextReconnectDelay !== null", "a reconnect to be scheduled")
        delays.append(client_page.state()["nextReconnectDelay"])
        client_page.advance_to_reconnect()
        expect(client_page.by("auth-status")).to_have_text("Authenticated")
    assert delays == [expected, expected]


@pytest.mark.parametrize("code", [4001, 4002, 4003, 1008])
def test_no_reconnect_after_terminal_close_codes(client_page: ClientPage, code: int) -> None:
    client_page.open(virtual_time=True)
    client_page.authenticate()

    client_page.faults.close_socket(code, "final answer")

    expect(client_page.by("connection-status")).to_have_text("error")
    expect(client_page.by("error-details")).to_contain_text("final answer")
    expect(client_page.by("reconnect-button")).to_be_visible()
    client_page.advance(120_000)
    assert len(client_page.sockets) == 1
    expect(client_page.by("reconnect-info")).to_contain_text("Reconnection attempts: 0")
    expect(client_page.by("next-reconnect")).to_contain_text("Automatic reconnection is off")

    # The Reconnect button opens a new connection and re-authenticates with the accepted key.
    client_page.by("reconnect-button").click()
    expect(client_page.by("auth-status")).to_have_text("Authenticated")
    assert len(client_page.sockets) == 2


@pytest.mark.parametrize("fault", ["close-1000", "close-1001", "close-1011", "abort"])
def test_reconnect_after_other_closes(client_page: ClientPage, fault: str) -> None:
    client_page.open(virtual_time=True, jitter="none")
    client_page.authenticate()

    if fault == "abort":
        client_page.faults.abort()
    else:
        client_page.faults.close_socket(int(fault.split("-")[1]), "")

    expect(client_page.by("reconnect-info")).to_contain_text("Reconnection attempts: 1")
    expect(client_page.by("next-reconnect")).to_contain_text("Next reconnect in 1000 ms")
    expected_close = 1006 if fault == "abort" else int(fault.split("-")[1])
    closes = [e for e in client_page.state()["errors"] if e["source"] == "close"]
    assert closes[0]["code"] == expected_close
    client_page.advance(1000)
    expect(client_page.by("auth-status")).to_have_text("Authenticated")


def test_half_open_connection_is_detected_by_the_heartbeat(client_page: ClientPage) -> None:
    client_page.open(virtual_time=True, jitter="none")
    client_page.authenticate()

    # Healthy: a ping every 25 s, answered; nothing happens.
    client_page.advance(25_000)
    client_page.wait_for_sent("ping", 1)
    client_page.wait_for_state("!s.heartbeat.awaitingReply", "the pong")
    client_page.advance(10_000)
    assert client_page.state()["status"] == "connected"

    # Half-open: the server still takes our frames but nothing comes back.
    client_page.faults.drop()
    client_page.advance(15_000)
    client_page.wait_for_sent("ping", 2)
    deadline = client_page.page.evaluate(
        "() => Date.parse(window.__novaWs.getState().heartbeat.lastPingAt) + 10000 - Date.now()"
    )
    client_page.advance(deadline - 1)
    assert client_page.state()["status"] == "connected"
    client_page.advance(1)
    state = client_page.state()
    assert state["status"] == "disconnected", "the dead link must be dropped without waiting for a close event"
    assert state["reconnectAttempts"] == 1
    assert state["nextReconnectDelay"] == 1000
    expect(client_page.by("error-details")).to_contain_text("No frame within 10000 ms after ping")

    client_page.faults.clear()
    client_page.advance(1000)
    expect(client_page.by("auth-status")).to_have_text("Authenticated")
    expect(client_page.by("reconnect-info")).to_contain_text("Reconnection attempts: 0")


def test_a_second_tab_with_the_same_client_id_replaces_the_first(
    client_page: ClientPage, context: BrowserContext
) -> None:
    client_page.open()
    client_page.authenticate()

    second = ClientPage(context.new_page(), client_page.server, client_page.client_id)
    second.open()
    second.authenticate()

    expect(client_page.by("connection-status")).to_have_text("error")
    expect(client_page.by("error-details")).to_contain_text("replaced")
    expect(client_page.by("next-reconnect")).to_contain_text("Automatic reconnection is off")
    expect(second.by("connection-status")).to_have_text("connected")
    assert not second.invalid_sent_frames()


def test_disconnect_and_reconnect_buttons(client_page: ClientPage) -> None:
    client_page.open(virtual_time=True)
    client_page.authenticate()

    client_page.by("disconnect-button").click()
    expect(client_page.by("connection-status")).to_have_text("disconnected")
    expect(client_page.by("next-reconnect")).to_have_text("No reconnect scheduled")
    client_page.advance(60_000)
    assert len(client_page.sockets) == 1
    expect(client_page.by("reconnect-info")).to_contain_text("Reconnection attempts: 0")

    client_page.by("reconnect-button").click()
    expect(client_page.by("auth-status")).to_have_text("Authenticated")
    assert len(client_page.sockets) == 2
