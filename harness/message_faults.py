"""Message-depth fault decisions: pure rules the frame journal applies to each frame.

A rule looks at one journaled frame and decides what to forward instead:
nothing (drop), the frame later (delay), the frame twice (duplicate), or
nothing until the rule ends (stall, whose held frames are then released in
order).  Rules have no I/O and no clock: the journal's route applies their
decisions (see :meth:`harness.journal.FrameJournal.add_rule`).

Realism limits: the page's socket stays open and its close codes are
untouched, so these faults model a misbehaving server or intermediary at
the message level, not a network failure; delays run in real time (the
Playwright event loop), not the page's virtual clock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .journal import Direction, Frame, normalize_direction

__all__ = ["Delay", "Drop", "Duplicate", "Emit", "MessageRule", "Stall"]


@dataclass(frozen=True)
class Emit:
    """Forward ``payload`` after ``delay_ms`` (0: now)."""

    payload: str | bytes
    delay_ms: float = 0.0


@dataclass
class MessageRule:
    """Base of message rules: which frames a rule applies to, and how many times."""

    type: str | None = None
    direction: str = "to_client"
    count: int | None = None
    applied: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._direction: Direction = normalize_direction(self.direction)
        if self.count is not None and self.count < 1:
            raise ValueError(f"count must be at least 1 (or None for every frame), got {self.count}")

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.applied >= self.count

    def matches(self, frame: Frame) -> bool:
        return (
            frame.direction == self._direction
            and (self.type is None or frame.type == self.type)
            and not self.exhausted
        )

    def decide(self, frame: Frame) -> list[Emit] | None:
        """What to forward for ``frame``, or None when the rule does not apply."""
        with self._lock:
            if not self.matches(frame):
                return None
            self.applied += 1
            return self._emits(frame)

    def _emits(self, frame: Frame) -> list[Emit]:
        raise NotImplementedError

    def describe(self) -> str:
        what = self.type or "every"
        limit = "" if self.count is None else f", {self.applied}/{self.count} applied"
        return f"{type(self).__name__.lower()} {what} frame {self.direction}{limit}"


@dataclass
class Drop(MessageRule):
    """Forward nothing."""

    def _emits(self, frame: Frame) -> list[Emit]:
        return []


@dataclass
class Delay(MessageRule):
    """Forward each matching frame ``ms`` later (frames of one rule keep their order)."""

    ms: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ms < 0:
            raise ValueError(f"delay must be >= 0 ms, got {self.ms}")

    def _emits(self, frame: Frame) -> list[Emit]:
        return [Emit(frame.raw, self.ms)]


@dataclass
class Duplicate(MessageRule):
    """Forward each matching frame twice."""

    def _emits(self, frame: Frame) -> list[Emit]:
        return [Emit(frame.raw), Emit(frame.raw)]


@dataclass
class Stall(MessageRule):
    """Hold every frame of a direction until the rule ends, then release them in order."""

    held: list[str | bytes] = field(default_factory=list)

    def _emits(self, frame: Frame) -> list[Emit]:
        self.held.append(frame.raw)
        return []

    def release(self) -> list[str | bytes]:
        """The held frames, oldest first (the rule forwards nothing more once removed)."""
        with self._lock:
            held, self.held = self.held, []
            return held
