"""Waits for a condition with a deadline, shared by the fast tests (no browser).

The condition is polled every 5 ms: what these tests wait for (a held count, a
log line, a slot given back) changes on another thread or task that offers no
event to wait on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["POLL_S", "wait_for", "wait_until"]

#: How often a condition is checked again.
POLL_S = 0.005


async def wait_until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    """Wait until ``condition()`` is true, failing after ``timeout`` s with what was expected."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what}")
        await asyncio.sleep(POLL_S)


def wait_for(condition: Callable[[], bool], what: str, timeout: float) -> None:
    """The blocking twin of :func:`wait_until`, for tests on a plain thread."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what}")
        time.sleep(POLL_S)
