"""The chat app as a separate process (``--ws-base-url``): an app in any language, no harness code in it.

Server-depth faults go through the fault proxy in front of it; the page and
the harness only know its URL.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import WsConfig

from ..conftest import CHAT_SETTINGS

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def chat_process_url() -> Iterator[str]:
    """``python -m fixtures.apps.chat --port 0`` started once per worker; its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fixtures.apps.chat", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    line = ""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not line.startswith("listening on ") and (remaining := deadline - time.monotonic()) > 0:
            if selector.select(remaining):
                line = proc.stdout.readline()
                if not line:
                    break
    if not line.startswith("listening on "):
        proc.kill()
        pytest.fail(f"the chat app process did not say 'listening on' within 20 s (got {line!r})")
    try:
        yield line.split("listening on ", 1)[1].strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        proc.stdout.close()


@pytest.fixture(scope="session")
def ws_config(ws_config: WsConfig, chat_process_url: str) -> WsConfig:
    """The chat app process, behind the fault proxy."""
    return ws_config.replace(app=None, base_url=chat_process_url, **CHAT_SETTINGS)
