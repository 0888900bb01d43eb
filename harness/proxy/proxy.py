"""The fault proxy: a thin asyncio shim that applies toxics to live TCP connections.

Threading model: the proxy owns one thread running one event loop.  All
connection state lives on that loop.  Control calls from other threads
(``add_toxic``, ``remove``, ``reset_connections``, ...) schedule a callback on
the loop with ``call_soon_threadsafe`` and wait only until it has *run* -- the
callback changes in-memory state and never awaits I/O -- with a deadline, so a
control call never waits behind traffic (a blackholed or saturated
connection included).  Called on the loop thread itself they run inline.

Data path, per direction of a connection: the source protocol's
``data_received`` annotates the read (:class:`~harness.proxy.tracking.StreamTracker`
while the connection may still be HTTP/WebSocket), then either writes it
straight to the other transport (no toxic applies and nothing is queued: no
task, no timer, no copy) or pushes it through the direction's
:class:`~harness.proxy.toxics.ToxicChain` and queues what comes out, writing
each item when it is due from one ``call_at`` timer per direction.
Back-pressure: reading from the source pauses while the destination
transport's buffer is above its high-water mark (``pause_writing``) or while
the bytes queued and held by toxics exceed ``buffer_limit``; it resumes below
half of that.  So the proxy's memory per direction stays around
``buffer_limit`` + one read + the transport's high-water mark, whatever the
peers do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import math
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from ..errors import WaitTimeoutError
from .errors import ProxyConfigError, ProxyError, ProxyTimeoutError
from .model import (
    ConnectionInfo,
    DirectionArg,
    DirectionStats,
    EventKind,
    ProxyEvent,
    Target,
    directions,
)
from .toxics import Chunk, Close, Eof, Step, Timer, Toxic, ToxicChain
from .tracking import (
    DOWNSTREAM,
    UPSTREAM,
    Direction,
    FrameSeen,
    FramingLost,
    Note,
    RequestSeen,
    ResponseSeen,
    StreamTracker,
)

__all__ = ["FaultProxy", "RefusalHandle", "ToxicHandle"]

T = TypeVar("T")

RefuseHow = Literal["refuse", "reset", "close"]
_LINGER_RST = struct.pack("ii", 1, 0)


def _rst(sock: Any) -> None:
    """Make the next close of ``sock`` send an RST (SO_LINGER on, timeout 0)."""
    with suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)


# ---------------------------------------------------------------- handles


class _Removable:
    """A handle that undoes its fault with ``remove()``, or on leaving ``with``."""

    def remove(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()


class ToxicHandle(_Removable):
    """A toxic added to a :class:`FaultProxy`; ``remove()`` (or leaving ``with``) takes it off.

    Removing releases whatever the toxic holds (a blackhole's data goes on,
    in order) and cancels its timers.  ``remove`` is idempotent and is a
    no-op once the proxy has stopped.
    """

    def __init__(self, proxy: FaultProxy, toxic_id: int, name: str, toxic: Toxic,
                 directions: tuple[Direction, ...], target: Target, toxicity: float) -> None:
        self._proxy = proxy
        self.id = toxic_id
        self.name = name
        self.toxic = toxic
        self.directions = directions
        self.target = target
        self.toxicity = toxicity
        self.active = True

    def remove(self) -> None:
        """Take the toxic off every connection it applies to, and off new ones."""
        self._proxy._remove(self)

    def describe(self) -> str:
        dirs = "+".join(self.directions)
        extra = f" toxicity={self.toxicity:g}" if self.toxicity < 1 else ""
        return f"{self.name}: {self.toxic.describe()} {dirs} target={self.target.describe()}{extra}"

    def __repr__(self) -> str:
        return f"<ToxicHandle {self.describe()}{'' if self.active else ' (removed)'}>"


class RefusalHandle(_Removable):
    """Refusal of new connections; ``remove()`` (or leaving ``with``) accepts them again."""

    def __init__(self, proxy: FaultProxy, how: RefuseHow) -> None:
        self._proxy = proxy
        self.how = how

    def remove(self) -> None:
        """Accept new connections again (a no-op once the proxy has stopped)."""
        if self._proxy.running:
            self._proxy.refuse_connections(False)


class _Entry:
    """A toxic as the loop sees it."""

    __slots__ = ("handle", "order")

    def __init__(self, handle: ToxicHandle) -> None:
        self.handle = handle
        self.order = handle.id


# ---------------------------------------------------------------- protocols


class _Side(asyncio.Protocol):
    """One socket of a connection: the client's (``client``) or the upstream server's (``server``)."""

    def __init__(self, conn: _Connection, role: Literal["client", "server"]) -> None:
        self.conn = conn
        self.role = role
        self.transport: asyncio.Transport | None = None
        # The pipe whose source this socket is, and the one writing into it.
        self.out_dir: Direction = UPSTREAM if role == "client" else DOWNSTREAM
        self.in_dir: Direction = DOWNSTREAM if role == "client" else UPSTREAM

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.side_made(self)

    def data_received(self, data: bytes) -> None:
        self.conn.on_data(self.out_dir, data)

    def eof_received(self) -> bool:
        self.conn.on_eof(self.out_dir)
        return True  # keep the write side open: a half-close is forwarded, not acted on

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.on_lost(self, exc)

    def pause_writing(self) -> None:
        self.conn.pipes[self.in_dir].set_blocked(True)

    def resume_writing(self) -> None:
        self.conn.pipes[self.in_dir].set_blocked(False)


class _Pipe:
    """One direction of one connection: a toxic chain, a due-time queue, flow control."""

    def __init__(self, conn: _Connection, direction: Direction, src: _Side, dst: _Side) -> None:
        self.conn = conn
        self.direction = direction
        self.src = src
        self.dst = dst
        self.chain = ToxicChain()
        self.queue: deque[tuple[float, Step]] = deque()
        self.queued_bytes = 0
        self.last_at = -math.inf
        self.handle: asyncio.TimerHandle | None = None
        self.timers: dict[object, asyncio.TimerHandle] = {}
        self.blocked = False
        self.src_paused = False
        self.received = 0
        self.sent = 0
        self.peak = 0
        self.eof_in = False
        self.eof_out = False
        self.dead = False

    # ---- flow control

    @property
    def pending(self) -> int:
        return self.queued_bytes + (self.chain.held_bytes if self.chain else 0)

    @property
    def buffered(self) -> int:
        t = self.dst.transport
        return self.pending + (t.get_write_buffer_size() if t is not None else 0)

    def set_blocked(self, blocked: bool) -> None:
        self.blocked = blocked
        self.flow()

    def flow(self) -> None:
        pending = self.pending
        t = self.dst.transport
        buffered = pending + (t.get_write_buffer_size() if t is not None else 0)
        self.peak = max(self.peak, buffered)
        src = self.src.transport
        if src is None or self.conn.closed:
            return
        limit = self.conn.proxy.buffer_limit
        if self.blocked or pending > limit:
            if not self.src_paused:
                self.src_paused = True
                src.pause_reading()
        elif self.src_paused and pending <= limit // 2 and self.conn.reading:
            self.src_paused = False
            src.resume_reading()

    # ---- input

    def push(self, chunk: Chunk) -> None:
        if self.dead:
            return
        if not self.chain and not self.queue:
            self.write(chunk.data)
            t = self.dst.transport
            if t is not None:
                self.peak = max(self.peak, t.get_write_buffer_size())
            return
        self.enqueue(self.chain.feed(chunk))
        self.flow()

    def push_eof(self) -> None:
        if self.eof_in or self.dead:
            return
        self.eof_in = True
        now = self.conn.loop.time()
        if not self.chain and not self.queue:
            self.write_eof()
        else:
            self.enqueue(self.chain.feed(Eof(now)))

    # ---- output

    def write(self, data: bytes) -> None:
        t = self.dst.transport
        if t is None or self.eof_out or self.conn.closed:
            return
        t.write(data)
        self.sent += len(data)

    def write_eof(self) -> None:
        if self.eof_out:
            return
        self.eof_out = True
        t = self.dst.transport
        if t is not None and not self.conn.closed and t.can_write_eof():
            t.write_eof()
            self.conn.proxy._emit(EventKind.HALF_CLOSED, self.conn.id, direction=self.direction)
        self.conn.check_done()

    def enqueue(self, steps: list[Step]) -> None:
        for step in steps:
            if isinstance(step, Timer):
                self.set_timer(step)
                continue
            at = max(self.last_at, step.at)
            self.last_at = at
            self.queue.append((at, step))
            if isinstance(step, Chunk):
                self.queued_bytes += len(step.data)
        if self.queue and self.handle is None:
            self.handle = self.conn.loop.call_at(self.queue[0][0], self.drain)

    def drain(self) -> None:
        self.handle = None
        if self.conn.closed:
            return
        now = self.conn.loop.time()
        queue = self.queue
        while queue and queue[0][0] <= now:
            _, step = queue.popleft()
            if isinstance(step, Chunk):
                self.queued_bytes -= len(step.data)
                self.write(step.data)
            elif isinstance(step, Eof):
                self.write_eof()
            elif isinstance(step, Close):
                self.conn.close_by_toxic(self.direction, step)
                return
        if queue:
            self.handle = self.conn.loop.call_at(queue[0][0], self.drain)
        self.flow()

    def set_timer(self, timer: Timer) -> None:
        old = self.timers.pop(timer.key, None)
        if old is not None:
            old.cancel()
        self.timers[timer.key] = self.conn.loop.call_at(timer.at, self.fire, timer)

    def fire(self, timer: Timer) -> None:
        self.timers.pop(timer.key, None)
        self.conn.close(reset=timer.reset, reason=timer.reason)

    def cancel_timer(self, key: object) -> None:
        handle = self.timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def kill(self) -> None:
        """Nothing more goes this way: drop the queue, stop timers."""
        self.dead = True
        self.queue.clear()
        self.queued_bytes = 0
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()

    def stats(self, frames: int) -> DirectionStats:
        return DirectionStats(
            received=self.received,
            sent=self.sent,
            frames=frames,
            buffered=self.buffered,
            peak_buffered=self.peak,
            eof=self.eof_out,
        )


class _Connection:
    """A client connection and its upstream connection; lives on the proxy loop."""

    def __init__(self, proxy: FaultProxy, conn_id: int, peer: str) -> None:
        self.proxy = proxy
        self.loop = proxy._require_loop()
        self.id = conn_id
        self.peer = peer
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        self.close_reason: str | None = None
        self.closed = False
        self.reading = False  # the client side reads once upstream is connected
        self.raw: socket.socket | None = None  # the accepted socket, until its transport exists
        self.tracker = StreamTracker()
        self.tracking = True
        self.path: str | None = None
        self.method: str | None = None
        self.considered: set[int] = set()
        self.applied: list[str] = []
        self.client = _Side(self, "client")
        self.server = _Side(self, "server")
        self.pipes: dict[Direction, _Pipe] = {
            UPSTREAM: _Pipe(self, UPSTREAM, self.client, self.server),
            DOWNSTREAM: _Pipe(self, DOWNSTREAM, self.server, self.client),
        }

    # ---- classification and toxics

    @property
    def classified(self) -> bool:
        return self.tracker.classified

    @property
    def websocket(self) -> bool:
        return self.tracker.websocket

    def matches(self, target: Target) -> bool | None:
        return target.matches(self.id, self.classified, self.path, self.websocket)

    def consider(self, entry: _Entry) -> None:
        """Attach ``entry``'s toxic if its target matches (once known)."""
        handle = entry.handle
        if handle.id in self.considered or self.closed:
            return
        match = self.matches(handle.target)
        if match is None:
            return
        self.considered.add(handle.id)
        if not match:
            return
        now = self.loop.time()
        for direction in handle.directions:
            rng = random.Random(f"{self.proxy.seed}:{handle.id}:{self.id}:{direction}")
            if handle.toxicity < 1.0 and rng.random() >= handle.toxicity:
                continue
            pipe = self.pipes[direction]
            steps = pipe.chain.attach(handle.id, entry.order, handle.toxic.stage(rng), now)
            self.applied.append(f"{handle.name}/{direction}")
            self.proxy._emit(EventKind.TOXIC_APPLIED, self.id, toxic_id=handle.id,
                             name=handle.name, direction=direction)
            pipe.enqueue(steps)
            pipe.flow()

    def detach(self, toxic_id: int) -> None:
        now = self.loop.time()
        for pipe in self.pipes.values():
            if toxic_id in pipe.chain:
                pipe.cancel_timer(toxic_id)
                steps = pipe.chain.detach(toxic_id, now)
                if not pipe.dead:
                    pipe.enqueue(steps)
                pipe.flow()
        self.considered.discard(toxic_id)

    # ---- events from the sockets

    def side_made(self, side: _Side) -> None:
        if self.closed:
            assert side.transport is not None
            side.transport.abort()
            return
        if side is self.client:
            side.transport.pause_reading()  # type: ignore[union-attr]
        else:
            self.reading = True
            if self.client.transport is not None:
                self.client.transport.resume_reading()

    def on_data(self, direction: Direction, data: bytes) -> None:
        if self.closed:
            return
        pipe = self.pipes[direction]
        offset = pipe.received
        pipe.received = offset + len(data)
        if not self.tracking:
            t = pipe.dst.transport
            if not pipe.chain and not pipe.queue and not pipe.eof_out and t is not None:
                # The fast path: nothing to apply, nothing queued ahead (the flow
                # is paused by the transport's pause_writing; only the peak is kept).
                t.write(data)
                pipe.sent += len(data)
                pipe.peak = max(pipe.peak, t.get_write_buffer_size())
            else:
                pipe.push(Chunk(self.loop.time(), data, offset))
            return
        chunks, notes = self.tracker.feed(direction, self.loop.time(), data)
        for note in notes:
            self.note(note)
        if self.tracker.opaque:
            self.tracking = False
        for chunk_direction, chunk in chunks:
            self.pipes[chunk_direction].push(chunk)

    def note(self, note: Note) -> None:
        emit = self.proxy._emit
        if isinstance(note, RequestSeen):
            request = note.request
            if request is None:
                emit(EventKind.REQUEST, self.id, http=False, path=None, websocket=False)
            else:
                self.path = request.path
                self.method = request.method
                emit(EventKind.REQUEST, self.id, http=True, method=request.method,
                     path=request.path, websocket=request.websocket)
            for entry in list(self.proxy._entries):
                self.consider(entry)
        elif isinstance(note, ResponseSeen):
            emit(EventKind.RESPONSE, self.id, status=note.response.status, upgraded=note.upgraded)
        elif isinstance(note, FrameSeen):
            emit(EventKind.CLOSE_FRAME, self.id, direction=note.direction,
                 code=note.frame.close_code, offset=note.frame.start)
        elif isinstance(note, FramingLost):
            emit(EventKind.FRAMING_LOST, self.id, direction=note.direction,
                 offset=note.offset, reason=note.reason)

    def on_eof(self, direction: Direction) -> None:
        if not self.closed:
            self.pipes[direction].push_eof()

    def on_lost(self, side: _Side, exc: Exception | None) -> None:
        if self.closed:
            return
        if exc is not None:
            # The peer reset us (or a write failed): pass the failure on as an RST.
            self.close(reset=True, reason=f"{side.role} lost: {exc!r}")
            return
        self.pipes[side.in_dir].kill()
        self.pipes[side.in_dir].eof_out = True
        self.pipes[side.out_dir].push_eof()
        self.check_done()

    def check_done(self) -> None:
        if self.pipes[UPSTREAM].eof_out and self.pipes[DOWNSTREAM].eof_out:
            self.close(reset=False, reason="closed")

    # ---- closing

    def close_by_toxic(self, direction: Direction, step: Close) -> None:
        if step.cut_at is not None:
            self.proxy._emit(EventKind.CUT, self.id, direction=direction, reason=step.reason,
                             at_byte=step.cut_at, at_boundary=step.at_boundary)
        self.close(reset=step.reset, reason=step.reason)

    def close(self, *, reset: bool, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.closed_at = time.monotonic()
        self.close_reason = reason
        for pipe in self.pipes.values():
            pipe.kill()
        if self.raw is not None and self.client.transport is None:
            if reset:
                _rst(self.raw)
            self.raw.close()
        for side in (self.client, self.server):
            t = side.transport
            if t is None:
                continue
            if reset:
                _rst(t.get_extra_info("socket"))
                t.abort()
            else:
                t.close()
        if reset:
            self.proxy._emit(EventKind.RESET, self.id, reason=reason)
        self.proxy._connection_closed(self)

    def info(self) -> ConnectionInfo:
        frames = self.tracker.frames
        return ConnectionInfo(
            id=self.id,
            peer=self.peer,
            path=self.path,
            method=self.method,
            websocket=self.websocket,
            upgraded=self.tracker.upgraded,
            opened_at=self.opened_at,
            closed_at=self.closed_at,
            close_reason=self.close_reason,
            upstream=self.pipes[UPSTREAM].stats(frames[UPSTREAM]),
            downstream=self.pipes[DOWNSTREAM].stats(frames[DOWNSTREAM]),
            toxics=tuple(self.applied),
        )


# ---------------------------------------------------------------- the proxy


class FaultProxy:
    """A TCP proxy with toxics, on its own thread and event loop.

    ::

        proxy = FaultProxy(upstream=("127.0.0.1", 8000), seed=1234).start()
        with proxy.add_toxic(Latency(200, jitter=50), "downstream",
                             target=Target(websocket_only=True, path_contains="client-42")):
            ...                                  # traffic to proxy.url is delayed
        proxy.stop()

    It listens on ``host`` (default ``127.0.0.1``) port ``port`` (default 0:
    an ephemeral port, bound in :meth:`start` and read back as
    :attr:`port`), and for each client connection opens one to ``upstream``.
    ``seed`` makes every random choice (jitter, slice sizes, toxicity)
    reproducible: each toxic on each connection and direction draws from its
    own ``random.Random`` seeded with ``(seed, toxic id, connection id,
    direction)``.

    Every public method is thread-safe.  Control calls wait at most
    ``control_timeout`` seconds for the proxy loop to run them (it runs them
    at its next iteration; it never blocks on I/O), then raise
    :class:`ProxyTimeoutError`.  Unexpected exceptions on the proxy loop are
    logged as ``error`` events and raised by :meth:`stop`.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | str = 0,
        buffer_limit: int = 256 * 1024,
        control_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        max_events: int = 100_000,
        keep_closed: int = 1000,
        backlog: int = 128,
    ) -> None:
        if buffer_limit < 1:
            raise ProxyConfigError(f"buffer_limit must be >= 1 byte, got {buffer_limit!r}")
        self._upstream = (upstream[0], int(upstream[1]))
        self.host = host
        self._port = port
        self.seed = seed
        self.buffer_limit = buffer_limit
        self.control_timeout = control_timeout
        self.connect_timeout = connect_timeout
        self.backlog = backlog
        self._events: deque[ProxyEvent] = deque(maxlen=max_events)
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._toxic_ids = itertools.count(1)
        self._id_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lsock: socket.socket | None = None
        self._placeholder: socket.socket | None = None
        self._family = socket.AF_INET
        self._address: tuple[Any, ...] = (host, port)
        self._entries: list[_Entry] = []
        self._handles: dict[str, ToxicHandle] = {}
        self._conns: dict[int, _Connection] = {}
        self._closed: deque[ConnectionInfo] = deque(maxlen=keep_closed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping: list[_Connection] = []
        self._refusing: RefuseHow | None = None
        self._errors: list[str] = []
        self._state: Literal["new", "running", "stopped"] = "new"
        self._start_error: BaseException | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FaultProxy:
        """Bind, start the thread and its loop, return ``self`` once it accepts connections."""
        if self._state != "new":
            raise ProxyError(f"this proxy was already started (state: {self._state}); make a new one")
        infos = socket.getaddrinfo(self.host, self._port, type=socket.SOCK_STREAM)
        family, _, _, _, address = infos[0]
        self._family = family
        try:
            self._lsock = self._listen_socket(address)
            self._address = self._lsock.getsockname()
            # A bound, never-listening twin keeps the port ours while refusing.
            self._placeholder = self._bound_socket(self._address)
        except OSError as exc:
            self._close_sockets()
            raise ProxyError(
                f"cannot listen on {self.host}:{self._port}: {exc}; use port=0 for an ephemeral port"
            ) from exc
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"fault-proxy-{self.port}", daemon=True
        )
        self._thread.start()
        if not ready.wait(self.control_timeout) or self._start_error is not None:
            self._state = "stopped"
            self._close_sockets()
            raise ProxyError(
                f"the fault proxy thread did not start within {self.control_timeout:g}s: "
                f"{self._start_error!r}"
            ) from self._start_error
        self._state = "running"
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection (FIN), stop listening, join the thread (at most ``timeout`` s).

        Raises :class:`ProxyError` if the proxy loop hit unexpected exceptions
        while it ran (they are bugs worth seeing), :class:`ProxyTimeoutError`
        if the thread does not end in time.
        """
        if self._state != "running":
            return
        self._state = "stopped"
        loop, thread = self._loop, self._thread
        assert loop is not None and thread is not None
        with suppress(RuntimeError):  # the loop already closed
            loop.call_soon_threadsafe(self._begin_stop)
        if threading.current_thread() is not thread:
            thread.join(timeout)
            if thread.is_alive():
                raise ProxyTimeoutError(f"the fault proxy thread did not stop within {timeout:g}s")
        if self._errors:
            raise ProxyError(
                f"the fault proxy loop hit {len(self._errors)} unexpected error(s); first: "
                f"{self._errors[0]}"
            )

    def __enter__(self) -> Self:
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def port(self) -> int:
        """The port the proxy listens on (known once started)."""
        return int(self._address[1])

    @property
    def address(self) -> tuple[str, int]:
        return (str(self._address[0]), self.port)

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the proxy."""
        host = str(self._address[0])
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def ws_url(self, path: str = "/") -> str:
        """``ws://HOST:PORT/path`` through the proxy."""
        return "ws" + self.url[4:] + ("" if path.startswith("/") else "/") + path

    @property
    def upstream(self) -> tuple[str, int]:
        return self._upstream

    def set_upstream(self, upstream: tuple[str, int]) -> None:
        """Send *new* connections to ``upstream`` (live ones keep theirs)."""
        self._upstream = (upstream[0], int(upstream[1]))

    # ------------------------------------------------------------ toxics

    def add_toxic(
        self,
        toxic: Toxic,
        direction: DirectionArg | str = "both",
        *,
        target: Target | None = None,
        name: str | None = None,
        toxicity: float = 1.0,
    ) -> ToxicHandle:
        """Apply ``toxic`` to live and future connections that ``target`` matches.

        ``direction``: ``"upstream"``/``"to_server"`` (client to server),
        ``"downstream"``/``"to_client"`` (server to client) or ``"both"``
        (one stage per direction).  ``toxicity`` is the chance (seeded) that
        it applies to a given connection and direction.  Toxics apply in the
        order they were added.  Returns a handle whose ``remove()`` undoes it;
        when this returns, the toxic is in place for every byte read after.
        """
        if not isinstance(toxic, Toxic):
            raise ProxyConfigError(
                f"add_toxic expects a toxic (Latency, Bandwidth, Blackhole, ...), got {toxic!r}"
            )
        dirs = directions(direction)
        if not 0.0 <= toxicity <= 1.0:
            raise ProxyConfigError(f"toxicity must be between 0 and 1, got {toxicity!r}")
        with self._id_lock:
            toxic_id = next(self._toxic_ids)
            name = name or f"{toxic.kind}_{toxic_id}"
            if name in self._handles:
                raise ProxyConfigError(
                    f"a toxic named {name!r} is already active; remove it or pick another name"
                )
            handle = ToxicHandle(self, toxic_id, name, toxic, dirs, target or Target(), toxicity)
            self._handles[name] = handle
        try:
            self._call(self._do_add, _Entry(handle))
        except BaseException:
            with self._id_lock:
                self._handles.pop(name, None)
            raise
        return handle

    def toxics(self) -> list[ToxicHandle]:
        """The active toxics, in the order they apply."""
        with self._id_lock:
            return sorted(self._handles.values(), key=lambda h: h.id)

    def remove_toxic(self, handle_or_name: ToxicHandle | str) -> None:
        """Remove a toxic by handle or name (a missing name raises :class:`ProxyConfigError`)."""
        if isinstance(handle_or_name, str):
            with self._id_lock:
                handle = self._handles.get(handle_or_name)
            if handle is None:
                raise ProxyConfigError(
                    f"no active toxic named {handle_or_name!r}; active: {sorted(self._handles)}"
                )
            handle_or_name = handle
        self._remove(handle_or_name)

    def _remove(self, handle: ToxicHandle) -> None:
        if not handle.active:
            return
        if self.running:
            self._call(self._do_remove, handle)
        handle.active = False
        with self._id_lock:
            if self._handles.get(handle.name) is handle:
                del self._handles[handle.name]

    def clear(self) -> None:
        """Remove every toxic and accept connections again (live connections stay open)."""
        for handle in self.toxics():
            handle.remove()
        if self.running:
            self.refuse_connections(False)

    # ------------------------------------------------------------ connections

    def reset_connections(self, target: Target | None = None) -> list[int]:
        """Reset (TCP RST, both ways) every live connection ``target`` matches; return their ids.

        Connections whose request head has not been read yet are not matched
        by a target that needs it (path, WebSocket).
        """
        return self._call(self._do_reset, target or Target())

    def refuse_connections(self, on: bool = True, *, how: RefuseHow = "refuse") -> RefusalHandle:
        """Refuse new connections (live ones are untouched) until ``remove()`` or ``False``.

        ``how``: ``"refuse"`` stops listening, so a client gets ECONNREFUSED
        like a server that is down (the port stays reserved); ``"reset"``
        accepts and resets at once; ``"close"`` accepts and closes (FIN) at once.
        """
        if how not in ("refuse", "reset", "close"):
            raise ProxyConfigError(f"how must be 'refuse', 'reset' or 'close', got {how!r}")
        self._call(self._do_refuse, how if on else None)
        return RefusalHandle(self, how)

    def connections(self, *, live_only: bool = False) -> list[ConnectionInfo]:
        """Snapshots of live and recently closed connections, by id."""
        if self.running:
            return self._call(self._snapshot, live_only)
        return self._snapshot(live_only)

    # ------------------------------------------------------------ events

    @property
    def events(self) -> list[ProxyEvent]:
        """A copy of the event log, oldest first."""
        with self._cond:
            return list(self._events)

    def clear_events(self) -> None:
        """Forget the event log (sequence numbers keep increasing)."""
        with self._cond:
            self._events.clear()

    def wait_for_event(
        self,
        kind: EventKind | str | None = None,
        *,
        connection_id: int | None = None,
        predicate: Callable[[ProxyEvent], bool] | None = None,
        after: int = -1,
        timeout: float = 5.0,
    ) -> ProxyEvent:
        """The first event with ``seq > after`` matching ``kind``, ``connection_id`` and ``predicate``.

        Waits up to ``timeout`` seconds for it, then raises
        :class:`~harness.errors.WaitTimeoutError` listing the last events.
        """
        wanted = EventKind(kind) if kind is not None else None
        deadline = time.monotonic() + timeout
        cursor = after

        def match(event: ProxyEvent) -> bool:
            return (
                (wanted is None or event.kind == wanted)
                and (connection_id is None or event.connection_id == connection_id)
                and (predicate is None or predicate(event))
            )

        with self._cond:
            while True:
                for event in self._events:
                    if event.seq > cursor:
                        cursor = event.seq
                        if match(event):
                            return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    last = "\n  ".join(str(e) for e in list(self._events)[-10:]) or "(none)"
                    raise WaitTimeoutError(
                        f"no proxy event kind={wanted and wanted.value} "
                        f"connection_id={connection_id} after seq {after} within {timeout:g}s; "
                        f"last events:\n  {last}"
                    )
                self._cond.wait(remaining)

    # ------------------------------------------------------------ internals

    def _emit(self, kind: EventKind, connection_id: int | None = None, **detail: Any) -> None:
        with self._cond:
            self._events.append(ProxyEvent(next(self._seq), time.monotonic(), kind,
                                           connection_id, detail))
            self._cond.notify_all()

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise ProxyError("the fault proxy is not running: call start() first")
        return self._loop

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the proxy loop and return its result (deadline: control_timeout)."""
        if self._state != "running":
            raise ProxyError(
                f"the fault proxy is {self._state}: control calls need a running proxy "
                "(call start(), or make a new proxy after stop())"
            )
        loop = self._require_loop()
        if threading.current_thread() is self._thread:
            return fn(*args)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError as exc:
            raise ProxyError(f"the fault proxy loop is closed: {exc}") from exc
        try:
            return future.result(self.control_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ProxyTimeoutError(
                f"the fault proxy loop did not run {getattr(fn, '__name__', fn)} within "
                f"{self.control_timeout:g}s (is the machine overloaded? raise control_timeout)"
            ) from None

    def _listen_socket(self, address: tuple[Any, ...]) -> socket.socket:
        sock = self._bound_socket(address)
        sock.listen(self.backlog)
        return sock

    def _bound_socket(self, address: tuple[Any, ...]) -> socket.socket:
        # IPPROTO_TCP, not 0: accepted sockets inherit the proto, and asyncio sets
        # TCP_NODELAY only on sockets that declare TCP.  Without it Nagle's algorithm
        # holds a response's second write until the browser's delayed ACK (about 40 ms).
        sock = socket.socket(self._family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _close_sockets(self) -> None:
        for sock in (self._lsock, self._placeholder):
            if sock is not None:
                sock.close()
        self._lsock = self._placeholder = None

    def _run(self, ready: threading.Event) -> None:
        try:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.set_exception_handler(self._on_loop_error)
            assert self._lsock is not None
            loop.add_reader(self._lsock.fileno(), self._accept)
            self._emit(EventKind.STARTED, host=self.address[0], port=self.port,
                       upstream=f"{self._upstream[0]}:{self._upstream[1]}")
        except BaseException as exc:  # noqa: BLE001 - re-raised by start()
            self._start_error = exc
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            self._close_sockets()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            # Sockets whose FIN still waits behind unsent data: drop the data, close now.
            for conn in self._stopping:
                for side in (conn.client, conn.server):
                    if side.transport is not None:
                        side.transport.abort()
            # Until the cancelled tasks have ended; the aborts' connection_lost
            # callbacks, already scheduled, run on the way.
            with suppress(BaseException):
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()
            self._emit(EventKind.STOPPED)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = f"{context.get('message')}: {exc!r}" if exc else str(context.get("message"))
        self._errors.append(message)
        self._emit(EventKind.ERROR, error=message)

    def _begin_stop(self) -> None:
        loop = self._require_loop()
        if self._lsock is not None:
            loop.remove_reader(self._lsock.fileno())
        for conn in list(self._conns.values()):
            self._stopping.append(conn)
            conn.close(reset=False, reason="proxy stopped")
        loop.call_soon(loop.stop)

    def _accept(self) -> None:
        lsock = self._lsock
        if lsock is None:
            return
        for _ in range(self.backlog):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._emit(EventKind.UPSTREAM_FAILED, error=f"accept failed: {exc}")
                return
            sock.setblocking(False)
            peer_s = f"{peer[0]}:{peer[1]}"
            if self._refusing in ("reset", "close"):
                if self._refusing == "reset":
                    _rst(sock)
                sock.close()
                self._emit(EventKind.REFUSED, peer=peer_s, how=self._refusing)
                continue
            with self._id_lock:
                conn_id = next(self._ids)
            conn = _Connection(self, conn_id, peer_s)
            conn.raw = sock
            self._conns[conn_id] = conn
            self._emit(EventKind.OPENED, conn_id, peer=peer_s)
            for entry in self._entries:
                conn.consider(entry)
            task = self._require_loop().create_task(self._open(conn, sock))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _open(self, conn: _Connection, sock: socket.socket) -> None:
        loop = self._require_loop()
        if conn.closed:  # closed (and its socket with it) before this task ran
            return
        conn.raw = None  # from here the transport owns the socket
        try:
            await loop.connect_accepted_socket(lambda: conn.client, sock)
        except OSError as exc:
            conn.close(reset=True, reason=f"client socket failed: {exc}")
            return
        if conn.closed:
            return
        host, port = self._upstream
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: conn.server, host, port), self.connect_timeout
            )
        except (TimeoutError, OSError) as exc:
            self._emit(EventKind.UPSTREAM_FAILED, conn.id, error=repr(exc), upstream=f"{host}:{port}")
            conn.close(reset=True, reason=f"upstream {host}:{port} failed: {exc!r}")

    def _connection_closed(self, conn: _Connection) -> None:
        self._conns.pop(conn.id, None)
        info = conn.info()
        self._closed.append(info)
        self._emit(EventKind.CLOSED, conn.id, reason=conn.close_reason, path=conn.path,
                   websocket=conn.websocket, bytes_up=info.bytes_up, bytes_down=info.bytes_down)

    # ---- loop-side control

    def _do_add(self, entry: _Entry) -> None:
        self._entries.append(entry)
        handle = entry.handle
        self._emit(EventKind.TOXIC_ADDED, toxic_id=handle.id, name=handle.name,
                   toxic=handle.toxic.describe(), directions=handle.directions,
                   target=handle.target.describe())
        for conn in list(self._conns.values()):
            conn.consider(entry)

    def _do_remove(self, handle: ToxicHandle) -> None:
        self._entries = [e for e in self._entries if e.handle is not handle]
        for conn in list(self._conns.values()):
            conn.detach(handle.id)
        self._emit(EventKind.TOXIC_REMOVED, toxic_id=handle.id, name=handle.name)

    def _do_reset(self, target: Target) -> list[int]:
        ids = []
        for conn in list(self._conns.values()):
            if conn.matches(target):
                ids.append(conn.id)
                conn.close(reset=True, reason="reset_connections")
        return ids

    def _do_refuse(self, how: RefuseHow | None) -> None:
        if how == self._refusing:
            return
        loop = self._require_loop()
        if self._refusing == "refuse" and self._lsock is None:
            try:
                self._lsock = self._listen_socket(self._address)
            except OSError as exc:
                raise ProxyError(
                    f"cannot listen again on port {self.port}: {exc}; the proxy stays refusing"
                ) from exc
            loop.add_reader(self._lsock.fileno(), self._accept)
        if how == "refuse" and self._lsock is not None:
            loop.remove_reader(self._lsock.fileno())
            self._lsock.close()
            self._lsock = None
        self._refusing = how
        self._emit(EventKind.REFUSING, on=how is not None, how=how)

    def _snapshot(self, live_only: bool) -> list[ConnectionInfo]:
        live = [conn.info() for conn in self._conns.values()]
        infos = live if live_only else list(self._closed) + live
        return sorted(infos, key=lambda info: info.id)

    def __repr__(self) -> str:
        return (f"<FaultProxy {self.url} -> {self._upstream[0]}:{self._upstream[1]} "
                f"{self._state} toxics={len(self._handles)}>")

