"""Limits: large messages, many parties in one channel, two tabs with one client id.

Depths: none for the large and concurrent tests (real frames end to end);
the oversized frame is refused by the server itself (``max_message_bytes``,
1 MiB), the 4003 replacement is the server's own rule.  Time: the page's,
virtual.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, expect

from e2e.ui import authenticated, error_codes, message_items
from harness import FaultControl, NovaClient, ServerUnderTest, WebSocketTestHelper, WsConfig

WsClient = Callable[..., NovaClient]

KIB = 1024
MIB = 1024 * KIB


def payload(size: int, seed: str) -> str:
    """``size`` characters of readable, non-repeating-looking text (ASCII: one byte each)."""
    unit = f"{seed}:0123456789abcdefghijklmnopqrstuvwxyz;"
    return (unit * (size // len(unit) + 1))[:size]


def test_512_kib_messages_are_delivered_both_ways(
    ws_helper: WebSocketTestHelper, ws_client: WsClient, channel: str
) -> None:
    """A 512 KiB publish from the page and one from another client arrive whole. Depth: none."""
    authenticated(ws_helper)
    ws_helper.subscribe(channel)
    ws_helper.expect_frame("subscribed", match={"channel": channel})
    other = ws_client()
    other.subscribe(channel)

    from_page = payload(512 * KIB, "page")
    ws_helper.publish(channel, from_page)
    confirmation = ws_helper.expect_frame("delivery_confirmation", timeout=15)
    assert (
        other.expect("channel_message", match={"channel": channel}, timeout=15)["data"]["content"]
        == from_page
    )

    from_other = payload(512 * KIB, "other")
    other.publish(channel, from_other)
    echo = ws_helper.expect_frame(
        "channel_message", match={"message_id": confirmation["data"]["message_id"]}
    )
    assert echo["data"]["content"] == from_page
    received = ws_helper.expect_frame(
        "channel_message", match={"sender": other.client_id}, timeout=15
    )
    assert received["data"]["content"] == from_other

    items = message_items(ws_helper, channel)
    expect(items).to_have_count(2)
    expect(items.first).to_have_attribute("data-state", "delivered")
    lengths = items.get_by_test_id("message-content").evaluate_all(
        "els => els.map(e => e.textContent.length)"
    )
    assert lengths == [512 * KIB, 512 * KIB]


def test_a_frame_over_the_limit_closes_1009_and_the_page_reconnects(
    ws_helper: WebSocketTestHelper, channel: str
) -> None:
    """A publish of just over 1 MiB: the server closes 1009, the UI says so, the page comes back.

    The oversized message fails instead of being resent (which would loop:
    reconnect, re-authenticate, 1009...).  Depth: none (the server's own
    frame size limit, ``max_message_bytes``).
    """
    authenticated(ws_helper)

    ws_helper.publish(channel, payload(MIB + 1, "big"))

    ws_helper.wait_for_connection_status("disconnected")
    expect(error_codes(ws_helper).filter(has_text="1009")).to_have_count(1)
    expect(ws_helper.page.get_by_test_id("connection-detail")).to_contain_text(
        "Closed with code 1009"
    )
    ws_helper.wait_for_error_details("exceeds limit of 1048576 bytes")
    item = message_items(ws_helper, channel)
    expect(item).to_have_attribute("data-state", "failed")
    expect(item.get_by_test_id("message-error")).to_contain_text("Message too big")
    ws_helper.wait_for_reconnect_info(1)

    ws_helper.advance_to_next_reconnect()
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.wait_for_reconnect_info(0)
    ws_helper.advance_clock(20_000)  # long past any resend; short of the heartbeat
    ws_helper.wait_for_connection_status("connected")
    assert len(ws_helper.journal.find("publish", direction="sent")) == 1
    assert len(ws_helper.connections) == 2


def test_one_page_and_twenty_clients_each_get_every_message_once(
    ws_helper: WebSocketTestHelper, ws_client: WsClient, channel: str
) -> None:
    """21 parties in one channel publish concurrently; everyone sees all 63 messages exactly once.

    Depth: none (21 real connections to the same server).
    """
    authenticated(ws_helper)
    ws_helper.subscribe(channel)
    ws_helper.expect_frame("subscribed", match={"channel": channel})
    clients = [ws_client() for _ in range(20)]
    for client in clients:
        client.subscribe(channel)

    def publish_three(index: int) -> list[str]:
        return [
            clients[index].publish(channel, f"client {index} #{k}")["message_id"] for k in range(3)
        ]

    with ThreadPoolExecutor(len(clients)) as pool:
        published = pool.map(publish_three, range(len(clients)))
        for k in range(3):  # the page publishes meanwhile, through its UI
            ws_helper.publish(channel, f"page #{k}")
        ids_by_client = list(published)

    expected_total = 3 * len(clients) + 3
    items = message_items(ws_helper, channel)
    expect(items).to_have_count(expected_total, timeout=15_000)
    expect(
        items.and_(ws_helper.page.locator('[data-state="delivered"], [data-state="received"]'))
    ).to_have_count(expected_total)

    page_seen = [
        m["data"]
        for m in ws_helper.journal.messages("received", "channel_message")
        if m["data"]["channel"] == channel
    ]
    assert sorted(m["seq"] for m in page_seen) == list(range(1, expected_total + 1)), (
        "gap or duplicate to the page"
    )
    everyone = {mid for ids in ids_by_client for mid in ids} | {m["message_id"] for m in page_seen}
    assert len(everyone) == expected_total
    for client in clients:
        for _ in range(expected_total):
            client.expect("channel_message", match={"channel": channel}, timeout=15)
    clients[0].expect_nothing("channel_message", within=0.3)
    for client in clients:
        seen = [m["data"] for m in client.messages if m.get("type") == "channel_message"]
        assert sorted(m["seq"] for m in seen) == list(range(1, expected_total + 1)), (
            client.client_id
        )
        assert {m["message_id"] for m in seen} == everyone


@pytest.mark.parametrize("newer", ["browser-tab", "ws-client"])
def test_a_second_connection_with_the_same_client_id_replaces_the_first(
    ws_helper: WebSocketTestHelper,
    ws_client: WsClient,
    context: BrowserContext,
    ws_server: ServerUnderTest,
    ws_config: WsConfig,
    faults: FaultControl,
    newer: str,
) -> None:
    """The older connection is closed with 4003 and does not reconnect; the newer one stays.

    Depth: none (the server's own rule: registration on authentication
    replaces an older connection of the same client id).
    """
    authenticated(ws_helper)

    second: Any
    if newer == "browser-tab":
        # Same browser context, so the same (paused) virtual clock.
        second = WebSocketTestHelper(
            context.new_page(),
            ws_server,
            ws_config,
            client_id=ws_helper.client_id,
            virtual_time=False,
        ).initialize()
        second.authenticate()
        second.wait_for_auth_status("Authenticated")
    else:
        second = ws_client(client_id=ws_helper.client_id)

    ws_helper.wait_for_connection_status("error")
    ws_helper.wait_for_error_details("replaced by a newer connection")
    expect(error_codes(ws_helper).filter(has_text="4003")).to_have_count(1)
    expect(ws_helper.page.get_by_test_id(ws_helper.config.test_ids.next_reconnect)).to_contain_text(
        "Automatic reconnection is off"
    )
    # Well past the first backoff delay (at most 1 s after an authenticated connection), and short
    # of the heartbeat (25 s): the other tab shares this virtual clock, and its pong needs real time.
    ws_helper.advance_clock(20_000)
    assert ws_helper.state()["status"] == "error"
    assert len(ws_helper.connections) == 1

    if isinstance(second, WebSocketTestHelper):
        second.wait_for_connection_status("connected")
        second.wait_for_auth_status("Authenticated")
        assert len(second.connections) == 1
        second.cleanup()
        second.check_frames()
    else:
        assert not second.closed
        assert second.ping()["type"] == "pong"
    info = faults.client_info(ws_helper.client_id)
    assert info["connected"] and info["authenticated"]
