"""The server process dies mid-session and comes back on the same port: the page recovers.

Depth: the process itself (``kill -9`` of a reference server run as a
subprocess, then a new one on the same port and database), reached through
the fault proxy as usual.  The test drives it with the public API only: a
``WsConfig(base_url=...)``, ``harness.start_server`` (an external app, with
the proxy in front) and a ``WebSocketTestHelper`` on pytest-playwright's
``page``.  Time: the page's, virtual.
"""

from __future__ import annotations

import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from e2e.ui import authenticated, channel_messages, channel_row, message_items
from harness import (
    NovaClient,
    ServerUnderTest,
    WebSocketTestHelper,
    WsConfig,
    new_client_id,
    start_server,
)

LISTENING = re.compile(r"listening on (http://\S+)")


class ServerProcess:
    """``python -m reference_server`` in test mode as a child process that a test can kill."""

    def __init__(self, workdir: Path, token: str) -> None:
        self.db = workdir / "nova.db"
        self.log = workdir / "server.log"
        self.token = token
        self.port = 0
        self.url = ""
        self.process: subprocess.Popen[str] | None = None
        self.exit_codes: list[int] = []

    def start(self, timeout: float = 20.0) -> str:
        """Start on ``self.port`` (0 the first time: ephemeral) and return the URL it listens on."""
        command = [
            sys.executable, "-m", "reference_server",
            "--host", "127.0.0.1", "--port", str(self.port), "--frontend-port", "-1",
            "--db", str(self.db), "--test-mode", f"--test-token={self.token}", "--log-level", "warning",
        ]  # fmt: skip
        with self.log.open("a", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1
            )
        assert self.process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                if not selector.select(remaining):
                    continue
                line = self.process.stdout.readline()
                if not line:
                    break  # the process exited
                lines.append(line.rstrip())
                if match := LISTENING.search(line):
                    self.url = match.group(1)
                    self.port = int(self.url.rsplit(":", 1)[1])
                    return self.url
        self.kill()
        tail = self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
        raise RuntimeError(
            f"the reference server did not say 'listening on' within {timeout} s: "
            f"{' | '.join(lines) or '(no output)'}\nlog:\n" + "\n".join(tail)
        )

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` (default SIGKILL: no close frames, no cleanup) and reap the process."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        code = self.process.wait(timeout=15)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.process = None
        self.exit_codes.append(code)
        return code


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    """A reference server of this test's own, killed at teardown whatever happened."""
    process = ServerProcess(tmp_path, secrets.token_hex(12))
    process.start()
    try:
        yield process
    finally:
        process.kill(signal.SIGTERM)


@pytest.fixture
def restartable(
    server_process: ServerProcess, ws_config: WsConfig, tmp_path: Path
) -> Iterator[ServerUnderTest]:
    """That server as an external app, with the fault proxy in front (as ``ws_server`` does)."""
    config = ws_config.replace(base_url=server_process.url, harness_token=server_process.token)
    server = start_server(config, tmp_path)
    assert server.proxy is not None, "the page must load through the proxy"
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page_helper(page: Any, restartable: ServerUnderTest) -> Iterator[WebSocketTestHelper]:
    """A helper on ``page`` against the restartable server (what ``ws_helper`` does for ``ws_server``)."""
    helper = WebSocketTestHelper(page, restartable, restartable.config).initialize()
    yield helper
    helper.cleanup()
    helper.check_frames()


def client(server: ServerUnderTest) -> NovaClient:
    """Another party, connected straight to the server and authenticated."""
    cid = new_client_id("py")
    other = NovaClient(server.ws_url(cid), cid, default_timeout=server.config.timeout)
    other.connect()
    other.authenticate(server.config.api_key)
    return other


def test_kill_9_and_restart_on_the_same_port_loses_nothing(
    page_helper: WebSocketTestHelper, server_process: ServerProcess, restartable: ServerUnderTest
) -> None:
    """SIGKILL mid-session, messages published while the page is away: it sees every one, once.

    The page loses its socket without a close frame (1006), fails to
    reconnect while nothing listens, then reconnects to the new process,
    re-authenticates with its last key, resubscribes from its last seq, and
    flushes what the user published while offline.
    """
    ws_helper = page_helper
    channel = f"restart-{secrets.token_hex(6)}"
    authenticated(ws_helper)
    ws_helper.subscribe(channel)
    expect(channel_row(ws_helper, channel)).to_have_attribute("data-state", "subscribed")
    alice = client(restartable)
    for i in range(1, 4):
        alice.publish(channel, f"before {i}")
    items = message_items(ws_helper, channel)
    expect(items).to_have_count(3)
    alice.close(timeout=2)

    assert server_process.kill() == -signal.SIGKILL
    ws_helper.wait_for_connection_status("disconnected")
    ws_helper.wait_for_reconnect_info(1)
    assert ws_helper.state()["errors"][0]["code"] == 1006

    # Nothing listens: the attempt fails (the proxy resets the page's connection).
    ws_helper.advance_to_next_reconnect()
    ws_helper.wait_for_reconnect_info(2)
    # The user keeps typing while offline.
    ws_helper.publish(channel, "typed while offline")
    expect(ws_helper.page.get_by_test_id("offline-queue")).to_have_text(
        "1 message queued until reconnected"
    )

    server_process.start()  # same port, same database
    bob = client(restartable)
    for i in range(1, 3):
        bob.publish(channel, f"while away {i}")

    ws_helper.advance_to_next_reconnect()
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.wait_for_reconnect_info(0)
    ws_helper.expect_frame("subscribe", direction="sent", match={"channel": channel})
    ws_helper.expect_frame(
        "subscribe", direction="sent", match={"channel": channel, "since_seq": 3}
    )
    expect(channel_row(ws_helper, channel)).to_have_attribute("data-state", "subscribed")
    expect(items).to_have_count(6)
    expect(items.and_(ws_helper.page.locator('[data-state="delivered"]'))).to_have_count(1)
    # The log keeps the user's own message where it was typed; seqs say what the server ordered.
    assert items.get_by_test_id("message-content").all_inner_texts() == [
        "before 1", "before 2", "before 3", "typed while offline", "while away 1", "while away 2",
    ]  # fmt: skip
    seqs = [m["seq"] for m in channel_messages(ws_helper, channel)]
    assert seqs == [1, 2, 3, 4, 5, 6], "a gap or a duplicate across the restart"
    assert [
        int(s) for s in items.evaluate_all("els => els.map(e => e.dataset.seq)")
    ] == [1, 2, 3, 6, 4, 5]
    bob.close(timeout=2)
