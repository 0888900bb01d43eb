"""The chat threads panel: list, create, open, and new messages arriving live."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import expect

from tests.browser.conftest import TIMEOUT_S, VALID_KEY, ClientPage, OtherClient, unique_id


def test_create_open_and_follow_a_thread_live(client_page: ClientPage, other_client: OtherClient) -> None:
    client_page.open()
    client_page.authenticate()
    title = unique_id("Release planning")

    client_page.by("thread-title-input").fill(title)
    client_page.by("create-thread-button").click()

    expect(client_page.by("thread-item").filter(has_text=title)).to_have_count(1)
    expect(client_page.by("thread-view")).to_be_visible()
    expect(client_page.by("thread-title")).to_have_text(title)
    thread_id = client_page.state()["threads"]["openId"]
    channel = f"thread:{thread_id}"
    client_page.expect_subscribed(channel)

    other_client.publish(channel, "First!")
    thread_messages = client_page.by("thread-messages").get_by_test_id("thread-message")
    expect(thread_messages).to_have_count(1)
    expect(thread_messages.first).to_contain_text("First!")

    response = httpx.post(
        f"{client_page.server.http_url}/api/chat/threads/{thread_id}/messages",
        json={"content": "Posted over REST"},
        headers={"X-API-Key": VALID_KEY},
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 201, response.text
    expect(thread_messages).to_have_count(2)
    expect(thread_messages.nth(1)).to_contain_text("Posted over REST")

    client_page.by("thread-message-input").fill("Reply from the page")
    client_page.by("thread-post-button").click()
    expect(thread_messages).to_have_count(3)
    expect(thread_messages.nth(2)).to_have_attribute("data-state", "delivered")
    # Thread traffic stays in the thread view, out of the main message log.
    expect(client_page.message_items()).to_have_count(0)


def create_thread_over_rest(client_page: ClientPage, title: str) -> dict[str, Any]:
    """A thread made by someone else, through the REST API."""
    response = httpx.post(
        f"{client_page.server.http_url}/api/chat/threads",
        json={"title": title},
        headers={"X-API-Key": VALID_KEY},
        timeout=TIMEOUT_S,
    )
    assert response.status_code == 201, response.text
    thread: dict[str, Any] = response.json()
    return thread


def test_opening_an_existing_thread_shows_its_history(client_page: ClientPage) -> None:
    base = client_page.server.http_url
    headers = {"X-API-Key": VALID_KEY}
    title = unique_id("Older thread")
    thread = create_thread_over_rest(client_page, title)
    for text in ("one", "two"):
        httpx.post(f"{base}/api/chat/threads/{thread['id']}/messages", json={"content": text}, headers=headers, timeout=TIMEOUT_S)
    client_page.open()
    client_page.authenticate()

    client_page.by("thread-item").filter(has_text=title).get_by_test_id("thread-open-button").click()

    thread_messages = client_page.by("thread-messages").get_by_test_id("thread-message")
    expect(thread_messages).to_have_count(2)
    expect(thread_messages.nth(0)).to_contain_text("one")
    expect(thread_messages.nth(1)).to_contain_text("two")
    client_page.expect_subscribed(f"thread:{thread['id']}")
    (subscribe,) = client_page.frames_sent("subscribe")
    assert subscribe["data"] == {"channel": f"thread:{thread['id']}", "since_seq": 2}


def test_a_thread_created_elsewhere_joins_the_list_live_once(client_page: ClientPage) -> None:
    client_page.open()
    client_page.authenticate()
    expect(client_page.by("threads-note")).not_to_have_text("Loading threads")
    title = unique_id("Made over REST")
    create_thread_over_rest(client_page, title)
    # No refresh: the server's thread_created message adds it, and only once.
    expect(client_page.by("thread-item").filter(has_text=title)).to_have_count(1)
    client_page.by("threads-refresh-button").click()
    expect(client_page.by("threads-note")).not_to_have_text("Loading threads")
    expect(client_page.by("thread-item").filter(has_text=title)).to_have_count(1)


def test_a_thread_announced_while_the_list_loads_survives_the_older_list(client_page: ClientPage) -> None:
    """The list request was answered before the thread existed; its late answer must not drop it."""
    held: list[tuple[Any, Any]] = []

    def hold_list(route: Any) -> None:
        if route.request.method != "GET":
            route.continue_()
            return
        held.append((route, route.fetch()))  # answered now, delivered to the page later

    client_page.page.route("**/api/chat/threads", hold_list)
    client_page.open()
    with client_page.page.expect_request("**/api/chat/threads"):
        client_page.authenticate()
    expect(client_page.by("threads-note")).to_have_text("Loading threads")
    title = unique_id("Announced mid-load")
    create_thread_over_rest(client_page, title)
    entry = client_page.by("thread-item").filter(has_text=title)
    expect(entry).to_have_count(1)
    assert len(held) == 1
    route, stale = held[0]
    route.fulfill(response=stale)
    expect(client_page.by("threads-note")).not_to_have_text("Loading threads")
    expect(entry).to_have_count(1)
