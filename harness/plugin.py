"""The ``nova_ws`` pytest plugin (entry point ``pytest11``): hooks, options and fixtures only."""

from __future__ import annotations

from typing import Any

import pytest

from .browser import find_chromium, launch_args


class _BrowserFixtures:
    """Registered at configure time so it overrides pytest-playwright's defaults."""

    @pytest.fixture(scope="session")
    def browser_type_launch_args(
        self, browser_type_launch_args: dict[str, Any], pytestconfig: pytest.Config
    ) -> dict[str, Any]:
        """pytest-playwright's launch arguments plus what this machine needs.

        Uses Playwright's own Chromium when installed, else a system Chromium
        (``NOVA_WS_CHROMIUM``, ``/usr/bin/chromium`` and the usual names); adds
        ``--no-sandbox`` as root and turns off background networking.
        """
        if pytestconfig.getoption("browser_channel", None):
            return browser_type_launch_args
        ours = launch_args(find_chromium(), headless=bool(browser_type_launch_args.get("headless", True)))
        merged = {**ours, **browser_type_launch_args}
        merged["args"] = [*ours["args"], *browser_type_launch_args.get("args", [])]  # type: ignore[misc]
        return merged


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("playwright"):
        config.pluginmanager.register(_BrowserFixtures(), "nova_ws_browser")
