"""Nova WebSocket e2e harness: a pytest plugin and library for testing browser WebSocket apps."""

from __future__ import annotations

from .browser import ChromiumInfo, find_chromium, launch_args
from .errors import (
    BrowserNotFoundError,
    ConfigurationError,
    HarnessError,
    ServerStartError,
    WaitTimeoutError,
)

__all__ = [
    "BrowserNotFoundError",
    "ChromiumInfo",
    "ConfigurationError",
    "HarnessError",
    "ServerStartError",
    "WaitTimeoutError",
    "find_chromium",
    "launch_args",
]
