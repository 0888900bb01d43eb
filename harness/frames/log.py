"""The frame log: every frame of every socket of a page, both directions.  Pure: no Playwright.

Frames are recorded by a shim (the Playwright route, :mod:`harness.browser.route`),
typed by the app profile's key, validated by its validator when there is
one, and read back with consume-once waits: each frame satisfies one
:meth:`FrameLog.expect` at most, history included.

Directions are named from the page's point of view: ``sent`` (page to server,
also ``to_server``) and ``received`` (server to page, also ``to_client``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigurationError, WaitTimeoutError
from ..matching import Match, TextMatch, describe_frames, describe_match, payload_matches, type_of

__all__ = [
    "Direction",
    "Frame",
    "FrameLog",
    "FrameValidator",
    "ProtocolViolation",
    "normalize_direction",
]

Direction = Literal["sent", "received"]

#: Raises ``ValueError`` saying what is wrong when a frame of that direction is invalid.
FrameValidator = Callable[[str | bytes, Direction], object]

_ALIASES: dict[str, Direction] = {
    "sent": "sent",
    "to_server": "sent",
    "received": "received",
    "to_client": "received",
}


def normalize_direction(direction: str) -> Direction:
    """Map ``sent``/``to_server`` and ``received``/``to_client`` to the log's names."""
    try:
        return _ALIASES[direction]
    except KeyError:
        raise ConfigurationError(
            f"unknown direction {direction!r}; use 'received' (or 'to_client') for frames the page "
            "receives, 'sent' (or 'to_server') for frames the page sends"
        ) from None


@dataclass(frozen=True)
class Frame:
    """One journaled frame: ``message`` is the parsed JSON object (None for other frames)."""

    index: int
    connection: int
    direction: Direction
    raw: str | bytes
    message: dict[str, Any] | None
    at: float
    wall_time: str
    url: str
    violation: str | None = None
    type_name: str | None = None
    typed: bool = False

    @property
    def type(self) -> str | None:
        """The frame's type by the profile's type key (``type`` for frames made by hand)."""
        if self.typed:
            return self.type_name
        return None if self.message is None else self.message.get("type")

    @property
    def text(self) -> str | None:
        """The frame's text (None for a binary frame)."""
        return self.raw if isinstance(self.raw, str) else None

    def to_json(self) -> dict[str, Any]:
        raw: Any = self.raw if isinstance(self.raw, str) else {"binary": self.raw.hex()}
        return {
            "index": self.index,
            "connection": self.connection,
            "direction": self.direction,
            "time": self.wall_time,
            "elapsed_s": round(self.at, 6),
            "url": self.url,
            "type": self.type,
            "raw": raw,
            "violation": self.violation,
        }


@dataclass(frozen=True)
class ProtocolViolation:
    frame: Frame
    error: str


class FrameLog:
    """Records frames and answers questions about them, with deadlines.

    Thread-safe.  ``pump`` (a callable taking seconds) lets the shim deliver
    frames while a wait waits (Playwright's sync API dispatches events only
    inside its calls); without one, waits sleep on a condition that
    :meth:`record` notifies.
    """

    def __init__(
        self,
        *,
        validate: bool = True,
        validator: FrameValidator | None = None,
        pump: Callable[[float], None] | None = None,
        default_timeout: float = 5.0,
        type_key: str = "type",
        match_in: str | None = "data",
    ) -> None:
        self.validate = validate
        self._validator = validator
        self._pump = pump
        self.default_timeout = default_timeout
        self.type_key = type_key
        self.match_in = match_in
        self._frames: list[Frame] = []
        self._consumed: set[int] = set()
        self._connections: list[str] = []
        self._lock = threading.RLock()
        self._arrived = threading.Condition(self._lock)
        self._t0 = time.monotonic()
        self._internal_errors: list[str] = []

    # ------------------------------------------------------------ recording

    def open_connection(self, url: str) -> int:
        """Note a new socket to ``url``; return its connection index."""
        with self._lock:
            self._connections.append(url)
            return len(self._connections) - 1

    def record(self, connection: int, url: str, direction: Direction, raw: str | bytes) -> Frame:
        """Add a frame (validated when ``validate`` and a validator is set); return it."""
        message: dict[str, Any] | None = None
        violation: str | None = None
        if isinstance(raw, str):
            try:
                parsed = json.loads(raw)
                message = parsed if isinstance(parsed, dict) else None
            except ValueError:
                message = None
        if self.validate and self._validator is not None:
            try:
                self._validator(raw, direction)
            except ValueError as exc:
                violation = str(exc)
            except Exception as exc:  # noqa: BLE001 - a validator bug is a violation, never a lost frame
                violation = f"the validator failed: {exc!r}"
        type_name = None if message is None else type_of(message, self.type_key)
        with self._lock:
            frame = Frame(
                index=len(self._frames),
                connection=connection,
                direction=direction,
                raw=raw,
                message=message,
                at=time.monotonic() - self._t0,
                wall_time=datetime.now(UTC).isoformat(timespec="milliseconds"),
                url=url,
                violation=violation,
                type_name=type_name,
                typed=True,
            )
            self._frames.append(frame)
            self._arrived.notify_all()
        return frame

    def note_internal_error(self, text: str) -> None:
        """Remember a failure of the shim, reported by :meth:`check`."""
        with self._lock:
            self._internal_errors.append(text)

    # ------------------------------------------------------------ reading

    @property
    def frames(self) -> list[Frame]:
        """Every frame so far, in order."""
        with self._lock:
            return list(self._frames)

    @property
    def connections(self) -> list[str]:
        """The URL of every socket the page opened, by connection index."""
        with self._lock:
            return list(self._connections)

    def violations(self) -> list[ProtocolViolation]:
        return [ProtocolViolation(f, f.violation) for f in self.frames if f.violation]

    def messages(self, direction: str | None = None, type: str | None = None) -> list[dict[str, Any]]:
        """The parsed JSON frames (of ``direction`` and ``type``, when given), in order."""
        wanted = normalize_direction(direction) if direction else None
        return [
            f.message
            for f in self.frames
            if f.message is not None
            and (wanted is None or f.direction == wanted)
            and (type is None or f.type == type)
        ]

    def _matches(
        self, frame: Frame, type: str | None, match: Match | None, text: TextMatch | None
    ) -> bool:
        if type is not None and frame.type != type:
            return False
        return payload_matches(
            frame.raw, frame.message, match=match, text=text, type_key=self.type_key, match_in=self.match_in
        )

    def find(
        self,
        type: str | None = None,
        *,
        direction: str = "received",
        match: Match | None = None,
        text: TextMatch | None = None,
        unconsumed: bool = False,
    ) -> list[Frame]:
        """Frames matching, in order (all of them, or only those no ``expect`` took yet).

        With no ``type``, ``match`` or ``text``, every frame of the direction
        matches, JSON or not.
        """
        wanted = normalize_direction(direction)
        with self._lock:
            return [
                f
                for f in self._frames
                if f.direction == wanted
                and not (unconsumed and f.index in self._consumed)
                and self._matches(f, type, match, text)
            ]

    def expect(
        self,
        type: str | None = None,
        *,
        direction: str = "received",
        match: Match | None = None,
        text: TextMatch | None = None,
        timeout: float | None = None,
    ) -> Frame:
        """The first not-yet-expected matching frame, from history or arriving before the deadline.

        Each frame satisfies one ``expect`` at most, so two calls for the same
        type return two different frames.
        """
        normalize_direction(direction)
        timeout = self.default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                hits = self.find(type, direction=direction, match=match, text=text, unconsumed=True)
                if hits:
                    self._consumed.add(hits[0].index)
                    return hits[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                what = f"a {direction} frame " + describe_match(type, match, text)
                raise WaitTimeoutError(
                    f"expected {what.strip()} within {timeout:.1f} s; frames journaled "
                    f"({len(self.frames)}):\n{self.describe()}\nIf the frame is late, raise timeout=; "
                    "if it never comes, check the server log and the page's status history."
                )
            self._wait(min(remaining, 0.05))

    def wait_for(
        self, predicate: Callable[[Frame], bool], what: str, timeout: float | None = None
    ) -> Frame:
        """The first frame (any direction, consumed or not) satisfying ``predicate``; waits for it.

        Does not consume: a later :meth:`expect` still sees the frame.
        """
        timeout = self.default_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            for frame in self.frames:
                if predicate(frame):
                    return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeoutError(
                    f"expected {what} within {timeout:.1f} s; frames journaled ({len(self.frames)}):\n"
                    f"{self.describe()}"
                )
            self._wait(min(remaining, 0.05))

    def expect_none(
        self,
        type: str | None = None,
        *,
        direction: str = "received",
        match: Match | None = None,
        text: TextMatch | None = None,
        within: float = 0.5,
    ) -> None:
        """Assert that no not-yet-expected matching frame is or gets journaled within ``within`` s.

        With no criteria, any frame of the direction fails it, JSON or not.
        """
        normalize_direction(direction)
        deadline = time.monotonic() + within
        while True:
            hits = self.find(type, direction=direction, match=match, text=text, unconsumed=True)
            if hits:
                what = describe_match(type, match, text)
                raise AssertionError(
                    f"expected no {direction} frame{' ' + what if what else ''} within {within} s, "
                    f"got #{hits[0].index} conn{hits[0].connection}: {_shown(hits[0].raw)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wait(min(remaining, 0.05))

    def _wait(self, seconds: float) -> None:
        if self._pump is not None:
            self._pump(seconds)
        else:
            with self._arrived:
                self._arrived.wait(seconds)

    def describe(self, limit: int = 30) -> str:
        shown = []
        for f in self.frames[-limit:]:
            arrow = "<-" if f.direction == "received" else "->"
            raw = f.raw if isinstance(f.raw, str) else f"<binary {len(f.raw)} bytes>"
            shown.append(f"  #{f.index} conn{f.connection} {arrow} {raw[:200]}")
        if not shown:
            return "  (none)"
        return "\n".join(shown)

    def describe_messages(self, messages: Iterable[Any]) -> str:
        return describe_frames(list(messages))

    # ------------------------------------------------------------ checks and artifacts

    def check(self, *, violations: bool = True) -> None:
        """Raise AssertionError if the shim failed or (``violations``) a frame was invalid."""
        with self._lock:
            internal = list(self._internal_errors)
        if internal:
            raise AssertionError(
                "the frame journal failed while forwarding (the frames were forwarded unchanged):\n  "
                + "\n  ".join(internal[:10])
            )
        bad = self.violations() if violations else []
        if not bad:
            return
        lines = [f"{len(bad)} frame(s) violated the protocol:"]
        for v in bad[:10]:
            lines.append(f"  #{v.frame.index} conn{v.frame.connection} {v.frame.direction}: {_shown(v.frame.raw, 300)}")
            lines.append(f"      {v.error}")
        lines.append(
            "Fix the sender, or mark the test with @pytest.mark.ws_allow_invalid_frames "
            "if it sends bad frames on purpose."
        )
        raise AssertionError("\n".join(lines))

    def write_jsonl(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            for frame in self.frames:
                fh.write(json.dumps(frame.to_json()) + "\n")
        return path


def _shown(raw: str | bytes, limit: int = 500) -> str:
    """A frame for a message: text cut at ``limit`` characters, binary as its size."""
    if isinstance(raw, bytes):
        return f"<binary {len(raw)} bytes>"
    return raw if len(raw) <= limit else raw[:limit] + f"... ({len(raw)} characters)"
