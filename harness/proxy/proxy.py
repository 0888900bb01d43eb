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

Server-depth faults (see docs/proxy.md): with ``ws_path`` the proxy names the
test client of each WebSocket upgrade, asks :attr:`FaultProxy.controller`
(the harness's pure :class:`~harness.faults.controller.FaultController`)
whether to forward it, answer it with an HTTP error itself or hold it, and
can write frames of its own into a live WebSocket (a text frame, a close
handshake) at frame or message boundaries.  A connection with no such
command pending takes exactly the data path above: a command swaps in its
own ``on_data`` for as long as it needs to look at boundaries.
Names from :mod:`harness.faults` and :mod:`harness.app` are imported where
they are used, not when this module loads: ``harness.faults`` itself imports
this package (its facade builds toxics).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import math
import os
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from contextlib import suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from ..errors import WaitTimeoutError
from .errors import ProxyConfigError, ProxyError, ProxyTimeoutError
from .frames import Opcode, close_payload, encode_frame
from .model import (
    ConnectionInfo,
    DirectionArg,
    DirectionStats,
    EventKind,
    ProxyEvent,
    Target,
    directions,
)
from .toxics import Blackhole, Chunk, Close, Eof, Step, Timer, Toxic, ToxicChain
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
    error_response,
)

if TYPE_CHECKING:
    from ..faults.controller import FaultController

__all__ = ["FaultProxy", "RefusalHandle", "ToxicHandle"]

T = TypeVar("T")

RefuseHow = Literal["refuse", "reset", "close"]
_LINGER_RST = struct.pack("ii", 1, 0)

_HOLD_KEY = "held handshake"
"""Chain key of the stage that keeps a held upgrade's bytes (before every toxic: order -1)."""


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

    @property
    def attached(self) -> bool:
        """False for an upstream socket the connection let go (a rejected or held upgrade's)."""
        return self is self.conn.client or self is self.conn.server

    def pause_writing(self) -> None:
        if self.attached:
            self.conn.pipes[self.in_dir].set_blocked(True)

    def resume_writing(self) -> None:
        if self.attached:
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


class _Hold:
    """A held upgrade: its controller ticket, its deadline timer, whether it is on its way."""

    __slots__ = ("releasing", "ticket", "timer")

    def __init__(self, ticket: int) -> None:
        self.ticket = ticket
        self.timer: asyncio.TimerHandle | None = None
        self.releasing = False  # let go: waiting for its new upstream connection


class _Injection:
    """A frame the proxy writes to the client at the next frame (or message) boundary."""

    __slots__ = ("code", "frame", "message")

    def __init__(self, frame: bytes, *, message: bool, code: int | None = None) -> None:
        self.frame = frame
        self.message = message  # a data frame: only between two messages
        self.code = code  # a close frame's status code


class _CloseFlow:
    """A close handshake the proxy runs with both peers of a live WebSocket."""

    __slots__ = ("client_done", "code", "reason", "server_done", "timer", "up_sent")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        self.up_sent = False  # the masked close frame went to the server
        self.client_done = False  # the client answered (or went away)
        self.server_done = False
        self.timer: asyncio.TimerHandle | None = None


class _Commands:
    """What the proxy still has to write into one live WebSocket of its own accord."""

    __slots__ = ("closing", "down_sent", "pending")

    def __init__(self) -> None:
        self.pending: deque[_Injection] = deque()
        self.closing: _CloseFlow | None = None
        self.down_sent = False  # the close frame went to the client: nothing more goes that way


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
        self.client_id: str | None = None
        self.hold: _Hold | None = None
        self.commands: _Commands | None = None
        self.ws_closing = False  # a close frame went by: no longer a live WebSocket
        self.client = _Side(self, "client")
        self.server = _Side(self, "server")
        self.pipes: dict[Direction, _Pipe] = {
            UPSTREAM: _Pipe(self, UPSTREAM, self.client, self.server),
            DOWNSTREAM: _Pipe(self, DOWNSTREAM, self.server, self.client),
        }
        # What a read goes through: ``forward``, or ``forward_commanded`` while a command
        # needs to see boundaries (an attribute, so the plain path pays no test for it).
        self.on_data: Callable[[Direction, bytes], None] = self.forward

    # ---- classification and toxics

    @property
    def classified(self) -> bool:
        return self.tracker.classified

    @property
    def websocket(self) -> bool:
        return self.tracker.websocket

    def matches(self, target: Target) -> bool | None:
        return target.matches(self.id, self.classified, self.path, self.websocket, self.client_id)

    @property
    def live_websocket(self) -> bool:
        """Upgraded, open, framed both ways, and no close frame has gone by."""
        tracker = self.tracker
        if self.closed or self.ws_closing or not tracker.upgraded:
            return False
        if self.commands is not None and self.commands.closing is not None:
            return False
        return tracker.framed(UPSTREAM) and tracker.framed(DOWNSTREAM)

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
            hold = self.hold
            if hold is not None and hold.releasing:
                # The held upgrade's new upstream connection: let its bytes go.
                self.hold = None
                pipe = self.pipes[UPSTREAM]
                pipe.enqueue(pipe.chain.detach(_HOLD_KEY, self.loop.time()))
                pipe.flow()

    def forward(self, direction: Direction, data: bytes) -> None:
        """Annotate one read and pass it on (the data path of every connection)."""
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
                ws_path = self.proxy.ws_path
                if ws_path is None:
                    emit(EventKind.REQUEST, self.id, http=True, method=request.method,
                         path=request.path, websocket=request.websocket)
                else:
                    if request.websocket:
                        path, _, query = request.path.partition("?")
                        self.client_id = self.proxy._client_id_of(
                            ws_path, path, query, request.header("cookie")
                        )
                    emit(EventKind.REQUEST, self.id, http=True, method=request.method,
                         path=request.path, websocket=request.websocket, client_id=self.client_id)
            for entry in list(self.proxy._entries):
                self.consider(entry)
            if self.client_id is not None:
                self.handshake()
        elif isinstance(note, ResponseSeen):
            emit(EventKind.RESPONSE, self.id, status=note.response.status, upgraded=note.upgraded)
        elif isinstance(note, FrameSeen):
            self.ws_closing = True
            emit(EventKind.CLOSE_FRAME, self.id, direction=note.direction,
                 code=note.frame.close_code, offset=note.frame.start)
        elif isinstance(note, FramingLost):
            emit(EventKind.FRAMING_LOST, self.id, direction=note.direction,
                 offset=note.offset, reason=note.reason)

    def on_eof(self, direction: Direction) -> None:
        if self.closed:
            return
        if direction == UPSTREAM and self.hold is not None and not self.hold.releasing:
            self.close(reset=False, reason="the client went away while its upgrade was held")
            return
        if self.commands is not None and self.commands.closing is not None:
            self.peer_answered("client" if direction == UPSTREAM else "server")
            return
        self.pipes[direction].push_eof()

    def on_lost(self, side: _Side, exc: Exception | None) -> None:
        if self.closed or not side.attached:
            return
        if exc is not None:
            # The peer reset us (or a write failed): pass the failure on as an RST.
            self.close(reset=True, reason=f"{side.role} lost: {exc!r}")
            return
        if side is self.client and self.hold is not None:
            self.close(reset=False, reason="the client went away while its upgrade was held")
            return
        if self.commands is not None and self.commands.closing is not None:
            self.peer_answered(side.role)
            return
        self.pipes[side.in_dir].kill()
        self.pipes[side.in_dir].eof_out = True
        self.pipes[side.out_dir].push_eof()
        self.check_done()

    def check_done(self) -> None:
        if self.pipes[UPSTREAM].eof_out and self.pipes[DOWNSTREAM].eof_out:
            self.close(reset=False, reason="closed")

    # ---- handshake faults: the upgrade of a test client, decided by the proxy's controller

    def handshake(self) -> None:
        from ..faults.controller import Hold, Reject

        assert self.client_id is not None
        decision = self.proxy.controller.on_handshake(self.client_id, self.loop.time())
        if isinstance(decision, Reject):
            self.reject(decision.status, decision.body)
        elif isinstance(decision, Hold):
            self.start_hold(decision.ticket, decision.deadline)

    def drop_server(self) -> None:
        """Let the upstream socket go (FIN; it has seen no byte) and stand a fresh one in."""
        old = self.server
        self.server = _Side(self, "server")
        upstream, downstream = self.pipes[UPSTREAM], self.pipes[DOWNSTREAM]
        upstream.dst = self.server
        upstream.blocked = False
        downstream.src = self.server
        downstream.src_paused = False
        if old.transport is not None:
            old.transport.close()

    def reject(self, status: int, body: str) -> None:
        """Answer the upgrade with ``status`` as a server refusing it would, and close."""
        response = error_response(status, body or (
            f"WebSocket upgrade of client {self.client_id!r} rejected by a harness fault rule "
            f"(HTTP {status}); the upstream server never saw it\n"
        ))
        self.proxy._emit(EventKind.REJECTED, self.id, client_id=self.client_id, status=status)
        self.drop_server()
        upstream = self.pipes[UPSTREAM]
        upstream.kill()
        upstream.eof_out = True
        # Through the tracker and the downstream toxics, as a server's answer would go.
        self.inject(DOWNSTREAM, response)
        self.pipes[DOWNSTREAM].push_eof()
        self.check_done()

    def start_hold(self, ticket: int, deadline: float | None) -> None:
        hold = self.hold = _Hold(ticket)
        # Servers time out a connection that sends no request (websockets after 10 s):
        # the held upgrade gets a new upstream connection when it goes on.
        self.drop_server()
        pipe = self.pipes[UPSTREAM]
        pipe.enqueue(pipe.chain.attach(_HOLD_KEY, -1, Blackhole().stage(random.Random()),
                                       self.loop.time()))
        self.proxy._held[ticket] = self
        if deadline is not None:
            hold.timer = self.loop.call_at(deadline, self.proxy._wake_holds, deadline)
        self.proxy._emit(EventKind.HELD, self.id, client_id=self.client_id, ticket=ticket,
                         deadline=deadline)

    def hold_over(self) -> None:
        """The controller let the held upgrade go: reject it after all, or forward it."""
        from ..faults.controller import Reject

        hold = self.hold
        assert hold is not None and self.client_id is not None
        if hold.timer is not None:
            hold.timer.cancel()
        decision = self.proxy.controller.after_hold(self.client_id)
        if isinstance(decision, Reject):
            self.hold = None
            self.proxy._emit(EventKind.HOLD_ENDED, self.id, client_id=self.client_id,
                             outcome="rejected")
            self.reject(decision.status, decision.body)
            return
        hold.releasing = True
        self.proxy._emit(EventKind.HOLD_ENDED, self.id, client_id=self.client_id,
                         outcome="accepted")
        self.proxy._spawn(self.proxy._connect_upstream(self))

    # ---- commands on a live WebSocket: frames the proxy writes itself

    def inject(self, direction: Direction, data: bytes) -> None:
        """Send ``data`` in ``direction`` as if its peer had: tracked, then through the toxics."""
        chunks, notes = self.tracker.feed(direction, self.loop.time(), data)
        for note in notes:
            self.note(note)
        if self.tracker.opaque:
            self.tracking = False
        for chunk_direction, chunk in chunks:
            self.pipes[chunk_direction].push(chunk)

    def command(self) -> _Commands:
        if self.commands is None:
            self.commands = _Commands()
            self.on_data = self.forward_commanded
        return self.commands

    def settle(self) -> None:
        """Back to the plain data path once no command waits."""
        commands = self.commands
        if commands is not None and not commands.pending and commands.closing is None:
            self.commands = None
            self.on_data = self.forward

    def push_text(self, text: str) -> None:
        """Write one text frame to the client at the next message boundary."""
        frame = encode_frame(Opcode.TEXT, text.encode("utf-8"))
        self.command().pending.append(_Injection(frame, message=True))
        self.flush_pending()
        self.settle()

    def close_with(self, code: int, reason: str, timeout: float) -> None:
        """Run a close handshake with ``code`` and ``reason`` with both peers."""
        commands = self.command()
        flow = commands.closing = _CloseFlow(code, reason)
        flow.timer = self.loop.call_later(timeout, self.close_overdue, timeout)
        frame = encode_frame(Opcode.CLOSE, close_payload(code, reason))
        commands.pending.append(_Injection(frame, message=False, code=code))
        self.flush_pending()
        if not flow.up_sent and self.tracker.at_boundary(UPSTREAM):
            self.send_close_upstream()

    def flush_pending(self) -> None:
        """Write the waiting frames the client's stream has a boundary for now."""
        commands = self.commands
        assert commands is not None
        pending = commands.pending
        while pending and not self.closed and self.tracker.at_boundary(
            DOWNSTREAM, message=pending[0].message
        ):
            injection = pending.popleft()
            self.inject(DOWNSTREAM, injection.frame)
            self.proxy._emit(EventKind.INJECTED, self.id, direction=DOWNSTREAM,
                             opcode="text" if injection.code is None else "close",
                             code=injection.code, length=len(injection.frame))
            if injection.code is not None:
                commands.down_sent = True
                pending.clear()

    def send_close_upstream(self) -> None:
        commands = self.commands
        assert commands is not None and commands.closing is not None
        flow = commands.closing
        flow.up_sent = True
        frame = encode_frame(Opcode.CLOSE, close_payload(flow.code, flow.reason), mask=os.urandom(4))
        self.inject(UPSTREAM, frame)
        self.proxy._emit(EventKind.INJECTED, self.id, direction=UPSTREAM, opcode="close",
                         code=flow.code, length=len(frame))

    def forward_commanded(self, direction: Direction, data: bytes) -> None:
        """``forward``, split at the boundaries where waiting frames go in."""
        commands = self.commands
        if self.closed or commands is None:
            return
        flow = commands.closing
        if direction == DOWNSTREAM:
            if commands.down_sent:
                self.discard(direction, data)
                return
            while data and commands.pending and not self.closed:
                cut = self.tracker.next_boundary(direction, data, message=commands.pending[0].message)
                if cut is None:
                    if not self.tracker.framed(direction):
                        commands.pending.clear()  # framing lost: there will be no boundary
                    break
                if cut:
                    self.forward(direction, data[:cut])
                    data = data[cut:]
                self.flush_pending()
                if commands.down_sent:
                    if data:
                        self.discard(direction, data)
                    return
        elif flow is not None:
            if flow.up_sent:
                self.discard(direction, data)
                return
            cut = self.tracker.next_boundary(direction, data)
            if cut is not None:
                if cut:
                    self.forward(direction, data[:cut])
                if self.closed:
                    return
                self.send_close_upstream()
                if data[cut:]:
                    self.discard(direction, data[cut:])
                return
        if data:
            self.forward(direction, data)
        self.settle()

    def discard(self, direction: Direction, data: bytes) -> None:
        """Read past what a peer sends after the proxy's close frame; its own close answers it."""
        self.pipes[direction].received += len(data)
        _, notes = self.tracker.feed(direction, self.loop.time(), data)
        answered = False
        for note in notes:
            self.note(note)
            answered = answered or isinstance(note, FrameSeen)
        if answered:
            self.peer_answered("server" if direction == DOWNSTREAM else "client")

    def peer_answered(self, role: Literal["client", "server"]) -> None:
        """A peer answered the proxy's close (or went away): close its TCP side (FIN)."""
        commands = self.commands
        assert commands is not None and commands.closing is not None
        flow = commands.closing
        if role == "client" and not flow.client_done:
            flow.client_done = True
            side, pipe = self.client, self.pipes[DOWNSTREAM]
        elif role == "server" and not flow.server_done:
            flow.server_done = True
            side, pipe = self.server, self.pipes[UPSTREAM]
        else:
            return
        pipe.kill()
        pipe.blocked = False
        source = pipe.src.transport
        if pipe.src_paused and source is not None:
            # Its source may still be held back by this pipe's back-pressure, and the
            # other peer's close answer is in what it sends.
            pipe.src_paused = False
            source.resume_reading()
        if side.transport is not None:
            side.transport.close()
        if flow.client_done and flow.server_done:
            self.close(reset=False, reason=f"close handshake {flow.code} run by the proxy")

    def close_overdue(self, timeout: float) -> None:
        commands = self.commands
        code = commands.closing.code if commands is not None and commands.closing else None
        self.close(reset=False, reason=f"close handshake {code} run by the proxy: a peer did not "
                                       f"answer within {timeout:g}s")

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
        hold, self.hold = self.hold, None
        if hold is not None:
            if hold.timer is not None:
                hold.timer.cancel()
            self.proxy._held.pop(hold.ticket, None)
            self.proxy.controller.end_hold(hold.ticket)  # so the held count drops
            if not hold.releasing:
                self.proxy._emit(EventKind.HOLD_ENDED, self.id, client_id=self.client_id,
                                 outcome="gone")
        commands = self.commands
        if commands is not None and commands.closing is not None and commands.closing.timer:
            commands.closing.timer.cancel()
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
            client_id=self.client_id,
            held=self.hold is not None and not self.hold.releasing,
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

    Server-depth faults: ``ws_path`` is the app's WebSocket path pattern
    (``/ws/{client_id}``, ``/ws?client={client_id}``, or one without the
    placeholder when the client id travels in the ``nova_ws_client_id``
    cookie, see :func:`harness.app.requests.client_id_from_request`).  With
    it, every WebSocket upgrade gets a ``client_id`` (``ConnectionInfo``,
    ``Target(client_id=...)``) and is decided by :attr:`controller`:
    forwarded, answered with an HTTP error by the proxy, or held.  Drive it
    with :class:`harness.proxy.ProxyFaultControl`, which also closes a live
    socket with a close handshake of its own (each peer gets at most
    ``close_timeout`` seconds to answer before its TCP side is closed),
    aborts it, or pushes a text frame.  Upgrades without a client id, and
    every connection of a proxy without ``ws_path``, are never affected.
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
        ws_path: str | None = None,
        close_timeout: float = 2.0,
    ) -> None:
        from ..app.requests import client_id_from_request
        from ..faults.controller import FaultController

        if buffer_limit < 1:
            raise ProxyConfigError(f"buffer_limit must be >= 1 byte, got {buffer_limit!r}")
        if ws_path is not None and (not isinstance(ws_path, str) or not ws_path):
            raise ProxyConfigError(
                f"ws_path must be the app's WebSocket path pattern (e.g. '/ws/{{client_id}}'), "
                f"or None; got {ws_path!r}"
            )
        if not close_timeout > 0:
            raise ProxyConfigError(f"close_timeout must be > 0 seconds, got {close_timeout!r}")
        self.ws_path = ws_path
        self.close_timeout = close_timeout
        self._client_id_of = client_id_from_request
        self._controller = FaultController()
        self._controller.add_listener(self._controller_changed)
        self._held: dict[int, _Connection] = {}
        self._wake_scheduled = False
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

    @property
    def controller(self) -> FaultController:
        """The handshake fault rules of this proxy (see the class docstring).

        It belongs to the proxy loop: change it through
        :class:`~harness.proxy.ProxyFaultControl`, whose calls run there.
        """
        return self._controller

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
            self._spawn(self._open(conn, sock))

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
        await self._connect_upstream(conn)

    async def _connect_upstream(self, conn: _Connection) -> None:
        """Connect ``conn.server`` to the upstream; the client is reset if that fails."""
        loop = self._require_loop()
        host, port = self._upstream
        side = conn.server
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: side, host, port), self.connect_timeout
            )
        except (TimeoutError, OSError) as exc:
            self._emit(EventKind.UPSTREAM_FAILED, conn.id, error=repr(exc), upstream=f"{host}:{port}")
            conn.close(reset=True, reason=f"upstream {host}:{port} failed: {exc!r}")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._require_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- server-depth faults (loop side; harness.proxy.control drives them)

    def _controller_changed(self) -> None:
        """A rule changed or a hold was released: held upgrades may go on (checked soon, once)."""
        loop = self._loop
        if loop is None or self._wake_scheduled or not self._held:
            return
        self._wake_scheduled = True
        try:
            if threading.current_thread() is self._thread:
                loop.call_soon(self._wake_holds)
            else:
                loop.call_soon_threadsafe(self._wake_holds)
        except RuntimeError:  # the loop is closed: nothing is held any more
            self._wake_scheduled = False

    def _wake_holds(self, at: float | None = None) -> None:
        self._wake_scheduled = False
        # A timer may fire a hair before its deadline (loop clock resolution).
        now = self._require_loop().time() if at is None else max(at, self._require_loop().time())
        for ticket, conn in list(self._held.items()):
            if self._held.get(ticket) is conn and self._controller.hold_over(ticket, now):
                del self._held[ticket]
                self._controller.end_hold(ticket)
                conn.hold_over()

    def _live_websockets(self, client_id: str) -> list[_Connection]:
        """The newest live WebSocket of ``client_id`` (``"*"``: every one with a client id)."""
        if client_id == "*":
            return [c for c in self._conns.values() if c.client_id is not None and c.live_websocket]
        live = [c for c in self._conns.values() if c.client_id == client_id and c.live_websocket]
        return live[-1:]

    def _client_connections(self, client_id: str) -> list[ConnectionInfo]:
        return [c.info() for c in self._conns.values() if c.client_id == client_id]

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

