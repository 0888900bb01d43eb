"""Network faults on the page's own WebSocket, through the fault proxy, as the browser sees them.

Depth: network (``ws_faults`` toxics in the fault proxy the page loads
through: they act on bytes, never on messages, and target only this test's
socket).  Time: the page's, virtual (heartbeat, backoff and operation
timeouts fire only when the test advances the clock); network delays run in
real time.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable

from playwright.sync_api import expect

from e2e.ui import authenticated, channel_messages, channel_row, error_codes, message_items
from harness import Faults, Frame, NovaClient, WebSocketTestHelper

WsClient = Callable[..., NovaClient]


def subscribed(ws_helper: WebSocketTestHelper, channel: str) -> None:
    """Subscribe through the UI and wait until the page shows the subscription."""
    ws_helper.subscribe(channel)
    expect(channel_row(ws_helper, channel)).to_have_attribute("data-state", "subscribed")


def round_trip_s(ws_helper: WebSocketTestHelper, request: Frame, reply_type: str) -> float:
    """Seconds between the page sending ``request`` and receiving its reply (journal times)."""
    reply = ws_helper.journal.wait_for(
        lambda f: f.direction == "received"
        and f.type == reply_type
        and (f.message or {}).get("data", {}).get("message_id") == (request.message or {}).get("id"),
        f"the {reply_type} of {request.type} {(request.message or {}).get('id')}",
        timeout=10,
    )
    return reply.at - request.at


def sent_publish(ws_helper: WebSocketTestHelper, content: str) -> Frame:
    """The journal's frame of the page's publish of ``content``."""
    return ws_helper.journal.wait_for(
        lambda f: f.direction == "sent"
        and f.type == "publish"
        and (f.message or {}).get("data", {}).get("content") == content,
        f"the page to send the publish of {content!r}",
    )


def publish(ws_helper: WebSocketTestHelper, channel: str, content: str) -> Frame:
    """Publish through the UI; return the journal's frame of what the page sent."""
    ws_helper.publish(channel, content)
    return sent_publish(ws_helper, content)


def test_latency_makes_confirmations_late_but_in_order(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, channel: str
) -> None:
    """With 250 ms each way, three quick publishes are confirmed 500+ ms later, in publish order.

    Depth: network (``latency``: the proxy holds each chunk 250 ms in each
    direction, so a request and its reply each pay it).  The page shows the
    messages pending, then delivered in order.
    """
    authenticated(ws_helper)
    contents = ["first", "second", "third"]
    with ws_faults.latency(250) as latency:
        assert ws_faults.active == [latency]
        items = message_items(ws_helper, channel)
        ws_helper.publish(channel, contents[0])
        # A round trip takes 500 ms now: the message waits for its confirmation.
        expect(items.first).to_have_attribute("data-state", "pending")
        for text in contents[1:]:
            ws_helper.publish(channel, text)
        publishes = [sent_publish(ws_helper, text) for text in contents]
        expect(items).to_have_count(3)
        # Confirmed in the order published, each at least one round trip (2 x 250 ms) later.
        confirmations = [
            ws_helper.expect_frame("delivery_confirmation", timeout=10) for _ in contents
        ]
        assert [c["data"]["message_id"] for c in confirmations] == [
            (p.message or {})["id"] for p in publishes
        ]
        for publish in publishes:
            assert round_trip_s(ws_helper, publish, "delivery_confirmation") >= 0.5
    assert ws_faults.active == []

    expect(items.and_(ws_helper.page.locator('[data-state="delivered"]'))).to_have_count(3)
    assert items.get_by_test_id("message-content").all_inner_texts() == contents


def test_blackhole_is_detected_by_the_heartbeat_and_the_page_reconnects(
    ws_helper: WebSocketTestHelper, ws_faults: Faults
) -> None:
    """A half-open link: the ping gets no answer, 10 s later the page declares it dead.

    Depth: network (``blackhole``: the proxy holds every byte of the page's
    socket and closes nothing, so the browser's socket stays OPEN).  The
    blackhole also swallows the new connection, so the reconnect stays
    CONNECTING; once it is undone, the held handshake completes and the page
    re-authenticates by itself.  Time: virtual (ping at 25 s, dead 10 s later).
    """
    authenticated(ws_helper)
    heartbeat = ws_helper.state()["heartbeat"]
    interval, dead_after = heartbeat["intervalMs"], heartbeat["timeoutMs"]

    blackhole = ws_faults.blackhole()
    ws_helper.advance_clock(interval)
    ws_helper.expect_frame("ping", direction="sent")
    ws_helper.expect_no_frame("pong", within=0.3)
    ws_helper.advance_clock(dead_after - 1)
    ws_helper.wait_for_connection_status("connected")
    ws_helper.advance_clock(1)

    ws_helper.wait_for_connection_status("disconnected")
    ws_helper.wait_for_error_details(f"No frame within {dead_after} ms after ping: connection is dead")
    expect(error_codes(ws_helper).first).to_have_text("1006")
    ws_helper.wait_for_reconnect_info(1)

    # The new connection is swallowed too: its handshake never completes.
    ws_helper.advance_to_next_reconnect()
    ws_helper.wait_for_connection_status("connecting")
    assert len(ws_helper.connections) == 2
    ws_helper.expect_frame("connection_established")  # the first connection's
    ws_helper.expect_no_frame("connection_established", within=0.5)
    ws_helper.wait_for_connection_status("connecting")

    blackhole.undo()
    ws_helper.wait_for_connection_status("connected")
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.wait_for_reconnect_info(0)
    established = ws_helper.journal.find("connection_established")
    assert [f.connection for f in established] == [0, 1]


def test_reset_shows_1006_and_the_page_reconnects_and_resubscribes(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, ws_client: WsClient, channel: str
) -> None:
    """A TCP RST on the page's socket: the browser sees 1006 (no close frame), then comes back.

    Depth: network (``reset``: the proxy resets both TCP connections with
    SO_LINGER 0; it is a one-off, so the reconnection goes through).
    """
    authenticated(ws_helper)
    subscribed(ws_helper, channel)

    handle = ws_faults.reset()
    assert not handle.active and ws_faults.active == []

    ws_helper.wait_for_connection_status("disconnected")
    expect(error_codes(ws_helper).first).to_have_text("1006")
    ws_helper.wait_for_reconnect_info(1)
    history = ws_helper.state()["statusHistory"]
    assert "Closed with code 1006: Connection lost" in history[-1]["detail"]

    ws_helper.advance_to_next_reconnect()
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.wait_for_reconnect_info(0)
    ws_helper.expect_frame("subscribed", match={"channel": channel})
    ws_helper.expect_frame("subscribed", match={"channel": channel})
    expect(channel_row(ws_helper, channel)).to_have_attribute("data-state", "subscribed")
    ws_client().publish(channel, "after the reset")
    expect(message_items(ws_helper, channel).get_by_test_id("message-content")).to_have_text(
        ["after the reset"]
    )


def test_a_cut_mid_frame_reconnects_and_shows_no_corrupted_message(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, ws_client: WsClient, channel: str
) -> None:
    """The stream stops 100 bytes into a 4 KB frame: the browser drops the partial frame (1006).

    Depth: network (``limit_data``: the proxy forwards exactly 100 more bytes
    to the page, then closes with a FIN).  The page never shows the partial
    message; after reconnecting it resubscribes from its last seq and the
    server sends the message again, whole, once.
    """
    authenticated(ws_helper)
    subscribed(ws_helper, channel)
    other = ws_client()
    content = "".join(f"{i:04d}:é∑🙂;" for i in range(400))  # multi-byte UTF-8, 4.4 KB
    proxy = ws_helper.server.proxy
    assert proxy is not None

    with ws_faults.limit_data(100, direction="to_client"):
        mark = proxy.events[-1].seq
        other.publish(channel, content)
        cut = proxy.wait_for_event("cut", after=mark, timeout=5)
        assert cut.detail["at_boundary"] is False, cut
        ws_helper.wait_for_connection_status("disconnected")
        expect(error_codes(ws_helper).first).to_have_text("1006")
        assert channel_messages(ws_helper, channel) == []
        expect(message_items(ws_helper, channel)).to_have_count(0)
    # limit_data applies to every new connection of the page: undone before it reconnects.

    ws_helper.advance_to_next_reconnect()
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.expect_frame("subscribe", direction="sent", match={"channel": channel, "since_seq": 0})
    items = message_items(ws_helper, channel)
    expect(items).to_have_count(1)
    assert items.get_by_test_id("message-content").inner_text() == content
    assert [m["content"] for m in channel_messages(ws_helper, channel)] == [content]


def test_sliced_frames_arrive_intact(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, ws_client: WsClient, channel: str
) -> None:
    """Frames split into 1-9 byte pieces (UTF-8 sequences too) are reassembled, every one intact.

    Depth: network (``slice``: each read is written in pieces of 5 +- 4
    bytes, 1 ms apart, both ways; TCP makes no promise about boundaries, so a
    correct client must not care).
    """
    authenticated(ws_helper)
    subscribed(ws_helper, channel)
    other = ws_client()
    theirs = [f"message {i}: " + "ünïcødé ✓ 🙂 " * i for i in range(1, 6)]
    mine = ["from the page: naïve café 🙂", "and again ✓"]

    with ws_faults.slice(5, variation=4, delay_ms=1):
        for text in theirs:
            other.publish(channel, text)
        for text in mine:
            ws_helper.publish(channel, text)
        items = message_items(ws_helper, channel)
        expect(items).to_have_count(len(theirs) + len(mine), timeout=15_000)
        expect(items.and_(ws_helper.page.locator('[data-state="delivered"]'))).to_have_count(
            len(mine), timeout=15_000
        )

    shown = items.get_by_test_id("message-content").all_inner_texts()
    assert sorted(shown) == sorted(theirs + mine)
    assert [t for t in shown if t in theirs] == theirs, "the other party's messages out of order"
    assert [m["content"] for m in channel_messages(ws_helper, channel) if m["sender"] != ws_helper.client_id] == theirs


def test_3g_profile_makes_a_round_trip_measurably_slower(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, channel: str
) -> None:
    """Under ``profile("3g")`` a publish is confirmed at least 562 ms later than without it.

    Depth: network (``profile``: Chrome DevTools' Fast 3G preset as proxy
    toxics: 281.25 ms each way and 1440/675 kbit/s).
    """
    authenticated(ws_helper)

    baseline = min(  # the better of two, so one hiccup of a busy machine does not count
        round_trip_s(ws_helper, publish(ws_helper, channel, f"on loopback {i}"), "delivery_confirmation")
        for i in (1, 2)
    )

    with ws_faults.profile("3g") as profile:
        assert [str(h) for h in ws_faults.active] == [str(profile)]
        assert "3g" in str(profile) and profile.depth == "network"
        slow = round_trip_s(ws_helper, publish(ws_helper, channel, "over 3g"), "delivery_confirmation")
    assert ws_faults.active == []

    assert slow >= 2 * 0.28125, (baseline, slow)  # the profile's round trip, at least
    assert slow - baseline >= 0.4, (baseline, slow)


def test_bandwidth_limits_how_fast_a_large_publish_goes_out(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, channel: str
) -> None:
    """At 256 kbit/s up, a 40 000-character publish takes about a second to reach the server.

    Depth: network (``bandwidth``: the proxy lets 32 000 bytes a second
    through towards the server).  The content is random base64, so the
    browser's permessage-deflate cannot shrink it below 6 bits a character:
    at least 30 000 bytes cross the link.
    """
    authenticated(ws_helper)
    content = base64.b64encode(random.Random(ws_helper.seed).randbytes(30_000)).decode()
    assert len(content) == 40_000
    with ws_faults.bandwidth(256, direction="to_server"):
        ws_helper.publish(channel, content)
        slow = round_trip_s(ws_helper, sent_publish(ws_helper, content), "delivery_confirmation")
    assert slow >= 0.85, slow
    expect(message_items(ws_helper, channel)).to_have_attribute("data-state", "delivered")


def test_refused_connections_fail_each_attempt_until_undone(
    ws_helper: WebSocketTestHelper, ws_faults: Faults
) -> None:
    """Nothing accepts connections (like a server that is down): attempts fail until it is undone.

    Depth: network (``refuse_connections``: the proxy stops listening, so the
    browser's connect is refused; ``reset`` first ends the live socket).
    Note that this refuses every new connection to the worker's server, not
    only this page's.
    """
    authenticated(ws_helper)
    with ws_faults.refuse_connections():
        ws_faults.reset()
        ws_helper.wait_for_reconnect_info(1)
        for attempts in (2, 3):
            ws_helper.advance_to_next_reconnect()
            ws_helper.wait_for_reconnect_info(attempts)
        expect(error_codes(ws_helper).first).to_have_text("1006")
        assert len(ws_helper.connections) == 3

    ws_helper.advance_to_next_reconnect()
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.wait_for_reconnect_info(0)
