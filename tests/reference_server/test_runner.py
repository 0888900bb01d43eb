"""Sockets the runner binds: ephemeral ports read back, TCP_NODELAY on accepted connections."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from reference_server.runner import NovaUvicornServer, ServerThread, bind_socket, uvicorn_config


def test_ephemeral_port_is_bound_and_read_back() -> None:
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.getsockname()[1] != 0
        with pytest.raises(OSError, match="cannot listen on 127.0.0.1"):
            bind_socket("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


@pytest.mark.asyncio
async def test_accepted_connections_have_tcp_nodelay() -> None:
    """Without it, Nagle and the peer's delayed ACK add ~40 ms to each keep-alive response."""
    sock = bind_socket("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = writer.get_extra_info("socket")
        accepted.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        assert await asyncio.wait_for(accepted, 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


class _FlowApp:
    """An ASGI WebSocket app that echoes until told to stop reading; it counts read pauses."""

    def __init__(self) -> None:
        self.protocol: Any = None
        self.pauses = 0
        self.paused = threading.Event()
        self.reading = threading.Event()
        self.reading.set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        self.protocol = send.__self__
        transport = self.protocol.transport
        pause = transport.pause_reading

        def counted_pause() -> None:
            self.pauses += 1
            pause()
            self.paused.set()

        transport.pause_reading = counted_pause
        while True:
            if not self.reading.is_set():
                await asyncio.to_thread(self.reading.wait)
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": event["text"]})


@contextmanager
def _flow_server(app: _FlowApp) -> Iterator[int]:
    sock = bind_socket("127.0.0.1", 0)
    thread = ServerThread(NovaUvicornServer(uvicorn_config(app, max_message_bytes=1 << 20, log_level="warning")), sock)
    thread.start(timeout=20)
    try:
        yield thread.port
    finally:
        app.reading.set()
        thread.stop()


def test_reading_is_not_paused_after_every_message_while_the_app_keeps_up() -> None:
    """Stock uvicorn pauses and resumes reading around each message (two epoll_ctl calls)."""
    app = _FlowApp()
    with _flow_server(app) as port, ws_connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
        for i in range(50):
            ws.send(f"m{i}")
            assert ws.recv(timeout=10) == f"m{i}"
        assert app.pauses == 0


def test_a_flooding_client_is_held_back_once_the_app_stops_reading() -> None:
    app = _FlowApp()
    with _flow_server(app) as port, ws_connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
        ws.send("first")
        assert ws.recv(timeout=10) == "first"
        app.reading.clear()
        chunk = "x" * 4096
        for _ in range(200):  # 800 KiB: more than one read, far more than the high-water mark
            ws.send(chunk)
        assert app.paused.wait(10), "reading never paused"
        assert app.protocol.read_paused
        app.reading.set()
        for _ in range(200):  # nothing lost: every message comes back once reading resumes
            assert ws.recv(timeout=10) == chunk
