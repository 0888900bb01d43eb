"""Delivery across failures: resubscription, the offline queue, operation timeouts, half-open links.

Depths: server (the ``/__harness`` fault control closes sockets, rejects or
holds handshakes, drops or delays the server's frames); the other parties are
real protocol clients (``ws_client``).  Time: the page's, virtual.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import expect

from e2e.ui import authenticated, channel_messages, message_items
from harness import FaultControl, NovaClient, WebSocketTestHelper

WsClient = Callable[..., NovaClient]


def test_resubscribe_after_reconnect_leaves_no_gap_and_no_duplicate(
    ws_helper: WebSocketTestHelper, ws_client: WsClient, channel: str
) -> None:
    """Others publish before, during and while the page comes back: it sees every message once.

    Depth: server (the live socket is failed with 1011 and handshakes are
    rejected during the outage; then the page reconnects by itself).
    """
    authenticated(ws_helper)
    ws_helper.subscribe(channel)
    ws_helper.expect_frame("subscribed", match={"channel": channel})
    alice, bob = ws_client(), ws_client()
    for i in range(1, 4):
        alice.publish(channel, f"before {i}")
    expect(message_items(ws_helper, channel)).to_have_count(3)

    ws_helper.set_connection_status("error")
    for i in range(1, 6):
        alice.publish(channel, f"during {i}")
    # Bob keeps publishing while the page reconnects, re-authenticates and resubscribes.
    with ThreadPoolExecutor(1) as pool:
        live = pool.submit(lambda: [bob.publish(channel, f"live {i}") for i in range(1, 21)])
        ws_helper.set_connection_status("connected")
        ws_helper.wait_for_auth_status("Authenticated")
        live.result(timeout=30)
    for i in range(1, 3):
        alice.publish(channel, f"after {i}")

    items = message_items(ws_helper, channel)
    expect(items).to_have_count(30)
    resubscribe = ws_helper.expect_frame(
        "subscribe", direction="sent", match={"channel": channel, "since_seq": 3}
    )
    assert (
        ws_helper.expect_frame("subscribed", match={"channel": channel})["id"] == resubscribe["id"]
    )
    seqs = [m["seq"] for m in channel_messages(ws_helper, channel)]
    assert seqs == list(range(1, 31)), "the server sent a gap or a duplicate"
    assert [int(s) for s in items.evaluate_all("els => els.map(e => e.dataset.seq)")] == list(
        range(1, 31)
    )
    contents = items.get_by_test_id("message-content").all_inner_texts()
    assert contents[:8] == [
        *(f"before {i}" for i in range(1, 4)),
        *(f"during {i}" for i in range(1, 6)),
    ]
    assert [c for c in contents if c.startswith("live")] == [f"live {i}" for i in range(1, 21)]
    assert contents[-2:] == ["after 1", "after 2"]


def test_offline_queue_is_flushed_once_after_reconnect(
    ws_helper: WebSocketTestHelper, ws_client: WsClient, faults: FaultControl, channel: str
) -> None:
    """Messages typed while offline wait in the queue; one in flight at the drop is resent, not duplicated.

    Depth: server (the confirmation of one publish is dropped, then the socket
    is failed; the next socket is closed cleanly with further handshakes held
    while the user types).
    """
    authenticated(ws_helper)
    spy = ws_client()
    spy.subscribe(channel)

    # In flight when the connection drops: sent, stored and fanned out, unconfirmed.
    faults.drop(ws_helper.client_id, types=["delivery_confirmation"], count=1)
    ws_helper.publish(channel, "in flight")
    in_flight = ws_helper.expect_frame("publish", direction="sent", match={"content": "in flight"})
    spy.expect("channel_message", match={"content": "in flight"})
    ws_helper.set_connection_status("disconnected")

    for text in ("offline 1", "offline 2", "offline 3"):
        ws_helper.publish(channel, text)
    items = message_items(ws_helper, channel)
    expect(items.and_(ws_helper.page.locator('[data-queued="true"]'))).to_have_count(4)
    expect(ws_helper.page.get_by_test_id("offline-queue")).to_have_text(
        "4 messages queued until reconnected"
    )
    assert len(ws_helper.journal.find("publish", direction="sent")) == 1

    ws_helper.set_connection_status("connected")
    ws_helper.wait_for_auth_status("Authenticated")

    expect(items.and_(ws_helper.page.locator('[data-state="delivered"]'))).to_have_count(4)
    expect(ws_helper.page.get_by_test_id("offline-queue")).to_be_hidden()
    resent = ws_helper.journal.messages("sent", "publish")
    assert [m["data"]["content"] for m in resent] == [
        "in flight",
        "in flight",
        "offline 1",
        "offline 2",
        "offline 3",
    ]
    assert resent[1]["id"] == in_flight["id"], "the in-flight publish must be resent with its id"
    for text in ("offline 1", "offline 2", "offline 3"):
        spy.expect("channel_message", match={"content": text})
    spy.expect_nothing("channel_message", within=0.3)


@pytest.mark.parametrize(
    ("operation", "reply"), [("subscribe", "subscribed"), ("publish", "delivery_confirmation")]
)
def test_operation_timeout_is_shown_and_reported(
    ws_helper: WebSocketTestHelper, faults: FaultControl, channel: str, operation: str, reply: str
) -> None:
    """The server's reply never comes: after exactly 5000 ms the operation fails, visibly.

    Depth: server (the reply is dropped by a ``drop`` rule on the server's
    outbound frames; the request itself reaches the server).
    """
    authenticated(ws_helper)
    faults.drop(ws_helper.client_id, types=[reply])

    if operation == "subscribe":
        ws_helper.subscribe(channel)
    else:
        ws_helper.publish(channel, "nobody confirms this")
    sent = ws_helper.expect_frame(operation, direction="sent")
    timeout_ms = ws_helper.state()["pendingOperations"][0]["timeoutMs"]
    assert timeout_ms == 5000

    ws_helper.advance_clock(timeout_ms - 1)
    assert [op["id"] for op in ws_helper.state()["pendingOperations"]] == [sent["id"]]
    ws_helper.advance_clock(1)

    text = f"Operation {operation} timed out after {timeout_ms} ms"
    ws_helper.wait_for_error_details(text)
    if operation == "subscribe":
        row = ws_helper.page.get_by_test_id(ws_helper.config.test_ids.channel_list).locator(
            f'[data-channel="{channel}"]'
        )
        expect(row).to_have_attribute("data-state", "failed")
    else:
        item = message_items(ws_helper, channel)
        expect(item).to_have_attribute("data-state", "failed")
        expect(item.get_by_test_id("message-error")).to_have_text(text)
    report = ws_helper.expect_frame("client_error", direction="sent", match={"message": text})
    assert report["data"]["context"]["operation_id"] == sent["id"]
    ws_helper.expect_no_frame(reply, within=0.2)


@pytest.mark.parametrize("fault", ["drop-pong", "delay-everything"])
def test_half_open_connection_is_detected_by_the_heartbeat(
    ws_helper: WebSocketTestHelper, faults: FaultControl, fault: str
) -> None:
    """The server stops answering; 10 s after a ping the page declares the link dead and reconnects.

    Depth: server (its ``pong`` replies are dropped, or every outbound frame
    is held back ten minutes: the socket stays open but silent, as a
    half-open TCP connection looks from the browser).
    """
    authenticated(ws_helper)
    heartbeat = ws_helper.state()["heartbeat"]
    interval, dead_after = heartbeat["intervalMs"], heartbeat["timeoutMs"]
    assert (interval, dead_after) == (25_000, 10_000)

    # Healthy: a ping, answered.
    ws_helper.advance_clock(interval)
    ws_helper.expect_frame("ping", direction="sent")
    ws_helper.expect_frame("pong")
    ws_helper.wait_for_state("!s.heartbeat.awaitingReply", "the pong to clear the heartbeat wait")
    ws_helper.advance_clock(dead_after)
    ws_helper.wait_for_connection_status("connected")

    if fault == "drop-pong":
        faults.drop(ws_helper.client_id, types=["pong"])
    else:
        faults.delay(ws_helper.client_id, ms=600_000)
    ws_helper.advance_clock(interval - dead_after)
    ws_helper.expect_frame("ping", direction="sent")
    ws_helper.advance_clock(dead_after - 1)
    assert ws_helper.state()["status"] == "connected"
    ws_helper.advance_clock(1)

    text = f"No frame within {dead_after} ms after ping"
    ws_helper.wait_for_connection_status("disconnected")
    ws_helper.wait_for_error_details(text)
    ws_helper.wait_for_reconnect_info(1)
    assert len(ws_helper.connections) == 1

    ws_helper.set_connection_status("connected")
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.wait_for_reconnect_info(0)
    assert len(ws_helper.connections) == 2
    # The report made while the link was dead goes out once authenticated again.
    report = ws_helper.expect_frame("client_error", direction="sent")
    assert report["data"]["message"].startswith(text)
