"""A foreign page under load (``--ws-app``, the generic protocol): it keeps chatting and reconnects.

Depths: server (FaultMiddleware closes the page's socket with 1011) and a
background load (``ws_load``: idle connections of the generic profile to the
app's own ``ws_path``).  Time: the page's, virtual.
"""

from __future__ import annotations

from harness import WebSocketTestHelper
from harness.load import LoadRuns


def test_the_page_chats_and_reconnects_while_the_app_holds_other_connections(
    ws_helper: WebSocketTestHelper, ws_load: LoadRuns
) -> None:
    load = ws_load("connections", clients=20)
    ws_helper.publish("ignored: the app has no channel input", "under load")
    ws_helper.expect_frame("chat", match={"user": "guest", "text": "under load"})

    ws_helper.faults.close(1011, "boom")
    ws_helper.wait_for_reconnect_info(1)
    assert ws_helper.advance_to_next_reconnect() == 500
    ws_helper.wait_for_socket_open()
    ws_helper.wait_for_connection_status("connected")
    ws_helper.publish("ignored", "after the reconnect")
    ws_helper.expect_frame("chat", match={"text": "after the reconnect"})

    result = load.stop()
    assert result.aborted is None, result.aborted
    assert result.total.counter("opened") == 20, result.headline()
    assert result.total.counter("closed_by_server") == 0, result.headline()
