"""Servers for the engine tests: bare python-websockets apps on a thread, on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from harness.serving import bind_loopback

Handler = Callable[[ServerConnection], Awaitable[None]]


class WsApp:
    """A websockets server on its own loop and thread, serving a socket bound before start."""

    def __init__(self, handler: Handler, process_request: Any = None) -> None:
        self.sock = bind_loopback()
        self.port = int(self.sock.getsockname()[1])
        self.url = f"ws://127.0.0.1:{self.port}"
        self._handler = handler
        self._process_request = process_request
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        assert self._ready.wait(5), "the test WebSocket server did not start within 5 s"

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = self._loop.create_future()
        async with serve(
            self._handler, sock=self.sock, process_request=self._process_request, compression=None,
            ping_interval=None,
        ):
            self._ready.set()
            await self._stop

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(lambda: self._stop.done() or self._stop.set_result(None))  # type: ignore[union-attr]
        self._thread.join(10)


async def echo(ws: ServerConnection) -> None:
    """Echo every message back."""
    async for message in ws:
        await ws.send(message)


@pytest.fixture
def ws_app() -> Iterator[Callable[..., WsApp]]:
    """Start bare WebSocket servers: ``ws_app(handler, process_request=None)``; stopped at teardown."""
    started: list[WsApp] = []

    def make(handler: Handler = echo, process_request: Any = None) -> WsApp:
        app = WsApp(handler, process_request)
        started.append(app)
        return app

    yield make
    for app in started:
        app.stop()


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback URL whose port refuses connections: bound (so no one else gets it) but not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
