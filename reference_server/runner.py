"""Running the server: bound sockets, a background-thread runner, graceful shutdown.

Ports are bound first and read back (``port=0`` gives an ephemeral port), and
the bound socket itself is handed to uvicorn, so no other process can take
the port between choosing and listening.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = [
    "WS_IMPLEMENTATION",
    "NovaUvicornServer",
    "NovaWebSocketProtocol",
    "ServerThread",
    "bind_socket",
    "uvicorn_config",
]

#: uvicorn's WebSocket implementation: the websockets sans-I/O protocol
#: (see docs/architecture.md for why), run as :class:`NovaWebSocketProtocol`.
WS_IMPLEMENTATION = "websockets-sansio"


class NovaWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets sans-I/O protocol, pausing reads only when the app falls behind.

    uvicorn pauses reading the socket after every received message and resumes
    once the application has taken it: two ``epoll_ctl`` calls and selector
    bookkeeping per message, about a tenth of the server's CPU per publish.
    Here reading goes on while fewer than :attr:`read_high_water` messages
    wait for the application, and pauses past that; as in uvicorn, the
    application emptying its queue resumes it.  Memory stays bounded by the
    high-water mark (plus one read's worth of frames), as uvicorn's is by one.
    """

    #: Received messages the application may have waiting before reading pauses.
    read_high_water = 16

    # uvicorn leaves the handshake marked incomplete after a denial response (the
    # ``websocket.http.response`` extension), so every rejected handshake logged
    # "ASGI callable returned without completing handshake" at ERROR (Kludex/uvicorn#3138).
    # A denial that is on the wire (``close_sent``) completes the handshake.
    @property
    def handshake_complete(self) -> bool:
        return self._handshake_complete or (self.initial_response is not None and self.close_sent)

    @handshake_complete.setter
    def handshake_complete(self, value: bool) -> None:
        self._handshake_complete = value

    def send_receive_event_to_app(self) -> None:
        if self.read_paused or self.queue.qsize() + 1 >= self.read_high_water:
            super().send_receive_event_to_app()
            return
        # uvicorn pauses unless it believes reading is paused already.
        self.read_paused = True
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = False


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` (0 = ephemeral); the caller reads the port back."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets whose proto
    # says TCP, and accepted sockets inherit it; without it, Nagle's algorithm and the
    # peer's delayed ACK add about 40 ms to every keep-alive HTTP response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno,
            f"cannot listen on {host}:{port}: {exc.strerror}; "
            "pick another port (--port / NOVA_PORT) or stop the process using it",
        ) from exc
    sock.set_inheritable(True)
    return sock


def uvicorn_config(
    app: Any, *, max_message_bytes: int, log_level: str = "info", configure_logging: bool = True
) -> uvicorn.Config:
    """uvicorn's config for the Nova server; ``configure_logging=False`` leaves logging to the caller."""
    extra: dict[str, Any] = {} if configure_logging else {"log_config": None}
    return uvicorn.Config(
        app,
        ws=NovaWebSocketProtocol,
        ws_max_size=max_message_bytes,
        ws_per_message_deflate=True,
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
        **extra,
    )


class NovaUvicornServer(uvicorn.Server):
    """uvicorn's server, closing WebSockets with 1001 (going away) before its own shutdown.

    uvicorn itself would close live WebSockets with 1012 (service restart).
    """

    def __init__(
        self, config: uvicorn.Config, before_shutdown: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        super().__init__(config)
        self._before_shutdown = before_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._before_shutdown is not None:
            try:
                await asyncio.wait_for(self._before_shutdown(), timeout=5)
            except Exception:
                logging.getLogger("reference_server").exception("closing WebSockets failed")
        await super().shutdown(sockets)


class ServerThread:
    """Run a uvicorn server on its own thread and event loop, on an already bound socket.

    ``start()`` returns once the server accepts connections, or raises with
    the startup error; ``stop()`` shuts it down gracefully within a deadline.
    """

    def __init__(
        self,
        server: uvicorn.Server,
        sock: socket.socket,
        *,
        name: str = "nova-server",
    ) -> None:
        self.server = server
        self.sock = sock
        self.name = name
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
            self._error = exc

    def start(self, timeout: float = 15.0) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(
                    f"{self.name} failed to start on port {self.port}: {self._error!r}"
                ) from self._error
            if time.monotonic() > deadline:
                self.server.should_exit = True
                raise TimeoutError(
                    f"{self.name} did not start within {timeout:.0f} s on port {self.port}; "
                    "check its log for a hanging startup (lifespan) step"
                )
            self._thread.join(0.01)

    def stop(self, timeout: float = 15.0) -> None:
        if self._thread is None:
            return
        self.server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(5)
        self._thread = None
        if self._error is not None and not isinstance(self._error, (SystemExit, KeyboardInterrupt)):
            raise RuntimeError(f"{self.name} crashed: {self._error!r}") from self._error
