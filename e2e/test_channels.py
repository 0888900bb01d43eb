"""Channels, chat threads and error reporting, as the user sees them.

Depths: UI (the page refuses invalid names itself), message (a Playwright
route rewrites a frame on its way to the server), server (the server's own
access control; REST calls from another party).  Time: the page's, virtual.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from playwright.sync_api import expect

from e2e.ui import authenticated, by, channel_row
from harness import FaultControl, Frame, NovaClient, WebSocketTestHelper

WsClient = Callable[..., NovaClient]


def test_invalid_channel_names_are_refused_by_the_page(ws_helper: WebSocketTestHelper) -> None:
    """Names that break the channel pattern never leave the page. Depth: UI."""
    authenticated(ws_helper)

    ws_helper.subscribe("Not Valid!")
    ws_helper.wait_for_error_details('Invalid channel name "Not Valid!"')
    ws_helper.publish("Nope Either", "hello")
    ws_helper.wait_for_error_details('Cannot publish: invalid channel name "Nope Either"')

    expect(by(ws_helper, "channel-item")).to_have_count(0)
    assert ws_helper.journal.find("subscribe", direction="sent") == []
    assert ws_helper.journal.find("publish", direction="sent") == []


def test_a_server_validation_error_is_shown_on_the_subscription(
    ws_helper: WebSocketTestHelper, channel: str
) -> None:
    """The server refuses a channel name: ``validation_error`` reaches the UI.

    Depth: message. The page only sends valid names, so a route interceptor
    rewrites the channel of its ``subscribe`` on the way to the server (the
    journal keeps what the page sent; the server answers what it received).
    """
    authenticated(ws_helper)

    def rename(frame: Frame) -> Sequence[str] | None:
        if frame.direction != "sent" or frame.type != "subscribe":
            return None
        message = dict(frame.message or {})
        message["data"] = {**message["data"], "channel": "Not Valid!"}
        return [json.dumps(message)]

    ws_helper.journal.interceptors.append(rename)
    ws_helper.subscribe(channel)

    sent = ws_helper.expect_frame("subscribe", direction="sent", match={"channel": channel})
    error = ws_helper.expect_frame(
        "error", match={"code": "validation_error", "operation_id": sent["id"]}
    )
    assert error["data"]["details"]["channel"] == "Not Valid!"
    ws_helper.wait_for_error_details("validation_error: invalid channel name")
    expect(channel_row(ws_helper, channel)).to_have_attribute("data-state", "failed")
    expect(channel_row(ws_helper, channel)).to_contain_text("invalid channel name")


def test_forbidden_channels_are_shown_as_such(ws_helper: WebSocketTestHelper) -> None:
    """The test key (read, write) may not use ``admin:*`` nor publish to ``announcements``.

    Depth: server (its access control, no fault).
    """
    authenticated(ws_helper)
    admin_channel = f"admin:{uuid.uuid4().hex[:12]}"

    ws_helper.subscribe(admin_channel)
    ws_helper.expect_frame(
        "error", match={"code": "forbidden", "details": {"channel": admin_channel}}
    )
    ws_helper.wait_for_error_details(
        f"forbidden: subscribe on '{admin_channel}' requires the 'admin' permission"
    )
    expect(channel_row(ws_helper, admin_channel)).to_have_attribute("data-state", "failed")

    ws_helper.publish("announcements", "hello everyone")
    ws_helper.expect_frame(
        "error",
        match={"code": "forbidden", "details": {"channel": "announcements", "action": "publish"}},
    )
    item = by(ws_helper, ws_helper.config.test_ids.message_log).locator(
        '[data-channel="announcements"]'
    )
    expect(item).to_have_attribute("data-state", "failed")
    expect(item.get_by_test_id("message-error")).to_contain_text("requires the 'admin' permission")

    # Reading announcements is allowed.
    ws_helper.subscribe("announcements")
    ws_helper.expect_frame("subscribed", match={"channel": "announcements"})
    expect(channel_row(ws_helper, "announcements")).to_have_attribute("data-state", "subscribed")


def test_chat_threads_created_over_rest_appear_and_follow_live(
    ws_helper: WebSocketTestHelper, ws_client: WsClient, rest: Any
) -> None:
    """A thread made over REST by someone else shows up; its messages arrive live, both ways.

    Depth: server (REST calls and a protocol client as the other parties; no fault).
    """
    authenticated(ws_helper)
    title = f"e2e thread {uuid.uuid4().hex[:8]}"
    thread = rest.post("/api/chat/threads", {"title": title})
    assert thread["channel"] == f"thread:{thread['id']}"

    # Live: the server announces it (thread_created) and the list updates without a refresh.
    ws_helper.expect_frame("thread_created", match={"id": thread["id"]})
    entry = by(ws_helper, "thread-item").filter(has_text=title)
    expect(entry).to_have_count(1)
    entry.get_by_test_id("thread-open-button").click()
    ws_helper.expect_frame("subscribed", match={"channel": thread["channel"]})
    expect(by(ws_helper, "thread-title")).to_have_text(title)

    rest.post(f"/api/chat/threads/{thread['id']}/messages", {"content": "posted over REST"})
    other = ws_client()
    other.subscribe(thread["channel"])
    other.publish(thread["channel"], "published over the socket")
    messages = by(ws_helper, "thread-messages").get_by_test_id("thread-message")
    expect(messages).to_have_count(2)
    expect(messages.get_by_test_id("message-content")).to_have_text(
        ["posted over REST", "published over the socket"]
    )

    by(ws_helper, "thread-message-input").fill("a reply from the page")
    by(ws_helper, "thread-post-button").click()
    ws_helper.expect_frame("delivery_confirmation")
    assert (
        other.expect("channel_message", match={"content": "a reply from the page"})["data"][
            "sender"
        ]
        == ws_helper.client_id
    )
    stored = rest.get(f"/api/chat/threads/{thread['id']}")
    assert [m["content"] for m in stored["messages"]] == [
        "posted over REST",
        "published over the socket",
        "a reply from the page",
    ]


def test_a_thread_created_in_the_page_is_visible_over_rest(
    ws_helper: WebSocketTestHelper, rest: Any
) -> None:
    """The page's Create button makes a real thread, and opens it. Depth: none."""
    authenticated(ws_helper)
    title = f"from the page {uuid.uuid4().hex[:8]}"

    by(ws_helper, "thread-title-input").fill(title)
    by(ws_helper, "create-thread-button").click()

    expect(by(ws_helper, "thread-title")).to_have_text(title)
    created = next(t for t in rest.get("/api/chat/threads") if t["title"] == title)
    ws_helper.expect_frame("subscribed", match={"channel": created["channel"]})


def test_client_errors_reach_the_server(
    ws_helper: WebSocketTestHelper, rest: Any, channel: str
) -> None:
    """An uncaught page error is reported with ``client_error``, also when it happens offline.

    Depth: server (a clean close with handshakes held for the offline part).
    """
    authenticated(ws_helper)
    marker = uuid.uuid4().hex[:8]

    ws_helper.page.add_script_tag(content=f"throw new Error('e2e online {marker}')")
    report = ws_helper.expect_frame(
        "client_error",
        direction="sent",
        match=lambda m: f"e2e online {marker}" in m["data"]["message"],
    )
    ws_helper.set_connection_status("disconnected")
    ws_helper.page.add_script_tag(content=f"throw new Error('e2e offline {marker}')")
    ws_helper.set_connection_status("connected")
    ws_helper.wait_for_auth_status("Authenticated")
    queued = ws_helper.expect_frame(
        "client_error",
        direction="sent",
        match=lambda m: f"e2e offline {marker}" in m["data"]["message"],
    )
    # The server handles one connection's frames in order: once this subscription is
    # answered, the report sent before it is stored.
    ws_helper.subscribe(channel)
    ws_helper.expect_frame("subscribed", match={"channel": channel})

    stored = rest.get("/api/client-errors", client_id=ws_helper.client_id)
    messages = [e["message"] for e in stored]
    assert report["data"]["message"] in messages
    assert queued["data"]["message"] in messages
    assert all(e["client_id"] == ws_helper.client_id for e in stored)


@pytest.mark.ws_allow_invalid_frames
def test_a_malformed_server_frame_is_shown_and_reported(
    ws_helper: WebSocketTestHelper, faults: FaultControl, rest: Any, channel: str
) -> None:
    """The server sends text that is not JSON: the page says so and reports it; the journal flags it.

    Depth: server (a raw frame pushed on the live socket).  The frame breaks the
    protocol on purpose, hence ``ws_allow_invalid_frames``.
    """
    authenticated(ws_helper)

    faults.push_raw(ws_helper.client_id, "this is not JSON")

    ws_helper.wait_for_error_details("Received a frame that is not JSON")
    report = ws_helper.expect_frame(
        "client_error", direction="sent", match=lambda m: "not JSON" in m["data"]["message"]
    )
    assert report["data"]["context"]["frame"] == "this is not JSON"
    [violation] = ws_helper.journal.violations()
    assert violation.frame.raw == "this is not JSON" and violation.frame.direction == "received"
    ws_helper.wait_for_connection_status("connected")
    # In-order handling on the server: once subscribed, the report is stored.
    ws_helper.subscribe(channel)
    ws_helper.expect_frame("subscribed", match={"channel": channel})
    stored = rest.get("/api/client-errors", client_id=ws_helper.client_id)
    assert any("not JSON" in e["message"] for e in stored)
