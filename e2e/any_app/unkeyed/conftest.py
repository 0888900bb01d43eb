"""The chat app configured as an app whose URLs carry no client id, and whose page connects on a click.

``ws_path`` and ``ws_page_path`` have no ``{client_id}``: the page picks a
client id of its own, and the harness finds the test's socket by the
``nova_ws_client_id`` cookie it sets in the test's browser context.
``ws_wait_for_socket = false``: the page opens its socket only when Connect
is clicked.  A directory of its own, so a server of its own.
"""

from __future__ import annotations

import pytest

from harness import WsConfig

from ..conftest import CHAT_SETTINGS


@pytest.fixture(scope="session")
def ws_config(ws_config: WsConfig) -> WsConfig:
    """The chat app in-process, keyed by cookie, connecting on a click."""
    settings = {**CHAT_SETTINGS, "ws_path": "/ws/anyone", "page_path": "/?lazy=1", "wait_for_socket": False}
    return ws_config.replace(app="fixtures.apps.chat.app:app", **settings)
