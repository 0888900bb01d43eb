"""The Playwright route shim of the frame journal: the one module touching Playwright's internals.

Playwright reports no frames for routed sockets, so the journal *is* the
route: :meth:`FrameJournal.attach` installs a pass-through
``route_web_socket`` that connects each page socket to the real server,
records every frame in the :class:`~harness.frames.FrameLog` it extends, and
forwards it.  Closes are forwarded by Playwright's default forwarding, which
keeps their codes and cleanliness exactly as the server sent them; the
journal only notes which connections have closed, so frames a stall held are
released on their own connection, or discarded once it has closed (never
sent on another socket).

Interceptors (message-depth faults) see each frame before it is forwarded and
decide what to forward instead: nothing (drop), the frame twice (duplicate),
or a rewritten frame.

Playwright runs the route's callbacks on the test thread, only while that
thread is inside a Playwright call: the journal's waits pump (``pump``), and a
frame is never lost to an exception in the journal, a validator or an
interceptor: it is forwarded unchanged and :meth:`FrameJournal.check` fails.

Playwright internals used, probed by :func:`check_playwright_internals` the
first time a journal attaches (a Playwright that changed them fails with
its version and the fix, never degrades silently): a route's ``_impl_obj``
with its ``_channel`` (to hear ``closePage``/``closeServer`` next to
Playwright's own listener) and ``_loop`` (to send delayed frames later).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ..errors import ConfigurationError, HarnessError
from ..frames.log import Direction, Frame, FrameLog, FrameValidator

__all__ = ["FrameJournal", "Interceptor", "check_playwright_internals"]


class Interceptor(Protocol):
    """Decides what to forward for a frame: return the payloads to send (``[]`` drops it)."""

    def __call__(self, frame: Frame) -> Sequence[str | bytes] | None:
        """``None`` means "not mine": forward unchanged (or let the next interceptor decide)."""


_PROBED: list[bool] = []


def check_playwright_internals(route: Any) -> None:
    """Fail loudly if a Playwright ``WebSocketRoute`` lacks the internals the journal relies on."""
    if _PROBED:
        return
    impl = getattr(route, "_impl_obj", None)
    if impl is None:
        return  # a test double: the public API path is used
    missing = [
        name
        for name, ok in (
            ("_impl_obj._channel.on", callable(getattr(getattr(impl, "_channel", None), "on", None))),
            ("_impl_obj._loop", getattr(impl, "_loop", None) is not None),
        )
        if not ok
    ]
    if missing:
        try:
            from playwright._repo_version import version
        except ImportError:  # pragma: no cover
            version = "unknown"
        raise HarnessError(
            f"Playwright {version} changed internals the frame journal needs ({', '.join(missing)} "
            "of a WebSocketRoute): closes and delayed frames would be handled wrongly. Install a "
            "Playwright this harness supports (pip install 'playwright>=1.49,<=1.65.*'), or report it."
        )
    _PROBED.append(True)


class FrameJournal(FrameLog):
    """Records, validates and forwards every WebSocket frame of a page (see the module docstring)."""

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
        super().__init__(
            validate=validate,
            validator=validator,
            pump=pump,
            default_timeout=default_timeout,
            type_key=type_key,
            match_in=match_in,
        )
        self.interceptors: list[Interceptor] = []
        self._rules: list[Any] = []
        # Connection index -> (page-side route, server-side route); filled under the lock.
        self._routes: dict[int, tuple[Any, Any]] = {}
        # Connections either end of which has closed (never reopened: a reconnect is a new index).
        self._closed: set[int] = set()

    # ------------------------------------------------------------ capture

    def attach(self, target: Any, url: str | Any = "**") -> None:
        """Route every WebSocket of ``target`` (a Page or BrowserContext) matching ``url``."""
        target.route_web_socket(url, self._on_socket)

    def _on_socket(self, route: Any) -> None:
        check_playwright_internals(route)
        with self._lock:
            connection = self.open_connection(route.url)
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
            self.note_internal_error(f"forwarding the close of conn{connection}: {exc!r}")

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
            self.note_internal_error(f"{direction} frame on conn{connection}: {exc!r}")
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

    def clear_interceptors(self) -> None:
        self.interceptors.clear()


def _quiet_send(send: Callable[[Any], None], payload: str | bytes) -> None:
    try:
        send(payload)
    except Exception:  # noqa: BLE001, S110 - the socket closed while the frame was delayed
        pass

