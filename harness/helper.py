"""``WebSocketTestHelper``, kept at this import path; it lives in :mod:`harness.browser.helper`."""

from __future__ import annotations

from .browser.helper import ConnectionStatus, WebSocketTestHelper, new_client_id

__all__ = ["ConnectionStatus", "WebSocketTestHelper", "new_client_id"]
