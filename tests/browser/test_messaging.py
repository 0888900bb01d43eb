"""Publishing and receiving: delivery states, outages without gap or duplicate, the
offline queue, operation timeouts and server error frames.

Depth: server (/__harness closes and drops), a second client over python-websockets,
time: Playwright's clock where a timer matters.
"""

from __future__ import annotations

import json

import httpx
from playwright.sync_api import expect

from tests.browser.conftest import TIMEOUT_S, VALID_KEY, ClientPage, OtherClient, unique_id

# Channels unique to this run: the browser tests share one server per worker.
GENERAL = unique_id("general")
NEWS = unique_id("news")
QUEUE = unique_id("queue")
ELSEWHERE = unique_id("elsewhere")
ALPHA = unique_id("alpha")
BETA = unique_id("beta")
BIG = unique_id("big")


def test_a_publish_goes_from_pending_to_delivered_and_reaches_subscribers(
    client_page: ClientPage, other_client: OtherClient
) -> None:
    other_client.subscribe(GENERAL)
    client_page.open()
    client_page.authenticate()
    client_page.subscribe(GENERAL)
    client_page.expect_subscribed(GENERAL)

    client_page.publish("hello everyone")

    item = client_page.message_items(GENERAL)
    expect(item).to_have_count(1)  # our own echo is merged, not added
    expect(item).to_have_attribute("data-state", "delivered")
    expect(item.get_by_test_id("message-state")).to_have_text("delivered")
    expect(item).to_have_attribute("data-seq", "1")
    received = other_client.expect("channel_message", content="hello everyone")
    (publish,) = client_page.frames_sent("publish")
    assert received["data"]["message_id"] == publish["id"]
    assert received["data"]["sender"] == client_page.client_id


def test_no_gap_and_no_duplicate_after_an_outage(client_page: ClientPage, other_client: OtherClient) -> None:
    client_page.open(virtual_time=True, jitter="none")
    client_page.authenticate()
    client_page.subscribe(NEWS)
    client_page.expect_subscribed(NEWS)
    for text in ("m1", "m2"):
        other_client.publish(NEWS, text)
    expect(client_page.message_items(NEWS)).to_have_count(2)

    client_page.faults.close_socket(1012, "service restart")
    expect(client_page.by("connection-status")).to_have_text("disconnected")
    for text in ("m3", "m4", "m5"):  # published while the page is away
        other_client.publish(NEWS, text)
    client_page.advance_to_reconnect()

    items = client_page.message_items(NEWS)
    expect(items).to_have_count(5)
    expect(items.get_by_test_id("message-content")).to_have_text(["m1", "m2", "m3", "m4", "m5"])
    assert [items.nth(i).get_attribute("data-seq") for i in range(5)] == ["1", "2", "3", "4", "5"]
    _, resubscribe = client_page.wait_for_sent("subscribe", 2)
    assert resubscribe["data"] == {"channel": NEWS, "since_seq": 2}

    # A duplicate delivery (same message_id) is dropped.
    duplicate = next(m for m in client_page.frames_received("channel_message") if m["data"]["content"] == "m4")
    client_page.dispatch("websocket-message", duplicate)
    expect(items).to_have_count(5)
    ids = [items.nth(i).get_attribute("data-message-id") for i in range(5)]
    assert len(set(ids)) == 5


def test_publishes_made_offline_are_queued_and_sent_after_reauthentication(
    client_page: ClientPage, other_client: OtherClient
) -> None:
    other_client.subscribe(QUEUE)
    client_page.open(virtual_time=True, jitter="none")
    client_page.authenticate()
    client_page.subscribe(QUEUE)
    client_page.expect_subscribed(QUEUE)
    client_page.faults.close_socket(1011, "outage")
    expect(client_page.by("connection-status")).to_have_text("disconnected")

    client_page.publish("offline 1", channel=QUEUE)
    client_page.publish("offline 2", channel=QUEUE)

    items = client_page.message_items(QUEUE)
    expect(items).to_have_count(2)
    for i in range(2):
        expect(items.nth(i)).to_have_attribute("data-state", "pending")
        expect(items.nth(i).get_by_test_id("message-state")).to_have_text("pending")
        expect(items.nth(i)).to_have_attribute("data-queued", "true")
    expect(client_page.by("offline-queue")).to_have_text("2 messages queued until reconnected")
    assert client_page.frames_sent("publish") == []

    client_page.advance_to_reconnect()

    for i in range(2):
        expect(items.nth(i)).to_have_attribute("data-state", "delivered")
    expect(client_page.by("offline-queue")).to_be_hidden()
    first = other_client.expect("channel_message", content="offline 1")
    second = other_client.expect("channel_message", content="offline 2")
    assert first["data"]["seq"] < second["data"]["seq"]
    # Sent only after the second (re-)authentication.
    kinds = [m["type"] for m in (client_page.frames_sent("connect") + client_page.frames_sent("publish"))]
    assert kinds == ["connect", "connect", "publish", "publish"]
    sent = [_type(raw) for raw in client_page.sent]
    assert sent.index("publish") > [i for i, t in enumerate(sent) if t == "connect"][1]


def _type(raw: str) -> str:
    return str(json.loads(raw).get("type"))


def test_an_operation_timeout_is_shown_and_fails_the_operation(client_page: ClientPage) -> None:
    client_page.open(virtual_time=True)
    client_page.authenticate()
    client_page.faults.drop(["delivery_confirmation"])

    client_page.publish("into the void", channel=ELSEWHERE)
    client_page.wait_for_sent("publish")
    item = client_page.message_items(ELSEWHERE)
    expect(item).to_have_attribute("data-state", "pending")

    client_page.advance(4_999)
    expect(item).to_have_attribute("data-state", "pending")
    client_page.advance(1)

    expect(client_page.by("error-details")).to_contain_text("Operation publish timed out after 5000 ms")
    expect(item).to_have_attribute("data-state", "failed")
    expect(item.get_by_test_id("message-state")).to_have_text("failed")
    expect(item.get_by_test_id("message-error")).to_have_text("Operation publish timed out after 5000 ms")
    # The page reports its own error to the server.
    client_page.wait_for_sent("client_error", message="Operation publish timed out after 5000 ms")
    reports = httpx.get(
        f"{client_page.server.http_url}/api/client-errors",
        params={"client_id": client_page.client_id},
        headers={"X-API-Key": VALID_KEY},
        timeout=TIMEOUT_S,
    )
    assert "Operation publish timed out after 5000 ms" in [r["message"] for r in reports.json()]


def test_a_forbidden_publish_shows_the_server_error_with_its_code(client_page: ClientPage) -> None:
    client_page.open()
    client_page.authenticate()  # valid-test-key: read, write; announcements needs admin

    client_page.publish("to everyone", channel="announcements")

    item = client_page.message_items("announcements")
    expect(item).to_have_attribute("data-state", "failed")
    expect(item.get_by_test_id("message-error")).to_contain_text("requires the 'admin' permission")
    entry = client_page.by("error-entry").first
    expect(entry.get_by_test_id("error-code")).to_have_text("forbidden")
    expect(client_page.by("error-details")).to_contain_text("forbidden: publish on 'announcements'")


def test_subscribe_and_unsubscribe_through_the_ui(client_page: ClientPage) -> None:
    client_page.open()
    client_page.authenticate()
    client_page.subscribe(ALPHA)
    client_page.subscribe(BETA)
    client_page.expect_subscribed(ALPHA)
    client_page.expect_subscribed(BETA)
    expect(client_page.by("channel-item")).to_have_count(2)

    client_page.by("channel-list").locator(f'[data-channel="{ALPHA}"]').get_by_test_id("unsubscribe-button").click()

    expect(client_page.by("channel-item")).to_have_count(1)
    client_page.wait_for_sent("unsubscribe", channel=ALPHA)
    client_page.subscribe("Not A Channel")
    expect(client_page.by("error-details")).to_contain_text('Invalid channel name "Not A Channel"')


def test_a_message_over_the_servers_limit_fails_instead_of_being_resent(client_page: ClientPage) -> None:
    """The server closes with 1009; the page reconnects but does not send the message again."""
    client_page.open(virtual_time=True, jitter="none")
    client_page.authenticate()
    limit = client_page.server.settings.max_message_bytes

    client_page.page.evaluate("([ch, n]) => window.__novaWs.publish(ch, 'x'.repeat(n))", [BIG, limit + 1])
    client_page.publish("small and fine", channel=BIG)

    expect(client_page.by("connection-status")).to_have_text("disconnected")
    closes = [e for e in client_page.state()["errors"] if e["source"] == "close"]
    assert closes[0]["code"] == 1009
    client_page.advance_to_reconnect()
    expect(client_page.by("auth-status")).to_have_text("Authenticated")

    big, small = client_page.message_items(BIG).all()
    expect(big).to_have_attribute("data-state", "failed")
    expect(big.get_by_test_id("message-error")).to_contain_text("Message too big")
    expect(small).to_have_attribute("data-state", "delivered")
    client_page.advance(20_000)
    expect(client_page.by("connection-status")).to_have_text("connected")
    sizes = client_page.page.evaluate(
        "() => window.__novaTestSent.filter((r) => r.includes('\"type\":\"publish\"')).map((r) => r.length)"
    )
    assert len([n for n in sizes if n > limit]) == 1, "the oversized message was sent again"
