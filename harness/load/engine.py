"""The asyncio load engine: drives a scenario's virtual clients over python-websockets.

One machine, one event loop.  :func:`run` (blocking) and :func:`arun` (a
coroutine) run a :class:`~harness.load.scenarios.Scenario` or a
:class:`~harness.load.ramp.Ramp` against a WebSocket URL and return a
:class:`~harness.load.results.RunResult`; :func:`start_background` runs one
on a thread of its own until :meth:`BackgroundRun.stop` (the ``ws_load``
fixture's engine).  With no URL the engine starts the reference server
itself (:func:`harness.load.embedded.start_embedded_server`: a subprocess on
an ephemeral loopback port, its rate limits raised) and stops it at the end.

A step, the unit of a run (a ramp runs several, one after the other):

1. **Set-up**: clients are started at ``scenario.connect_rate`` per second
   (or as fast as ``connect_concurrency`` handshakes at a time allow: a
   client holds its place until authenticated, so the server's cap on
   unauthenticated connections is never hit by the engine itself), until
   every client is ready (authenticated, subscribed) or gave up, or
   ``setup_timeout`` passed.
2. **Measured phase** of ``scenario.duration`` seconds: ``begin`` on every
   ready client; one pacer task wakes each client at its ``next_tick``
   (scheduled from the monotonic clock, so a late wake-up never shifts the
   schedule: the client catches up, or skips and counts ``skipped``).
3. **Drain**: publishing stops; the engine waits (``drain_timeout`` at
   most) until nothing is outstanding, so confirmations and deliveries in
   flight are counted, then records what is lost for good.
4. **Close**: every socket is closed cleanly (``close_timeout``, then aborted).

A run is bounded: in clients (``max_clients``), in time (every phase has a
deadline) and in memory (histograms and the timeline are bounded).  It ends
early, with ``aborted`` set and every figure gathered so far, when no client
could connect (an unreachable URL: ``connect:refused``; a rejected handshake:
``handshake:403``), when every connection is gone mid-run (the server closed
them), or when SIGINT arrives (``handle_sigint``).  Bad parameters, a
non-loopback URL without ``allow_remote=True`` and an unknown scheme raise
:class:`~harness.load.errors.LoadConfigError` before anything is sent.

The per-message path is kept lean: a frame goes from ``async for`` to the
client's ``frame`` (``json.loads`` once), a publish is a string template,
and a measurement is one histogram record; no pydantic, no per-message task.
Sockets are opened without compression, without keepalive pings and without
a proxy (``EngineOptions`` changes the first two, and with ``reset_via_proxy``
the clients go through a fault proxy of the run's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import itertools
import math
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .errors import LoadConfigError, LoadError
from .metrics import Metrics
from .ramp import Ramp
from .results import RunResult, ServerStats, StepResult
from .scenarios import Close, Connect, Drop, Scenario, Send, VirtualClient
from .thresholds import Threshold, evaluate, parse_all

if TYPE_CHECKING:
    from ..proxy import FaultProxy

__all__ = [
    "BackgroundRun",
    "EngineOptions",
    "Progress",
    "arun",
    "check_url",
    "run",
    "start_background",
]

#: Hosts a URL may name without ``allow_remote=True``.
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


@dataclass(frozen=True)
class EngineOptions:
    """How the engine drives a run; every time is in seconds.

    - ``connect_concurrency``: clients setting up (handshake and
      authentication) at once during set-up; keep it under the server's cap
      on unauthenticated connections per address (Nova: 64).
    - ``open_timeout``: one handshake's deadline (then ``connect:timeout``).
    - ``setup_timeout``: the set-up phase's deadline (None: no deadline as
      long as clients keep getting set up; it ends once none was for
      ``2 * open_timeout + 1`` seconds, or two connect intervals at a slow
      ``connect_rate``).  Clients not set up by then count as
      ``setup:timeout`` errors and the run goes on without them.
    - ``drain_timeout``: the longest wait for outstanding confirmations and
      deliveries after the measured phase.
    - ``close_timeout``: the longest wait for clean closes at the end.
    - ``max_clients``: refuse scenarios with more clients (a bound on the run).
    - ``compression``: ``"deflate"`` to negotiate permessage-deflate (off:
      it costs the load generator CPU that the figures would not show).
    - ``ping_interval``: keepalive pings (None: off).
    - ``max_size``: largest incoming frame in bytes.
    - ``progress_interval``: how often ``on_progress`` is called.
    - ``handle_sigint``: on the main thread, the first Ctrl-C ends the run
      early with ``aborted="interrupted"`` and the figures so far; a second
      one interrupts as usual.
    - ``reset_via_proxy``: the clients connect through a fault proxy
      (:class:`~harness.proxy.FaultProxy`) the run puts in front of the
      server, and a client's drop (``reconnect-storm``) resets its connection
      there: a TCP RST to the client and to the server, so the server sees a
      genuine reset instead of a client that went away.  Without it the
      client aborts its own socket.  Needs a ``ws://`` server URL; each
      step's ``proxy_resets`` gauge counts the resets.
    """

    connect_concurrency: int = 50
    open_timeout: float = 5.0
    setup_timeout: float | None = None
    drain_timeout: float = 5.0
    close_timeout: float = 2.0
    max_clients: int = 100_000
    compression: str | None = None
    ping_interval: float | None = None
    max_size: int | None = 1 << 20
    progress_interval: float = 1.0
    handle_sigint: bool = False
    reset_via_proxy: bool = False

    def __post_init__(self) -> None:
        if self.connect_concurrency < 1:
            raise LoadConfigError(f"connect_concurrency must be >= 1, got {self.connect_concurrency}")
        for name in ("open_timeout", "drain_timeout", "close_timeout", "progress_interval"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise LoadConfigError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        if self.setup_timeout is not None and not self.setup_timeout > 0:
            raise LoadConfigError(f"setup_timeout must be > 0 s (or None: automatic), got {self.setup_timeout!r}")


@dataclass(frozen=True)
class Progress:
    """A live snapshot for a progress line: which step, phase, elapsed seconds and the figures so far.

    ``phase`` is ``setup``, ``running``, ``draining`` or ``closing``;
    ``p99_us`` is the primary metric's p99 so far (0 before any value).
    """

    step: int
    steps: int | None
    phase: str
    elapsed: float
    duration: float
    clients: int
    ready: int
    open: int
    sent: int
    received: int
    errors: int
    p99_us: int


ProgressCallback = Callable[[Progress], None]


# ----------------------------------------------------------------- URLs


def check_url(url: str, *, allow_remote: bool = False) -> str:
    """``url`` as a ``ws://``/``wss://`` URL; ``http(s)://`` is converted.

    Raises :class:`LoadConfigError` for another scheme, a URL without a
    host, or a host that is not loopback unless ``allow_remote`` (load
    against someone else's server is a decision, not a default).
    """
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise LoadConfigError(
            f"load URL {url!r}: expected a ws://, wss://, http:// or https:// URL, got scheme {parts.scheme!r}"
        )
    host = parts.hostname
    if not host:
        raise LoadConfigError(f"load URL {url!r} names no host; e.g. ws://127.0.0.1:8000")
    if not allow_remote and not _is_loopback(host):
        raise LoadConfigError(
            f"load URL {url!r} is not on this machine (host {host!r}); load runs go to loopback "
            "(127.0.0.1, ::1, localhost) unless allowed: pass allow_remote=True (CLI: --allow-remote) "
            "for a server you are entitled to load"
        )
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ----------------------------------------------------------------- failures


def _failure_kind(exc: BaseException) -> str:
    """The error kind of a failed connection attempt: ``connect:refused``, ``handshake:403``..."""
    if isinstance(exc, InvalidStatus):
        return f"handshake:{exc.response.status_code}"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "connect:timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connect:refused"
    if isinstance(exc, ConnectionResetError):
        return "connect:reset"
    if isinstance(exc, InvalidHandshake):
        return "handshake:invalid"
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, "")
        return f"connect:{name.lower() or 'oserror'}"
    return f"connect:{type(exc).__name__}"


def _top_errors(errors: dict[str, int], n: int = 3) -> str:
    ranked = sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return ", ".join(f"{kind} x{count}" for kind, count in ranked) or "no error recorded"


def _abort_transport(ws: ClientConnection) -> None:
    transport = getattr(ws, "transport", None)
    abort = getattr(transport, "abort", None)
    if abort is None:
        raise LoadError(
            f"websockets {_websockets_version()}: ClientConnection has no transport.abort(), which the "
            "engine uses to drop a socket without a close frame (reconnect-storm); install a websockets "
            "version that has it (13 to 17 do: pip install 'websockets>=13,<18')"
        )
    abort()


def _clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """The loop's clock: ``time.monotonic`` itself where ``loop.time`` is asyncio's own (which returns it).

    Read once per message; calling the clock directly saves a Python call.
    A loop with a ``time`` of its own (uvloop...), or an asyncio whose
    ``BaseEventLoop.time`` no longer reads ``time.monotonic``, keeps ``loop.time``.
    """
    method = getattr(type(loop), "time", None)
    base = asyncio.BaseEventLoop.time
    if method is base and base.__code__.co_names == ("time", "monotonic"):
        return time.monotonic
    return loop.time


# ----------------------------------------------------------------- one step


class _Slot:
    """The engine's side of one virtual client: its socket, task and pacer entry."""

    __slots__ = ("holds_place", "live", "scheduled", "setup_done", "state", "task", "url", "vc", "ws")

    def __init__(self, vc: VirtualClient, url: str) -> None:
        self.vc = vc
        self.url = url
        self.ws: ClientConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.scheduled: float | None = None
        self.setup_done = False
        self.live = True
        self.holds_place = False
        #: The client's state when the engine last looked (a change is worth a closer look).
        self.state = ""


class _Step:
    """Runs one scenario once (the phases in the module docstring) and builds its :class:`StepResult`."""

    def __init__(
        self,
        scenario: Scenario,
        base_url: str,
        options: EngineOptions,
        stop: asyncio.Event,
        *,
        index: int,
        steps: int | None,
        run_started: float,
        server_pid: int | None,
        on_progress: ProgressCallback | None,
        on_measuring: Callable[[], None] | None,
        proxy: FaultProxy | None = None,
    ) -> None:
        self.scenario = scenario
        self.proxy = proxy
        self.proxy_resets = 0
        self.base_url = base_url
        self.options = options
        self.stop_requested = stop
        self.index = index
        self.steps = steps
        self.run_started = run_started
        self.server_pid = server_pid
        self.on_progress = on_progress
        self.on_measuring = on_measuring
        self.loop = asyncio.get_running_loop()
        self.clock = _clock(self.loop)
        self.metrics = Metrics(start=self.clock(), primary=scenario.primary_metric)
        self.session = scenario.session(self.metrics)
        self.slots: list[_Slot] = []
        self.places = asyncio.Semaphore(options.connect_concurrency)
        self.setup_pending = scenario.clients
        self.setup_complete = asyncio.Event()
        self.live = scenario.clients
        self.everyone_gone = asyncio.Event()
        self.pacing = False
        self.closing = False
        self.phase = "setup"
        self.heap: list[tuple[float, int, _Slot]] = []
        self.counter = itertools.count()
        self.waiter: asyncio.Future[None] | None = None
        self.wait_until = math.inf
        self.background: set[asyncio.Task[Any]] = set()
        self.rss: tuple[int, int, int] | None = None
        self.phase_started = self.clock()
        #: The first unexpected exception of a client task: the run ends, aborted, naming it.
        self.crash: Exception | None = None
        self.progress_error: str | None = None

    # -- events from clients

    def _after(self, slot: _Slot) -> None:
        vc = slot.vc
        if self.pacing and vc.next_tick != slot.scheduled:
            self._schedule(slot)
        state = vc.state
        if state is slot.state and slot.setup_done:
            return  # the common case, once per frame: nothing changed
        slot.state = state
        if not slot.setup_done and (vc.ready or not vc.live):
            slot.setup_done = True
            self._release(slot)
            self.setup_pending -= 1
            if self.setup_pending <= 0:
                self.setup_complete.set()
        if slot.live and not vc.live:
            slot.live = False
            self._release(slot)
            self.live -= 1
            if self.live <= 0:
                self.everyone_gone.set()

    def _release(self, slot: _Slot) -> None:
        if slot.holds_place:
            slot.holds_place = False
            self.places.release()

    async def _apply(self, slot: _Slot, actions: Sequence[object]) -> Connect | None:
        """Apply actions in order; a Connect is returned for the driving task to perform."""
        reconnect: Connect | None = None
        for action in actions:
            kind = type(action)
            if kind is Send:
                ws = slot.ws
                if ws is not None:
                    try:
                        await ws.send(action.text)  # type: ignore[attr-defined]
                    except ConnectionClosed:
                        pass  # the reader sees the close and tells the client
            elif kind is Close:
                ws = slot.ws
                if ws is not None:
                    self._spawn(ws.close(action.code, action.reason))  # type: ignore[attr-defined]
            elif kind is Drop:
                ws = slot.ws
                # Through the proxy when there is one; the client's own abort otherwise (or if
                # the proxy no longer holds the connection).
                if ws is not None and (self.proxy is None or not await self._reset_through_proxy(ws)):
                    _abort_transport(ws)
            elif kind is Connect:
                reconnect = action  # type: ignore[assignment]
                ws = slot.ws
                if ws is not None:
                    _abort_transport(ws)
        return reconnect

    async def _reset_through_proxy(self, ws: ClientConnection) -> bool:
        """Reset ``ws``'s connection at the proxy (RST both ways); False if the proxy has no such connection."""
        from ..proxy import Target

        proxy = self.proxy
        assert proxy is not None
        address = ws.local_address
        peer = f"{address[0]}:{address[1]}"

        def reset() -> int:
            ids = [c.id for c in proxy.connections(live_only=True) if c.peer == peer]
            return sum(len(proxy.reset_connections(Target(connection_id=i))) for i in ids)

        # The proxy runs on its own thread; its control calls wait for it, so not on this loop.
        done = await asyncio.to_thread(reset)
        self.proxy_resets += done
        return done > 0

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed close is already reported by the reader

    # -- one client's socket, from first connect to last close

    async def _drive(self, slot: _Slot) -> None:
        try:
            await self._drive_client(slot)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - ends the run with the figures, and says why
            if self.crash is None:
                self.crash = exc
            self.setup_complete.set()
            self.everyone_gone.set()

    async def _drive_client(self, slot: _Slot) -> None:
        vc = slot.vc
        clock = self.clock
        options = self.options
        # The first connection waits for a place among the clients setting up; connect time
        # is measured from when it has one.
        await self.places.acquire()
        slot.holds_place = True
        if self.closing:
            self._release(slot)
            return
        pending: Connect | None = await self._apply(slot, vc.start(clock()))
        while pending is not None and not self.closing:
            if pending.delay > 0:
                await asyncio.sleep(pending.delay)
                if self.closing:
                    break
            try:
                ws = await connect(
                    slot.url,
                    open_timeout=options.open_timeout,
                    compression=options.compression,
                    ping_interval=options.ping_interval,
                    close_timeout=options.close_timeout,
                    max_size=options.max_size,
                    proxy=None,
                )
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                pending = await self._apply(slot, vc.failed(_failure_kind(exc), clock()))
                self._after(slot)
                continue
            slot.ws = ws
            if self.closing:
                vc.stop(clock())
                await ws.close(1000, "load run finished")
                vc.closed(1000, "", clock())
                self._after(slot)
                break
            pending = await self._apply(slot, vc.opened(clock()))
            self._after(slot)
            if pending is None:
                pending = await self._pump(slot, ws)
            code = ws.close_code if ws.close_code is not None else 1006
            reason = ws.close_reason or ""
            slot.ws = None
            if self.closing and vc.state not in (vc.CLOSED, vc.CLOSING):
                vc.stop(clock())
            pending = await self._apply(slot, vc.closed(code, reason, clock()))
            self._after(slot)

    async def _pump(self, slot: _Slot, ws: ClientConnection) -> Connect | None:
        """Hand ``ws``'s frames to the client until the socket closes; return what the last actions asked for.

        The per-message path of a run: ``recv`` awaited directly (no async
        iterator in between), and the client's answer to a frame is usually
        one frame's text (:meth:`VirtualClient.reply`), sent at once with no
        action object and no extra coroutine.
        """
        pending: Connect | None = None
        vc = slot.vc
        reply = vc.reply
        recv = ws.recv
        send = ws.send
        clock = self.clock
        apply = self._apply
        after = self._after
        try:
            while True:
                message = await recv()
                answer = reply(message if isinstance(message, str) else message.decode("utf-8", "replace"), clock())
                if type(answer) is str:
                    try:
                        await send(answer)
                    except ConnectionClosed:
                        pass  # the next recv raises it: the close is handled once, below
                elif answer:
                    pending = await apply(slot, answer)
                # _after's own early return, without the call: nothing to reschedule, no new state.
                if (
                    vc.state is not slot.state
                    or not slot.setup_done
                    or (self.pacing and vc.next_tick != slot.scheduled)
                ):
                    after(slot)
        except ConnectionClosed:
            pass
        return pending

    # -- the pacer: one task waking clients at their next_tick

    def _schedule(self, slot: _Slot) -> None:
        t = slot.vc.next_tick
        slot.scheduled = t
        if t is None:
            return
        heapq.heappush(self.heap, (t, next(self.counter), slot))
        waiter = self.waiter
        if waiter is not None and t < self.wait_until and not waiter.done():
            waiter.set_result(None)

    async def _pace(self) -> None:
        heap = self.heap
        clock = self.clock
        loop = self.loop
        while self.pacing:
            now = clock()
            done = 0
            while heap and heap[0][0] <= now and self.pacing:
                t, _, slot = heapq.heappop(heap)
                if slot.scheduled != t:
                    continue  # superseded by a later entry
                slot.scheduled = None
                actions = slot.vc.tick(now)
                if actions:
                    await self._apply(slot, actions)
                self._schedule(slot)
                done += 1
                if done % 512 == 0:
                    await asyncio.sleep(0)  # let the readers run during a long catch-up
                    now = clock()
            if not self.pacing:
                break
            waiter: asyncio.Future[None] = loop.create_future()
            self.waiter = waiter
            self.wait_until = heap[0][0] if heap else math.inf
            handle = loop.call_at(self.wait_until, _resolve, waiter) if heap else None
            try:
                await waiter
            finally:
                if handle is not None:
                    handle.cancel()
                self.waiter = None

    def _stop_pacing(self) -> None:
        self.pacing = False
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- progress

    async def _report(self) -> None:
        callback = self.on_progress
        if callback is None:
            return
        while True:
            await asyncio.sleep(self.options.progress_interval)
            try:
                callback(self.progress())
            except Exception as exc:  # noqa: BLE001 - a broken progress line must not cost the figures
                self.progress_error = f"on_progress raised {exc!r}; no further progress was reported"
                return

    def progress(self) -> Progress:
        """The figures so far."""
        metrics = self.metrics
        counters = metrics.counters
        primary = metrics.latencies.get(self.scenario.primary_metric)
        return Progress(
            step=self.index,
            steps=self.steps,
            phase=self.phase,
            elapsed=self.clock() - self.phase_started,
            duration=self.scenario.duration,
            clients=self.scenario.clients,
            ready=sum(1 for s in self.slots if s.vc.ready),
            open=sum(1 for s in self.slots if s.ws is not None),
            sent=counters.get("sent", 0),
            received=counters.get("received", 0),
            errors=metrics.error_count,
            p99_us=primary.percentile_us(99) if primary is not None else 0,
        )

    # -- the step

    async def _wait(self, *events: asyncio.Event, timeout: float | None) -> None:
        """Wait until any of ``events`` is set or ``timeout`` passes (None or inf: no deadline)."""
        if any(e.is_set() for e in events):
            return
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(
                waiters,
                timeout=None if timeout is None or math.isinf(timeout) else max(0.0, timeout),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for w in waiters:
                w.cancel()

    def _rss(self) -> int | None:
        pid = self.server_pid
        if pid is None:
            return None
        try:
            import psutil

            return int(psutil.Process(pid).memory_info().rss)
        except Exception:  # noqa: BLE001 - the server may be gone; RSS is then simply not reported
            return None

    async def _launch(self) -> None:
        rate = self.scenario.connect_rate
        started = self.clock()
        for i, slot in enumerate(self.slots):
            if self.closing or self.stop_requested.is_set():
                break
            if rate is not None:
                delay = started + i / rate - self.clock()
                if delay > 0:
                    await asyncio.sleep(delay)
            slot.task = asyncio.create_task(self._drive(slot), name=f"load-client-{i}")

    async def _set_up(self, started: float) -> str:
        """Wait for the set-up to complete; return what ended it when it did not (for the message).

        With ``setup_timeout`` the phase has that deadline; without, it goes on
        as long as clients keep getting set up, and ends once none was for
        :meth:`_stall_window` seconds (so 10,000 connections at 400/s are not cut short).
        """
        options = self.options
        events = (self.setup_complete, self.stop_requested)
        if options.setup_timeout is not None:
            await self._wait(*events, timeout=options.setup_timeout - (self.clock() - started))
            return f"setup_timeout={options.setup_timeout:g} s"
        stall = self._stall_window()
        while True:
            pending = self.setup_pending
            await self._wait(*events, timeout=stall)
            if any(e.is_set() for e in events) or self.setup_pending == pending:
                return f"no client set up for {stall:g} s"

    def _stall_window(self) -> float:
        """Seconds without a client getting set up after which set-up is over (no ``setup_timeout``)."""
        window = 2 * self.options.open_timeout + 1.0
        rate = self.scenario.connect_rate
        return max(window, 2.0 / rate) if rate else window

    async def execute(self) -> StepResult:
        scenario = self.scenario
        clock = self.clock
        options = self.options
        started = clock()
        self.slots = [_Slot(vc, vc.url(self.base_url)) for vc in self.session.clients()]
        rss_before = self._rss()
        reporter = asyncio.create_task(self._report())
        aborted: str | None = None
        measured = 0.0
        setup = 0.0
        sent_in_window = throughput_in_window = 0
        counter = scenario.throughput_counter
        launcher = asyncio.create_task(self._launch())
        try:
            ended_by = await self._set_up(started)
            setup = clock() - started
            ready = sum(1 for s in self.slots if s.vc.ready and s.vc.live)
            not_ready = sum(1 for s in self.slots if not s.vc.ready and s.vc.live)
            if not_ready and not self.setup_complete.is_set() and not self.stop_requested.is_set():
                # Still setting up when set-up ended: measured without them, and counted.
                self.metrics.error("setup:timeout", clock(), not_ready)
            if self.crash is not None:
                pass
            elif ready == 0 and not self.stop_requested.is_set():
                aborted = (
                    f"no client could connect to {self.base_url} within {setup:.1f} s"
                    + (f" ({ended_by})" if not self.setup_complete.is_set() else "")
                    + f": {_top_errors(self.metrics.errors)}"
                )
            elif not self.stop_requested.is_set():
                # Measured phase.
                self.phase = "running"
                self.phase_started = now = clock()
                counters = self.metrics.counters
                sent_before = counters.get("sent", 0)
                throughput_before = counters.get(counter, 0)
                self.pacing = True
                for slot in self.slots:
                    vc = slot.vc
                    if vc.ready and vc.live:
                        await self._apply(slot, vc.begin(now))
                        self._schedule(slot)
                pacer = asyncio.create_task(self._pace())
                if self.on_measuring is not None:
                    self.on_measuring()
                await self._wait(self.stop_requested, self.everyone_gone, timeout=scenario.duration)
                measured = clock() - now
                if self.rss is None and rss_before is not None:
                    loaded = self._rss()
                    if loaded is not None:
                        self.rss = (rss_before, loaded, sum(1 for s in self.slots if s.ws is not None))
                sent_in_window = counters.get("sent", 0) - sent_before
                throughput_in_window = counters.get(counter, 0) - throughput_before
                self._stop_pacing()
                # A send stuck on a full write buffer (a server that stopped reading) must not hold the run.
                _, stuck = await asyncio.wait([pacer], timeout=options.close_timeout)
                for task in stuck:
                    task.cancel()
                if self.everyone_gone.is_set() and not self.stop_requested.is_set() and self.crash is None:
                    aborted = (
                        f"every connection was closed {measured:.1f} s into the run: "
                        f"{_top_errors(self.metrics.errors)}"
                    )
                # Drain.
                self.phase = "draining"
                end = clock()
                for slot in self.slots:
                    await self._apply(slot, slot.vc.finish_sending(end))
                deadline = end + options.drain_timeout
                # session.settled looks at every client: polled, less often for many clients.
                poll = 0.01 if scenario.clients < 1000 else 0.05
                while not self.session.settled and clock() < deadline and not self.everyone_gone.is_set():
                    await asyncio.sleep(poll)
                self.session.finish(clock())
        except asyncio.CancelledError:
            aborted = "cancelled"
            raise
        finally:
            self.phase = "closing"
            await self._close_all(launcher)
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        if self.crash is not None:
            aborted = f"the load engine failed: {self.crash!r}"
        elif aborted is None and self.stop_requested.is_set():
            aborted = getattr(self.stop_requested, "reason", None)
        return self._result(started, setup, measured, sent_in_window, throughput_in_window, aborted)

    async def _close_all(self, launcher: asyncio.Task[None]) -> None:
        self.closing = True
        self._stop_pacing()
        launcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await launcher
        now = self.clock()
        for slot in self.slots:
            actions = slot.vc.stop(now)
            if slot.ws is not None:
                await self._apply(slot, actions)
        tasks = [s.task for s in self.slots if s.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.options.close_timeout + 0.5)
            for slot in self.slots:
                if slot.task in pending and slot.ws is not None:
                    with contextlib.suppress(Exception):
                        _abort_transport(slot.ws)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for task in list(self.background):
            task.cancel()

    def _result(
        self, started: float, setup: float, measured: float, sent: int, throughput_count: int, aborted: str | None
    ) -> StepResult:
        scenario = self.scenario
        metrics = self.metrics
        gauges = dict(metrics.gauges)
        if self.rss is not None:
            before, loaded, connections = self.rss
            gauges["server_rss_before"] = float(before)
            gauges["server_rss_loaded"] = float(loaded)
            gauges["server_connections"] = float(connections)
        if self.proxy is not None:
            gauges["proxy_resets"] = float(self.proxy_resets)
        if scenario.name == "connections":
            opened = metrics.counters.get("opened", 0)
            throughput = opened / setup if setup > 0 else 0.0
        else:
            throughput = throughput_count / measured if measured > 0 else 0.0
        has_rate = scenario.offered_rate is not None or metrics.counters.get("sent", 0) > 0
        return StepResult(
            index=self.index,
            parameters=scenario.parameters(),
            started=started - self.run_started,
            setup=setup,
            duration=measured,
            offered_rate=scenario.offered_rate,
            achieved_rate=(sent / measured if measured > 0 else 0.0) if has_rate else None,
            throughput=throughput,
            counters=dict(metrics.counters),
            errors=dict(metrics.errors),
            gauges=gauges,
            latency=metrics.summaries(),
            timeline=metrics.timeline_points(self.clock()),
            aborted=aborted,
        )


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _StopEvent(asyncio.Event):
    """An event that says why it was set."""

    reason: str | None = None


# ----------------------------------------------------------------- runs


def _raise_open_files_limit(wanted: int) -> None:
    # Each client is a file descriptor; the soft limit (often 1024) is raised to the hard one.
    try:
        import resource
    except ImportError:  # not on Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if soft != resource.RLIM_INFINITY and soft < min(wanted, target):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(wanted, soft), target), hard))


def _start_reset_proxy(base_url: str) -> tuple[FaultProxy, str]:
    """A started fault proxy in front of ``base_url``'s server, and the same URL through it."""
    from ..proxy import FaultProxy

    parts = urlsplit(base_url)
    if parts.scheme != "ws":
        raise LoadConfigError(
            f"reset_via_proxy (CLI: --reset-via-proxy) needs a ws:// server URL, got {base_url!r}: the "
            "fault proxy forwards TCP on 127.0.0.1, where a wss:// server's certificate would not match"
        )
    host = parts.hostname or "127.0.0.1"
    proxy = FaultProxy(upstream=(host, parts.port or 80), backlog=1024).start()
    netloc = f"127.0.0.1:{proxy.port}"
    return proxy, urlunsplit(("ws", netloc, parts.path, parts.query, parts.fragment))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _prepare(scenario: Scenario, tag: str, timestamp: str) -> Scenario:
    return scenario.with_values(tag=tag, protocol=scenario.protocol.with_timestamp(timestamp))


async def arun(
    scenario: Scenario | Ramp,
    url: str | None = None,
    *,
    thresholds: Sequence[str | Threshold] = (),
    options: EngineOptions | None = None,
    allow_remote: bool = False,
    server_pid: int | None = None,
    on_progress: ProgressCallback | None = None,
    _stop: _StopEvent | None = None,
    _on_measuring: Callable[[], None] | None = None,
) -> RunResult:
    """Run ``scenario`` (or a ramp) against ``url`` and return its figures; see the module docstring.

    ``url`` is the server's base URL (Nova: ``ws://127.0.0.1:8000``, the
    client path is appended) or a full URL with ``{client_id}``; None starts
    the embedded reference server for the run.  ``server_pid``: a local
    server's process id, for its RSS per connection (the embedded server's
    is known).  ``thresholds`` are evaluated on the whole run.  Raises
    :class:`LoadConfigError` for bad input found before the run;
    :class:`~harness.load.errors.LoadServerError` when the embedded server
    does not start.
    """
    options = options or EngineOptions()
    checks = parse_all(t for t in thresholds if isinstance(t, str)) + [t for t in thresholds if isinstance(t, Threshold)]
    first = scenario.step(0) if isinstance(scenario, Ramp) else scenario
    first.validate()
    largest = scenario.step(len(scenario.values) - 1) if isinstance(scenario, Ramp) else scenario
    if largest.clients > options.max_clients:
        raise LoadConfigError(
            f"{largest.name}: {largest.clients} clients is more than max_clients={options.max_clients}; "
            "raise EngineOptions.max_clients for a bigger run"
        )
    warnings = list(scenario.warnings()) if url is not None else []
    embedded = None
    if url is None:
        from .embedded import start_embedded_server

        embedded = await asyncio.to_thread(start_embedded_server)
        url = embedded.url
        server_pid = embedded.pid
    try:
        base_url = check_url(url, allow_remote=allow_remote)
        if server_pid is not None and server_pid == os.getpid():
            warnings.append(
                "the server runs in this process, so its RSS includes the load generator's: "
                "no RSS per connection is reported (run the server as its own process)"
            )
            server_pid = None
        _raise_open_files_limit(largest.clients + 256)
        proxy = None
        clients_url = base_url
        if options.reset_via_proxy:
            proxy, clients_url = await asyncio.to_thread(_start_reset_proxy, base_url)
        try:
            result = await _run_steps(
                scenario, clients_url, options, checks, warnings, server_pid, on_progress, _stop, _on_measuring,
                proxy,
            )
        finally:
            if proxy is not None:
                await asyncio.to_thread(proxy.stop)
        return result if proxy is None else replace(result, url=base_url)
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def _run_steps(
    target: Scenario | Ramp,
    base_url: str,
    options: EngineOptions,
    checks: list[Threshold],
    warnings: list[str],
    server_pid: int | None,
    on_progress: ProgressCallback | None,
    stop: _StopEvent | None,
    on_measuring: Callable[[], None] | None,
    proxy: FaultProxy | None = None,
) -> RunResult:
    loop = asyncio.get_running_loop()
    stop = stop or _StopEvent()
    started_at = _now_iso()
    run_started = loop.time()
    tag = secrets.token_hex(3)
    sigint = options.handle_sigint and threading.current_thread() is threading.main_thread()
    if sigint:

        def interrupted() -> None:
            stop.reason = "interrupted"
            stop.set()
            loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C interrupts as usual

        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, interrupted)
    steps: list[StepResult] = []
    try:
        if isinstance(target, Ramp):
            total = len(target.values)
            while not stop.is_set():
                scenario = target.next_step(steps)
                if scenario is None:
                    break
                runner = _Step(
                    _prepare(scenario, f"{tag}s{len(steps)}", started_at), base_url, options, stop,
                    index=len(steps), steps=total, run_started=run_started, server_pid=server_pid,
                    on_progress=on_progress, on_measuring=on_measuring, proxy=proxy,
                )
                step = await runner.execute()
                if runner.progress_error:
                    warnings.append(runner.progress_error)
                steps.append(step.with_degraded(target.degraded(step)))
            name, parameters = target.name, target.parameters()
            knee = target.knee(steps)
            primary, counter = target.primary_metric, target.throughput_counter
        else:
            runner = _Step(
                _prepare(target, tag, started_at), base_url, options, stop,
                index=0, steps=1, run_started=run_started, server_pid=server_pid,
                on_progress=on_progress, on_measuring=on_measuring, proxy=proxy,
            )
            step = await runner.execute()
            if runner.progress_error:
                warnings.append(runner.progress_error)
            steps.append(step)
            name, parameters, knee = target.name, target.parameters(), None
            primary, counter = target.primary_metric, target.throughput_counter
    finally:
        if sigint:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGINT)
    for step in steps:
        offered, achieved = step.offered_rate, step.achieved_rate
        if offered and achieved is not None and step.duration > 0 and achieved < 0.95 * offered:
            skipped = step.counter("skipped")
            warnings.append(
                f"step {step.index}: offered {offered:g}/s, achieved {achieved:.0f}/s"
                + (f" ({skipped} sends skipped: the load generator could not keep the rate)" if skipped else "")
            )
    server = None
    measured = [s for s in steps if "server_rss_loaded" in s.gauges]
    if measured:
        heaviest = max(measured, key=lambda s: s.gauges["server_connections"])
        server = ServerStats(
            pid=server_pid or 0,
            rss_before=int(heaviest.gauges["server_rss_before"]),
            rss_loaded=int(heaviest.gauges["server_rss_loaded"]),
            connections=int(heaviest.gauges["server_connections"]),
        )
    result = RunResult(
        scenario=name,
        url=base_url,
        parameters=parameters,
        started_at=started_at,
        duration=loop.time() - run_started,
        steps=steps,
        profile=(target.base if isinstance(target, Ramp) else target).protocol.name,
        primary_metric=primary,
        throughput_counter=counter,
        knee=knee,
        aborted=next((s.aborted for s in steps if s.aborted), None),
        server=server,
        warnings=warnings,
    )
    if checks:
        result = result.with_thresholds(evaluate(checks, result))
    return result


def run(
    scenario: Scenario | Ramp,
    url: str | None = None,
    *,
    thresholds: Sequence[str | Threshold] = (),
    options: EngineOptions | None = None,
    allow_remote: bool = False,
    server_pid: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> RunResult:
    """The blocking twin of :func:`arun`: runs it on an event loop of its own and returns its figures.

    Called where this thread already has a running event loop (Playwright's
    sync API keeps one registered on the main thread of a pytest worker once
    a browser test ran there), the run gets a thread of its own and this call
    waits for it; a coroutine should ``await arun(...)`` instead, which does
    not block its loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(
            arun(
                scenario, url, thresholds=thresholds, options=options, allow_remote=allow_remote,
                server_pid=server_pid, on_progress=on_progress,
            )
        )
    return start_background(
        scenario, url, thresholds=thresholds, options=options, allow_remote=allow_remote,
        server_pid=server_pid, on_progress=on_progress,
    ).result()


class BackgroundRun:
    """A run on its own thread and event loop (:func:`start_background`).

    :meth:`wait_measuring` returns once the clients are set up and the
    measured phase began (or the run ended); :meth:`stop` ends the run early
    (drain and close as usual) and returns its figures; :meth:`result` waits
    for the natural end.  A run stopped by :meth:`stop` is not ``aborted``.
    """

    def __init__(self, target: Callable[[_StopEvent, Callable[[], None]], Any], name: str) -> None:
        self._measuring = threading.Event()
        self._done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: _StopEvent | None = None
        self._ready = threading.Event()
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._target = target
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        async def main() -> RunResult:
            self._loop = asyncio.get_running_loop()
            self._stop = _StopEvent()
            self._ready.set()
            try:
                result: RunResult = await self._target(self._stop, self._measuring.set)
                return result
            finally:
                self._measuring.set()

        try:
            self._result = asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread by result()/stop()
            self._error = exc
        finally:
            self._ready.set()
            self._measuring.set()
            self._done.set()

    @property
    def done(self) -> bool:
        """Whether the run ended."""
        return self._done.is_set()

    def wait_measuring(self, timeout: float | None = None) -> bool:
        """Wait until the measured phase began (or the run ended); False if ``timeout`` passed first."""
        return self._measuring.wait(timeout)

    def result(self, timeout: float | None = None) -> RunResult:
        """Wait for the run's end and return its figures (re-raises what the run raised)."""
        if not self._done.wait(timeout):
            raise LoadError(
                f"the background load run did not end within {timeout:g} s; call stop() to end it"
            )
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def stop(self, timeout: float = 30.0) -> RunResult:
        """End the run now (it drains and closes, within ``timeout``) and return its figures."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not self._done.is_set():
            with contextlib.suppress(RuntimeError):  # the loop closed in between: it ended by itself
                loop.call_soon_threadsafe(stop.set)
        return self.result(timeout)


def start_background(
    scenario: Scenario | Ramp,
    url: str | None = None,
    *,
    thresholds: Sequence[str | Threshold] = (),
    options: EngineOptions | None = None,
    allow_remote: bool = False,
    server_pid: int | None = None,
    on_progress: ProgressCallback | None = None,
) -> BackgroundRun:
    """Start :func:`arun` on a thread of its own and return its handle (``duration`` may be ``math.inf``).

    Bad parameters and URLs raise here, on the caller's thread, before the thread starts.
    """
    (scenario.step(0) if isinstance(scenario, Ramp) else scenario).validate()
    parse_all(t for t in thresholds if isinstance(t, str))
    if url is not None:
        check_url(url, allow_remote=allow_remote)

    def target(stop: _StopEvent, measuring: Callable[[], None]) -> Any:
        return arun(
            scenario, url, thresholds=thresholds, options=options, allow_remote=allow_remote,
            server_pid=server_pid, on_progress=on_progress, _stop=stop, _on_measuring=measuring,
        )

    return BackgroundRun(target, name=f"load-{scenario.name}")


def _websockets_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("websockets")
    except PackageNotFoundError:
        return "(unknown version)"


# Probed at import: the engine relies on these names of python-websockets' asyncio client.
def _probe_websockets() -> None:
    import inspect

    try:
        parameters = inspect.signature(connect).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    missing = [p for p in ("open_timeout", "compression", "ping_interval", "close_timeout", "max_size", "proxy")
               if p not in parameters]
    if missing or not hasattr(ClientConnection, "close_code"):
        raise LoadError(
            f"websockets {_websockets_version()}: websockets.asyncio.client.connect lacks {missing or 'close_code'}, "
            "which the load engine passes; install websockets 15 to 17 (pip install 'websockets>=15,<18')"
        )


_probe_websockets()
