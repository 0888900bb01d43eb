"""The any-app suite: the harness on a page that is not Nova's (fixtures/apps/chat).

The chat app has no test hook, flat JSON frames (``{"type": "chat", "user", "text"}``),
text frames (``ping``/``pong``) and a ``setTimeout`` backoff of its own.  This
directory configures the harness for it the way another project would, with
settings only: the app in-process (``--ws-app``, so FaultMiddleware applies
server-depth faults).  ``external/`` runs the same app as a separate process
(``--ws-base-url``, faults through the fault proxy).
"""

from __future__ import annotations

import pytest

from harness import WsConfig

#: The settings another team would put in its ini file for this app.
CHAT_SETTINGS = {
    "ws_path": "/ws/{client_id}",
    "page_path": "/?client={client_id}",
    "test_ids": {
        "connection_status": "status",
        "reconnect_info": "retries",
        "error_details": "error",
        "message_input": "text",
        "publish_button": "send",
        "channel_input": "",
        "reconnect_button": "connect",
    },
    "reconnect_info_format": "Retries: {n}",
    "frame_schema": "sent=fixtures/apps/chat/schema-sent.json, received=fixtures/apps/chat/schema-received.json",
}


@pytest.fixture(scope="session")
def ws_config(ws_config: WsConfig) -> WsConfig:
    """The chat app, in-process."""
    return ws_config.replace(app="fixtures.apps.chat.app:app", **CHAT_SETTINGS)
