"""Running the server: bound sockets, a background-thread runner, deadlines, graceful shutdown.

Ports are bound first and read back (``port=0`` gives an ephemeral port), and
the bound socket itself is handed to uvicorn, so no other process can take
the port between choosing and listening.

Deadlines (each a parameter of :func:`uvicorn_config` and a CLI flag), so
that nothing a peer starts and never finishes holds a connection forever:

- **Request head**, :data:`REQUEST_HEAD_TIMEOUT_S`: a connection has that
  long from its opening (on a keep-alive connection: from the end of the
  previous response) to deliver a complete request head.  A peer that sent
  nothing is closed silently; one that sent part of a head gets ``408``.
  This bounds idle TCP connections and handshakes sent a byte at a time; it
  ends once the head is in, so a handshake an application holds on purpose
  (the ``hold_handshakes`` fault) is not cut.
- **Keep-alive**, uvicorn's ``timeout_keep_alive`` (5 s): idle time between
  requests on one connection.
- **Request head size**, :data:`MAX_REQUEST_HEAD_BYTES`: an upgrade request
  whose head is bigger is answered ``431``; a head still incomplete past it
  is answered ``400`` by h11 (uvicorn's ``h11_max_incomplete_event_size``).
  python-websockets answers a line over 8 KiB (``414``/``431``) and more than
  128 headers (``431``) on its own; uvicorn writes those answers and closes.
- **WebSocket keep-alive**, uvicorn's ``ws_ping_interval`` and
  ``ws_ping_timeout`` (20 s each): a peer that does not answer a ping in
  time, for example one stuck in the middle of a frame, is closed with 1011.
- **Shutdown**, :data:`SHUTDOWN_TIMEOUT_S`: see :class:`NovaUvicornServer`.

uvicorn internals this module relies on are checked by
:func:`check_uvicorn_internals` when a config or a server is built; a uvicorn
that lacks them fails there, naming its version and the fix, instead of
serving with a protection silently gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus
from types import FrameType
from typing import Any

import h11
import uvicorn
import uvicorn.server
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = [
    "KEEP_ALIVE_TIMEOUT_S",
    "MAX_REQUEST_HEAD_BYTES",
    "REQUEST_HEAD_TIMEOUT_S",
    "SHUTDOWN_TIMEOUT_S",
    "WS_IMPLEMENTATION",
    "WS_PING_INTERVAL_S",
    "WS_PING_TIMEOUT_S",
    "NovaH11Protocol",
    "NovaUvicornServer",
    "NovaWebSocketProtocol",
    "ServerThread",
    "UvicornInternalsError",
    "bind_socket",
    "check_uvicorn_internals",
    "uvicorn_config",
]

#: uvicorn's WebSocket implementation: the websockets sans-I/O protocol
#: (see docs/architecture.md for why), run as :class:`NovaWebSocketProtocol`.
WS_IMPLEMENTATION = "websockets-sansio"

#: Seconds a connection has to deliver a complete request head (see the module docstring).
REQUEST_HEAD_TIMEOUT_S = 10.0

#: Largest request head (request line and headers) of a WebSocket upgrade, in bytes;
#: also the most h11 buffers of an incomplete head.  h11's own default.
MAX_REQUEST_HEAD_BYTES = 16 * 1024

#: Seconds shutdown waits for close frames to go out before aborting the connections
#: whose peers do not take them (see :class:`NovaUvicornServer`).
SHUTDOWN_TIMEOUT_S = 1.0

#: uvicorn's defaults, repeated so the CLI can show them.
KEEP_ALIVE_TIMEOUT_S = 5
WS_PING_INTERVAL_S = 20.0
WS_PING_TIMEOUT_S = 20.0

#: The uvicorn release this module was written and tested against.
_TESTED_UVICORN = "0.55"

log = logging.getLogger("reference_server.runner")
_uvicorn_log = logging.getLogger("uvicorn.error")


class UvicornInternalsError(RuntimeError):
    """The installed uvicorn lacks an internal the runner subclasses or calls."""


def _attribute_names(function: Any) -> set[str]:
    code = getattr(function, "__code__", None)
    return set(code.co_names) if code is not None else set()


#: What uvicorn logs, with a traceback at ERROR, for a client's text frame that is not UTF-8.
INVALID_UTF8_MESSAGE = "Invalid UTF-8 sequence received from client."


class QuietInvalidUtf8(logging.Filter):
    """Log a client's invalid UTF-8 text frame as one WARNING line, not an ERROR with a traceback.

    uvicorn closes such a connection with 1007, which is right, but logs every
    bad frame with ``logger.exception``: a traceback per frame that any client can
    provoke (log flooding), for what is the client's fault.  Installed on
    ``uvicorn.error`` by :func:`uvicorn_config`; the message it recognises is
    probed by :func:`check_uvicorn_internals`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == INVALID_UTF8_MESSAGE and record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "a client sent a text frame that is not UTF-8: closed with 1007"
            record.exc_info = record.exc_text = None
        return True


def _install_quiet_invalid_utf8() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietInvalidUtf8) for f in logger.filters):
        logger.addFilter(QuietInvalidUtf8())


@functools.cache
def check_uvicorn_internals() -> None:
    """Check that uvicorn has every internal this module relies on; raise otherwise.

    Raises :class:`UvicornInternalsError` naming the installed uvicorn
    version, what is missing and the fix.  Cheap (attribute look-ups), done
    once per process; :func:`uvicorn_config` and :class:`NovaUvicornServer`
    call it.
    """
    missing: list[str] = []

    def need(owner: Any, names: tuple[str, ...], label: str) -> None:
        missing.extend(
            f"{label}.{name}" for name in names if not callable(getattr(owner, name, None))
        )

    def need_attributes(function: Any, names: tuple[str, ...], label: str) -> None:
        present = _attribute_names(function)
        missing.extend(f"{label}.{name}" for name in names if name not in present)

    ws = WebSocketsSansIOProtocol
    need(ws, ("send_receive_event_to_app", "receive", "shutdown"), "WebSocketsSansIOProtocol")
    need_attributes(
        ws.__init__,
        (
            "queue",
            "read_paused",
            "handshake_complete",
            "initial_response",
            "close_sent",
            "transport",
        ),
        "WebSocketsSansIOProtocol",
    )
    need(
        H11Protocol,
        ("connection_made", "connection_lost", "handle_events", "handle_websocket_upgrade"),
        "H11Protocol",
    )
    need_attributes(
        H11Protocol.__init__, ("conn", "transport", "loop", "headers", "client"), "H11Protocol"
    )
    need(uvicorn.Server, ("capture_signals", "handle_exit", "shutdown"), "Server")
    if "lifespan" not in _attribute_names(uvicorn.Server._serve):
        missing.append("Server.lifespan")
    if "capture_signals" not in _attribute_names(uvicorn.Server.serve):
        missing.append("Server.serve calling capture_signals")
    if not isinstance(getattr(uvicorn.server, "HANDLED_SIGNALS", None), tuple):
        missing.append("uvicorn.server.HANDLED_SIGNALS")
    consts = getattr(getattr(ws.send_receive_event_to_app, "__code__", None), "co_consts", ())
    if INVALID_UTF8_MESSAGE not in consts:
        missing.append(f"WebSocketsSansIOProtocol.send_receive_event_to_app logging {INVALID_UTF8_MESSAGE!r}")
    if missing:
        raise UvicornInternalsError(
            f"uvicorn {uvicorn.__version__} lacks internals reference_server/runner.py relies on "
            f"({', '.join(missing)}); it was written against uvicorn {_TESTED_UVICORN}: install it "
            f"(pip install 'uvicorn>={_TESTED_UVICORN},<0.56') or adapt the runner to this version"
        )
    # Before 0.55 uvicorn's websockets-sansio protocol never wrote the answer websockets
    # queues for a request it cannot parse (a line over 8 KiB, too many headers, a body):
    # the client got nothing and the socket stayed open.
    if not callable(getattr(ws, "handle_handshake_exception", None)):
        raise UvicornInternalsError(
            f"uvicorn {uvicorn.__version__}'s websockets-sansio protocol does not answer a "
            "WebSocket handshake it cannot parse (no handle_handshake_exception, added in 0.55): "
            "such clients would wait forever on an open socket; install uvicorn "
            f"{_TESTED_UVICORN} (pip install 'uvicorn>={_TESTED_UVICORN},<0.56')"
        )


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


class NovaH11Protocol(H11Protocol):
    """uvicorn's h11 HTTP protocol with a request-head deadline and a head-size limit for upgrades.

    Only the HTTP phase is changed: once a WebSocket upgrade is handed to
    :class:`NovaWebSocketProtocol`, this class sees none of its frames.
    :func:`uvicorn_config` sets the limits through :meth:`configured`.
    """

    #: Seconds to deliver a complete request head, from the opening or the end of a response.
    request_head_timeout: float = REQUEST_HEAD_TIMEOUT_S
    #: Largest head of a WebSocket upgrade request, in bytes; bigger is answered 431.
    max_request_head_bytes: int = MAX_REQUEST_HEAD_BYTES

    _head_timer: asyncio.TimerHandle | None = None

    @classmethod
    def configured(
        cls, *, request_head_timeout: float, max_request_head_bytes: int
    ) -> type[NovaH11Protocol]:
        """A subclass with these limits (uvicorn builds protocols from a class and its config only)."""
        if request_head_timeout <= 0:
            raise ValueError(
                f"request_head_timeout must be > 0 seconds, got {request_head_timeout}"
            )
        if max_request_head_bytes < 1024:
            raise ValueError(
                f"max_request_head_bytes must be >= 1024, got {max_request_head_bytes}"
            )
        attributes = {
            "request_head_timeout": request_head_timeout,
            "max_request_head_bytes": max_request_head_bytes,
        }
        return type(cls.__name__, (cls,), attributes)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_request_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._watch_request_head()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        size = len(event.method) + len(event.target) + 11  # "M T HTTP/1.1\r\n"
        size += sum(len(name) + len(value) + 4 for name, value in self.headers) + 2
        if size > self.max_request_head_bytes:
            _uvicorn_log.info(
                "%s - WebSocket upgrade refused 431: request head of %d bytes, limit %d",
                _peer(self.client),
                size,
                self.max_request_head_bytes,
            )
            self._send_error(
                431,
                f"Failed to open a WebSocket connection: request head of {size} bytes "
                f"exceeds {self.max_request_head_bytes} bytes.\n",
            )
            return
        super().handle_websocket_upgrade(event)

    # The head deadline runs while h11 waits for a request head (state IDLE):
    # from the opening, and again from the end of each response.
    def _watch_request_head(self) -> None:
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if waiting and self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.request_head_timeout, self._request_head_timed_out
            )
        elif not waiting:
            self._cancel_head_timer()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _request_head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        buffered, _ = self.conn.trailing_data
        if not buffered:
            _uvicorn_log.debug("%s - closing a connection that sent no request", _peer(self.client))
            self.transport.close()
            return
        _uvicorn_log.info(
            "%s - request head incomplete after %.1f s (%d bytes): 408",
            _peer(self.client),
            self.request_head_timeout,
            len(buffered),
        )
        self._send_error(
            408, f"Request head not received within {self.request_head_timeout:g} s.\n"
        )

    def _send_error(self, status: int, text: str) -> None:
        body = text.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            response = h11.Response(
                status_code=status, headers=headers, reason=HTTPStatus(status).phrase
            )
            for event in (response, h11.Data(data=body), h11.EndOfMessage()):
                output = self.conn.send(event)
                if output:
                    self.transport.write(output)
        except h11.LocalProtocolError as exc:  # a response had started: closing is all that is left
            _uvicorn_log.debug("%s - %d not sent: %s", _peer(self.client), status, exc)
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"


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
    app: Any,
    *,
    max_message_bytes: int,
    log_level: str = "info",
    configure_logging: bool = True,
    request_head_timeout: float = REQUEST_HEAD_TIMEOUT_S,
    max_request_head_bytes: int = MAX_REQUEST_HEAD_BYTES,
    keep_alive_timeout: int = KEEP_ALIVE_TIMEOUT_S,
    ws_ping_interval: float | None = WS_PING_INTERVAL_S,
    ws_ping_timeout: float | None = WS_PING_TIMEOUT_S,
) -> uvicorn.Config:
    """uvicorn's config for the Nova server; ``configure_logging=False`` leaves logging to the caller.

    HTTP is :class:`NovaH11Protocol` and WebSockets :class:`NovaWebSocketProtocol`.
    The deadlines and limits are described in the module docstring;
    ``ws_ping_interval=None`` sends no pings, ``ws_ping_timeout=None`` never
    gives up on a pong.  Raises :class:`UvicornInternalsError` when the
    installed uvicorn lacks what the runner relies on, ``ValueError`` for a
    deadline <= 0 or a head limit under 1 KiB.
    """
    check_uvicorn_internals()
    _install_quiet_invalid_utf8()
    http = NovaH11Protocol.configured(
        request_head_timeout=request_head_timeout, max_request_head_bytes=max_request_head_bytes
    )
    extra: dict[str, Any] = {} if configure_logging else {"log_config": None}
    return uvicorn.Config(
        app,
        http=http,
        ws=NovaWebSocketProtocol,
        ws_max_size=max_message_bytes,
        ws_per_message_deflate=True,
        ws_ping_interval=ws_ping_interval,
        ws_ping_timeout=ws_ping_timeout,
        h11_max_incomplete_event_size=max_request_head_bytes,
        timeout_keep_alive=keep_alive_timeout,
        lifespan="on",
        log_level=log_level,
        access_log=False,
        # A client's address is the socket's: X-Forwarded-For from a local peer (trusted by
        # uvicorn's default) would let it pass for another address, past the per-address caps.
        proxy_headers=False,
        timeout_graceful_shutdown=5,
        **extra,
    )


class NovaUvicornServer(uvicorn.Server):
    """uvicorn's server, closing WebSockets with 1001 (going away) first, promptly and quietly.

    Shutdown: ``before_shutdown`` (the reference app's: close every
    WebSocket with 1001) gets ``shutdown_timeout`` seconds; peers that read
    have their close frame within milliseconds.  Then WebSocket connections
    whose close frame could not be written or has not left the server (a
    peer that stopped reading) are aborted, and a WARNING says how many.
    uvicorn's own shutdown follows (it would close WebSockets with 1012,
    service restart); a connection it closes whose last bytes the peer does
    not take within ``shutdown_timeout`` is aborted too.  Requests still
    running get uvicorn's ``timeout_graceful_shutdown`` (5 s).

    Signals (main thread only): SIGINT or SIGTERM starts that shutdown and
    ``serve()`` returns normally afterwards (uvicorn would re-raise the
    signal: a KeyboardInterrupt traceback, or death by SIGTERM); a second
    SIGINT skips the waits for connections and requests (:attr:`forced`) but
    still runs the application's shutdown, within ``shutdown_timeout``.  :attr:`exit_signal` says which
    signal stopped the server, if any.  Raises ``ValueError`` for a
    ``shutdown_timeout`` <= 0 and :class:`UvicornInternalsError` as
    :func:`uvicorn_config` does.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        before_shutdown: Callable[[], Awaitable[None]] | None = None,
        *,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT_S,
    ) -> None:
        check_uvicorn_internals()
        if shutdown_timeout <= 0:
            raise ValueError(f"shutdown_timeout must be > 0 seconds, got {shutdown_timeout}")
        super().__init__(config)
        self._before_shutdown = before_shutdown
        self.shutdown_timeout = shutdown_timeout
        #: The first signal that asked the server to stop, or None.
        self.exit_signal: signal.Signals | None = None

    @property
    def forced(self) -> bool:
        """True when the shutdown was cut short (uvicorn's ``force_exit``).

        Set by a second SIGINT, or by :meth:`ServerThread.stop` past its deadline.
        """
        return self.force_exit

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {
            sig: signal.signal(sig, self.handle_exit) for sig in uvicorn.server.HANDLED_SIGNALS
        }
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.exit_signal is None:
            self.exit_signal = signal.Signals(sig)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._before_shutdown is not None:
            await self._close_websockets(self._before_shutdown)
        loop = asyncio.get_running_loop()
        watchdog = loop.call_later(self.shutdown_timeout, self._abort_closing_connections)
        try:
            await super().shutdown(sockets)
        finally:
            watchdog.cancel()
        if self.force_exit:
            # Forced, uvicorn skips the application's shutdown; asyncio.run then cancels
            # the lifespan task mid-protocol and uvicorn logs that as a traceback at ERROR.
            # The app's shutdown (closing the database) is quick: run it, bounded.
            try:
                await asyncio.wait_for(self.lifespan.shutdown(), self.shutdown_timeout)
            except TimeoutError:
                log.warning(
                    "forced shutdown: the application's shutdown did not finish within %.1f s",
                    self.shutdown_timeout,
                )

    async def _close_websockets(self, close: Callable[[], Awaitable[None]]) -> None:
        closing = asyncio.ensure_future(close())
        if not await self._wait(closing, self.shutdown_timeout):
            stuck = [
                p
                for p in list(self.server_state.connections)
                if isinstance(p, WebSocketsSansIOProtocol) and _close_undelivered(p)
            ]
            for protocol in stuck:
                protocol.transport.abort()
            log.warning(
                "shutdown: aborted %d WebSocket connection(s) whose close frame was not "
                "delivered within %.1f s (peers not reading)",
                len(stuck),
                self.shutdown_timeout,
            )
            # Aborting wakes every close blocked on a full transport; what is left is a bug.
            if not await self._wait(closing, self.shutdown_timeout):
                closing.cancel()
                log.warning("shutdown: closing WebSockets did not finish; going on without it")
                return
        if not closing.cancelled() and closing.exception() is not None:
            log.error("closing WebSockets failed", exc_info=closing.exception())

    async def _wait(self, task: asyncio.Future[None], timeout: float) -> bool:
        """Wait for ``task`` up to ``timeout`` s, less if the exit is forced; True if it is done."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not task.done() and not self.force_exit:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait({task}, timeout=min(remaining, 0.1))  # uvicorn's own polling step
        return task.done()

    def _abort_closing_connections(self) -> None:
        stuck = [p for p in list(self.server_state.connections) if p.transport.is_closing()]
        for protocol in stuck:
            protocol.transport.abort()
        if stuck:
            log.warning(
                "shutdown: aborted %d connection(s) whose peers did not take their last bytes within %.1f s",
                len(stuck),
                self.shutdown_timeout,
            )


def _close_undelivered(protocol: WebSocketsSansIOProtocol) -> bool:
    # An accepted WebSocket whose close frame is not out: never written (the transport
    # is full) or still in the transport's buffer.  Handshakes still pending are left
    # to uvicorn's shutdown, which answers them 500.
    accepted = protocol.handshake_complete and protocol.initial_response is None
    return accepted and (not protocol.close_sent or protocol.transport.get_write_buffer_size() > 0)


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
