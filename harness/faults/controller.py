"""Server-depth fault decisions, keyed by client id.  Pure: no I/O, no asyncio, no clock.

The harness owns these decisions; thin shims apply them to real connections:
:class:`harness.asgi.FaultMiddleware` around any in-process ASGI app (the
``--ws-app`` apps, or a project's own test deployment) and the WebSocket-aware
fault proxy for apps in any language.  :class:`FaultController` holds the
rules a test sets (through a shim's ``/__harness`` control API, which
:class:`harness.FaultControl` speaks, or in process) and answers the questions
the shim asks about each handshake and frame; the shim only applies the
answers.  Time, where it matters, is passed in by the caller (seconds from
``time.monotonic()``).

Rules are keyed by a client id, or by :data:`ANY_CLIENT` (``"*"``) for every
client.  A client's own rule wins over the ``"*"`` rule of the same kind.
Setting a rule of a kind again for the same key replaces it.

=================  ==========================================  ===========================
rule               effect                                      decision method
=================  ==========================================  ===========================
reject             the next ``count`` handshakes (all when     :meth:`~FaultController.on_handshake`,
                   ``count`` is None) get an HTTP ``status``   :meth:`~FaultController.after_hold`
hold               handshakes wait (the browser stays          :meth:`~FaultController.on_handshake`,
                   CONNECTING) until released, cleared or      :meth:`~FaultController.hold_over`
                   ``timeout_ms`` after they arrived
delay              server-to-client frames (of ``types``, or   :meth:`~FaultController.outbound`
                   all) are sent ``ms`` later, in order
drop               server-to-client frames of ``types`` (or    :meth:`~FaultController.outbound`
                   all) are discarded; ``count`` of them, or
                   all when None
=================  ==========================================  ===========================

Commands that act on a live socket once (close with a code, abort the TCP
connection, push a frame) are not rules: the shim applies them to the
connection directly.  :func:`close_code_problem` validates their close codes.

Reject is checked before hold, so a client with both is rejected while the
reject rule lasts; a held handshake that may proceed is asked again
(:meth:`~FaultController.after_hold`), so a reject rule set while it waited
rejects it too.  Held handshakes are tracked by ticket, so a test can see
how many handshakes are waiting (:meth:`~FaultController.held`) before it
releases them.  Listeners (:meth:`~FaultController.add_listener`) are called
synchronously after every change, which lets a shim wake held handshakes
without polling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "ANY_CLIENT",
    "RULE_KINDS",
    "Accept",
    "DelayRule",
    "DropRule",
    "FaultController",
    "HandshakeDecision",
    "Hold",
    "HoldRule",
    "OutboundDecision",
    "Reject",
    "RejectRule",
    "close_code_problem",
]

#: The kinds of rule a key can have, one of each: the names :meth:`FaultController.remove_rule` takes.
RULE_KINDS = ("reject", "hold", "delay", "drop")

#: The key of rules that apply to every client.
ANY_CLIENT = "*"


# ----------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Accept:
    """Let the handshake proceed."""


@dataclass(frozen=True)
class Reject:
    """Answer the handshake with HTTP ``status`` (and ``body`` as plain text)."""

    status: int
    body: str = ""


@dataclass(frozen=True)
class Hold:
    """Keep the handshake waiting; ask :meth:`FaultController.hold_over` when woken.

    Once it is over, :meth:`FaultController.after_hold` decides whether the
    handshake is accepted or rejected after all.
    ``deadline`` (same clock as ``now``) is when it proceeds on its own; None = never.
    """

    ticket: int
    deadline: float | None


HandshakeDecision = Accept | Reject | Hold


class OutboundDecision(NamedTuple):
    """Whether to send a server-to-client frame, and after how many milliseconds."""

    deliver: bool
    delay_ms: int


_DELIVER_NOW = OutboundDecision(True, 0)


# ----------------------------------------------------------------- rules


@dataclass
class RejectRule:
    status: int
    remaining: int | None
    body: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "remaining": self.remaining, "body": self.body}


@dataclass
class HoldRule:
    timeout_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"timeout_ms": self.timeout_ms}


@dataclass
class DelayRule:
    ms: int
    types: frozenset[str] | None = None

    def matches(self, message_type: str) -> bool:
        return self.types is None or message_type in self.types

    def to_dict(self) -> dict[str, Any]:
        return {"ms": self.ms, "types": sorted(self.types) if self.types is not None else None}


@dataclass
class DropRule:
    types: frozenset[str] | None
    remaining: int | None
    dropped: int = 0

    def matches(self, message_type: str) -> bool:
        return self.types is None or message_type in self.types

    def to_dict(self) -> dict[str, Any]:
        return {
            "types": sorted(self.types) if self.types is not None else None,
            "remaining": self.remaining,
            "dropped": self.dropped,
        }


@dataclass
class _Rules:
    reject: RejectRule | None = None
    hold: HoldRule | None = None
    delay: DelayRule | None = None
    drop: DropRule | None = None

    def empty(self) -> bool:
        return (
            self.reject is None and self.hold is None and self.delay is None and self.drop is None
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "reject": self.reject.to_dict() if self.reject else None,
            "hold": self.hold.to_dict() if self.hold else None,
            "delay": self.delay.to_dict() if self.delay else None,
            "drop": self.drop.to_dict() if self.drop else None,
        }


@dataclass
class _Held:
    client_id: str
    deadline: float | None
    released: bool = False


# ----------------------------------------------------------------- validation


def _check_count(count: int | None) -> None:
    if count is not None and count < 1:
        raise ValueError(f"count must be >= 1, or None for 'every time'; got {count!r}")


def _types(types: Iterable[str] | None) -> frozenset[str] | None:
    if types is None:
        return None
    if isinstance(types, str):
        raise TypeError(f"types must be a list of message types, not the string {types!r}")
    result = frozenset(types)
    if not result:
        raise ValueError("types is empty: pass None to match every message type")
    return result


def close_code_problem(code: int) -> str | None:
    """Why ``code`` cannot be sent in a close frame (RFC 6455 section 7.4), or None."""
    if code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014):
        return None
    if 3000 <= code <= 4999:
        return None
    if code in (1005, 1006, 1015):
        return (
            f"close code {code} is reserved and never sent on the wire; "
            "to make the client see 1006, abort the connection instead"
        )
    return (
        f"close code {code} cannot be sent: use 1000-1003, 1007-1014 or an application "
        "code in 3000-4999 (e.g. 4001 auth failed, 4003 replaced)"
    )


# ----------------------------------------------------------------- controller


@dataclass
class FaultController:
    """The server-side fault rules of one server.  Construct with no arguments."""

    _rules: dict[str, _Rules] = field(default_factory=dict, init=False, repr=False)
    _held: dict[int, _Held] = field(default_factory=dict, init=False, repr=False)
    _next_ticket: int = field(default=1, init=False, repr=False)
    _listeners: list[Callable[[], None]] = field(default_factory=list, init=False, repr=False)

    # ------------------------------------------------------------ listeners

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after every change of rules or holds; return its remover."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _rules_of(self, key: str) -> _Rules:
        return self._rules.setdefault(key, _Rules())

    def _prune(self, key: str) -> None:
        rules = self._rules.get(key)
        if rules is not None and rules.empty():
            del self._rules[key]

    # ------------------------------------------------------------ setting rules

    def reject_handshakes(
        self, client_id: str, status: int, count: int | None = None, body: str = ""
    ) -> None:
        """Answer the next ``count`` handshakes (None = all) of ``client_id`` with ``status``."""
        if not 400 <= status <= 599:
            raise ValueError(
                f"status must be an HTTP error status in 400-599 (e.g. 403, 503), got {status!r}"
            )
        _check_count(count)
        self._rules_of(client_id).reject = RejectRule(status, count, body)
        self._changed()

    def hold_handshakes(self, client_id: str, timeout_ms: int | None = None) -> None:
        """Hold handshakes of ``client_id`` until released (or ``timeout_ms`` after each arrives)."""
        if timeout_ms is not None and timeout_ms < 0:
            raise ValueError(
                f"timeout_ms must be >= 0 or None (hold until released), got {timeout_ms!r}"
            )
        self._rules_of(client_id).hold = HoldRule(timeout_ms)
        self._changed()

    def release_handshakes(self, client_id: str) -> int:
        """Stop holding ``client_id`` (``"*"``: everyone); return how many waiting handshakes go on.

        Removes the hold rule keyed by ``client_id`` and releases the handshakes
        of that client that are waiting, even those held by the ``"*"`` rule;
        later handshakes are still held by a remaining ``"*"`` rule.
        """
        rules = self._rules.get(client_id)
        if rules is not None:
            rules.hold = None
            self._prune(client_id)
        released = 0
        for held in self._held.values():
            if not held.released and (client_id == ANY_CLIENT or held.client_id == client_id):
                held.released = True
                released += 1
        self._changed()
        return released

    def delay_replies(self, client_id: str, ms: int, types: Iterable[str] | None = None) -> None:
        """Send server-to-client frames (of ``types``, None = all) ``ms`` later; 0 removes the rule."""
        if ms < 0:
            raise ValueError(f"ms must be >= 0, got {ms!r}")
        rules = self._rules_of(client_id)
        rules.delay = DelayRule(ms, _types(types)) if ms > 0 else None
        self._prune(client_id)
        self._changed()

    def drop_messages(
        self, client_id: str, types: Iterable[str] | None = None, count: int | None = None
    ) -> None:
        """Discard the next ``count`` (None = all) server-to-client frames of ``types`` (None = all)."""
        _check_count(count)
        self._rules_of(client_id).drop = DropRule(_types(types), count)
        self._changed()

    def remove_rule(self, client_id: str, kind: str) -> bool:
        """Remove the ``kind`` rule (see :data:`RULE_KINDS`) keyed by ``client_id``; the others stay.

        Returns whether there was one.  Removing ``hold`` releases the held
        handshakes as :meth:`release_handshakes` does; removing another kind
        leaves held handshakes waiting.
        """
        if kind not in RULE_KINDS:
            raise ValueError(f"unknown rule kind {kind!r}; use one of {', '.join(RULE_KINDS)}")
        rules = self._rules.get(client_id)
        existed = rules is not None and getattr(rules, kind) is not None
        if kind == "hold":
            self.release_handshakes(client_id)
            return existed
        if rules is not None:
            setattr(rules, kind, None)
            self._prune(client_id)
        self._changed()
        return existed

    def clear(self, client_id: str | None = None) -> None:
        """Remove the rules of ``client_id`` (None: every rule) and release its held handshakes.

        ``clear("*")`` removes the ``"*"`` rules only; ``clear()`` removes everything.
        """
        if client_id is None:
            self._rules.clear()
            for held in self._held.values():
                held.released = True
        else:
            self._rules.pop(client_id, None)
            for held in self._held.values():
                if client_id == ANY_CLIENT or held.client_id == client_id:
                    held.released = True
        self._changed()

    # ------------------------------------------------------------ decisions

    def on_handshake(self, client_id: str, now: float) -> HandshakeDecision:
        """Decide a new handshake of ``client_id`` arriving at ``now``.

        A returned :class:`Hold` must be finished with :meth:`end_hold` once the
        handshake proceeds or the client goes away.
        """
        reject = self._take_reject(client_id)
        if reject is not None:
            return reject
        for key in (client_id, ANY_CLIENT):
            rules = self._rules.get(key)
            if rules is not None and rules.hold is not None:
                timeout = rules.hold.timeout_ms
                deadline = None if timeout is None else now + timeout / 1000
                ticket = self._next_ticket
                self._next_ticket += 1
                self._held[ticket] = _Held(client_id, deadline)
                return Hold(ticket, deadline)
        return Accept()

    def after_hold(self, client_id: str) -> Accept | Reject:
        """Decide a held handshake of ``client_id`` that may now proceed.

        Reject is checked before hold for held handshakes too: a reject rule
        set while the handshake waited rejects it (and counts it) when it
        is released, cleared or timed out.
        """
        reject = self._take_reject(client_id)
        return Accept() if reject is None else reject

    def _take_reject(self, client_id: str) -> Reject | None:
        for key in (client_id, ANY_CLIENT):
            rules = self._rules.get(key)
            if rules is not None and rules.reject is not None:
                reject = rules.reject
                if reject.remaining is not None:
                    reject.remaining -= 1
                    if reject.remaining <= 0:
                        rules.reject = None
                        self._prune(key)
                return Reject(reject.status, reject.body)
        return None

    def hold_over(self, ticket: int, now: float) -> bool:
        """Whether held handshake ``ticket`` may proceed now (released, cleared or timed out)."""
        held = self._held.get(ticket)
        if held is None or held.released:
            return True
        return held.deadline is not None and now >= held.deadline

    def end_hold(self, ticket: int) -> None:
        """Forget a held handshake (it proceeded, or its client went away)."""
        self._held.pop(ticket, None)

    @property
    def active(self) -> bool:
        """Whether any rule is set (for any client): False means every frame goes out as is."""
        return bool(self._rules)

    def outbound(self, client_id: str, message_type: str) -> OutboundDecision:
        """Decide a server-to-client frame of ``message_type`` for ``client_id``.

        Counts down a matching drop rule, so ask exactly once per frame.
        """
        if not self._rules:
            return _DELIVER_NOW
        for key in (client_id, ANY_CLIENT):
            rules = self._rules.get(key)
            if rules is None or rules.drop is None:
                continue
            drop = rules.drop
            if not drop.matches(message_type):
                break  # the client's own drop rule replaces the "*" one
            drop.dropped += 1
            if drop.remaining is not None:
                drop.remaining -= 1
                if drop.remaining <= 0:
                    rules.drop = None
                    self._prune(key)
            return OutboundDecision(False, 0)
        for key in (client_id, ANY_CLIENT):
            rules = self._rules.get(key)
            if rules is not None and rules.delay is not None:
                if rules.delay.matches(message_type):
                    return OutboundDecision(True, rules.delay.ms)
                break  # the client's own delay rule replaces the "*" one
        return _DELIVER_NOW

    # ------------------------------------------------------------ introspection

    def held(self, client_id: str | None = None) -> int:
        """How many handshakes (of ``client_id``, or of anyone) are waiting now."""
        return sum(
            1
            for h in self._held.values()
            if not h.released and (client_id is None or h.client_id == client_id)
        )

    def rules_for(self, client_id: str) -> dict[str, Any]:
        """The rules keyed by ``client_id`` (not the ``"*"`` ones), as JSON-ready data."""
        rules = self._rules.get(client_id)
        return (rules or _Rules()).to_dict()

    def snapshot(self) -> dict[str, Any]:
        """Every rule and the waiting handshakes, as JSON-ready data."""
        held: dict[str, int] = {}
        for h in self._held.values():
            if not h.released:
                held[h.client_id] = held.get(h.client_id, 0) + 1
        return {
            "rules": {key: rules.to_dict() for key, rules in sorted(self._rules.items())},
            "held_handshakes": dict(sorted(held.items())),
        }
