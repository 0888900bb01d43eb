"""Nova WebSocket e2e harness: a pytest plugin and library for testing browser WebSocket apps.

The pytest plugin (``harness.plugin``, entry point ``nova_ws``) provides the
fixtures ``ws_config``, ``ws_server``, ``ws_helper`` and ``ws_client``; this
package exports the classes behind them for use with or without pytest.
"""

from __future__ import annotations

from .browser import ChromiumInfo, find_chromium, launch_args
from .client import NovaClient, ProtocolClientError, ReceivedFrame, WsClient
from .config import TestIds, WsConfig
from .control import FaultControl, FaultControlError
from .errors import (
    BrowserNotFoundError,
    ConfigurationError,
    HarnessError,
    ServerStartError,
    WaitTimeoutError,
)
from .faults import FaultHandle, Faults
from .helper import ConnectionStatus, WebSocketTestHelper, new_client_id
from .journal import Frame, FrameJournal
from .server import ServerUnderTest, start_server

__all__ = [
    "BrowserNotFoundError",
    "ChromiumInfo",
    "ConfigurationError",
    "ConnectionStatus",
    "FaultControl",
    "FaultControlError",
    "FaultHandle",
    "Faults",
    "Frame",
    "FrameJournal",
    "HarnessError",
    "NovaClient",
    "ProtocolClientError",
    "ReceivedFrame",
    "ServerStartError",
    "ServerUnderTest",
    "TestIds",
    "WaitTimeoutError",
    "WebSocketTestHelper",
    "WsClient",
    "WsConfig",
    "find_chromium",
    "launch_args",
    "new_client_id",
    "start_server",
]
