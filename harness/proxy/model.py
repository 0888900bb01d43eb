"""Values of the fault proxy's API: directions, targets, events, connection snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, TypeAlias

from .errors import ProxyConfigError
from .tracking import DOWNSTREAM, UPSTREAM, Direction

__all__ = [
    "ConnectionInfo",
    "DirectionArg",
    "DirectionStats",
    "EventKind",
    "ProxyEvent",
    "Target",
    "directions",
]

DirectionArg: TypeAlias = Literal["upstream", "downstream", "both", "to_server", "to_client"]
"""``upstream`` = client to server (alias ``to_server``), ``downstream`` = server to client
(alias ``to_client``), ``both``."""

_DIRECTIONS: dict[str, tuple[Direction, ...]] = {
    "upstream": (UPSTREAM,),
    "to_server": (UPSTREAM,),
    "downstream": (DOWNSTREAM,),
    "to_client": (DOWNSTREAM,),
    "both": (UPSTREAM, DOWNSTREAM),
}


def directions(direction: str) -> tuple[Direction, ...]:
    """The directions a ``direction`` argument names; a clear error for anything else."""
    try:
        return _DIRECTIONS[direction]
    except (KeyError, TypeError):
        raise ProxyConfigError(
            f"unknown direction {direction!r}: use 'upstream' (alias 'to_server', client to "
            f"server), 'downstream' (alias 'to_client', server to client) or 'both'"
        ) from None


@dataclass(frozen=True)
class Target:
    """Which connections a toxic (or a reset) applies to; the default matches all.

    ``websocket_only`` keeps only WebSocket upgrade requests; ``path_contains``
    keeps connections whose request path (query string included) contains the
    string -- e.g. a test's own client id, so other pages' sockets are left
    alone; ``client_id`` keeps WebSocket connections of that client, as the
    proxy's ``ws_path`` (path or query placeholder) or the client-id cookie
    names it (see :class:`~harness.proxy.FaultProxy`; never matches on a proxy
    without ``ws_path``); ``connection_id`` keeps one connection.  Conditions
    combine with AND.  A connection is matched once its request head has been
    read (before any of its bytes reach a toxic); a connection that is not
    HTTP has no path and is not a WebSocket.
    """

    websocket_only: bool = False
    path_contains: str | None = None
    connection_id: int | None = None
    client_id: str | None = None

    @property
    def needs_request(self) -> bool:
        """Whether matching needs the request head (path, upgrade or client id)."""
        return self.websocket_only or self.path_contains is not None or self.client_id is not None

    def matches(self, connection_id: int, classified: bool, path: str | None,
                websocket: bool, client_id: str | None = None) -> bool | None:
        """True/False, or ``None`` while the request head is still unknown."""
        if self.connection_id is not None and self.connection_id != connection_id:
            return False
        if not self.needs_request:
            return True
        if not classified:
            return None
        if self.websocket_only and not websocket:
            return False
        if self.client_id is not None and self.client_id != client_id:
            return False
        return not (self.path_contains is not None and (path is None or self.path_contains not in path))

    def describe(self) -> str:
        parts = []
        if self.websocket_only:
            parts.append("websocket")
        if self.path_contains is not None:
            parts.append(f"path~{self.path_contains!r}")
        if self.client_id is not None:
            parts.append(f"client={self.client_id!r}")
        if self.connection_id is not None:
            parts.append(f"#{self.connection_id}")
        return " ".join(parts) or "all"


class EventKind(StrEnum):
    """Kinds of :class:`ProxyEvent` (compare with the enum or its string value)."""

    STARTED = "started"
    """The proxy listens; detail: ``host``, ``port``, ``upstream``."""
    STOPPED = "stopped"
    OPENED = "opened"
    """A client connected; detail: ``peer``."""
    REQUEST = "request"
    """The request head was read; detail: ``method``, ``path``, ``websocket`` (``http: False`` if not
    HTTP), and ``client_id`` on a proxy with ``ws_path``."""
    RESPONSE = "response"
    """The response head was read; detail: ``status``, ``upgraded``."""
    CLOSE_FRAME = "close_frame"
    """A WebSocket close frame went by; detail: ``direction``, ``code``, ``offset``."""
    FRAMING_LOST = "framing_lost"
    UPSTREAM_FAILED = "upstream_failed"
    """The upstream connection could not be made; detail: ``error``; the client is reset."""
    HALF_CLOSED = "half_closed"
    """A side half-closed and the FIN was forwarded; detail: ``direction``."""
    CUT = "cut"
    """A toxic cut a direction; detail: ``direction``, ``reason``, ``at_byte`` (stream
    offset), ``at_boundary`` (between two frames? ``None`` if unknown)."""
    RESET = "reset"
    """The connection was reset (RST both ways); detail: ``reason``."""
    CLOSED = "closed"
    """Detail: ``reason``, ``path``, ``websocket``, ``bytes_up``, ``bytes_down``."""
    TOXIC_ADDED = "toxic_added"
    """Detail: ``toxic_id``, ``name``, ``toxic`` (its description), ``directions``, ``target``."""
    TOXIC_REMOVED = "toxic_removed"
    TOXIC_APPLIED = "toxic_applied"
    """A toxic started applying to a connection; detail: ``toxic_id``, ``name``, ``direction``."""
    REFUSING = "refusing"
    """Refusal turned on or off; detail: ``on``, ``how``."""
    REFUSED = "refused"
    """A new connection was reset or closed at once (``how``: ``reset``/``close``)."""
    REJECTED = "rejected"
    """The proxy answered a WebSocket upgrade itself (a reject rule); detail: ``client_id``, ``status``."""
    HELD = "held"
    """A WebSocket upgrade is held (a hold rule); detail: ``client_id``, ``ticket``, ``deadline``."""
    HOLD_ENDED = "hold_ended"
    """A held upgrade went on; detail: ``client_id``, ``outcome`` (``accepted``: forwarded to a new
    upstream connection, ``rejected``, or ``gone``: the connection closed while held)."""
    INJECTED = "injected"
    """The proxy wrote a frame of its own into a live WebSocket; detail: ``direction``, ``opcode``
    (``text`` or ``close``), ``code`` (close frames), ``length`` (bytes on the wire)."""
    ERROR = "error"
    """An unexpected exception on the proxy loop (a bug); :meth:`FaultProxy.stop` raises it."""


@dataclass(frozen=True)
class ProxyEvent:
    """One entry of the proxy's event log.

    ``time`` is ``time.monotonic()`` when it happened (compare with your own
    readings); ``seq`` increases by one per event; ``connection_id`` is
    ``None`` for proxy-wide events.
    """

    seq: int
    time: float
    kind: EventKind
    connection_id: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        conn = f" #{self.connection_id}" if self.connection_id is not None else ""
        detail = " ".join(f"{k}={v!r}" for k, v in self.detail.items())
        return f"[{self.seq} {self.time:.3f}] {self.kind.value}{conn} {detail}".rstrip()


@dataclass(frozen=True)
class DirectionStats:
    """Counters of one direction of a connection.

    ``received``: bytes read from the sender; ``sent``: bytes written to the
    receiver; ``frames``: WebSocket frames seen; ``buffered``: bytes the proxy
    holds now for this direction (queued, held by toxics, unsent in the
    socket's user-space buffer); ``peak_buffered``: the most it ever held.
    """

    received: int = 0
    sent: int = 0
    frames: int = 0
    buffered: int = 0
    peak_buffered: int = 0
    eof: bool = False


@dataclass(frozen=True)
class ConnectionInfo:
    """A snapshot of one connection through the proxy.

    ``opened_at``/``closed_at`` are ``time.monotonic()`` values; ``path`` is
    ``None`` until (or unless) an HTTP request head is read; ``websocket`` is
    true for an upgrade request the server (or a reject rule) has not refused;
    ``client_id`` is the test client a WebSocket upgrade belongs to (on a
    proxy with ``ws_path``; ``None`` otherwise or when it names none);
    ``held`` is true while a hold rule keeps the upgrade waiting.  Frames the
    proxy wrote itself count in ``sent`` and ``frames``, not in ``received``.
    """

    id: int
    peer: str
    path: str | None
    method: str | None
    websocket: bool
    upgraded: bool
    opened_at: float
    closed_at: float | None
    close_reason: str | None
    upstream: DirectionStats
    downstream: DirectionStats
    toxics: tuple[str, ...]
    client_id: str | None = None
    held: bool = False

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    @property
    def bytes_up(self) -> int:
        """Bytes delivered to the server."""
        return self.upstream.sent

    @property
    def bytes_down(self) -> int:
        """Bytes delivered to the client."""
        return self.downstream.sent
