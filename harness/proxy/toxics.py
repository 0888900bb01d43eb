"""Toxics: what the fault proxy does to a byte stream, as plain code (no sockets, no asyncio).

A *toxic* is a frozen value (``Latency(200, jitter=50)``) that the proxy turns
into one :class:`Stage` per connection and direction.  A stage transforms the
stream of items that reaches it into the items it lets out:

- :class:`Chunk` -- bytes, with the time they may leave and their position in
  the stream (and, on HTTP/WebSocket streams, where the HTTP head and each
  frame end, so a stage can cut *between* frames);
- :class:`Eof` -- the sender half-closed its side (TCP FIN);
- :class:`Close` -- close the whole connection, in stream order (after the
  data before it), with a FIN or an RST;
- :class:`Timer` -- close the connection at a time, regardless of the data
  still queued (a stage's own clock, e.g. ``ResetPeer(timeout_ms=500)``).

Stages are pure: their output is a function of their input, their state, the
time carried by the items (or passed to ``start``/``flush``) and a seeded
``random.Random``.  They never reorder bytes: every stage lets items out in
the order they came in, at non-decreasing times, as TCP would.  A
:class:`ToxicChain` runs the stages of one direction in order, and lets a
stage be attached or detached while data flows (a detached stage releases
whatever it held).  The proxy's asyncio shim only feeds reads in and writes
the items out when they are due.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from typing import ClassVar, TypeAlias

from .errors import ProxyConfigError

__all__ = [
    "Bandwidth",
    "Blackhole",
    "Chunk",
    "Close",
    "Eof",
    "Latency",
    "LimitData",
    "ResetPeer",
    "Slicer",
    "SlowClose",
    "Stage",
    "Step",
    "Timer",
    "Toxic",
    "ToxicChain",
]


# ---------------------------------------------------------------- stream items


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes of one direction, ready to leave at time ``at`` (seconds, any monotonic clock).

    ``offset`` is the stream position of ``data[0]`` (bytes of this direction
    since the connection opened).  When ``framed`` is true the stream's
    structure is known over these bytes and ``boundaries`` lists every absolute
    offset in ``(offset, offset + len(data)]`` where a unit (the HTTP head, a
    WebSocket frame) ends; when false the bytes are opaque.
    """

    at: float
    data: bytes
    offset: int = 0
    boundaries: tuple[int, ...] = ()
    framed: bool = False

    @property
    def end(self) -> int:
        """Stream offset one past the last byte."""
        return self.offset + len(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def split(self, n: int) -> tuple[Chunk, Chunk]:
        """The first ``n`` bytes and the rest, each with its own boundaries."""
        n = max(0, min(n, len(self.data)))
        cut = self.offset + n
        k = bisect_right(self.boundaries, cut)
        return (
            Chunk(self.at, self.data[:n], self.offset, self.boundaries[:k], self.framed),
            Chunk(self.at, self.data[n:], cut, self.boundaries[k:], self.framed),
        )

    def at_time(self, at: float) -> Chunk:
        return self if at == self.at else replace(self, at=at)

    @staticmethod
    def join(chunks: list[Chunk], at: float) -> Chunk:
        """Contiguous chunks as one, leaving at ``at``."""
        first = chunks[0]
        if len(chunks) == 1:
            return first.at_time(at)
        return Chunk(
            at,
            b"".join(c.data for c in chunks),
            first.offset,
            tuple(b for c in chunks for b in c.boundaries),
            all(c.framed for c in chunks),
        )


@dataclass(frozen=True, slots=True)
class Eof:
    """The sending side half-closed (FIN): forward it with ``write_eof`` at ``at``."""

    at: float


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection at ``at``, after the data before it, with an RST if ``reset``.

    ``cut_at`` is the stream offset after which nothing more was let through
    (``None`` when the close is not a cut); ``at_boundary`` says whether that
    offset is the end of a unit (HTTP head or WebSocket frame), ``None`` when
    the stream's structure is unknown.
    """

    at: float
    reset: bool = False
    reason: str = ""
    cut_at: int | None = None
    at_boundary: bool | None = None


@dataclass(frozen=True, slots=True)
class Timer:
    """Close the connection at ``at`` whatever is still queued (a stage's own deadline).

    ``key`` identifies the stage that set it (filled in by :class:`ToxicChain`)
    so that detaching the stage cancels the timer.
    """

    at: float
    reset: bool = False
    reason: str = ""
    key: object = None


Step: TypeAlias = Chunk | Eof | Close | Timer


# ---------------------------------------------------------------- stages


class Stage:
    """One toxic applied to one direction of one connection.

    The defaults let everything through unchanged, keeping times
    non-decreasing.  Subclasses override ``on_chunk`` (and ``on_eof``,
    ``on_close``, ``start``, ``flush``, ``held_bytes`` when they hold data).
    """

    def __init__(self) -> None:
        self.last = -math.inf

    def _after(self, at: float) -> float:
        at = max(at, self.last)
        self.last = at
        return at

    @property
    def held_bytes(self) -> int:
        """Bytes this stage holds back (they count towards the proxy's buffer limit)."""
        return 0

    def start(self, now: float) -> list[Step]:
        """Called once when the stage is attached; may return timers."""
        return []

    def process(self, item: Step) -> list[Step]:
        if isinstance(item, Chunk):
            return self.on_chunk(item)
        if isinstance(item, Eof):
            return self.on_eof(item)
        if isinstance(item, Close):
            return self.on_close(item)
        return [item]

    def on_chunk(self, chunk: Chunk) -> list[Step]:
        return [chunk.at_time(self._after(chunk.at))]

    def on_eof(self, eof: Eof) -> list[Step]:
        return [Eof(self._after(eof.at))]

    def on_close(self, close: Close) -> list[Step]:
        return [replace(close, at=self._after(close.at))]

    def flush(self, now: float) -> list[Step]:
        """Called when the stage is detached: release what it held, due from ``now``."""
        return []


class Toxic:
    """Base class of toxic values: frozen dataclasses that build a :class:`Stage`.

    ``kind`` is the Toxiproxy-style name used in events and docs.
    """

    kind: ClassVar[str] = "toxic"

    def stage(self, rng: random.Random) -> Stage:
        """A fresh stage for one connection and direction, drawing randomness from ``rng``."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short human-readable form, e.g. ``latency(200ms +-50ms)``."""
        return repr(self)


def _non_negative(toxic: object, **values: float | None) -> None:
    for name, value in values.items():
        if value is not None and (not isinstance(value, (int, float)) or value < 0 or math.isnan(value)):
            raise ProxyConfigError(
                f"{type(toxic).__name__}: {name} must be a number >= 0, got {value!r}"
            )


@dataclass(frozen=True)
class Latency(Toxic):
    """Delay every chunk by ``ms`` milliseconds, +- a uniform ``jitter`` (seeded).

    Order is kept (a chunk never overtakes the one before it, as on a TCP
    path), so with jitter the delays of a burst are ``max(previous, own)``.
    The FIN is delayed too.
    """

    kind: ClassVar[str] = "latency"
    ms: float
    jitter: float = 0.0

    def __post_init__(self) -> None:
        _non_negative(self, ms=self.ms, jitter=self.jitter)

    def stage(self, rng: random.Random) -> Stage:
        return _LatencyStage(self, rng)

    def describe(self) -> str:
        return f"latency({self.ms:g}ms" + (f" +-{self.jitter:g}ms)" if self.jitter else ")")


class _LatencyStage(Stage):
    def __init__(self, toxic: Latency, rng: random.Random) -> None:
        super().__init__()
        self.toxic = toxic
        self.rng = rng

    def _delay(self) -> float:
        ms = self.toxic.ms
        if self.toxic.jitter:
            ms += self.rng.uniform(-self.toxic.jitter, self.toxic.jitter)
        return max(0.0, ms) / 1000.0

    def on_chunk(self, chunk: Chunk) -> list[Step]:
        return [chunk.at_time(self._after(chunk.at + self._delay()))]

    def on_eof(self, eof: Eof) -> list[Step]:
        return [Eof(self._after(eof.at + self._delay()))]

    def on_close(self, close: Close) -> list[Step]:
        return [replace(close, at=self._after(close.at + self._delay()))]


BANDWIDTH_SLOT_S = 0.01
"""Bandwidth lets bytes out in pieces of this many seconds' worth, so data trickles."""


@dataclass(frozen=True)
class Bandwidth(Toxic):
    """Limit the rate to ``kbps`` kilobits per second (1 kbps = 125 bytes/s).

    Bytes leave in pieces of 10 ms worth (at least 16 bytes), each when it has
    been fully "transmitted"; a burst queues behind the one before it.
    """

    kind: ClassVar[str] = "bandwidth"
    kbps: float

    def __post_init__(self) -> None:
        _non_negative(self, kbps=self.kbps)
        if self.kbps == 0:
            raise ProxyConfigError("Bandwidth: kbps must be > 0 (use Blackhole to stop the flow)")

    def stage(self, rng: random.Random) -> Stage:
        return _BandwidthStage(self.kbps * 1000.0 / 8.0)

    def describe(self) -> str:
        return f"bandwidth({self.kbps:g}kbps)"


class _BandwidthStage(Stage):
    def __init__(self, bytes_per_s: float) -> None:
        super().__init__()
        self.rate = bytes_per_s
        self.piece = max(16, int(bytes_per_s * BANDWIDTH_SLOT_S))

    def on_chunk(self, chunk: Chunk) -> list[Step]:
        t = max(chunk.at, self.last)
        out: list[Step] = []
        rest = chunk
        while rest.data:
            piece, rest = rest.split(self.piece)
            t += len(piece) / self.rate
            out.append(piece.at_time(t))
        self.last = t
        return out


@dataclass(frozen=True)
class SlowClose(Toxic):
    """Delay the FIN (and any in-stream close) by ``ms`` milliseconds."""

    kind: ClassVar[str] = "slow_close"
    ms: float

    def __post_init__(self) -> None:
        _non_negative(self, ms=self.ms)

    def stage(self, rng: random.Random) -> Stage:
        return _SlowCloseStage(self.ms / 1000.0)

    def describe(self) -> str:
        return f"slow_close({self.ms:g}ms)"


class _SlowCloseStage(Stage):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def on_eof(self, eof: Eof) -> list[Step]:
        return [Eof(self._after(eof.at + self.delay))]

    def on_close(self, close: Close) -> list[Step]:
        return [replace(close, at=self._after(close.at + self.delay))]


@dataclass(frozen=True)
class Blackhole(Toxic):
    """Stop the flow: nothing passes and nothing closes (a half-open connection).

    Toxiproxy calls it ``timeout``.  Data (and a FIN) that arrives is held, not
    dropped -- a real TCP path that recovers delivers what was retransmitted,
    so removing the toxic releases it, in order.  The proxy stops reading when
    the held bytes reach its buffer limit, so a sender then sees a full window,
    as it would on a dead path.  With ``timeout_ms`` the connection is closed
    (FIN) that long after the toxic applies to it.
    """

    kind: ClassVar[str] = "blackhole"
    timeout_ms: float | None = None

    def __post_init__(self) -> None:
        _non_negative(self, timeout_ms=self.timeout_ms)

    def stage(self, rng: random.Random) -> Stage:
        return _BlackholeStage(self.timeout_ms)

    def describe(self) -> str:
        return "blackhole()" if self.timeout_ms is None else f"blackhole(timeout={self.timeout_ms:g}ms)"


class _BlackholeStage(Stage):
    def __init__(self, timeout_ms: float | None) -> None:
        super().__init__()
        self.timeout_ms = timeout_ms
        self.held: list[Step] = []
        self._held_bytes = 0

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def start(self, now: float) -> list[Step]:
        if self.timeout_ms is None:
            return []
        return [Timer(now + self.timeout_ms / 1000.0, reset=False, reason="blackhole timeout")]

    def process(self, item: Step) -> list[Step]:
        if isinstance(item, Timer):
            return [item]
        self.held.append(item)
        if isinstance(item, Chunk):
            self._held_bytes += len(item)
        return []

    def flush(self, now: float) -> list[Step]:
        out: list[Step] = []
        for item in self.held:
            at = max(now, self.last, item.at)
            self.last = at
            out.append(item.at_time(at) if isinstance(item, Chunk) else replace(item, at=at))
        self.held = []
        self._held_bytes = 0
        return out


@dataclass(frozen=True)
class ResetPeer(Toxic):
    """Reset the connection (TCP RST both ways) ``timeout_ms`` after the toxic applies to it.

    Data flows normally until then; whatever is still queued is discarded, as
    an RST discards a socket's buffers.
    """

    kind: ClassVar[str] = "reset_peer"
    timeout_ms: float = 0.0

    def __post_init__(self) -> None:
        _non_negative(self, timeout_ms=self.timeout_ms)

    def stage(self, rng: random.Random) -> Stage:
        return _ResetStage(self.timeout_ms / 1000.0)

    def describe(self) -> str:
        return f"reset_peer(timeout={self.timeout_ms:g}ms)"


class _ResetStage(Stage):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def start(self, now: float) -> list[Step]:
        return [Timer(now + self.delay, reset=True, reason="reset_peer")]


@dataclass(frozen=True)
class Slicer(Toxic):
    """Split data into pieces of ``average_size`` +- ``size_variation`` bytes (seeded), ``delay_us`` apart.

    Each piece is written separately (the proxy's sockets use TCP_NODELAY), so
    the receiver's reads return partial WebSocket frames.
    """

    kind: ClassVar[str] = "slicer"
    average_size: int
    size_variation: int = 0
    delay_us: float = 0.0

    def __post_init__(self) -> None:
        _non_negative(self, average_size=self.average_size, size_variation=self.size_variation,
                      delay_us=self.delay_us)
        if self.average_size < 1:
            raise ProxyConfigError(f"Slicer: average_size must be >= 1 byte, got {self.average_size!r}")
        if self.size_variation >= self.average_size:
            raise ProxyConfigError(
                f"Slicer: size_variation ({self.size_variation}) must be smaller than "
                f"average_size ({self.average_size}) so that every piece has at least one byte"
            )

    def stage(self, rng: random.Random) -> Stage:
        return _SlicerStage(self, rng)

    def describe(self) -> str:
        return f"slicer({self.average_size}+-{self.size_variation}B, {self.delay_us:g}us)"


class _SlicerStage(Stage):
    def __init__(self, toxic: Slicer, rng: random.Random) -> None:
        super().__init__()
        self.toxic = toxic
        self.rng = rng

    def _size(self) -> int:
        var = self.toxic.size_variation
        return self.toxic.average_size + (self.rng.randint(-var, var) if var else 0)

    def on_chunk(self, chunk: Chunk) -> list[Step]:
        gap = self.toxic.delay_us / 1e6
        t = max(chunk.at, self.last)
        out: list[Step] = []
        rest = chunk
        while rest.data:
            if out:
                t += gap
            piece, rest = rest.split(self._size())
            out.append(piece.at_time(t))
        self.last = t
        return out


@dataclass(frozen=True)
class LimitData(Toxic):
    """Close the connection once ``nbytes`` have passed in this direction (counted from when it applies).

    By default the cut falls exactly after ``nbytes``, even in the middle of a
    WebSocket frame.  With ``at_frame_boundary=True`` it falls after the last
    whole unit (WebSocket frame, or the HTTP head) that fits in ``nbytes``:
    bytes of a frame are held until the frame is complete, then released if it
    fits.  On a stream that is not HTTP/WebSocket there are no frames and the
    cut is at ``nbytes``.  The close is a FIN, after the bytes let through.
    """

    kind: ClassVar[str] = "limit_data"
    nbytes: int
    at_frame_boundary: bool = False

    def __post_init__(self) -> None:
        _non_negative(self, nbytes=self.nbytes)

    def stage(self, rng: random.Random) -> Stage:
        return _LimitStage(int(self.nbytes), self.at_frame_boundary)

    def describe(self) -> str:
        return f"limit_data({self.nbytes}B{', at frame boundary' if self.at_frame_boundary else ''})"


class _LimitStage(Stage):
    def __init__(self, limit: int, at_boundary: bool) -> None:
        super().__init__()
        self.limit = limit
        self.at_boundary = at_boundary
        self.end_abs: int | None = None
        self.released_to = 0
        self.held: list[Chunk] = []
        self.done = False

    @property
    def held_bytes(self) -> int:
        # What waits for its frame to complete is bounded by ``limit``; counting
        # it towards the proxy's buffer limit could pause reading before the
        # frame completes, and then it never would.
        return 0

    def _cut(self, at: float, cut: int, at_boundary: bool | None) -> Close:
        self.done = True
        self.held = []
        return Close(at, reset=False, reason="limit_data", cut_at=cut, at_boundary=at_boundary)

    def _release(self, upto: int, at: float) -> list[Step]:
        """Let out held bytes up to stream offset ``upto``; keep the rest held."""
        if not self.held or upto <= self.released_to:
            return []
        joined = Chunk.join(self.held, at)
        out, rest = joined.split(upto - joined.offset)
        self.held = [rest] if rest.data else []
        self.released_to = out.end
        return [out.at_time(self._after(at))] if out.data else []

    def process(self, item: Step) -> list[Step]:
        if self.done:
            return [item] if isinstance(item, Timer) else []
        return super().process(item)

    def on_eof(self, eof: Eof) -> list[Step]:
        out = self._release(self.held[-1].end, eof.at) if self.held else []
        return out + [Eof(self._after(eof.at))]

    def on_chunk(self, chunk: Chunk) -> list[Step]:
        if self.end_abs is None:
            self.end_abs = chunk.offset + self.limit
            self.released_to = chunk.offset
        end_abs = self.end_abs
        if not (self.at_boundary and chunk.framed):
            # A byte cut (or the structure is unknown): let out what was held first.
            out = self._release(self.held[-1].end, chunk.at) if self.held else []
            if chunk.end < end_abs:
                self.released_to = chunk.end
                return out + [chunk.at_time(self._after(chunk.at))]
            head, _ = chunk.split(end_abs - chunk.offset)
            if head.data:
                out.append(head.at_time(self._after(chunk.at)))
            known = (end_abs in chunk.boundaries) if chunk.framed else None
            return out + [self._cut(self._after(chunk.at), end_abs, known)]
        self.held.append(chunk)
        fitting = [b for b in chunk.boundaries if b <= end_abs]
        if chunk.end >= end_abs:
            cut = fitting[-1] if fitting else self.released_to
            out = self._release(cut, chunk.at)
            return out + [self._cut(self._after(chunk.at), cut, True)]
        return self._release(fitting[-1], chunk.at) if fitting else []

    def flush(self, now: float) -> list[Step]:
        return self._release(self.held[-1].end, now) if self.held else []


# ---------------------------------------------------------------- chains


@dataclass
class _Slot:
    order: int
    key: object
    stage: Stage = field(compare=False)


class ToxicChain:
    """The stages of one direction of one connection, applied in ``order``.

    ``feed`` pushes one item through every stage; ``attach``/``detach``
    change the chain while data flows.  All three return the items that leave
    the chain (timers tagged with the key of the stage that set them), to be
    delivered in order when due.
    """

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: list[_Slot] = []

    def __bool__(self) -> bool:
        return bool(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def keys(self) -> list[object]:
        return [slot.key for slot in self._slots]

    @property
    def held_bytes(self) -> int:
        return sum(slot.stage.held_bytes for slot in self._slots)

    def __contains__(self, key: object) -> bool:
        return any(slot.key == key for slot in self._slots)

    def _run(self, items: list[Step], start: int) -> list[Step]:
        for slot in self._slots[start:]:
            out: list[Step] = []
            for item in items:
                if isinstance(item, Timer):
                    out.append(item)
                else:
                    for produced in slot.stage.process(item):
                        if isinstance(produced, Timer) and produced.key is None:
                            produced = replace(produced, key=slot.key)
                        out.append(produced)
            items = out
        return items

    def feed(self, item: Step) -> list[Step]:
        """Push ``item`` (a chunk, an EOF or an in-stream close) through every stage."""
        if not self._slots:
            return [item]
        return self._run([item], 0)

    def attach(self, key: object, order: int, stage: Stage, now: float) -> list[Step]:
        """Insert ``stage`` by ``order``; return what its ``start`` produced, through later stages."""
        if key in self:
            raise ProxyConfigError(f"a stage with key {key!r} is already attached")
        index = bisect_right([slot.order for slot in self._slots], order)
        self._slots.insert(index, _Slot(order, key, stage))
        started = [
            replace(item, key=key) if isinstance(item, Timer) and item.key is None else item
            for item in stage.start(now)
        ]
        return self._run(started, index + 1)

    def detach(self, key: object, now: float) -> list[Step]:
        """Remove the stage with ``key``; what it held goes on through the later stages."""
        for index, slot in enumerate(self._slots):
            if slot.key == key:
                del self._slots[index]
                return self._run(slot.stage.flush(now), index)
        return []
