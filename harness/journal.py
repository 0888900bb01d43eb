"""The frame journal: every frame of every socket a page opens, both directions.

Playwright reports no frames for routed sockets, so the journal *is* the
route: :meth:`FrameJournal.attach` installs a pass-through
``page.route_web_socket`` that connects each page socket to the real server,
records every frame with its time and connection index, validates it against
the protocol models, and forwards it.  Closes are forwarded by Playwright's
default forwarding, which keeps their codes and cleanliness exactly as the
server sent them; the journal only notes which connections have closed, so
frames a stall held are released on their own connection, or discarded once
it has closed (never sent on another socket).

Interceptors (message-depth faults) see each frame before it is forwarded and
decide what to forward instead: nothing (drop), the frame twice (duplicate),
or a rewritten frame.

Directions are named from the page's point of view: ``sent`` (page to server,
also ``to_server``) and ``received`` (server to page, also ``to_client``).
Each frame is validated against the protocol models *of its direction*
(:func:`validate_directed`): the page may only send client messages and
receive server messages.

Playwright runs the route's callbacks on the test thread, only while that
thread is inside a Playwright call: the journal's waits pump (``pump``), and a
frame is never lost to an exception in the journal, a validator or an
interceptor: it is forwarded unchanged and :meth:`FrameJournal.check` fails.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from .errors import ConfigurationError, WaitTimeoutError
from .matching import Match, describe_frames, frame_matches

__all__ = [
    "Direction",
    "Frame",
    "FrameJournal",
    "Interceptor",
    "ProtocolViolation",
    "normalize_direction",
    "validate_directed",
]

Direction = Literal["sent", "received"]

_ALIASES: dict[str, Direction] = {
    "sent": "sent",
    "to_server": "sent",
    "received": "received",
    "to_client": "received",
}


def normalize_direction(direction: str) -> Direction:
    """Map ``sent``/``to_server`` and ``received``/``to_client`` to the journal's names."""
    try:
        return _ALIASES[direction]
    except KeyError:
        raise ConfigurationError(
            f"unknown direction {direction!r}; use 'received' (or 'to_client') for frames the page "
            "receives, 'sent' (or 'to_server') for frames the page sends"
        ) from None


@dataclass(frozen=True)
class Frame:
    """One journaled frame."""

    index: int
    connection: int
    direction: Direction
    raw: str | bytes
    message: dict[str, Any] | None
    at: float
    wall_time: str
    url: str
    violation: str | None = None

    @property
    def type(self) -> str | None:
        return None if self.message is None else self.message.get("type")

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


class Interceptor(Protocol):
    """Decides what to forward for a frame: return the payloads to send (``[]`` drops it)."""

    def __call__(self, frame: Frame) -> Sequence[str | bytes] | None:
        """``None`` means "not mine": forward unchanged (or let the next interceptor decide)."""


Validator = Callable[[str | bytes], object]


def validate_directed(raw: str | bytes, direction: Direction) -> object:
    """Validate ``raw`` against the protocol models of its direction.

    Frames the page sends must be client messages, frames it receives server
    messages: a ``pong`` sent by the page is as wrong as a ``connect`` it
    receives.  Raises ``ValueError`` (the protocol's ``ProtocolError``).
    """
    from reference_server.protocol import parse_client_message, parse_server_message

    return parse_client_message(raw) if direction == "sent" else parse_server_message(raw)


class FrameJournal:
    """Records, validates and forwards every WebSocket frame of a page.

    Thread-safe; waits pump Playwright's event loop through ``pump`` (a
    callable that lets the sync API dispatch events for a short while).
    """

    def __init__(
        self,
        *,
        validate: bool = True,
        validator: Validator | None = None,
        pump: Callable[[float], None] | None = None,
        default_timeout: float = 5.0,
    ) -> None:
        self.validate = validate
        self._validator = validator
        self._pump = pump
        self.default_timeout = default_timeout
        self._frames: list[Frame] = []
        self._consumed: set[int] = set()
        self._connections: list[str] = []
        self._lock = threading.RLock()
        self._arrived = threading.Condition(self._lock)
        self._t0 = time.monotonic()
        self.interceptors: list[Interceptor] = []
        self._rules: list[Any] = []
        # Connection index -> (page-side route, server-side route); filled under the lock.
        self._routes: dict[int, tuple[Any, Any]] = {}
        # Connections either end of which has closed (never reopened: a reconnect is a new index).
        self._closed: set[int] = set()
        self._internal_errors: list[str] = []

    # ------------------------------------------------------------ capture

    def attach(self, target: Any, url: str | Any = "**") -> None:
        """Route every WebSocket of ``target`` (a Page or BrowserContext) matching ``url``."""
        target.route_web_socket(url, self._on_socket)

    def _on_socket(self, route: Any) -> None:
        with self._lock:
            connection = len(self._connections)
            self._connections.append(route.url)
            server = route.connect_to_server()  # fire and forget: does not block
            self._routes[connection] = (route, server)
        self._watch_closes(connection, route, server)
        route.on_message(
            lambda raw: self._forward(connection, route.url, "sent", raw, server.send, server, route)
        )
        server.on_message(
            lambda raw: self._forward(connection, route.url, "received", raw, route.send, route, route)
        )

    def _watch_closes(self, connection: int, route: Any, server: Any) -> None:
        """Note when either end of ``connection`` closes, without changing how closes travel.

        A public ``on_close`` handler would replace Playwright's default
        forwarding of the close to the other end, and its ``close()`` always
        reports a clean close: an aborted connection (1006, ``wasClean``
        false) would reach the page as clean.  So the journal listens to the
        route's close events next to Playwright's own listener, which keeps
        forwarding them exactly as sent.  Objects without Playwright's
        internals (test doubles) get public ``on_close`` handlers, which
        forward the close themselves.  The listeners only take a lock: they
        run inside Playwright's dispatcher and must not block.
        """
        channel = getattr(getattr(route, "_impl_obj", None), "_channel", None)
        listen = getattr(channel, "on", None)
        if callable(listen):
            listen("closePage", lambda _event: self._mark_closed(connection))
            listen("closeServer", lambda _event: self._mark_closed(connection))
            return
        route.on_close(lambda code, reason: self._end_closed(connection, server, code, reason))
        server.on_close(lambda code, reason: self._end_closed(connection, route, code, reason))

    def _mark_closed(self, connection: int) -> None:
        with self._lock:
            self._closed.add(connection)

    def _end_closed(
        self, connection: int, other: Any, code: int | None, reason: str | None
    ) -> None:
        # The public on_close path: note the close, then forward it as Playwright would have.
        self._mark_closed(connection)
        try:
            other.close(code=code, reason=reason)
        except Exception as exc:  # noqa: BLE001 - reported at check(), not raised in the dispatcher
            self._internal_errors.append(f"forwarding the close of conn{connection}: {exc!r}")

    def _forward(
        self,
        connection: int,
        url: str,
        direction: Direction,
        raw: str | bytes,
        send: Callable[[Any], None],
        target: Any = None,
        route: Any = None,
    ) -> None:
        # Runs inside Playwright's dispatcher: an exception here would lose the frame
        # silently, so a failing journal or interceptor forwards it unchanged and says so.
        payloads: Sequence[str | bytes] | None = None
        delayed: list[tuple[float, str | bytes]] = []
        try:
            frame = self.record(connection, url, direction, raw)
            for interceptor in list(self.interceptors):
                payloads = interceptor(frame)
                if payloads is not None:
                    break
            if payloads is None:
                for rule in list(self._rules):
                    emits = rule.decide(frame)
                    if emits is not None:
                        payloads = [e.payload for e in emits if not e.delay_ms]
                        delayed = [(e.delay_ms, e.payload) for e in emits if e.delay_ms]
                        break
        except Exception as exc:  # noqa: BLE001 - reported at check()
            self._internal_errors.append(f"{direction} frame on conn{connection}: {exc!r}")
            payloads, delayed = None, []
        for payload in (raw,) if payloads is None else payloads:
            try:
                send(payload)
            except Exception:  # noqa: BLE001 - the socket closed meanwhile; the frame is journaled
                return
        for delay_ms, payload in delayed:
            # Later, on Playwright's own loop: its callbacks may only use the
            # non-blocking implementation objects, not the sync API wrappers.
            impl = getattr(target, "_impl_obj", None)
            loop = getattr(getattr(route, "_impl_obj", None), "_loop", None)
            if impl is None or loop is None:
                send(payload)
                continue
            loop.call_later(delay_ms / 1000, _quiet_send, impl.send, payload)

    # ------------------------------------------------------------ message rules

    def add_rule(self, rule: Any) -> Callable[[], None]:
        """Apply a message rule (``rule.decide(frame) -> [Emit] | None``) to later frames.

        Returns the function that removes it.  A rule with ``release_held()``
        (a :class:`~harness.faults.messages.Stall`) has its held frames
        forwarded, in order, each on the connection it came from; frames of a
        connection that has closed meanwhile are discarded, never sent on
        another socket (a closed connection's pending frames are lost, as on a
        real network).  A send that fails because its socket is closing
        discards that frame too; the function never raises for it.  The rule's
        ``note_release(released, discarded)``, when it has one, gets the counts.
        """
        with self._lock:
            self._rules.append(rule)

        def remove() -> None:
            with self._lock:
                if rule in self._rules:
                    self._rules.remove(rule)
            release_held = getattr(rule, "release_held", None)
            if release_held is not None:
                direction: Direction = getattr(rule, "_direction", "received")
                released, discarded = self._release(release_held(), direction)
                note = getattr(rule, "note_release", None)
                if note is not None and (released or discarded):
                    note(released, discarded)

        return remove

    def _release(
        self, held: Iterable[tuple[int, str | bytes]], direction: Direction
    ) -> tuple[int, int]:
        """Send each ``(connection, payload)`` on its own connection, in order.

        Returns how many were sent and how many were discarded (their
        connection closed, unknown, or its send failed).
        """
        with self._lock:
            routes = dict(self._routes)
            closed = set(self._closed)
        released = discarded = 0
        for connection, payload in held:
            ends = routes.get(connection)
            if ends is None or connection in closed:
                discarded += 1
                continue
            route, server = ends
            try:
                (route if direction == "received" else server).send(payload)
            except Exception:  # noqa: BLE001 - the socket closed during the release
                closed.add(connection)
                self._mark_closed(connection)
                discarded += 1
                continue
            released += 1
        return released, discarded

    def inject(self, payload: str | bytes, *, direction: Direction = "received") -> Frame:
        """Send ``payload`` on the latest socket as if the other side had sent it, and journal it."""
        connection, url, route, server = self._latest_route()
        frame = self.record(connection, url, direction, payload)
        (route if direction == "received" else server).send(payload)
        return frame

    def _latest_route(self) -> tuple[int, str, Any, Any]:
        """The newest connection: its index, URL, page-side route and server-side route."""
        with self._lock:
            if not self._routes:
                raise ConfigurationError(
                    "the page has no WebSocket yet: load the page (ws_helper.initialize) before "
                    "message faults"
                )
            connection = max(self._routes)
            route, server = self._routes[connection]
            return connection, self._connections[connection], route, server

    def record(self, connection: int, url: str, direction: Direction, raw: str | bytes) -> Frame:
        """Add a frame to the journal (validated when ``validate``); return it."""
        message: dict[str, Any] | None = None
        violation: str | None = None
        if isinstance(raw, str):
            try:
                parsed = json.loads(raw)
                message = parsed if isinstance(parsed, dict) else None
            except json.JSONDecodeError:
                message = None
        if self.validate:
            try:
                if self._validator is not None:
                    self._validator(raw)
                else:
                    validate_directed(raw, direction)
            except ValueError as exc:
                violation = str(exc)
            except Exception as exc:  # noqa: BLE001 - a validator bug is a violation, never a lost frame
                violation = f"the validator failed: {exc!r}"
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
            )
            self._frames.append(frame)
            self._arrived.notify_all()
        return frame

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

    def messages(
        self, direction: str | None = None, type: str | None = None
    ) -> list[dict[str, Any]]:
        wanted = normalize_direction(direction) if direction else None
        return [
            f.message
            for f in self.frames
            if f.message is not None
            and (wanted is None or f.direction == wanted)
            and (type is None or f.type == type)
        ]

    def find(
        self,
        type: str | None = None,
        *,
        direction: str = "received",
        match: Match | None = None,
        unconsumed: bool = False,
    ) -> list[Frame]:
        """Frames matching, in order (all of them, or only not yet consumed by ``expect``)."""
        wanted = normalize_direction(direction)
        with self._lock:
            return [
                f
                for f in self._frames
                if f.direction == wanted
                and f.message is not None
                and not (unconsumed and f.index in self._consumed)
                and frame_matches(f.message, type=type, match=match)
            ]

    def expect(
        self,
        type: str | None = None,
        *,
        direction: str = "received",
        match: Match | None = None,
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
                hits = self.find(type, direction=direction, match=match, unconsumed=True)
                if hits:
                    self._consumed.add(hits[0].index)
                    return hits[0]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                what = f"a {direction} frame" + (f" of type {type!r}" if type else "")
                if match is not None:
                    what += f" matching {match!r}"
                raise WaitTimeoutError(
                    f"expected {what} within {timeout:.1f} s; frames journaled ({len(self.frames)}):\n"
                    f"{self.describe()}\nIf the frame is late, raise timeout=; if it never comes, "
                    "check the server log and the page's status history."
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
        within: float = 0.5,
    ) -> None:
        """Assert that no not-yet-expected matching frame is or gets journaled within ``within`` s."""
        normalize_direction(direction)
        deadline = time.monotonic() + within
        while True:
            hits = self.find(type, direction=direction, match=match, unconsumed=True)
            if hits:
                raise AssertionError(
                    f"expected no {direction} frame{f' of type {type!r}' if type else ''} within {within} s, "
                    f"got #{hits[0].index} conn{hits[0].connection}: {_shown(hits[0].raw)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wait(min(remaining, 0.05))

    def _wait(self, seconds: float) -> None:
        # With Playwright, frames arrive only while its event loop runs: the pump runs it.
        # Without a pump, frames come from other threads and wake this wait.
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

    # ------------------------------------------------------------ checks and artifacts

    def check(self, *, violations: bool = True) -> None:
        """Raise AssertionError if forwarding failed or (``violations``) a frame broke the protocol."""
        if self._internal_errors:
            raise AssertionError(
                "the frame journal failed while forwarding (the frames were forwarded unchanged):\n  "
                + "\n  ".join(self._internal_errors[:10])
            )
        bad = self.violations() if violations else []
        if not bad:
            return
        lines = [f"{len(bad)} frame(s) violated the protocol:"]
        for v in bad[:10]:
            raw = (
                v.frame.raw
                if isinstance(v.frame.raw, str)
                else f"<binary {len(v.frame.raw)} bytes>"
            )
            lines.append(
                f"  #{v.frame.index} conn{v.frame.connection} {v.frame.direction}: {raw[:300]}"
            )
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

    def clear_interceptors(self) -> None:
        self.interceptors.clear()

    def describe_messages(self, messages: Iterable[dict[str, Any]]) -> str:
        return describe_frames(list(messages))


def _shown(raw: str | bytes, limit: int = 500) -> str:
    """A frame for a message: text cut at ``limit`` characters, binary as its size."""
    if isinstance(raw, bytes):
        return f"<binary {len(raw)} bytes>"
    return raw if len(raw) <= limit else raw[:limit] + f"... ({len(raw)} characters)"


def _quiet_send(send: Callable[[Any], None], payload: str | bytes) -> None:
    try:
        send(payload)
    except Exception:  # noqa: BLE001, S110 - the socket closed while the frame was delayed
        pass
