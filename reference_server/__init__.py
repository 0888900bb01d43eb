"""The Nova reference WebSocket server: the system the harness ships with and is proven against."""

from __future__ import annotations

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
