"""Shared by the harness library tests: one deadline unit, condition waits, server error records."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from tests import _waits

#: Seconds any single wait may take before the test fails.
TIMEOUT = 5.0


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Wait until ``condition()`` is true, failing after ``timeout`` with what was expected."""
    await _waits.wait_until(condition, what, timeout)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """ERROR records the in-process server (uvicorn, the middleware) logs during the test."""
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn", "harness")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """The blocking twin of :func:`wait_until`, for tests on a plain thread."""
    _waits.wait_for(condition, what, timeout)
