"""Durability: whatever the server acknowledged survives ``kill -9``.

Spec: messages acknowledged with a REST ``201`` or a WebSocket
``delivery_confirmation`` (and threads created with ``201``) are all there,
with the same seq, after the server process is killed with SIGKILL and
restarted on the same database; ``since_seq`` replay after the restart
delivers exactly the missed messages; seq numbering continues without a gap.
The same holds for publishes from many clients at once, which the server
commits in shared transactions (group commit), under ``synchronous`` NORMAL
(commits on the event loop) and FULL (commits on a writer thread).

The server runs as a real subprocess (``python -m reference_server``) on an
ephemeral loopback port; every wait has a deadline and processes are always
killed in ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests._wsclient import authenticated, new_client_id

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

READY = re.compile(r"Nova server listening on http://127\.0\.0\.1:(\d+)")
START_TIMEOUT = 30.0
KEY = {"X-API-Key": "valid-test-key"}


class ServerProcess:
    """``python -m reference_server`` in a subprocess; output drained by a thread."""

    def __init__(self, db: Path, env: dict[str, str] | None = None) -> None:
        self.db = db
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reference_server",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--frontend-port",
                "-1",
                "--db",
                str(db),
                "--test-mode",
                "--log-level",
                "warning",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._drain, name="nova-server-output", daemon=True)
        self._reader.start()
        self.port = self._wait_ready()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _wait_ready(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"server did not print 'Nova server listening on ...' within {START_TIMEOUT:.0f} s; "
                    f"last output: {self.lines[-20:]}"
                )
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait(timeout=5)
                raise AssertionError(f"server exited with {code} before listening; output: {self.lines[-20:]}")
            self.lines.append(line)
            match = READY.search(line)
            if match:
                return int(match.group(1))

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, client_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/debug/{client_id}"

    def kill9(self) -> None:
        """SIGKILL: no shutdown hook, no WAL checkpoint, nothing flushed by the server."""
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def server_process(db: Path, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """A server subprocess on ``db`` (with ``env`` added to its environment), always killed at exit."""
    server: ServerProcess | None = None
    try:
        server = ServerProcess(db, env)
        yield server
    finally:
        if server is not None:
            server.stop()


@pytest.mark.asyncio
async def test_acknowledged_messages_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "nova.db"
    rest_count, ws_count = 40, 40
    acked: dict[str, int] = {}  # message_id -> seq, for every acknowledged message
    client_id = new_client_id("durable")

    with server_process(db) as first:
        async with httpx.AsyncClient(base_url=first.http_url, headers=KEY, timeout=10) as http:
            for i in range(rest_count):
                response = await http.post("/api/channels/durable/messages", json={"content": f"rest {i}", "message_id": f"rest-{i}"})
                assert response.status_code == 201, response.text
                acked[response.json()["message_id"]] = response.json()["seq"]
            thread_response = await http.post("/api/chat/threads", json={"title": "survives"})
            assert thread_response.status_code == 201
            thread = thread_response.json()
            posted = await http.post(f"/api/chat/threads/{thread['id']}/messages", json={"content": "in thread"})
            assert posted.status_code == 201
        async with authenticated(first.ws_url(client_id), client_id) as ws:
            for i in range(ws_count):
                await ws.send("publish", {"channel": "durable", "content": f"ws {i}"}, id=f"ws-{i}")
            for _ in range(ws_count):
                confirmation = await ws.expect("delivery_confirmation")
                acked[confirmation["data"]["message_id"]] = confirmation["data"]["seq"]
            first.kill9()  # right after the last acknowledgement

    # nothing was checkpointed on the way down: the restart must recover from the WAL
    wal = Path(f"{db}-wal")
    assert wal.exists() and wal.stat().st_size > 0, "expected an un-checkpointed WAL after kill -9"

    total = rest_count + ws_count
    assert sorted(acked.values()) == list(range(1, total + 1))

    with server_process(db) as second:
        async with httpx.AsyncClient(base_url=second.http_url, headers=KEY, timeout=10) as http:
            channel = (await http.get("/api/channels/durable", params={"limit": 1000})).json()
            assert channel["last_seq"] == total
            assert {m["message_id"]: m["seq"] for m in channel["messages"]} == acked
            restored = (await http.get(f"/api/chat/threads/{thread['id']}")).json()
            assert restored["title"] == "survives"
            assert [m["content"] for m in restored["messages"]] == ["in thread"]
            # numbering continues after the restart
            after = await http.post("/api/channels/durable/messages", json={"content": "after"})
            assert (after.status_code, after.json()["seq"]) == (201, total + 1)
            # an acknowledged id is still known: retrying it is not a new message
            retry = await http.post("/api/channels/durable/messages", json={"content": "x", "message_id": "ws-0"})
            assert (retry.status_code, retry.json()["seq"]) == (200, acked["ws-0"])

        async with authenticated(second.ws_url(client_id), client_id) as ws:
            await ws.send("subscribe", {"channel": "durable", "since_seq": rest_count}, id="resub")
            replayed = [await ws.expect("channel_message") for _ in range(ws_count + 1)]
            assert [f["data"]["seq"] for f in replayed] == list(range(rest_count + 1, total + 2))
            assert [f["data"]["message_id"] for f in replayed[:-1]] == [f"ws-{i}" for i in range(ws_count)]
            subscribed = await ws.expect("subscribed")
            assert subscribed["data"] == {"channel": "durable", "last_seq": total + 1}
            await ws.request("ping", {}, reply="pong")  # nothing duplicated after `subscribed`


@pytest.mark.asyncio
@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_group_committed_publishes_of_many_clients_survive_kill_9(tmp_path: Path, synchronous: str) -> None:
    db = tmp_path / "nova.db"
    clients, each = 20, 15
    env = {"NOVA_DB_SYNCHRONOUS": synchronous}
    acked: dict[str, int] = {}

    async def publisher(server: ServerProcess, n: int) -> None:
        client_id = new_client_id(f"group{n}")
        async with authenticated(server.ws_url(client_id), client_id) as ws:
            for i in range(each):  # sent back to back: they arrive together with the others'
                await ws.send("publish", {"channel": "grouped", "content": f"{n}.{i}"}, id=f"{n}-{i}")
            for _ in range(each):
                confirmation = await ws.expect("delivery_confirmation")
                acked[confirmation["data"]["message_id"]] = confirmation["data"]["seq"]

    with server_process(db, env) as first:
        await asyncio.gather(*(publisher(first, n) for n in range(clients)))
        first.kill9()  # right after the last acknowledgement

    assert sorted(acked.values()) == list(range(1, clients * each + 1))
    with server_process(db, env) as second:
        async with httpx.AsyncClient(base_url=second.http_url, headers=KEY, timeout=10) as http:
            channel = (await http.get("/api/channels/grouped", params={"limit": 1000})).json()
    assert channel["last_seq"] == clients * each
    assert {m["message_id"]: m["seq"] for m in channel["messages"]} == acked
