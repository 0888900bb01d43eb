"""Message faults on the page's own socket, as the browser and its UI see them.

Depth: message (``ws_faults`` rules applied by the frame journal's
pass-through ``page.route_web_socket``: frames are dropped, duplicated,
delayed, held or injected between the page and the server; the socket stays
open and its closes clean).  The journal records what each side *sent*; a
rule decides what the other side gets.  Time: the page's, virtual; rule
delays run in real time.
"""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from e2e.ui import authenticated, channel_row, message_items
from harness import Faults, NovaClient, WebSocketTestHelper
from reference_server.protocol import now_iso

WsClient = Callable[..., NovaClient]


def subscribed(ws_helper: WebSocketTestHelper, channel: str) -> None:
    """Subscribe through the UI and wait until the page shows the subscription."""
    ws_helper.subscribe(channel)
    expect(channel_row(ws_helper, channel)).to_have_attribute("data-state", "subscribed")


def test_a_dropped_delivery_confirmation_times_the_publish_out(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, channel: str
) -> None:
    """The server confirms, the page never hears it: 5000 ms later the publish fails, visibly.

    Depth: message (``drop``: the confirmation reaches the route, which
    forwards nothing).  The page is not subscribed to the channel, so no echo
    of its own message confirms it either.
    """
    authenticated(ws_helper)
    dropped = ws_faults.drop("delivery_confirmation", count=1)

    ws_helper.publish(channel, "nobody hears back")
    publish = ws_helper.expect_frame("publish", direction="sent")
    # The server did confirm (the journal records what the server sent) ...
    ws_helper.expect_frame("delivery_confirmation", match={"message_id": publish["id"]})
    assert dropped.applied == 1
    assert "1/1 applied" in str(dropped)
    # ... but the page still waits for it, until its operation timeout.
    item = message_items(ws_helper, channel)
    expect(item).to_have_attribute("data-state", "pending")
    timeout_ms = ws_helper.state()["operationTimeoutMs"]
    assert timeout_ms == 5000
    ws_helper.advance_clock(timeout_ms)

    text = "Operation publish timed out after 5000 ms"
    ws_helper.wait_for_error_details(text)
    expect(item).to_have_attribute("data-state", "failed")
    expect(item.get_by_test_id("message-error")).to_have_text(text)
    ws_helper.expect_frame("client_error", direction="sent", match={"message": text})
    ws_helper.wait_for_connection_status("connected")


def test_a_duplicated_channel_message_is_shown_once(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, ws_client: WsClient, channel: str
) -> None:
    """Every channel message arrives twice; the page deduplicates by ``message_id``.

    Depth: message (``duplicate``: the route forwards each of the next three
    ``channel_message`` frames twice, back to back).
    """
    authenticated(ws_helper)
    subscribed(ws_helper, channel)
    other = ws_client()
    doubled = ws_faults.duplicate("channel_message", count=3)

    contents = ["one", "two", "three"]
    for text in contents:
        other.publish(channel, text)
    items = message_items(ws_helper, channel)
    expect(items).to_have_count(3)
    ws_helper.wait_for_state("s.messages.length === 3", "three messages in the store")
    assert doubled.applied == 3

    # A fourth, not duplicated, message arrives after the copies: nothing else was added.
    other.publish(channel, "four")
    expect(items.get_by_test_id("message-content")).to_have_text([*contents, "four"])
    assert doubled.applied == 3
    assert [int(s) for s in items.evaluate_all("els => els.map(e => e.dataset.seq)")] == [1, 2, 3, 4]


def test_a_delayed_confirmation_keeps_the_message_pending_meanwhile(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, channel: str
) -> None:
    """The confirmation is journaled (the server sent it) while the page still shows pending.

    Depth: message (``delay``: the route forwards confirmations 800 ms later,
    real time, on Playwright's loop).
    """
    authenticated(ws_helper)
    item = message_items(ws_helper, channel)
    with ws_faults.delay(800, type="delivery_confirmation") as delayed:
        ws_helper.publish(channel, "a little late")
        ws_helper.expect_frame("delivery_confirmation")
        assert delayed.applied == 1
        expect(item).to_have_attribute("data-state", "pending")
        expect(item).to_have_attribute("data-state", "delivered", timeout=5000)


def test_a_stall_holds_the_pages_frames_and_releases_them_in_order(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, ws_client: WsClient, channel: str
) -> None:
    """Stalled to the server: the page's publishes go nowhere until undone, then in order.

    Depth: message (``stall``: the route holds every frame the page sends; the
    socket stays open, so the page sees no failure, only silence).
    """
    authenticated(ws_helper)
    spy = ws_client()
    spy.subscribe(channel)
    stall = ws_faults.stall(direction="to_server")

    contents = ["held 1", "held 2", "held 3"]
    for text in contents:
        ws_helper.publish(channel, text)
    for text in contents:
        ws_helper.expect_frame("publish", direction="sent", match={"content": text})
    assert stall.applied == 3
    items = message_items(ws_helper, channel)
    expect(items.and_(ws_helper.page.locator('[data-state="pending"]'))).to_have_count(3)
    spy.expect_nothing("channel_message", within=0.3)

    stall.undo()
    expect(items.and_(ws_helper.page.locator('[data-state="delivered"]'))).to_have_count(3)
    assert [spy.expect("channel_message")["data"]["content"] for _ in contents] == contents


def test_an_injected_frame_is_shown_as_if_the_server_had_sent_it(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, channel: str
) -> None:
    """A ``channel_message`` the server never sent, injected on the live socket, is rendered.

    Depth: message (``inject``: the route sends the frame to the page; the
    server knows nothing of it).
    """
    authenticated(ws_helper)
    subscribed(ws_helper, channel)
    message = {
        "type": "channel_message",
        "data": {
            "channel": channel,
            "seq": 1,
            "message_id": "injected-1",
            "sender": "nobody",
            "content": "from nowhere",
            "sent_at": now_iso(),
        },
        "timestamp": now_iso(),
        "client_id": ws_helper.client_id,
    }
    handle = ws_faults.inject(message)
    assert not handle.active and ws_faults.active == []

    items = message_items(ws_helper, channel)
    expect(items.get_by_test_id("message-content")).to_have_text(["from nowhere"])
    assert ws_helper.expect_frame("channel_message")["data"]["message_id"] == "injected-1"
