"""Shared fixtures of the e2e suite: only the public plugin API (fixtures, markers, ``harness``).

The server is shared by every test of a worker and keeps its data, so each test
uses channels of its own (``channel``); client ids are unique per test already.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from harness import FaultControl, ServerUnderTest, WebSocketTestHelper


def unique_channel(prefix: str = "e2e") -> str:
    """A channel name no other test uses (lowercase: the protocol's channel pattern)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def channel() -> str:
    """A channel of this test's own."""
    return unique_channel()


@pytest.fixture
def faults(ws_server: ServerUnderTest) -> FaultControl:
    """The server's fault control (``/__harness``); keyed by client id, lifted after each test."""
    if ws_server.faults is None:
        pytest.fail(
            "the e2e suite needs a server with the /__harness fault control API: the reference "
            "server (default), or an app in test mode given with --ws-base-url and --ws-harness-token"
        )
    return ws_server.faults


@pytest.fixture
def rest(ws_helper: WebSocketTestHelper) -> Any:
    """Playwright's API request context of the page, with the test API key in ``X-API-Key``.

    Going through Playwright (not a second HTTP client) keeps the page's routed
    frames flowing while the test waits for a REST answer.
    """
    return _Rest(ws_helper)


class _Rest:
    """JSON over the server's REST API through the page's browser context."""

    def __init__(self, ws_helper: WebSocketTestHelper) -> None:
        self._request = ws_helper.page.context.request
        self._base = ws_helper.server.http_url
        self._headers = {"X-API-Key": ws_helper.config.api_key}

    def get(self, path: str, **params: Any) -> Any:
        response = self._request.get(
            self._base + path, headers=self._headers, params=params or None
        )
        assert response.ok, f"GET {path}: {response.status} {response.text()}"
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self._request.post(self._base + path, headers=self._headers, data=body)
        assert response.ok, f"POST {path}: {response.status} {response.text()}"
        return response.json()
