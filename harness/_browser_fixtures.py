"""Fixtures registered at configure time, after pytest-playwright, so they override its defaults."""

from __future__ import annotations

from typing import Any

import pytest

from .browser import find_chromium, launch_args


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
