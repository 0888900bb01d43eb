"""The WebSocket endpoint ``/debug/{client_id}``: handshake, authentication, channels.

Life of a connection (the protocol itself is in docs/protocol.md):

1. **Origin** (Cross-Site WebSocket Hijacking): before accepting, the ``Origin``
   header must be absent (non-browser clients), the server's own origin
   (``http://`` or ``https://`` + the ``Host`` header) or one of
   ``settings.allowed_origins``; anything else gets HTTP 403.
2. **Handshake faults** (test mode only) are decided before this endpoint
   sees the handshake, by the harness's ``FaultMiddleware`` in front of the
   app (see :mod:`reference_server.testmode`): it may reject the handshake
   with an HTTP status or hold it (the browser stays CONNECTING) until a test
   releases it; a client that goes away while held is forgotten.
3. **Accept.**  A connection counts as unauthenticated from here until it
   authenticates or goes away; past ``settings.max_unauthenticated_per_address``
   for its client address or ``settings.max_unauthenticated_total`` in all, it
   is closed with 1013 (try again later) right after the accept, and the
   refusals are logged once per :data:`CAP_LOG_INTERVAL_S` with their count.
   An invalid client id is told why (``error`` ``validation_error``) and
   closed with 1008, so a browser sees the code.  Otherwise the server sends
   ``connection_established``.
4. **Authentication** is the ``connect`` message; API keys are compared in
   constant time against every configured key.  Wrong key: ``error``
   ``auth_failed`` then close 4001.  No ``connect`` within
   ``settings.auth_timeout_ms``: close 4002.  Anything else first: ``error``
   ``not_authenticated``, connection kept.  A second ``connect`` on an
   authenticated connection gets ``error`` ``already_authenticated`` and
   changes nothing (a connection never changes identity or permissions; open
   a new one to use another key).
5. **Registration in the hub happens on successful authentication**, so an
   unauthenticated socket cannot kick out an authenticated user.  Then an
   older connection with the same client id is closed with 4003 "replaced by
   a newer connection".

Messages are handled one at a time per connection, in arrival order, by one
handler per type (:class:`_Session`).  Bad input (invalid JSON, JSON nested
deeper than :data:`~reference_server.protocol.MAX_JSON_DEPTH`, an integer
too long to read, unknown type, schema violation, binary frame) gets
``error`` ``invalid_message``, is not logged, and never closes the
connection.  Frames over ``settings.max_message_bytes`` are closed with 1009
and text frames that are not UTF-8 with 1007, both by uvicorn itself
(``ws_max_size``, set by the runner).  A token bucket per connection answers
``rate_limited`` and closes with 1008 "rate limit exceeded" when the flood
goes on (:mod:`reference_server.ratelimit`).  Every answer about a frame
that was not handled (invalid, rate limited) carries the frame's ``id`` when
it has one, so a client waiting for a reply learns it will not come.

Outbound: each connection is a :class:`Connection` (a :class:`hub.Peer`) with
a bounded queue drained by its own writer task, so a slow subscriber never
blocks a publisher: fan-out enqueues without waiting and a full queue closes
the slow connection with 1008 "slow consumer".  Replies to a connection's own
requests wait for queue space instead (back-pressure on that client only).
Every frame is re-addressed to its recipient (``client_id`` in the envelope).
The writer asks the fault controller about every frame (drop / delay) in
test mode.

Shutdown: every connection is tracked in the hub from accept to disconnect
(``hub.track``), so ``hub.close_all(1001, ...)`` reaches unauthenticated
sockets too.  :meth:`Connection.close` is idempotent and safe after the
client went away.

Aborting a connection (``transport.abort()``: no close frame, the browser
sees 1006) needs uvicorn's transport; :class:`EndpointMiddleware`, which serves
the endpoint, records the server protocol object that owns it into the scope.  Under a
server that does not expose it, abort falls back to closing with 1011 and
logs a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket
from starlette.datastructures import State
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from . import messaging
from .access import (
    Action,
    channel_problem,
    check_access,
    client_id_problem,
    lookup_api_key,
    required_permission,
)
from .hub import Hub
from .protocol import (
    CHANNEL_PATTERN,
    CLIENT_ID_PATTERN,
    PROTOCOL_VERSION,
    ClientErrorMessage,
    CloseCode,
    ConnectMessage,
    ErrorCode,
    PingMessage,
    ProtocolError,
    PublishMessage,
    SubscribeMessage,
    UnsubscribeMessage,
    now_iso,
    operation_id,
    parse_client_message,
)
from .ratelimit import CapExceeded, ThrottledCount, TokenBucket, UnauthenticatedCap, Verdict
from .settings import Settings
from .storage import Storage
from .testmode import FaultRules

__all__ = [
    "CAP_LOG_INTERVAL_S",
    "TRANSPORT_OWNER_KEY",
    "WS_PATH",
    "Connection",
    "ConnectionRegistry",
    "EndpointMiddleware",
    "connection_registry",
    "debug_socket",
    "origin_allowed",
]

log = logging.getLogger("reference_server.ws")
client_error_log = logging.getLogger("reference_server.client_errors")

#: The endpoint's path; ``{client_id}`` names the client.
WS_PATH = "/debug/{client_id}"

#: Scope key under which :class:`EndpointMiddleware` stores the server's
#: protocol object (uvicorn's, which has ``.transport``).
TRANSPORT_OWNER_KEY = "nova.transport_owner"

#: How long a close may take (queued frames, then the close frame) before the
#: TCP connection is aborted instead.
CLOSE_DEADLINE_S = 5.0

REPLACED_REASON = "replaced by a newer connection"
SLOW_CONSUMER_REASON = "slow consumer"
RATE_LIMIT_REASON = "rate limit exceeded"
TRY_AGAIN_LATER_REASON = "too many unauthenticated connections; retry later"

#: Refusals past the unauthenticated-connection cap are logged at most once per
#: this many seconds (the first at once, then a count), so a flood cannot flood the log.
CAP_LOG_INTERVAL_S = 10.0


# ----------------------------------------------------------------- middleware


class EndpointMiddleware:
    """Pure ASGI middleware serving :data:`WS_PATH` itself, innermost in the app's middleware.

    A WebSocket scope whose path is ``/debug/{client_id}`` goes straight to
    :func:`debug_socket`, without FastAPI's exception middleware, exit stacks,
    router and dependency solving: those layers would stay suspended for the
    connection's whole life and cost an idle connection about a third of its
    memory (docs/performance.md, "Load tools: connection limit").  Everything else goes
    on to the app.  The outer middleware (host guard, test mode's
    FaultMiddleware) sees the handshake first, as before.

    uvicorn hands the application its protocol's bound ``send`` method, whose
    ``__self__`` owns the asyncio transport; it is recorded as
    ``scope["nova.transport_owner"]`` (absent under other servers) for abort.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            client_id = _endpoint_client_id(scope)
            if client_id is not None:
                owner = getattr(send, "__self__", None)
                if owner is not None and hasattr(owner, "transport"):
                    scope[TRANSPORT_OWNER_KEY] = owner
                await debug_socket(WebSocket(scope, receive, send), client_id)
                return
        await self.app(scope, receive, send)


_ENDPOINT_PREFIX = WS_PATH.split("{", 1)[0]


def _endpoint_client_id(scope: Scope) -> str | None:
    """The ``{client_id}`` of a request for :data:`WS_PATH` (a non-empty segment without ``/``), else None."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if not path.startswith(_ENDPOINT_PREFIX):
        return None
    client_id = path[len(_ENDPOINT_PREFIX) :]
    return client_id if client_id and "/" not in client_id else None


# ----------------------------------------------------------------- helpers


def origin_allowed(origin: str | None, host: str | None, allowed: Collection[str]) -> bool:
    """Whether a handshake with this ``Origin`` may proceed.

    No origin (a non-browser client) passes; so does the server's own origin
    (``http://`` or ``https://`` followed by the ``Host`` header) and every
    origin in ``allowed``.  Comparison ignores case and a trailing slash.
    """
    if origin is None:
        return True
    wanted = origin.strip().rstrip("/").lower()
    if host:
        own = host.strip().lower()
        if wanted in (f"http://{own}", f"https://{own}"):
            return True
    return wanted in {a.strip().rstrip("/").lower() for a in allowed}


def _close_reason(reason: str) -> str:
    """Trim a close reason to the 123 bytes a close frame can carry."""
    data = reason.encode("utf-8")
    if len(data) <= 123:
        return reason
    return data[:123].decode("utf-8", errors="ignore")


#: One encoder for every outbound frame: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _dumps(message: Any) -> str:
    return _ENCODER.encode(message)


def _frame(
    type: str, data: dict[str, Any], client_id: str, id: str | None = None
) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": type,
        "data": data,
        "timestamp": now_iso(),
        "client_id": client_id,
    }
    if id is not None:
        frame["id"] = id
    return frame


# ----------------------------------------------------------------- connection


@dataclass(frozen=True)
class _Out:
    """One queued outbound frame.  ``forced`` frames (harness pushes) skip fault rules."""

    payload: Any
    type: str
    forced: bool = False


@dataclass(frozen=True)
class _CloseItem:
    code: int
    reason: str


class _OutQueue:
    """A connection's bounded outbound FIFO: one consumer (the writer), any number of producers.

    What :class:`asyncio.Queue` offers here (``put_nowait`` raising
    :class:`asyncio.QueueFull`, ``put`` waiting for space in arrival order,
    ``get``, ``get_nowait``), at a fraction of its memory: ``asyncio.Queue``
    holds three deques and an Event from the start, about 3 KiB per idle
    connection; this one creates its buffer on the first frame and its
    waiters' futures only while someone waits.
    """

    __slots__ = ("_getter", "_items", "_putters", "maxsize")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[_Out | _CloseItem] | None = None
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items is not None else 0

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self.maxsize <= self.qsize()

    def put_nowait(self, item: _Out | _CloseItem) -> None:
        if self.full():
            raise asyncio.QueueFull
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def put(self, item: _Out | _CloseItem) -> None:
        while self.full():
            if self._putters is None:
                self._putters = deque()
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            try:
                await waiter
            except BaseException:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._putters.remove(waiter)
                if not self.full() and not waiter.cancelled():
                    self._wake_putter()  # it was woken, then cancelled: pass the turn on
                raise
        self.put_nowait(item)

    def get_nowait(self) -> _Out | _CloseItem:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        self._wake_putter()
        return item

    async def get(self) -> _Out | _CloseItem:
        while not self._items:
            getter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getter = getter
            try:
                await getter
            finally:
                self._getter = None
        return self.get_nowait()

    def _wake_putter(self) -> None:
        putters = self._putters
        while putters:
            waiter = putters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class Connection:
    """One accepted WebSocket: the hub's :class:`~reference_server.hub.Peer`.

    ``enqueue`` never waits (fan-out); ``send`` waits for queue space (replies).
    ``close`` is idempotent and safe after the client went away.
    """

    def __init__(
        self,
        websocket: WebSocket,
        client_id: str,
        *,
        queue_size: int,
        faults: FaultRules | None = None,
    ) -> None:
        self.websocket = websocket
        self.client_id = client_id
        self.connected_at = now_iso()
        self.authenticated = False
        self.metadata: dict[str, Any] | None = None
        self.permissions: frozenset[str] = frozenset()
        self.close_code: int | None = None
        self._faults = faults
        self._queue = _OutQueue(queue_size)
        # Held while a frame is written: by the writer task, or by send() writing
        # directly when nothing is queued (see send()).
        self._send_lock = asyncio.Lock()
        # uvicorn's "the transport takes writes" event: while it is set a send
        # completes without waiting.  None under servers that do not expose it.
        writable = getattr(websocket.scope.get(TRANSPORT_OWNER_KEY), "writable", None)
        self._writable: asyncio.Event | None = writable if isinstance(writable, asyncio.Event) else None
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._dead = False
        self._aborted = False

    def __repr__(self) -> str:
        return f"<Connection {self.client_id!r} authenticated={self.authenticated} closing={self.closing}>"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the writer task (call once, right after accept)."""
        self._writer = asyncio.create_task(
            self._write_loop(), name=f"nova-ws-writer:{self.client_id}"
        )

    @property
    def closing(self) -> bool:
        """True once a close or abort was requested, or the socket is gone: sends are ignored."""
        return self._closing is not None or self._dead or self._aborted

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def request_close(
        self, code: int, reason: str = "", *, urgent: bool = False
    ) -> asyncio.Task[None]:
        """Start closing (idempotent; the first request wins) and return the closing task.

        Ordered (default): frames already queued go first, then the close
        frame.  ``urgent``: queued frames are discarded and the close frame
        goes now.  Either way a close that cannot be sent within
        :data:`CLOSE_DEADLINE_S` aborts the TCP connection.
        """
        if self._closing is None:
            self.close_code = code
            self._closing = asyncio.create_task(
                self._close_flow(code, _close_reason(reason), urgent),
                name=f"nova-ws-close:{self.client_id}",
            )
        return self._closing

    async def close(self, code: int, reason: str = "") -> None:
        """Close after the queued frames and wait until the close frame is sent (hub.Peer)."""
        await asyncio.shield(self.request_close(code, reason))

    def abort(self) -> bool:
        """Drop the TCP connection with no close frame (the client sees 1006).

        Returns False when the server does not expose its transport; the
        connection is then closed with 1011 instead and a warning logged.
        """
        owner = self.websocket.scope.get(TRANSPORT_OWNER_KEY)
        transport = getattr(owner, "transport", None)
        if transport is None or not hasattr(transport, "abort"):
            log.warning(
                "cannot abort %s: the ASGI server does not expose its transport "
                "(the transport is uvicorn's); closing with 1011 instead",
                self.client_id,
            )
            self.request_close(CloseCode.INTERNAL_ERROR, "connection aborted", urgent=True)
            return False
        self._aborted = True
        self.close_code = CloseCode.ABNORMAL
        if self._writer is not None:
            self._writer.cancel()
        transport.abort()
        return True

    async def finish(self) -> None:
        """Called by the endpoint once the client is gone: stop the writer, end any close.

        Frames still queued are dropped (nobody is listening); a close in
        progress ends without waiting for them.
        """
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            await asyncio.wait({self._writer})
        if self._closing is not None:
            await asyncio.shield(self._closing)

    # ------------------------------------------------------------ sending

    def _addressed(self, message: dict[str, Any]) -> dict[str, Any]:
        if message.get("client_id") == self.client_id:
            return message
        addressed = dict(message)
        addressed["client_id"] = self.client_id
        return addressed

    def enqueue(self, message: dict[str, Any]) -> None:
        """Queue a frame without waiting; a full queue closes this connection 1008 "slow consumer"."""
        if self.closing:
            return
        try:
            self._queue.put_nowait(_Out(self._addressed(message), str(message.get("type"))))
        except asyncio.QueueFull:
            log.warning(
                "closing %s: its outbound queue is full (%d frames); it reads too slowly",
                self.client_id,
                self._queue.maxsize,
            )
            self.request_close(CloseCode.POLICY_VIOLATION, SLOW_CONSUMER_REASON, urgent=True)

    async def send(self, message: dict[str, Any]) -> None:
        """Send a reply in order behind queued frames, waiting for queue space if needed.

        With nothing queued, nothing being written, no fault rule active and
        a transport that takes writes without waiting, the frame is written
        right here instead of waking the writer task: the same order and the
        same never-waiting-on-the-client, one task switch less per reply.
        """
        if self.closing:
            return
        payload = self._addressed(message)
        if (
            self._writable is not None
            and self._writable.is_set()
            and self._queue.empty()
            and not self._send_lock.locked()
            and (self._faults is None or not self._faults.active)
        ):
            # No fault rule is active, so the frame goes as it is: no _Out, no fault lookup.
            async with self._send_lock:
                try:
                    await self.websocket.send_text(_dumps(payload))
                except Exception as exc:  # noqa: BLE001 - the socket is gone: stop writing
                    log.debug("reply to %s not sent: %r", self.client_id, exc)
                    self._dead = True
            return
        await self._queue.put(_Out(payload, str(message.get("type"))))

    def push(self, payload: Any) -> bool:
        """Queue a frame exactly as given (a dict/JSON value, or raw text), bypassing fault rules.

        Returns False when the connection is closing or its queue is full.
        """
        if self.closing:
            return False
        kind = payload.get("type") if isinstance(payload, dict) else None
        try:
            self._queue.put_nowait(_Out(payload, str(kind), forced=True))
        except asyncio.QueueFull:
            return False
        return True

    async def _write(self, item: _Out) -> None:
        if not item.forced and self._faults is not None:
            decision = self._faults.outbound(self.client_id, item.type)
            if not decision.deliver:
                return
            if decision.delay_ms:
                await asyncio.sleep(decision.delay_ms / 1000)
        payload = item.payload
        await self.websocket.send_text(payload if isinstance(payload, str) else _dumps(payload))

    async def _write_loop(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                async with self._send_lock:
                    if isinstance(item, _CloseItem):
                        await self._send_close(item.code, item.reason)
                        return
                    await self._write(item)
        except Exception as exc:  # noqa: BLE001 - the socket is gone: stop writing
            log.debug("writer of %s stopped: %r", self.client_id, exc)
        finally:
            self._dead = True
            while not self._queue.empty():  # wake senders waiting for space
                self._queue.get_nowait()

    async def _send_close(self, code: int, reason: str) -> None:
        try:
            await self.websocket.close(code, reason)
        except Exception as exc:  # noqa: BLE001 - already closed or disconnected
            log.debug("close %s of %s not sent: %r", code, self.client_id, exc)

    async def _close_flow(self, code: int, reason: str, urgent: bool) -> None:
        writer = self._writer
        if not urgent and writer is not None and not writer.done():
            try:
                self._queue.put_nowait(_CloseItem(code, reason))
            except asyncio.QueueFull:
                pass  # no room behind the queued frames: close now instead
            else:
                done, _ = await asyncio.wait({writer}, timeout=CLOSE_DEADLINE_S)
                if not done:
                    writer.cancel()
                    self._abort_after_deadline(code)
                return
        if writer is not None and not writer.done():
            writer.cancel()
            await asyncio.wait({writer})
        try:
            await asyncio.wait_for(self._send_close(code, reason), CLOSE_DEADLINE_S)
        except TimeoutError:
            self._abort_after_deadline(code)

    def _abort_after_deadline(self, code: int) -> None:
        log.warning(
            "close %s of %s not sent within %.0f s (client not reading?); aborting the connection",
            code,
            self.client_id,
            CLOSE_DEADLINE_S,
        )
        owner = self.websocket.scope.get(TRANSPORT_OWNER_KEY)
        transport = getattr(owner, "transport", None)
        if transport is not None:
            transport.abort()

    # ------------------------------------------------------------ introspection

    def info(self, hub: Hub) -> dict[str, Any]:
        """What the harness API reports about this connection."""
        return {
            "client_id": self.client_id,
            "connected_at": self.connected_at,
            "authenticated": self.authenticated,
            "metadata": self.metadata,
            "subscriptions": hub.subscriptions(self),
            "queued_frames": self.queued,
            "closing": self.closing,
        }


class ConnectionRegistry:
    """Every accepted connection, authenticated or not, by client id (oldest first).

    The hub only knows authenticated peers; the harness API needs the others too.
    """

    def __init__(self) -> None:
        self._by_client: dict[str, list[Connection]] = {}

    def add(self, conn: Connection) -> None:
        self._by_client.setdefault(conn.client_id, []).append(conn)

    def remove(self, conn: Connection) -> None:
        conns = self._by_client.get(conn.client_id)
        if conns is not None and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._by_client[conn.client_id]

    def for_client(self, client_id: str) -> list[Connection]:
        return list(self._by_client.get(client_id, []))

    def current(self, client_id: str) -> Connection | None:
        """The newest connection of ``client_id`` that is not closing, if any."""
        for conn in reversed(self._by_client.get(client_id, [])):
            if not conn.closing:
                return conn
        return None

    def all(self) -> list[Connection]:
        return [c for conns in self._by_client.values() for c in conns]


def connection_registry(state: State) -> ConnectionRegistry:
    """The registry on ``app.state.connections``, created on first use."""
    registry: ConnectionRegistry | None = getattr(state, "connections", None)
    if registry is None:
        registry = ConnectionRegistry()
        state.connections = registry
    return registry


# ----------------------------------------------------------------- session




class _Session:
    """Reads one connection's frames and dispatches them to one handler per type.

    ``on_authenticated`` is called once, when ``connect`` succeeds.
    """

    def __init__(
        self, conn: Connection, state: State, on_authenticated: Callable[[], None] = lambda: None
    ) -> None:
        self.conn = conn
        self._on_authenticated = on_authenticated
        self.settings: Settings = state.settings
        self.storage: Storage = state.storage
        self.hub: Hub = state.hub
        self.bucket = TokenBucket(
            rate=self.settings.rate_limit_per_second,
            burst=self.settings.rate_limit_burst,
            max_strikes=self.settings.rate_limit_strikes,
        )
        self._replaced: set[asyncio.Task[None]] = set()
        self._auth_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ replies

    async def reply(self, type: str, data: dict[str, Any], *, id: str | None = None) -> None:
        await self.conn.send(_frame(type, data, self.conn.client_id, id))

    async def error(
        self,
        code: ErrorCode,
        message: str,
        *,
        operation_id: str | None = None,
        details: Any = None,
    ) -> None:
        data = {
            "code": code.value,
            "message": message,
            "operation_id": operation_id,
            "details": details,
        }
        await self.reply("error", data, id=operation_id)

    # ------------------------------------------------------------ loop

    async def run(self) -> None:
        """Greet, then handle frames until the client is gone."""
        await self.reply(
            "connection_established",
            {
                "client_id": self.conn.client_id,
                "auth_timeout_ms": self.settings.auth_timeout_ms,
                "protocol_version": PROTOCOL_VERSION,
                "server_time": now_iso(),
            },
        )
        # A timer, not a task, and cancelled once authenticated: an idle connection keeps neither.
        self._auth_timer = asyncio.get_running_loop().call_later(
            self.settings.auth_timeout_ms / 1000, self._auth_timed_out
        )
        try:
            while True:
                event = await self.conn.websocket.receive()
                if event["type"] == "websocket.disconnect":
                    return
                if self.conn.closing:
                    continue  # closing: the client's late frames are not answered
                await self._on_frame(event)
        finally:
            self._cancel_auth_timer()

    def _cancel_auth_timer(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if not self.conn.authenticated:
            log.info(
                "closing %s: no connect within %d ms",
                self.conn.client_id,
                self.settings.auth_timeout_ms,
            )
            self.conn.request_close(CloseCode.AUTH_TIMEOUT, "authentication timeout")

    async def _on_frame(self, event: Mapping[str, Any]) -> None:
        raw: str | bytes = (
            event["text"] if event.get("text") is not None else event.get("bytes") or b""
        )
        verdict = self.bucket.take(time.monotonic())
        if verdict is not Verdict.ADMIT:
            await self.error(
                ErrorCode.RATE_LIMITED,
                f"too many messages: at most {self.settings.rate_limit_per_second:g}/s sustained "
                f"(burst {self.settings.rate_limit_burst}); slow down, this message was dropped",
                operation_id=operation_id(raw),
                details={"strikes": self.bucket.strikes, "max_strikes": self.bucket.max_strikes},
            )
            if verdict is Verdict.CLOSE:
                log.warning("closing %s: %s", self.conn.client_id, RATE_LIMIT_REASON)
                self.conn.request_close(CloseCode.POLICY_VIOLATION, RATE_LIMIT_REASON)
            return
        try:
            msg = parse_client_message(raw)
        except ProtocolError as exc:
            await self.error(
                ErrorCode.INVALID_MESSAGE,
                exc.message,
                operation_id=operation_id(raw),
                details=exc.details,
            )
            return
        if not self.conn.authenticated and msg.type != "connect":
            await self.error(
                ErrorCode.NOT_AUTHENTICATED,
                f"not authenticated: send 'connect' with your api_key before {msg.type!r}",
                operation_id=msg.id,
            )
            return
        try:
            await _HANDLERS[msg.type](self, msg)
        except Exception:
            log.exception("handling %r from %s failed", msg.type, self.conn.client_id)
            await self.error(
                ErrorCode.INTERNAL_ERROR,
                f"the server failed to handle this {msg.type!r}; see the server log",
                operation_id=msg.id,
            )

    # ------------------------------------------------------------ handlers

    async def on_connect(self, msg: ConnectMessage) -> None:
        if self.conn.authenticated:
            await self.error(
                ErrorCode.ALREADY_AUTHENTICATED,
                "this connection is already authenticated; open a new connection to use another key",
                operation_id=msg.id,
            )
            return
        permissions = lookup_api_key(self.settings.api_keys, msg.data.api_key)
        if permissions is None:
            await self.error(
                ErrorCode.AUTH_FAILED,
                "authentication failed: the api_key is not one of the server's keys "
                "(settings.api_keys / NOVA_API_KEYS)",
                operation_id=msg.id,
            )
            self.conn.request_close(CloseCode.AUTH_FAILED, "authentication failed")
            return
        metadata = {
            "type": msg.data.metadata.type,
            "permissions": list(permissions),
            "created": now_iso(),
        }
        self.conn.authenticated = True
        self._cancel_auth_timer()
        self.conn.metadata = metadata
        self.conn.permissions = frozenset(permissions)
        self._on_authenticated()
        previous = self.hub.register(self.conn)
        if previous is not None:
            log.info(
                "client %s reconnected: closing its older connection with 4003", self.conn.client_id
            )
            if isinstance(previous, Connection):
                previous.request_close(CloseCode.REPLACED, REPLACED_REASON)
            else:  # a foreign Peer implementation
                task = asyncio.create_task(previous.close(CloseCode.REPLACED, REPLACED_REASON))
                self._replaced.add(task)
                task.add_done_callback(self._replaced.discard)
        await self.reply(
            "auth_success", {"client_id": self.conn.client_id, "metadata": metadata}, id=msg.id
        )

    async def _channel_allowed(
        self, channel: str, action: Action | None, operation_id: str | None
    ) -> bool:
        problem = channel_problem(channel)
        if problem is not None:
            await self.error(
                ErrorCode.VALIDATION_ERROR,
                problem,
                operation_id=operation_id,
                details={"channel": channel, "pattern": CHANNEL_PATTERN},
            )
            return False
        if action is None:
            return True
        denied = check_access(channel, action, self.conn.permissions)
        if denied is not None:
            await self.error(
                ErrorCode.FORBIDDEN,
                denied,
                operation_id=operation_id,
                details={
                    "channel": channel,
                    "action": action,
                    "required": required_permission(channel, action),
                },
            )
            return False
        missing = await messaging.missing_thread(self.storage, channel)
        if missing is not None:
            await self.error(
                ErrorCode.VALIDATION_ERROR,
                missing,
                operation_id=operation_id,
                details={"channel": channel, "thread_id": channel.split(":", 1)[1]},
            )
            return False
        return True

    async def on_subscribe(self, msg: SubscribeMessage) -> None:
        """Subscribe, replay the backlog after ``since_seq``, then go live: no gap, no duplicate.

        The hub buffers live messages from the moment of ``hub.subscribe``; the
        backlog is read afterwards, so together they cover every seq.  The
        stream position sent in ``subscribed.last_seq`` is the last replayed
        seq (or, with nothing to replay, the channel's last seq, capped by
        ``since_seq``); buffered messages after it follow ``subscribed``.
        """
        channel = msg.data.channel
        if not await self._channel_allowed(channel, "subscribe", msg.id):
            return
        sub = self.hub.subscribe(self.conn, channel)
        position = await self.storage.last_seq(channel)
        since = msg.data.since_seq
        if since is not None:
            backlog = await self.storage.messages_since(channel, since)
            for stored in backlog:
                await self.conn.send(messaging.channel_message_frame(stored))
            position = backlog[-1].seq if backlog else min(since, position)
        await self.reply("subscribed", {"channel": channel, "last_seq": position}, id=msg.id)
        for frame in sub.go_live(after_seq=position):  # no await in between: order kept
            self.conn.enqueue(frame)

    async def on_unsubscribe(self, msg: UnsubscribeMessage) -> None:
        """Idempotent: unsubscribing from a channel one is not subscribed to is answered too."""
        channel = msg.data.channel
        if not await self._channel_allowed(channel, None, msg.id):
            return
        self.hub.unsubscribe(self.conn, channel)
        await self.reply("unsubscribed", {"channel": channel}, id=msg.id)

    async def on_publish(self, msg: PublishMessage) -> None:
        """Commit, fan out, then confirm; a repeated ``id`` is confirmed again, not re-sent."""
        channel = msg.data.channel
        if not await self._channel_allowed(channel, "publish", msg.id):
            return
        stored, _created = await messaging.publish(
            self.storage,
            self.hub,
            channel,
            sender=self.conn.client_id,
            content=msg.data.content,
            message_id=msg.id,
        )
        await self.reply(
            "delivery_confirmation",
            {"message_id": stored.message_id, "channel": stored.channel, "seq": stored.seq},
            id=msg.id,
        )

    async def on_ping(self, msg: PingMessage) -> None:
        await self.reply("pong", {"server_time": now_iso()}, id=msg.id)

    async def on_client_error(self, msg: ClientErrorMessage) -> None:
        """Log and store the client's report (``GET /api/client-errors``); no reply."""
        client_error_log.warning(
            "client %s reported an error: %s (context: %s)",
            self.conn.client_id,
            msg.data.message,
            _dumps(msg.data.context),
        )
        await self.storage.add_client_error(self.conn.client_id, msg.data.message, msg.data.context)


#: Frame type -> the :class:`_Session` method that handles it (one table, not a dict per connection).
_HANDLERS: dict[str, Callable[[_Session, Any], Awaitable[None]]] = {
    "connect": _Session.on_connect,
    "subscribe": _Session.on_subscribe,
    "unsubscribe": _Session.on_unsubscribe,
    "publish": _Session.on_publish,
    "ping": _Session.on_ping,
    "client_error": _Session.on_client_error,
}


# ----------------------------------------------------------------- admission


class _Slot:
    """One connection's place under the unauthenticated cap; :meth:`release` is idempotent."""

    def __init__(self, cap: UnauthenticatedCap, address: str) -> None:
        self._cap = cap
        self._address = address
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._cap.release(self._address)


class _Admission:
    """The shim over :class:`~reference_server.ratelimit.UnauthenticatedCap`: slots and throttled logging."""

    def __init__(self, settings: Settings) -> None:
        self.cap = UnauthenticatedCap(
            per_address=settings.max_unauthenticated_per_address,
            total=settings.max_unauthenticated_total,
        )
        self._refusals = ThrottledCount()

    def enter(self, address: str) -> _Slot | None:
        """A slot for a connection from ``address``, or None (refusal logged, throttled)."""
        full = self.cap.admit(address)
        if full is None:
            return _Slot(self.cap, address)
        if self._refusals.record(address):
            log.warning(
                "closing an unauthenticated connection from %r with 1013 (try again later): "
                "the %s cap is reached (%d of max_unauthenticated_per_address %d from this "
                "address, %d of max_unauthenticated_total %d in all); further refusals are "
                "counted and logged every %.0f s",
                address,
                "per-address" if full is CapExceeded.PER_ADDRESS else "total",
                self.cap.count_for(address),
                self.cap.per_address,
                self.cap.count,
                self.cap.total,
                CAP_LOG_INTERVAL_S,
            )
            asyncio.get_running_loop().call_later(CAP_LOG_INTERVAL_S, self._report)
        return None

    def _report(self) -> None:
        counts = self._refusals.close_window()
        if not counts:
            return
        busiest = max(counts, key=counts.__getitem__)
        log.warning(
            "closed %d more unauthenticated connections with 1013 in the last %.0f s, from %d "
            "address(es), most from %r (%d); %d unauthenticated connections now",
            sum(counts.values()),
            CAP_LOG_INTERVAL_S,
            len(counts),
            busiest,
            counts[busiest],
            self.cap.count,
        )
        asyncio.get_running_loop().call_later(CAP_LOG_INTERVAL_S, self._report)


def _admission(state: State) -> _Admission:
    """The admission state on ``app.state.admission``, created on first use."""
    admission: _Admission | None = getattr(state, "admission", None)
    if admission is None:
        admission = _Admission(state.settings)
        state.admission = admission
    return admission


async def _close_try_later(websocket: WebSocket) -> None:
    try:
        await websocket.accept()
        await websocket.close(CloseCode.TRY_AGAIN_LATER, TRY_AGAIN_LATER_REASON)
    except Exception as exc:  # noqa: BLE001 - the client left first
        log.debug("closing with 1013: %r", exc)


# ----------------------------------------------------------------- endpoint


async def _deny(websocket: WebSocket, status: int, body: str) -> None:
    """Refuse the handshake with an HTTP ``status`` (403 under servers without the extension)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(PlainTextResponse(body, status_code=status))
        return
    log.warning("ASGI server lacks websocket.http.response: denying with 403 instead of %d", status)
    await websocket.close()


async def debug_socket(websocket: WebSocket, client_id: str) -> None:
    """The Nova WebSocket endpoint (see the module docstring and docs/protocol.md)."""
    state = websocket.app.state
    settings: Settings = state.settings
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, websocket.headers.get("host"), settings.allowed_origins):
        log.warning("handshake of %s refused: origin %r is not allowed", client_id, origin)
        await _deny(
            websocket,
            403,
            f"origin {origin!r} is not allowed to open WebSockets here; add it to "
            "settings.allowed_origins (NOVA_ALLOWED_ORIGINS) if it is your frontend",
        )
        return
    faults: FaultRules | None = state.faults if settings.test_mode else None

    slot = _admission(state).enter(websocket.client.host if websocket.client else "")
    if slot is None:
        await _close_try_later(websocket)
        return
    try:
        await websocket.accept()
        problem = client_id_problem(client_id)
        if problem is not None:
            await _refuse_client_id(websocket, client_id, problem)
            return
        await _serve(websocket, state, client_id, faults, slot)
    finally:
        slot.release()


async def _serve(
    websocket: WebSocket,
    state: State,
    client_id: str,
    faults: FaultRules | None,
    slot: _Slot,
) -> None:
    settings: Settings = state.settings
    conn = Connection(websocket, client_id, queue_size=settings.outbound_queue_size, faults=faults)
    registry = connection_registry(state)
    hub: Hub = state.hub
    registry.add(conn)
    hub.track(conn)  # so shutdown (hub.close_all) closes it with 1001 even before authentication
    conn.start()
    try:
        await _Session(conn, state, on_authenticated=slot.release).run()
    finally:
        registry.remove(conn)
        hub.untrack(conn)
        hub.unregister(conn)
        await conn.finish()


async def _refuse_client_id(websocket: WebSocket, client_id: str, problem: str) -> None:
    error = _frame(
        "error",
        {
            "code": ErrorCode.VALIDATION_ERROR.value,
            "message": problem,
            "operation_id": None,
            "details": {"client_id": client_id[:80], "pattern": CLIENT_ID_PATTERN},
        },
        client_id,
    )
    try:
        await websocket.send_text(_dumps(error))
        await websocket.close(
            CloseCode.POLICY_VIOLATION,
            _close_reason(f"invalid client id: must match {CLIENT_ID_PATTERN}"),
        )
    except Exception as exc:  # noqa: BLE001 - the client left first
        log.debug("refusing client id %r: %r", client_id, exc)
