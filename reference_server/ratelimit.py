"""Admission and rate limiting, pure: no I/O, no clock.

- :class:`TokenBucket`: the per-connection message rate limit;
- :class:`UnauthenticatedCap`: how many connections may wait for authentication,
  per client address and in total;
- :class:`ThrottledCount`: when to log a repeated event (once per window, with a count).

Token bucket: the caller passes the current time (``time.monotonic()``) to :meth:`TokenBucket.take`
for every inbound frame and acts on the verdict:

- ``ADMIT``: process the frame;
- ``REFUSE``: answer ``error`` {code: "rate_limited"} and drop the frame;
- ``CLOSE``: answer ``error`` {code: "rate_limited"}, then close the socket with
  1008 "rate limit exceeded".

The bucket holds up to ``burst`` tokens and gains ``rate`` tokens per second;
each admitted frame costs one.  A *strike* is one refused frame.  Strikes are
forgiven only once the client lets the bucket refill completely, so a flood
(which never lets it refill) reaches ``max_strikes`` and is closed, while a
client that bursts once and then calms down keeps its connection.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["CapExceeded", "ThrottledCount", "TokenBucket", "UnauthenticatedCap", "Verdict"]


class Verdict(Enum):
    """What to do with one inbound frame."""

    ADMIT = "admit"
    REFUSE = "refuse"
    CLOSE = "close"


@dataclass
class TokenBucket:
    """A token bucket that starts full.  ``rate`` tokens/s, at most ``burst`` tokens."""

    rate: float
    burst: int
    max_strikes: int
    tokens: float = field(init=False)
    strikes: int = field(default=0, init=False)
    _updated: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0 tokens per second, got {self.rate!r}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst!r}")
        if self.max_strikes < 1:
            raise ValueError(f"max_strikes must be >= 1, got {self.max_strikes!r}")
        self.tokens = float(self.burst)

    def _refill(self, now: float) -> None:
        if self._updated is not None and now > self._updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self._updated) * self.rate)
        if self._updated is None or now > self._updated:
            self._updated = now

    def take(self, now: float) -> Verdict:
        """Spend a token for one frame arriving at ``now`` (seconds, monotonic)."""
        self._refill(now)
        if self.tokens >= self.burst:
            self.strikes = 0
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return Verdict.ADMIT
        self.strikes += 1
        return Verdict.CLOSE if self.strikes >= self.max_strikes else Verdict.REFUSE


class CapExceeded(Enum):
    """Which limit of :class:`UnauthenticatedCap` refused a connection."""

    PER_ADDRESS = "per_address"
    TOTAL = "total"


@dataclass
class UnauthenticatedCap:
    """Counts connections that have not authenticated yet, per client address and in total.

    :meth:`admit` takes a slot or says which limit is full; each admitted
    connection gives its slot back exactly once with :meth:`release`, when it
    authenticates or goes away, whichever comes first.  Authenticated
    connections are never counted.
    """

    per_address: int
    total: int
    _by_address: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    _count: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.per_address < 1:
            raise ValueError(f"per_address must be >= 1, got {self.per_address!r}")
        if self.total < 1:
            raise ValueError(f"total must be >= 1, got {self.total!r}")

    @property
    def count(self) -> int:
        """Slots taken, over every address."""
        return self._count

    def count_for(self, address: str) -> int:
        """Slots taken by ``address``."""
        return self._by_address[address]

    def admit(self, address: str) -> CapExceeded | None:
        """Take a slot for a new connection from ``address``; None when taken, else the full limit."""
        if self._by_address[address] >= self.per_address:
            return CapExceeded.PER_ADDRESS
        if self._count >= self.total:
            return CapExceeded.TOTAL
        self._by_address[address] += 1
        self._count += 1
        return None

    def release(self, address: str) -> None:
        """Give back a slot :meth:`admit` took for ``address``."""
        held = self._by_address[address]
        if held < 1:
            raise ValueError(f"release({address!r}) without a slot taken for it")
        if held == 1:
            del self._by_address[address]
        else:
            self._by_address[address] = held - 1
        self._count -= 1


@dataclass
class ThrottledCount:
    """Counts a repeated event so it is logged once per window, not once per occurrence.

    The caller owns the timer.  :meth:`record` returns True for the event that
    opens a window: log it now and call :meth:`close_window` when the window
    (say 10 s) is over.  :meth:`close_window` returns how many events came
    after the first, by key; when some did, a new window opens (log the
    counts, start the timer again), else the next event opens one.
    """

    _open: bool = field(default=False, init=False)
    _since: Counter[str] = field(default_factory=Counter, init=False, repr=False)

    @property
    def window_open(self) -> bool:
        return self._open

    def record(self, key: str = "") -> bool:
        """Count one event; True when it opens a window (log it now, start the timer)."""
        if not self._open:
            self._open = True
            return True
        self._since[key] += 1
        return False

    def close_window(self) -> dict[str, int]:
        """End the window: events after its first, by key ({} closes it, else a new one opens)."""
        counts = dict(self._since)
        self._since.clear()
        self._open = bool(counts)
        return counts
