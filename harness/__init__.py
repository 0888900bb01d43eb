"""Nova WebSocket e2e harness: a pytest plugin and library for testing browser WebSocket apps.

The pytest plugin (``harness.plugin``, entry point ``nova_ws``) provides the
fixtures ``ws_config``, ``ws_server``, ``ws_helper`` and ``ws_client``; this
package exports the classes behind them for use with or without pytest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import TestIds, WsConfig
from .errors import (
    BrowserNotFoundError,
    ConfigurationError,
    FaultControlError,
    HarnessError,
    ProtocolClientError,
    ServerStartError,
    WaitTimeoutError,
)

if TYPE_CHECKING:
    from .browser import ChromiumInfo, find_chromium, launch_args
    from .client import NovaClient, ReceivedFrame, WsClient
    from .control import FaultControl
    from .faults import FaultHandle, Faults
    from .helper import ConnectionStatus, WebSocketTestHelper, new_client_id
    from .journal import Frame, FrameJournal
    from .server import ServerUnderTest, start_server

#: Exported names imported on first use, so loading the plugin (and an unrelated
#: pytest run in the same environment) does not import httpx, websockets or the proxy.
_LAZY = {
    "ChromiumInfo": ".browser",
    "find_chromium": ".browser",
    "launch_args": ".browser",
    "NovaClient": ".client",
    "ReceivedFrame": ".client",
    "WsClient": ".client",
    "FaultControl": ".control",
    "FaultHandle": ".faults",
    "Faults": ".faults",
    "ConnectionStatus": ".helper",
    "WebSocketTestHelper": ".helper",
    "new_client_id": ".helper",
    "Frame": ".journal",
    "FrameJournal": ".journal",
    "ServerUnderTest": ".server",
    "start_server": ".server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
