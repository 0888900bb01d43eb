"""Fixtures registered at configure time, after pytest-playwright, so they override its defaults."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .browser import find_chromium, launch_args
from .config import WsConfig
from .plugin import ServerPool, _ws_helper

if TYPE_CHECKING:
    from .helper import WebSocketTestHelper
    from .server import ServerUnderTest


@pytest.fixture(scope="session")
def browser_type_launch_args(
    browser_type_launch_args: dict[str, Any], pytestconfig: pytest.Config
) -> dict[str, Any]:
    """pytest-playwright's launch arguments plus what this machine needs.

    Uses Playwright's own Chromium when installed, else a system Chromium
    (``NOVA_WS_CHROMIUM``, ``/usr/bin/chromium`` and the usual names); adds
    ``--no-sandbox`` as root and turns off background networking.  With
    ``--browser-channel`` the choice is left to Playwright.
    """
    if pytestconfig.getoption("browser_channel", None):
        return browser_type_launch_args
    ours = launch_args(find_chromium(), headless=bool(browser_type_launch_args.get("headless", True)))
    merged = {**ours, **browser_type_launch_args}
    merged["args"] = [*ours["args"], *browser_type_launch_args.get("args", [])]  # type: ignore[misc]
    return merged


@pytest.fixture
def _ws_prepared_context(request: pytest.FixtureRequest, context: Any, ws_config: WsConfig) -> bool:
    """The test's browser context, seeded and with its clock paused, before ``page`` opens."""
    from .helper import WebSocketTestHelper

    WebSocketTestHelper.prepare_context(
        context, seed=ws_config.seed, virtual_time=request.node.get_closest_marker("ws_real_time") is None
    )
    return True


@pytest.fixture
def ws_helper(
    request: pytest.FixtureRequest,
    _ws_prepared_context: bool,
    page: Any,
    ws_server: ServerUnderTest,
    ws_config: WsConfig,
    ws_server_pool: ServerPool,
    output_path: str,
) -> Iterator[WebSocketTestHelper]:
    """A :class:`harness.WebSocketTestHelper` on a fresh page with a unique client id.

    Before the test: the page's sockets are routed through the frame journal,
    Playwright's clock is installed before the page loads (marker
    ``ws_real_time`` opts out), the page's randomness is seeded, and in real
    mode the helper waits for an open socket (``ws_wait_for_socket = false``
    opts out).  After the test: faults for the client are lifted and every
    journaled frame must have matched the app's protocol (the Nova models,
    or ``ws_frame_schema``; marker ``ws_allow_invalid_frames`` opts out), and
    the server must not have logged an ERROR for the test's client (marker
    ``ws_allow_server_errors`` opts out).  On
    failure the journal, the status history and the client's server log
    lines are written next to pytest-playwright's artifacts.
    """
    yield from _ws_helper(
        request, _ws_prepared_context, page, ws_server, ws_config, ws_server_pool, output_path
    )
