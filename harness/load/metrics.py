"""Measurements of a load run with bounded memory: histograms, counters, a timeline.

Pure: no I/O and no clock; every call that depends on time is given ``now``
(seconds on the caller's monotonic clock).

- :class:`Histogram`: an HdrHistogram of durations in microseconds, from
  1 us to 60 s with 3 significant digits (about 136 KiB whatever the count).
  A value above 60 s is recorded as 60 s and counted in ``clamped``.
  Histograms merge (:meth:`Histogram.merge`) and travel as text
  (:meth:`Histogram.encode`, the HdrHistogram compressed base64 format), so a
  result read back from JSON can still be merged exactly.
- :class:`LatencySummary`: what a histogram says (count, mean, min, p50, p90,
  p99, p99.9, max, in microseconds) plus its encoding.
- :class:`Timeline`: one :class:`TimelinePoint` per interval (1 s by default):
  sent, received, opened, errors, and p50/p99 of one latency metric (the
  scenario's primary one) in that interval, from a bounded sample.  At most ``max_points`` points
  (rounded up to even) are kept: past that, neighbours are merged in pairs and the interval doubles
  (a merged p50 is the count-weighted mean of the two, a merged p99 the larger
  one, so a spike is never smoothed away).
- :class:`Metrics`: the :class:`~harness.load.scenarios.Recorder` a scenario's
  virtual clients write to: named latencies, counters, errors by kind and
  gauges, with the timeline.  Two :class:`Metrics` merge (Locust workers,
  engine processes).

Counter names the timeline follows: ``sent``, ``received``, ``opened``; every
error counts in its ``errors`` column.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from hdrh.histogram import HdrHistogram

__all__ = [
    "HIGHEST_US",
    "LOWEST_US",
    "SIGNIFICANT_DIGITS",
    "Histogram",
    "LatencySummary",
    "Metrics",
    "Timeline",
    "TimelinePoint",
]

#: Smallest and largest recordable duration, in microseconds, and the precision.
LOWEST_US = 1
HIGHEST_US = 60_000_000
SIGNIFICANT_DIGITS = 3



class Histogram:
    """Durations in microseconds, 1 us .. 60 s, 3 significant digits, bounded memory.

    Recording is the hot path of a load run, so values are first counted by
    whole microsecond in a small dict (a few hundred distinct values in
    practice) and added to the HdrHistogram in bulk before any read, or
    when the dict holds :attr:`FLUSH_AT` distinct values: the result is the
    same histogram, at a tenth of the cost per value.

    >>> h = Histogram()
    >>> for ms in (1, 2, 3, 4, 100):
    ...     h.record(ms / 1000)
    >>> h.count, h.percentile_us(50), h.max_us
    (5, 3001, 100031)
    """

    __slots__ = ("_h", "_pending", "clamped")

    #: Distinct pending values that trigger a bulk add (bounds the dict's memory).
    FLUSH_AT: ClassVar[int] = 4096

    def __init__(self, digits: int = SIGNIFICANT_DIGITS) -> None:
        self._h = HdrHistogram(LOWEST_US, HIGHEST_US, digits)
        self._pending: dict[int, int] = {}
        #: Values recorded as 60 s because they were longer (below 1 us they count as 1 us, not here).
        self.clamped = 0

    def record(self, seconds: float) -> None:
        """Record one duration given in seconds (negative and sub-microsecond ones count as 1 us)."""
        us = int(seconds * 1_000_000 + 0.5)
        if us < LOWEST_US:
            us = LOWEST_US
        elif us > HIGHEST_US:
            us = HIGHEST_US
            self.clamped += 1
        pending = self._pending
        n = pending.get(us)
        if n is not None:
            pending[us] = n + 1
        else:
            # A new distinct value: the only moment the dict grows.
            pending[us] = 1
            if len(pending) >= self.FLUSH_AT:
                self._flush()

    def record_us(self, us: int, count: int = 1) -> None:
        """Record ``count`` durations of ``us`` microseconds (clamped like :meth:`record`)."""
        if us > HIGHEST_US:
            us = HIGHEST_US
            self.clamped += count
        us = max(LOWEST_US, us)
        self._pending[us] = self._pending.get(us, 0) + count
        if len(self._pending) >= self.FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        pending = self._pending
        if pending:
            record = self._h.record_value
            for us, n in pending.items():
                record(us, n)
            pending.clear()

    def _flushed(self) -> HdrHistogram:
        if self._pending:
            self._flush()
        return self._h

    @property
    def count(self) -> int:
        """How many values were recorded."""
        return int(self._flushed().get_total_count())

    @property
    def max_us(self) -> int:
        """The largest value (its bucket's highest equivalent), 0 when empty."""
        return int(self._h.get_max_value()) if self.count else 0

    @property
    def min_us(self) -> int:
        """The smallest value, 0 when empty."""
        return int(self._h.get_min_value()) if self.count else 0

    @property
    def mean_us(self) -> float:
        """The mean, 0.0 when empty."""
        return float(self._h.get_mean_value()) if self.count else 0.0

    def percentile_us(self, percentile: float) -> int:
        """The value at ``percentile`` (0..100), 0 when empty."""
        if not self.count:
            return 0
        return int(self._h.get_value_at_percentile(percentile))

    def percentiles_us(self, percentiles: Sequence[float]) -> dict[float, int]:
        """The values at several percentiles, in one pass over the histogram (0s when empty)."""
        if not self.count:
            return {p: 0 for p in percentiles}
        values = self._h.get_percentile_to_value_dict(list(percentiles))
        return {p: int(values.get(p, 0)) for p in percentiles}

    def merge(self, other: Histogram) -> None:
        """Add every value of ``other`` to this histogram."""
        if other.count:
            self._flushed().add(other._h)
        self.clamped += other.clamped

    def encode(self) -> str:
        """The HdrHistogram compressed base64 text of this histogram ("" when empty)."""
        if not self.count:
            return ""
        return bytes(self._h.encode()).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> Histogram:
        """A histogram from :meth:`encode`'s text ("" is an empty one)."""
        histogram = cls()
        if text:
            histogram._h.add(HdrHistogram.decode(text.encode("ascii")))
        return histogram

    def summary(self) -> LatencySummary:
        """Count, mean and percentiles of this histogram, with its encoding."""
        values = self.percentiles_us((50.0, 90.0, 99.0, 99.9))
        return LatencySummary(
            count=self.count,
            mean_us=round(self.mean_us, 1),
            min_us=self.min_us,
            p50_us=values[50.0],
            p90_us=values[90.0],
            p99_us=values[99.0],
            p999_us=values[99.9],
            max_us=self.max_us,
            clamped=self.clamped,
            hdr=self.encode(),
        )


@dataclass(frozen=True)
class LatencySummary:
    """One latency metric of a step: percentiles in microseconds, and the histogram itself.

    ``hdr`` is the histogram's encoding (:meth:`Histogram.encode`), so
    summaries read back from JSON still merge exactly (:meth:`merged`).
    """

    count: int = 0
    mean_us: float = 0.0
    min_us: int = 0
    p50_us: int = 0
    p90_us: int = 0
    p99_us: int = 0
    p999_us: int = 0
    max_us: int = 0
    clamped: int = 0
    hdr: str = ""

    #: Statistic names as thresholds and reports spell them -> field.
    STATS: ClassVar[dict[str, str]] = {
        "p50": "p50_us",
        "p90": "p90_us",
        "p99": "p99_us",
        "p99.9": "p999_us",
        "max": "max_us",
        "min": "min_us",
        "mean": "mean_us",
    }

    def stat_us(self, stat: str) -> float:
        """The statistic named ``stat`` (a key of :attr:`STATS`), in microseconds."""
        return float(getattr(self, self.STATS[stat]))

    def histogram(self) -> Histogram:
        """The histogram behind this summary."""
        histogram = Histogram.decode(self.hdr)
        histogram.clamped = self.clamped
        return histogram

    def merged(self, other: LatencySummary) -> LatencySummary:
        """The summary of both summaries' values together."""
        histogram = self.histogram()
        histogram.merge(other.histogram())
        return histogram.summary()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_dict` reads it back."""
        return {
            "count": self.count,
            "mean_us": self.mean_us,
            "min_us": self.min_us,
            "p50_us": self.p50_us,
            "p90_us": self.p90_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "max_us": self.max_us,
            "clamped": self.clamped,
            "hdr": self.hdr,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencySummary:
        """The summary :meth:`to_dict` wrote."""
        return cls(
            count=int(data.get("count", 0)),
            mean_us=float(data.get("mean_us", 0.0)),
            min_us=int(data.get("min_us", 0)),
            p50_us=int(data.get("p50_us", 0)),
            p90_us=int(data.get("p90_us", 0)),
            p99_us=int(data.get("p99_us", 0)),
            p999_us=int(data.get("p999_us", 0)),
            max_us=int(data.get("max_us", 0)),
            clamped=int(data.get("clamped", 0)),
            hdr=str(data.get("hdr", "")),
        )


@dataclass(frozen=True)
class TimelinePoint:
    """One interval of a step: counts and the primary latency's p50/p99 (microseconds).

    ``t`` is the interval's start in seconds from the step's start;
    ``interval`` its length (1 s unless the timeline was compacted).
    """

    t: float
    interval: float
    sent: int = 0
    received: int = 0
    opened: int = 0
    errors: int = 0
    latency_count: int = 0
    p50_us: int = 0
    p99_us: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_dict` reads it back."""
        return {
            "t": self.t,
            "interval": self.interval,
            "sent": self.sent,
            "received": self.received,
            "opened": self.opened,
            "errors": self.errors,
            "latency_count": self.latency_count,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TimelinePoint:
        """The point :meth:`to_dict` wrote."""
        return cls(
            t=float(data["t"]),
            interval=float(data["interval"]),
            sent=int(data.get("sent", 0)),
            received=int(data.get("received", 0)),
            opened=int(data.get("opened", 0)),
            errors=int(data.get("errors", 0)),
            latency_count=int(data.get("latency_count", 0)),
            p50_us=int(data.get("p50_us", 0)),
            p99_us=int(data.get("p99_us", 0)),
        )

    def merged(self, other: TimelinePoint) -> TimelinePoint:
        """This point and the next one as one point twice as long (p99: the larger)."""
        count = self.latency_count + other.latency_count
        p50 = (
            round((self.p50_us * self.latency_count + other.p50_us * other.latency_count) / count)
            if count
            else 0
        )
        return TimelinePoint(
            t=self.t,
            interval=self.interval + other.interval,
            sent=self.sent + other.sent,
            received=self.received + other.received,
            opened=self.opened + other.opened,
            errors=self.errors + other.errors,
            latency_count=count,
            p50_us=p50,
            p99_us=max(self.p99_us, other.p99_us),
        )


class Timeline:
    """Per-interval counts and latency, bounded to ``max_points`` points (see the module docstring).

    Counts come as running totals: :meth:`advance` is given the totals so
    far (sent, received, opened, errors) whenever ``now`` passed the open
    interval's end (:attr:`boundary`), and an interval's counts are the
    totals' growth during it (``totals``, a callable returning them, lets
    :meth:`points` read them itself).  Latencies of the open interval are kept as a
    sample of at most :attr:`SAMPLE` values (every k-th one once it is
    full), so a point's p50/p99 are those of the sample.  ``start`` is the
    step's start on the caller's clock; a ``now`` before it counts in the
    first interval.  :meth:`points` closes the open interval.
    """

    #: Latencies kept per interval for its p50/p99.
    SAMPLE: ClassVar[int] = 2048

    def __init__(
        self,
        start: float,
        *,
        interval: float = 1.0,
        max_points: int = 3600,
        totals: Callable[[], tuple[int, int, int, int]] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 s, got {interval!r}")
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {max_points!r}")
        self.start = start
        self.interval = interval
        self.max_points = max_points
        self._points: list[TimelinePoint] = []
        self._index = 0
        #: When the open interval ends, on the caller's clock.
        self.boundary = start + interval
        self._mark = (0, 0, 0, 0)
        self._samples: list[float] = []
        self._stride = 1
        self._skip = 0
        self._latency_count = 0
        self._totals = totals

    def latency(self, seconds: float, now: float) -> None:
        """Record one primary-metric latency in the open interval (call :meth:`advance` first when due)."""
        self._latency_count += 1
        if self._skip:
            self._skip -= 1
            return
        samples = self._samples
        samples.append(seconds)
        if len(samples) >= self.SAMPLE:
            del samples[1::2]  # keep every other one, and from now on every 2k-th
            self._stride *= 2
        self._skip = self._stride - 1

    def _point(self, totals: tuple[int, int, int, int]) -> TimelinePoint:
        sent, received, opened, errors = (t - m for t, m in zip(totals, self._mark, strict=True))
        samples = sorted(self._samples)
        p50 = p99 = 0
        if samples:
            p50 = int(samples[min(len(samples) - 1, int(len(samples) * 0.50))] * 1_000_000)
            p99 = int(samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1_000_000)
        return TimelinePoint(
            t=round(self._index * self.interval, 9),
            interval=self.interval,
            sent=sent,
            received=received,
            opened=opened,
            errors=errors,
            latency_count=self._latency_count,
            p50_us=p50,
            p99_us=p99,
        )

    def _close(self, totals: tuple[int, int, int, int]) -> None:
        self._append(self._point(totals))
        self._mark = totals
        self._samples = []
        self._stride = 1
        self._skip = 0
        self._latency_count = 0

    def advance(self, now: float, totals: tuple[int, int, int, int]) -> None:
        """Close the open interval if ``now`` is past it; ``totals``: (sent, received, opened, errors) so far."""
        if now < self.boundary:
            return
        self._close(totals)
        self._index += 1
        # Empty intervals in between are points too: a stall shows as zeros, not as a gap.
        # The index is recomputed each time: appending may have doubled the interval.
        while self._index < int((now - self.start) / self.interval):
            self._append(TimelinePoint(round(self._index * self.interval, 9), self.interval))
            self._index += 1
        self.boundary = self.start + (self._index + 1) * self.interval

    def _append(self, point: TimelinePoint) -> None:
        points = self._points
        points.append(point)
        # Only an even count is compacted, so every merged point covers two whole intervals
        # and the point just closed (index len - 1) becomes index len / 2 - 1.
        if len(points) >= self.max_points and len(points) % 2 == 0:
            self._points = [points[i].merged(points[i + 1]) for i in range(0, len(points), 2)]
            self.interval *= 2
            self._index //= 2

    def points(self, now: float, totals: tuple[int, int, int, int] | None = None) -> list[TimelinePoint]:
        """Every closed interval, then the open one (its ``interval`` the part of it passed), with the totals at ``now``.

        ``totals`` default to what the ``totals`` callable given at creation
        returns (a :class:`Metrics`' timeline has one), else to the last ones seen.
        """
        if totals is None:
            totals = self._totals() if self._totals is not None else self._mark
        self.advance(now, totals)
        points = list(self._points)
        if totals != self._mark or self._latency_count or not points:
            # The open interval covers only what has passed of it, so rates over it are not diluted.
            span = now - (self.start + self._index * self.interval)
            point = self._point(totals)
            points.append(replace(point, interval=round(min(self.interval, max(span, 1e-6)), 9)))
        return points


@dataclass
class Metrics:
    """The recorder of one step: named latencies, counters, errors by kind, gauges, a timeline.

    Implements :class:`harness.load.scenarios.Recorder`.  ``primary`` is
    the latency metric the timeline follows (the scenario's
    :attr:`~harness.load.scenarios.Scenario.primary_metric`).

    >>> m = Metrics(start=0.0, primary="publish")
    >>> m.count("sent", 0.1)
    >>> m.latency("publish", 0.002, 0.102)
    >>> m.error("close:1008", 0.5)
    >>> m.counters["sent"], m.errors["close:1008"], m.latencies["publish"].count
    (1, 1, 1)
    """

    start: float
    primary: str = "latency"
    timeline_interval: float = 1.0
    max_points: int = 3600
    latencies: dict[str, Histogram] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    timeline: Timeline = field(init=False)

    def __post_init__(self) -> None:
        self.timeline = Timeline(
            self.start, interval=self.timeline_interval, max_points=self.max_points, totals=self._totals
        )

    def _totals(self) -> tuple[int, int, int, int]:
        counters = self.counters
        return (
            counters.get("sent", 0),
            counters.get("received", 0),
            counters.get("opened", 0),
            sum(self.errors.values()),
        )

    def latency(self, name: str, seconds: float, now: float) -> None:
        """Record a duration of metric ``name`` measured at ``now``."""
        histogram = self.latencies.get(name)
        if histogram is None:
            histogram = self.latencies[name] = Histogram()
        histogram.record(seconds)
        if name == self.primary:
            timeline = self.timeline
            if now >= timeline.boundary:
                timeline.advance(now, self._totals())
            timeline.latency(seconds, now)

    def measure(self, name: str, seconds: float, now: float, counters: tuple[str, ...] = ()) -> None:
        """:meth:`latency` then :meth:`count` of 1 for each of ``counters``: the same figures, in one call.

        A publisher's confirmation on the hot path of a run (see
        :class:`harness.load.scenarios.Recorder`).
        """
        timeline = self.timeline
        primary = name == self.primary
        if now >= timeline.boundary and (primary or counters):
            timeline.advance(now, self._totals())
        histogram = self.latencies.get(name)
        if histogram is None:
            histogram = self.latencies[name] = Histogram()
        histogram.record(seconds)
        if primary:
            timeline.latency(seconds, now)
        totals = self.counters
        for counter in counters:
            totals[counter] = totals.get(counter, 0) + 1

    def count(self, name: str, now: float, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` at ``now``."""
        if now >= self.timeline.boundary:
            self.timeline.advance(now, self._totals())
        counters = self.counters
        counters[name] = counters.get(name, 0) + n

    def error(self, kind: str, now: float, n: int = 1) -> None:
        """Count ``n`` errors of ``kind`` (``connect:refused``, ``handshake:403``, ``close:1008``...)."""
        if now >= self.timeline.boundary:
            self.timeline.advance(now, self._totals())
        self.errors[kind] = self.errors.get(kind, 0) + n

    def timeline_points(self, now: float) -> list[TimelinePoint]:
        """The timeline up to ``now`` (closing the open interval)."""
        return self.timeline.points(now, self._totals())

    def gauge(self, name: str, value: float) -> None:
        """Set gauge ``name`` (a level, not a count: open connections at the end, RSS...)."""
        self.gauges[name] = value

    @property
    def error_count(self) -> int:
        """Errors of every kind together."""
        return sum(self.errors.values())

    def merge(self, other: Metrics) -> None:
        """Add ``other``'s latencies, counters and errors; its gauges overwrite these (timelines are not merged)."""
        for name, histogram in other.latencies.items():
            self.latencies.setdefault(name, Histogram()).merge(histogram)
        for name, n in other.counters.items():
            self.counters[name] = self.counters.get(name, 0) + n
        for kind, n in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        self.gauges.update(other.gauges)

    def summaries(self) -> dict[str, LatencySummary]:
        """Every latency metric's summary, by name."""
        return {name: histogram.summary() for name, histogram in sorted(self.latencies.items())}
