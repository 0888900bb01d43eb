"""One fault API over every depth: ``ws_helper.faults`` (also the ``ws_faults`` fixture).

Each call starts a fault on the test's own page (its client id, its
socket) and returns a :class:`FaultHandle`, which is also a context manager
that undoes the fault on exit; whatever is still active is cleared at
teardown.  The depth of each fault is part of its contract:

=========  =================================================  ==============================
depth      faults                                             mechanism
=========  =================================================  ==============================
server     close, abort, reject_handshakes, hold_handshakes    the server's /__harness control
message    drop, delay, duplicate, inject, stall               the frame journal's route
network    latency, bandwidth, blackhole, reset, slice,        the fault proxy in front of the
           limit_data, refuse_connections, profile             server (the page loads through it)
=========  =================================================  ==============================

Realism: server faults are what a real server does (genuine close codes,
rejected or held handshakes, a dropped TCP connection); message faults keep
the socket open and its closes clean (Playwright's route cannot reject a
handshake or close uncleanly); network faults act on bytes, so the browser
sees what a bad network does (late frames, a half-open socket, a reset).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import urlsplit

from ..control import FaultControlError
from ..errors import ConfigurationError, HarnessError
from ..journal import normalize_direction
from ..profiles import PROFILES
from ..proxy import Bandwidth, Blackhole, Latency, LimitData, Slicer, Target
from .messages import Delay, Drop, Duplicate, MessageRule, Stall
from .ports import clear_rules_except

if TYPE_CHECKING:
    from ..browser.route import FrameJournal
    from ..helper import WebSocketTestHelper
    from ..proxy import FaultProxy
    from .ports import ServerFaultPort

__all__ = ["Depth", "FaultHandle", "Faults"]

Depth = Literal["server", "message", "network"]

_NETWORK_DIRECTIONS = {
    "both": "both",
    "to_client": "downstream",
    "downstream": "downstream",
    "received": "downstream",
    "to_server": "upstream",
    "upstream": "upstream",
    "sent": "upstream",
}


#: What a test can do instead of a network fault when the proxy is off.
_WITHOUT_PROXY = {
    "latency": "At the message depth, faults.delay(ms) delays frames (not bytes).",
    "bandwidth": "No other depth limits the rate.",
    "blackhole": (
        "At the message depth, faults.stall() silences one direction (call it for both); "
        "at the server depth, faults.hold_handshakes() stalls new connections."
    ),
    "slice": "No other depth splits frames.",
    "limit_data": "At the server depth, faults.abort() ends the connection (1006), between frames.",
    "reset": "At the server depth, faults.abort() also ends the connection with 1006.",
    "refuse_connections": "At the server depth, faults.reject_handshakes() fails new connections.",
    "profile": "At the message depth, faults.delay(ms) delays frames (not bytes).",
}


@dataclass(eq=False)  # handles compare by identity: two equal latencies are two faults
class FaultHandle:
    """An active fault: ``undo()`` ends it (idempotent); ``with`` undoes it on exit.

    ``active`` is False once undone, and from the start for one-off faults
    (``close``, ``abort``, ``reset``, ``inject``), which have nothing to undo.
    ``applied`` counts the frames a message-depth rule has acted on so far
    (None at the other depths).  ``where`` says which shim applies it:
    ``server`` (the app's process: the reference server or FaultMiddleware),
    ``proxy`` (the fault proxy, also for server-depth faults on an app it
    fronts) or ``route`` (the journal's Playwright route).
    """

    name: str
    depth: Depth
    description: str
    _undo: Callable[[], None] | None = field(default=None, repr=False)
    _owner: Faults | None = field(default=None, repr=False)
    active: bool = True
    _applied: Callable[[], int] | None = field(default=None, repr=False)
    _describe: Callable[[], str] | None = field(default=None, repr=False)
    where: str = ""

    @property
    def applied(self) -> int | None:
        """How many frames a message-depth rule has dropped, delayed, duplicated or held."""
        return None if self._applied is None else self._applied()

    def undo(self) -> None:
        if not self.active:
            return
        self.active = False
        try:
            if self._undo is not None:
                self._undo()
        finally:
            if self._owner is not None:
                self._owner._forget(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo()

    def __str__(self) -> str:
        # A message rule describes itself live ("drop pong frame to_client, 1/2 applied").
        return f"{self.depth}: {self._describe() if self._describe else self.description}"


class Faults:
    """Faults for one page (see the module docstring), given only what they act through.

    ``client_id`` keys server-depth and network faults; ``journal`` applies
    message-depth rules; ``server_faults`` is the server-depth shim
    (:class:`~harness.faults.ports.ServerFaultPort`) and ``proxy`` the fault
    proxy, each None when there is none.  ``Faults.of(helper)`` takes them from
    a :class:`~harness.WebSocketTestHelper`.
    """

    def __init__(
        self,
        client_id: str,
        journal: FrameJournal,
        *,
        server_faults: ServerFaultPort | None = None,
        proxy: FaultProxy | None = None,
    ) -> None:
        self._client_id = client_id
        self._journal = journal
        self._port = server_faults
        self._proxy_ref = proxy
        self._active: list[FaultHandle] = []
        # The handle that owns the server's reject (or hold) rule for this client: the
        # server keeps one of each, so a newer call replaces the older handle's rule.
        self._server_rules: dict[str, FaultHandle] = {}

    @classmethod
    def of(cls, helper: WebSocketTestHelper) -> Faults:
        """The faults of ``helper``'s page, through its server's shim and proxy."""
        return cls(
            helper.client_id, helper.journal, server_faults=helper.server.faults, proxy=helper.server.proxy
        )

    # ------------------------------------------------------------ bookkeeping

    @property
    def active(self) -> list[FaultHandle]:
        """The faults still on, oldest first."""
        return list(self._active)

    def clear(self) -> None:
        """Undo every active fault (the fixture calls this at teardown)."""
        errors: list[BaseException] = []
        for handle in reversed(list(self._active)):
            try:
                handle.undo()
            except Exception as exc:  # noqa: BLE001 - undo the rest, then report
                errors.append(exc)
        if errors:
            raise errors[0]

    def _start(
        self, name: str, depth: Depth, description: str, undo: Callable[[], None] | None, *, lasting: bool = True
    ) -> FaultHandle:
        where = {"message": "route", "network": "proxy"}.get(depth) or str(getattr(self._port, "where", "server"))
        handle = FaultHandle(name, depth, description, undo, self, active=lasting, where=where)
        if lasting:
            self._active.append(handle)
        return handle

    def _forget(self, handle: FaultHandle) -> None:
        if handle in self._active:
            self._active.remove(handle)

    # ------------------------------------------------------------ server depth

    def _control(self, what: str, instead: str) -> Any:
        control = self._port
        if control is None:
            raise ConfigurationError(
                f"faults.{what}() is a server-depth fault: it needs the /__harness fault control API "
                f"of the reference server (or an app run with --ws-harness-token), which this app lacks. "
                f"{instead}"
            )
        return control

    def close(self, code: int = 1011, reason: str = "") -> FaultHandle:
        """The server closes the page's live socket with ``code`` (a genuine close frame)."""
        control = self._control(
            "close",
            "No other depth sends a chosen close code (a Playwright route's closes are always "
            "clean); for a connection lost without a close frame (1006) use faults.reset() at "
            "the network depth.",
        )
        control.close_socket(self._client_id, code=code, reason=reason)
        return self._start("close", "server", f"closed the socket with {code} {reason!r}", None, lasting=False)

    def abort(self) -> FaultHandle:
        """The server drops the TCP connection without a close frame: the page sees 1006."""
        control = self._control("abort", "At the network depth, faults.reset() also ends with 1006.")
        control.abort(self._client_id)
        return self._start("abort", "server", "dropped the TCP connection (1006)", None, lasting=False)

    def reject_handshakes(self, status: int = 503, count: int | None = None) -> FaultHandle:
        """The server answers the next ``count`` handshakes (all when None) with HTTP ``status``.

        The browser sees the socket close with 1006 before it opens.  Undoing
        it removes what is left of the rule (nothing once ``count`` is used up)
        and leaves the test's other server rules, and handshakes that
        ``hold_handshakes`` holds, as they are.  A handshake held while this
        rule is set is rejected (and counted) when the hold ends.
        """
        control = self._control(
            "reject_handshakes", "At the network depth, faults.refuse_connections() refuses them."
        )
        control.reject_handshakes(self._client_id, status=status, count=count)
        what = "every handshake" if count is None else f"the next {count} handshake(s)"
        handle = self._start("reject_handshakes", "server", f"rejecting {what} with HTTP {status}", None)
        handle._undo = lambda: self._end_server_rule("reject", handle)
        self._own_server_rule("reject", handle)
        return handle

    def hold_handshakes(self) -> FaultHandle:
        """The server holds handshakes open, so the page stays CONNECTING, until undone.

        Undoing it lets the held handshakes proceed: the server accepts them,
        unless a ``reject_handshakes`` rule is active, which rejects them.
        """
        control = self._control("hold_handshakes", "At the network depth, faults.blackhole() stalls them too.")
        control.hold_handshakes(self._client_id)
        handle = self._start("hold_handshakes", "server", "holding handshakes open", None)
        handle._undo = lambda: self._end_server_rule("hold", handle)
        self._own_server_rule("hold", handle)
        return handle

    def _own_server_rule(self, kind: str, handle: FaultHandle) -> None:
        # The server keeps one rule of each kind per client: the new call replaced the old one.
        replaced = self._server_rules.get(kind)
        self._server_rules[kind] = handle
        if replaced is not None and replaced.active:
            replaced.active = False
            self._forget(replaced)

    def _end_server_rule(self, kind: str, handle: FaultHandle) -> None:
        if self._server_rules.get(kind) is not handle:
            return  # replaced by a newer call, whose handle owns the rule now
        del self._server_rules[kind]
        control = self._port
        if control is None:
            return
        cid = self._client_id
        if kind == "hold":
            control.release_handshakes(cid)  # removes the hold rule only, lets held ones proceed
            return
        try:
            control.remove_rule(cid, kind)  # the other rules and the held handshakes stay
            return
        except FaultControlError as exc:
            if exc.status not in (404, 405):
                raise
        # A server without per-rule removal clears a client's rules all at once: clear them,
        # then put back the others as they stand now (a drop's remaining count, not its
        # original one).  Held handshakes go on meanwhile.
        rules = (control.client_info(cid) or {}).get("rules") or {}
        if not rules.get("reject"):
            return  # used up already
        clear_rules_except(control, cid, rules, keep=("hold", "delay", "drop"))

    # ------------------------------------------------------------ message depth

    @staticmethod
    def _one_way(name: str, direction: str) -> str:
        if direction == "both":
            raise ConfigurationError(
                f"faults.{name}() at the message depth acts on one direction: call it twice, with "
                "direction='to_client' and direction='to_server' (network faults take 'both')"
            )
        return direction

    def _rule(self, name: str, rule: MessageRule) -> FaultHandle:
        journal = self._journal
        remove = journal.add_rule(rule)
        handle = self._start(name, "message", rule.describe(), remove)
        handle._applied = lambda: rule.applied
        handle._describe = rule.describe
        return handle

    def drop(self, type: str | None = None, *, direction: str = "to_client", count: int | None = None) -> FaultHandle:
        """Drop frames of ``type`` (every type when None) going ``direction``, ``count`` of them."""
        return self._rule("drop", Drop(type=type, direction=self._one_way("drop", direction), count=count))

    def delay(self, ms: float, *, type: str | None = None, direction: str = "to_client") -> FaultHandle:
        """Forward frames of ``type`` going ``direction`` ``ms`` later (real time)."""
        return self._rule("delay", Delay(type=type, direction=self._one_way("delay", direction), ms=ms))

    def duplicate(self, type: str | None = None, *, direction: str = "to_client", count: int = 1) -> FaultHandle:
        """Forward ``count`` frames of ``type`` going ``direction`` twice."""
        return self._rule(
            "duplicate", Duplicate(type=type, direction=self._one_way("duplicate", direction), count=count)
        )

    def stall(self, direction: str = "to_client") -> FaultHandle:
        """Stop forwarding one way (the socket stays open); held frames flow again on undo.

        On undo each held frame goes to the socket it came from; frames of a
        socket that has closed meanwhile are discarded, never sent on a newer
        one.  ``str(handle)`` then says how many were released and discarded.
        """
        return self._rule("stall", Stall(direction=self._one_way("stall", direction)))

    def inject(self, message: dict[str, Any] | str, *, direction: str = "to_client") -> FaultHandle:
        """Send ``message`` on the page's live socket as if the other side had sent it."""
        payload = message if isinstance(message, str) else json.dumps(message)
        wanted = normalize_direction(self._one_way("inject", direction))
        if not self._journal.connections:
            raise ConfigurationError(
                "faults.inject() sends on the page's live socket, and the page has opened none yet: "
                "load the page first (ws_helper.initialize(), which the ws_helper fixture calls)"
            )
        self._journal.inject(payload, direction=wanted)
        return self._start("inject", "message", f"injected {payload[:80]} {direction}", None, lasting=False)

    # ------------------------------------------------------------ network depth

    def _proxy(self, what: str) -> Any:
        proxy = self._proxy_ref
        if proxy is None:
            raise ConfigurationError(
                f"faults.{what}() is a network-depth fault: it needs the fault proxy between the page and "
                "the server, which is off (--ws-proxy=false, or an https base URL): turn it on. "
                + _WITHOUT_PROXY.get(what, "")
            )
        self._check_not_bypassed(what, proxy)
        return proxy

    def _check_not_bypassed(self, what: str, proxy: Any) -> None:
        """Fail when the page's newest socket does not go through the proxy: the fault would do nothing."""
        urls = self._journal.connections
        if not urls:
            return
        proxied = urlsplit(proxy.url).netloc
        url = urls[-1]
        if urlsplit(url).netloc != proxied:
            raise ConfigurationError(
                f"faults.{what}() acts on the page's sockets through the fault proxy at {proxied}, but the "
                f"page's socket goes to {url}, bypassing it: the fault would change nothing. Make the page "
                "build its WebSocket URL from location (same host and port as the page, which the harness "
                "loads through the proxy: ws_server.page_url()), or configure it to use that address."
            )

    def _target(self) -> Target:
        if self._proxy_ref is not None and getattr(self._proxy_ref, "ws_path", None):
            return Target(websocket_only=True, client_id=self._client_id)
        return Target(websocket_only=True, path_contains=self._client_id)

    def _toxic(self, name: str, toxic: Any, direction: str, description: str) -> FaultHandle:
        if direction not in _NETWORK_DIRECTIONS:
            raise ConfigurationError(
                f"unknown direction {direction!r} for a network fault; use 'both', 'to_client' "
                "(server to page) or 'to_server' (page to server)"
            )
        proxy = self._proxy(name)
        handle = proxy.add_toxic(toxic, _NETWORK_DIRECTIONS[direction], target=self._target())
        return self._start(name, "network", description, handle.remove)

    def latency(self, ms: float, *, jitter: float = 0, direction: str = "both") -> FaultHandle:
        """Delay the page's WebSocket bytes by ``ms`` (± ``jitter``, seeded) each way."""
        return self._toxic("latency", Latency(ms, jitter=jitter), direction, f"latency {ms} ms ±{jitter} {direction}")

    def bandwidth(self, kbps: float, *, direction: str = "both") -> FaultHandle:
        """Limit the page's WebSocket to ``kbps`` kilobits per second."""
        return self._toxic("bandwidth", Bandwidth(kbps), direction, f"bandwidth {kbps} kbit/s {direction}")

    def blackhole(self) -> FaultHandle:
        """Half-open: nothing passes either way and nothing closes (held bytes flow on undo)."""
        return self._toxic("blackhole", Blackhole(), "both", "blackhole (half-open)")

    def slice(self, average_bytes: int, *, variation: int = 0, delay_ms: float = 0) -> FaultHandle:
        """Split the page's WebSocket bytes into chunks of about ``average_bytes`` (seeded)."""
        toxic = Slicer(average_bytes, variation, int(delay_ms * 1000))
        return self._toxic("slice", toxic, "both", f"slice into ~{average_bytes} B chunks")

    def limit_data(self, nbytes: int, *, direction: str = "to_client") -> FaultHandle:
        """Cut the connection after ``nbytes`` more bytes ``direction``, even mid-frame."""
        if direction == "both":
            raise ConfigurationError("limit_data counts one direction: use 'to_client' or 'to_server'")
        return self._toxic("limit_data", LimitData(nbytes), direction, f"cut after {nbytes} B {direction}")

    def reset(self) -> FaultHandle:
        """TCP RST on the page's live WebSocket connections: the page sees 1006.

        Raises :class:`HarnessError` when the page has no live WebSocket
        through the proxy (not loaded through ``ws_server.page_url``, or
        between two connections), rather than silently doing nothing.
        """
        proxy = self._proxy("reset")
        reset = proxy.reset_connections(self._target())
        if not reset:
            raise HarnessError(
                f"faults.reset(): no live WebSocket of client {self._client_id!r} goes through the "
                "fault proxy, so there was nothing to reset. Load the page through ws_server.page_url() "
                "and wait until it is connected (ws_helper.wait_for_connection_status('connected'))."
            )
        return self._start(
            "reset", "network", f"reset {len(reset)} connection(s) of the page", None, lasting=False
        )

    def refuse_connections(self) -> FaultHandle:
        """New TCP connections to the app are refused (every client of this worker) until undone."""
        proxy = self._proxy("refuse_connections")
        handle = proxy.refuse_connections(True)
        return self._start("refuse_connections", "network", "refusing new connections", handle.remove)

    def profile(self, name: str) -> FaultHandle:
        """A named network condition (see ``harness.profiles.PROFILES``): latency and bandwidth."""
        try:
            p = PROFILES[name]
        except KeyError:
            raise ConfigurationError(
                f"unknown network profile {name!r}; known: {', '.join(sorted(PROFILES))}"
            ) from None
        self._proxy("profile")
        parts: list[FaultHandle] = []
        try:
            parts.append(self.latency(p.latency_ms, jitter=p.jitter_ms))
            parts.append(self.bandwidth(p.down_kbps, direction="to_client"))
            parts.append(self.bandwidth(p.up_kbps, direction="to_server"))
        except BaseException:
            for part in reversed(parts):
                part.undo()
            raise
        for part in parts:
            self._forget(part)

        def undo() -> None:
            for part in reversed(parts):
                part.undo()

        return self._start(
            "profile", "network",
            f"profile {name}: {p.latency_ms} ms ±{p.jitter_ms} each way, {p.down_kbps}/{p.up_kbps} kbit/s",
            undo,
        )
