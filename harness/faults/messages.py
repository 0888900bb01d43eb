"""Message-depth fault decisions: pure rules the frame journal applies to each frame.

A rule looks at one journaled frame and decides what to forward instead:
nothing (drop), the frame later (delay), the frame twice (duplicate), or
nothing until the rule ends (stall, whose held frames are then released in
order, each on the socket it came from).  Rules have no I/O and no clock:
the journal's route applies their decisions (see
:meth:`harness.journal.FrameJournal.add_rule`).

Realism limits: the page's socket stays open and its close codes are
untouched, so these faults model a misbehaving server or intermediary at
the message level, not a network failure; delays run in real time (the
Playwright event loop), not the page's virtual clock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..journal import Direction, Frame, normalize_direction

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
    """Hold every matching frame until the rule ends; then each goes back to its own socket.

    ``held`` keeps the held payloads, oldest first, and ``held_connections``
    the connection index (:attr:`Frame.connection`) each came from, at the
    same position.  When the rule is removed the journal forwards each frame,
    in order, on the connection it came from, and discards the frames of a
    connection that has closed meanwhile (a stuck server loop or a full send
    queue never moves frames to another connection; a closed connection's
    pending frames are lost).  ``released`` and ``discarded`` count what the
    journal did with them (:meth:`note_release`); :meth:`describe` shows both.
    """

    held: list[str | bytes] = field(default_factory=list)
    held_connections: list[int] = field(default_factory=list)
    released: int = 0
    discarded: int = 0

    def _emits(self, frame: Frame) -> list[Emit]:
        # Runs inside decide(), under the rule's lock: both lists move together.
        self.held.append(frame.raw)
        self.held_connections.append(frame.connection)
        return []

    def release_held(self) -> list[tuple[int, str | bytes]]:
        """Take the held frames as ``(connection, payload)``, oldest first; none stay held.

        The journal calls this when the rule is removed, to send each payload
        on the connection it came from.
        """
        with self._lock:
            held = list(zip(self.held_connections, self.held, strict=True))
            self.held, self.held_connections = [], []
            return held

    def release(self) -> list[str | bytes]:
        """Take the held payloads, oldest first, without their connections.

        See :meth:`release_held`, which the journal uses.
        """
        return [payload for _, payload in self.release_held()]

    def note_release(self, released: int, discarded: int) -> None:
        """Count frames the journal forwarded on their socket, and those it discarded.

        ``discarded`` frames came from a connection that had closed by the time
        the rule was removed.
        """
        with self._lock:
            self.released += released
            self.discarded += discarded

    def describe(self) -> str:
        """As :meth:`MessageRule.describe`, plus what became of the held frames once released."""
        text = super().describe()
        with self._lock:
            released, discarded = self.released, self.discarded
        if released or discarded:
            text += f", {released} held frame(s) released"
            if discarded:
                text += f", {discarded} discarded (their socket had closed)"
        return text
