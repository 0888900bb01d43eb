"""The page under load: while other clients load the server, its messages arrive and its reconnect works.

Depths: server (``ws_faults.close`` fails the page's live socket with 1011)
and a background load (``ws_load``: a fanout of its own on another channel,
real authenticated protocol clients).  Time: the page's, virtual.
"""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from e2e.ui import authenticated, channel_messages, message_items
from harness import Faults, NovaClient, WebSocketTestHelper
from harness.load import LoadRuns

WsClient = Callable[..., NovaClient]


def test_the_page_gets_every_message_and_reconnects_while_the_server_is_under_load(
    ws_helper: WebSocketTestHelper, ws_faults: Faults, ws_client: WsClient, ws_load: LoadRuns, channel: str
) -> None:
    """Ten subscribers and a publisher load the server; the page's channel stays gap-free across a reconnect."""
    load = ws_load("fanout", subscribers=10, rate=40)
    authenticated(ws_helper)
    ws_helper.subscribe(channel)
    ws_helper.expect_frame("subscribed", match={"channel": channel})
    alice = ws_client()
    for i in range(1, 6):
        alice.publish(channel, f"before {i}")
    expect(message_items(ws_helper, channel)).to_have_count(5)

    ws_faults.close(1011, "boom")
    ws_helper.wait_for_reconnect_info(1)
    ws_helper.advance_to_next_reconnect()
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.expect_frame("subscribed", match={"channel": channel, "last_seq": 5})
    for i in range(1, 6):
        alice.publish(channel, f"after {i}")
    expect(message_items(ws_helper, channel)).to_have_count(10)
    assert [m["seq"] for m in channel_messages(ws_helper, channel)] == list(range(1, 11))

    result = load.stop()
    total = result.total
    assert result.aborted is None, result.aborted
    assert total.counter("delivered") > 0, result.headline()
    assert (total.counter("lost"), total.counter("duplicated")) == (0, 0), result.headline()
