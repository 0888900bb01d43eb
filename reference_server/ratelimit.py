"""Per-connection rate limiting: a token bucket with strikes.  Pure: no I/O, no clock.

The caller passes the current time (``time.monotonic()``) to :meth:`TokenBucket.take`
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

from dataclasses import dataclass, field
from enum import Enum

__all__ = ["TokenBucket", "Verdict"]


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
