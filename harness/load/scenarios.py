"""Load scenarios, sans I/O: what each virtual client does and what it measures.

Nothing here opens a socket, runs an event loop or reads a clock (the
python-websockets "sans-I/O" style): a driver (the asyncio engine in
:mod:`harness.load.engine`, a Locust user on gevent) owns the sockets and
the time and pumps events through these objects.

The model
---------
A :class:`Scenario` is a frozen dataclass of parameters (``clients``,
``rate``, ``duration``...).  ``scenario.session(recorder)`` starts one run:
a :class:`Session` holds the state the clients share (the highest seq
confirmed on the channel) and makes the :class:`VirtualClient` of each
index with ``session.client(i)`` (or all of them with ``session.clients()``).

A virtual client is a state machine.  The driver calls, with ``now`` in
seconds on one monotonic clock:

=============================  ================================================
``start(now)``                 once; returns ``[Connect()]``
``opened(now)``                the WebSocket handshake completed
``frame(text, now)``           a text frame arrived
``reply(text, now)``           the same, for a driver's hot path (see below)
``failed(kind, now)``          a connection attempt failed (``connect:refused``...)
``closed(code, reason, now)``  the socket closed (1006 when it dropped)
``begin(now)``                 the measured phase starts (publishers start)
``tick(now)``                  the time ``next_tick`` names has come
``finish_sending(now)``        the measured phase is over: stop publishing
``stop(now)``                  the run is over: close
=============================  ================================================

and each call returns a list of actions for the driver to apply, in order:
:class:`Send` a text frame, :class:`Connect` (again, after ``delay``
seconds: that is how a client reconnects), :class:`Close` with a code, or
:class:`Drop` the socket abruptly (no close frame; the driver then reports
``closed(1006, ...)``).  The driver also reads ``client.url``,
``client.ready`` (set up: authenticated, subscribed), ``client.settled``
(nothing outstanding), ``client.live`` (connected, or about to reconnect)
and ``session.ready`` / ``session.settled`` / ``session.finish(now)``.

``reply`` is ``frame`` with the answer shaped for a driver's per-message
path: the text to send when ``frame`` would return exactly one
:class:`Send` (a closed-loop publisher's next publish), else ``frame``'s
list of actions.  The client's state and measurements are the same either
way; a publisher answers a confirmation there without building an
:class:`Incoming`, a :class:`Send` or a list.

Measurements go to a :class:`Recorder` (:class:`harness.load.metrics.Metrics`
implements it; a Locust user may forward them to Locust's events):
latencies by name, counters, errors by kind and gauges.

Metric names
------------
Latencies: ``connect`` (from ``start``/``Connect`` to authenticated, or to the
handshake where the profile does not authenticate), ``publish`` (publish ->
``delivery_confirmation``; for the generic profile: send -> echo),
``delivery`` (publish -> ``channel_message`` at a subscriber, from the send
time carried in the message), ``replay`` (the same for a message replayed
after a reconnect).  Counters: ``sent``, ``received``, ``confirmed``,
``delivered``, ``opened``, ``failed``, ``closed_by_server``, ``drops``,
``reconnects``, ``replayed``, ``lost``, ``duplicated``, ``out_of_order``,
``gaps``, ``skipped`` (sends the schedule asked for that the driver was too
late to make), ``unconfirmed``.  Errors: ``connect:<reason>``,
``handshake:<HTTP status>``, ``close:<code>``, ``error:<server error code>``,
``frame:invalid``.

Load protocols
--------------
Everything a profile decides (the URL of a client, how to authenticate, how
to build a publish and recognise its confirmation) sits in one small pure
object: :class:`NovaProtocol` for the reference server (and any app speaking
Nova) and :class:`GenericProtocol` for any WebSocket server (no
authentication; a publish is a text frame carrying its id and its
confirmation is the echo of that id).  The generic profile runs
``connections`` and ``publish`` (an echo server); ``fanout`` and
``reconnect-storm`` need channels and seqs, so Nova.

Scenarios (the CLI's names): ``connections``, ``publish``, ``fanout``,
``reconnect-storm``; ``ramp`` (:mod:`harness.load.ramp`) steps one of them.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, ClassVar, NamedTuple, Protocol

from .errors import LoadConfigError

__all__ = [
    "NOVA_NO_RECONNECT",
    "SCENARIOS",
    "Action",
    "Close",
    "Connect",
    "Connections",
    "Drop",
    "Fanout",
    "GenericProtocol",
    "Incoming",
    "LoadProtocol",
    "NovaProtocol",
    "Publish",
    "ReconnectStorm",
    "Recorder",
    "Scenario",
    "Send",
    "SeqTracker",
    "Session",
    "VirtualClient",
    "create",
]


# ----------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Connect:
    """Open the client's socket (again), after ``delay`` seconds."""

    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``text`` as one text frame."""

    text: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket cleanly with ``code`` and ``reason``."""

    code: int = 1000
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Drop:
    """Drop the socket abruptly: no close frame (the TCP connection is aborted); the server sees it vanish."""


Action = Connect | Send | Close | Drop

_CONNECT = Connect()
_CLOSE = Close(1000, "load run finished")
_NOTHING: list[Action] = []

#: What a confirmation counts: alone, and when the closed loop publishes the next message at once.
_CONFIRMED = ("confirmed", "received")
_CONFIRMED_AND_SENT = ("confirmed", "received", "sent")


# ----------------------------------------------------------------- recorder


class Recorder(Protocol):
    """Where virtual clients put their measurements (:class:`harness.load.metrics.Metrics`).

    A recorder may also have ``measure(name, seconds, now, counters)``: the
    same as ``latency(name, seconds, now)`` followed by ``count(c, now)`` for
    each name in the tuple ``counters``, in one call (a publisher's
    confirmation is a latency and two or three counts).  Clients use it
    where it exists (:meth:`harness.load.metrics.Metrics.measure`), else
    make those calls one by one.
    """

    def latency(self, name: str, seconds: float, now: float) -> None:
        """A duration of metric ``name``, measured at ``now``."""

    def count(self, name: str, now: float, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""

    def error(self, kind: str, now: float, n: int = 1) -> None:
        """Count an error of ``kind``."""

    def gauge(self, name: str, value: float) -> None:
        """Set a level (open connections at the end...)."""


Measure = Callable[[str, float, float, tuple[str, ...]], None]


def _measurer(recorder: Recorder) -> Measure:
    """``recorder.measure`` (see :class:`Recorder`), or the same made of ``latency`` and ``count``."""
    measure: Measure | None = getattr(recorder, "measure", None)
    if measure is not None:
        return measure

    def one_by_one(name: str, seconds: float, now: float, counters: tuple[str, ...]) -> None:
        recorder.latency(name, seconds, now)
        for counter in counters:
            recorder.count(counter, now)

    return one_by_one


# ----------------------------------------------------------------- load protocols


class Incoming(NamedTuple):
    """A received frame as a scenario needs it.

    ``kind``: one of the ``LoadProtocol.*`` kinds; ``op_id``: the operation
    or message id; ``seq``: a channel message's seq, a confirmation's seq, a
    ``subscribed``'s ``last_seq``; ``stamp``: the send time a channel
    message carries; ``detail``: an error code or the channel.
    """

    kind: str
    op_id: str | None = None
    seq: int | None = None
    stamp: float | None = None
    detail: str = ""


class LoadProtocol:
    """What a profile decides about frames, pure (see the module docstring).

    ``timestamp`` is written in every frame's envelope where the protocol has
    one (the driver sets the run's start time: a scenario reads no clock).
    ``rate_limit``: the server's known per-connection message rate (msgs/s),
    None when unknown; a scenario asking for more says so in its warnings.
    """

    name: ClassVar[str] = "base"
    #: Frame kinds :meth:`parse` returns.
    GREETING: ClassVar[str] = "greeting"
    AUTHENTICATED: ClassVar[str] = "authenticated"
    AUTH_FAILED: ClassVar[str] = "auth_failed"
    CONFIRMATION: ClassVar[str] = "confirmation"
    MESSAGE: ClassVar[str] = "message"
    SUBSCRIBED: ClassVar[str] = "subscribed"
    ERROR: ClassVar[str] = "error"
    OTHER: ClassVar[str] = "other"
    INVALID: ClassVar[str] = "invalid"

    #: Whether a greeting frame comes before the client may authenticate.
    greets: bool = False
    #: Whether clients authenticate (then ``auth_frame`` is sent and ``AUTHENTICATED`` awaited).
    authenticates: bool = False
    #: Whether the protocol has channels with seqs (``fanout``, ``reconnect-storm``).
    channels: bool = False
    #: Close codes after which a client does not reconnect.
    no_reconnect: frozenset[int] = frozenset()
    rate_limit: float | None = None
    timestamp: str = "1970-01-01T00:00:00.000Z"

    def url(self, base_url: str, client_id: str) -> str:
        """The WebSocket URL of ``client_id`` (``{client_id}`` in ``base_url`` is replaced)."""
        return base_url.replace("{client_id}", client_id)

    def auth_frame(self, client_id: str) -> str:
        """The frame that authenticates ``client_id``."""
        raise LoadConfigError(f"the {self.name} load protocol does not authenticate")

    def subscribe_frame(self, client_id: str, channel: str, since_seq: int | None, op_id: str) -> str:
        """The frame subscribing to ``channel`` (replaying after ``since_seq`` when given)."""
        raise LoadConfigError(
            f"the {self.name} load protocol has no channels; use the nova profile for fanout "
            "and reconnect-storm"
        )

    def publish_frame(self, client_id: str, channel: str, message_id: str, content: str) -> str:
        """The frame publishing ``content`` as ``message_id``; its confirmation carries that id."""
        raise NotImplementedError

    def parse(self, text: str) -> Incoming:
        """What ``text`` is (an :class:`Incoming`)."""
        raise NotImplementedError

    def confirmation_id(self, text: str) -> str | None:
        """The message id ``text`` confirms, when that is cheaper to tell than :meth:`parse`; else None.

        A publisher's hot path (:meth:`VirtualClient.reply`) asks this before
        :meth:`parse`: an id means :meth:`parse` would return
        ``Incoming(CONFIRMATION, id)`` (no seq, nothing else); None means
        "parse it".  The base class always says None.  The shortcut is taken
        only where the class that defines :meth:`parse` defines this method
        too, so a subclass overriding :meth:`parse` alone is always parsed.
        """
        return None

    def with_timestamp(self, timestamp: str) -> LoadProtocol:
        """A copy writing ``timestamp`` in its envelopes."""
        if is_dataclass(self):
            return replace(self, timestamp=timestamp)
        copied = copy.copy(self)
        copied.timestamp = timestamp
        return copied


# The hot kinds as module constants: read once per frame, faster than class attributes.
_CONFIRMATION = LoadProtocol.CONFIRMATION
_MESSAGE = LoadProtocol.MESSAGE


def _confirmation_shortcut(protocol: LoadProtocol) -> Callable[[str], str | None] | None:
    """``protocol.confirmation_id`` where it agrees with ``protocol.parse`` by construction, else None.

    It does where the class that defines ``parse`` defines ``confirmation_id``
    too (a subclass overriding ``parse`` alone may recognise confirmations
    differently: it is always parsed).
    """
    for klass in type(protocol).__mro__:
        if "parse" in vars(klass):
            if klass is LoadProtocol or "confirmation_id" not in vars(klass):
                return None
            return protocol.confirmation_id
    return None


def _stamp(content: object) -> float | None:
    # Content a publisher built: "<send time>|<padding>".
    if not isinstance(content, str):
        return None
    head, bar, _ = content.partition("|")
    if not bar:
        return None
    try:
        return float(head)
    except ValueError:
        return None


#: Nova close codes after which a client does not reconnect (docs/protocol.md, "Close codes").
NOVA_NO_RECONNECT = frozenset({1008, 4001, 4002, 4003})


@dataclass(frozen=True)
class NovaProtocol(LoadProtocol):
    """The Nova protocol (docs/protocol.md): ``/debug/{client_id}``, ``connect`` with an API key, channels.

    ``path`` is appended to the base URL unless the URL already names
    ``{client_id}``; ``rate_limit`` is the reference server's default
    (``NOVA_RATE_LIMIT_PER_SECOND``); set it to the server's own (or None).

    >>> p = NovaProtocol()
    >>> p.url("ws://127.0.0.1:8000", "c-1")
    'ws://127.0.0.1:8000/debug/c-1'
    >>> p.parse('{"type":"delivery_confirmation","data":{"message_id":"m1","seq":7},'
    ...         '"timestamp":"x","client_id":"c-1","id":"m1"}')
    Incoming(kind='confirmation', op_id='m1', seq=7, stamp=None, detail='')
    """

    name: ClassVar[str] = "nova"
    api_key: str = "valid-test-key"
    path: str = "/debug/{client_id}"
    metadata_type: str = "test"
    rate_limit: float | None = 100.0
    timestamp: str = "1970-01-01T00:00:00.000Z"
    greets: bool = True
    authenticates: bool = True
    channels: bool = True
    no_reconnect: frozenset[int] = NOVA_NO_RECONNECT

    def url(self, base_url: str, client_id: str) -> str:
        if "{client_id}" in base_url:
            return base_url.replace("{client_id}", client_id)
        return base_url.rstrip("/") + self.path.replace("{client_id}", client_id)

    def _envelope(self, type_: str, data: dict[str, Any], client_id: str, op_id: str | None) -> str:
        message: dict[str, Any] = {
            "type": type_,
            "data": data,
            "timestamp": self.timestamp,
            "client_id": client_id,
        }
        if op_id is not None:
            message["id"] = op_id
        return json.dumps(message, separators=(",", ":"))

    def auth_frame(self, client_id: str) -> str:
        return self._envelope(
            "connect",
            {"api_key": self.api_key, "metadata": {"type": self.metadata_type}},
            client_id,
            f"{client_id}-auth",
        )

    def subscribe_frame(self, client_id: str, channel: str, since_seq: int | None, op_id: str) -> str:
        data: dict[str, Any] = {"channel": channel}
        if since_seq is not None:
            data["since_seq"] = since_seq
        return self._envelope("subscribe", data, client_id, op_id)

    def publish_frame(self, client_id: str, channel: str, message_id: str, content: str) -> str:
        # The hot path: the envelope as a template (content is digits, '.', '|' and 'x').
        return (
            '{"type":"publish","data":{"channel":"' + channel + '","content":"' + content
            + '"},"timestamp":"' + self.timestamp + '","client_id":"' + client_id
            + '","id":"' + message_id + '"}'
        )

    def parse(self, text: str) -> Incoming:
        try:
            message = json.loads(text)
            kind = message["type"]
            data = message.get("data") or {}
        except (ValueError, TypeError, KeyError, AttributeError):
            return Incoming(self.INVALID)
        if kind == "channel_message":
            return Incoming(
                self.MESSAGE, data.get("message_id"), data.get("seq"), _stamp(data.get("content")),
                data.get("channel") or "",
            )
        if kind == "delivery_confirmation":
            return Incoming(self.CONFIRMATION, message.get("id") or data.get("message_id"), data.get("seq"))
        if kind == "connection_established":
            return Incoming(self.GREETING)
        if kind == "auth_success":
            return Incoming(self.AUTHENTICATED, message.get("id"))
        if kind == "subscribed":
            return Incoming(self.SUBSCRIBED, message.get("id"), data.get("last_seq"), None, data.get("channel") or "")
        if kind == "error":
            code = str(data.get("code") or "unknown")
            op_id = message.get("id") or data.get("operation_id")
            if code == "auth_failed":
                return Incoming(self.AUTH_FAILED, op_id, None, None, code)
            return Incoming(self.ERROR, op_id, None, None, code)
        return Incoming(self.OTHER, message.get("id"), None, None, str(kind))


@dataclass(frozen=True)
class GenericProtocol(LoadProtocol):
    """Any WebSocket server: no authentication, a publish is ``<id><separator><content>``, echoed back.

    The URL is used as given (``{client_id}`` in it is replaced).  A frame
    whose text starts with a message id and the separator confirms that
    message (an echo server does exactly that); any other frame is
    ``other``.

    >>> GenericProtocol().parse("m-1|1.5|xx")
    Incoming(kind='confirmation', op_id='m-1', seq=None, stamp=None, detail='')
    """

    name: ClassVar[str] = "generic"
    separator: str = "|"
    rate_limit: float | None = None
    timestamp: str = "1970-01-01T00:00:00.000Z"

    def publish_frame(self, client_id: str, channel: str, message_id: str, content: str) -> str:
        return message_id + self.separator + content

    def parse(self, text: str) -> Incoming:
        op_id = self.confirmation_id(text)
        if op_id is not None:
            return Incoming(self.CONFIRMATION, op_id)
        return Incoming(self.OTHER)

    def confirmation_id(self, text: str) -> str | None:
        head, sep, _ = text.partition(self.separator)
        return head if sep and head else None


# ----------------------------------------------------------------- seq bookkeeping


class SeqTracker:
    """Which seqs of one channel a subscriber saw: gaps, duplicates, out-of-order, lost.

    ``start(last_seq)`` sets the position (the ``subscribed`` frame's
    ``last_seq``: the next expected seq is one more); a later ``start`` (a
    resubscription) keeps the position.  :meth:`see` classifies each seq.
    A seq above the expected one opens a gap (its missing seqs become
    *holes*); a hole that arrives later is *out of order*; a seq seen before
    is a *duplicate*.  :meth:`lost` counts the holes plus the seqs after the
    last one seen up to the channel's final seq.  At most ``max_holes``
    holes are remembered one by one; past that they are only counted (a
    late arrival among them then counts as a duplicate).

    >>> t = SeqTracker(); t.start(0)
    >>> [t.see(s) for s in (1, 2, 4, 3, 4)]
    ['ok', 'ok', 'gap', 'late', 'duplicate']
    >>> t.last_seen, t.lost(final_seq=6)
    (4, 2)
    """

    __slots__ = ("_next", "duplicated", "gaps", "holes", "holes_overflow", "max_holes", "out_of_order", "seen")

    def __init__(self, max_holes: int = 100_000) -> None:
        self._next: int | None = None
        self.holes: set[int] = set()
        self.holes_overflow = 0
        self.max_holes = max_holes
        self.seen = 0
        self.duplicated = 0
        self.out_of_order = 0
        self.gaps = 0

    @property
    def started(self) -> bool:
        """Whether a position was set."""
        return self._next is not None

    @property
    def last_seen(self) -> int:
        """The highest seq seen (or the starting position): what a resubscription's ``since_seq`` is."""
        return (self._next or 1) - 1

    def start(self, last_seq: int) -> None:
        """Set the position to ``last_seq`` unless one is set already."""
        if self._next is None:
            self._next = last_seq + 1

    def see(self, seq: int) -> str:
        """Classify ``seq``: ``ok``, ``gap`` (some were skipped), ``late`` (a hole filled), ``duplicate``."""
        expected = self._next
        if expected is None:
            # A message before any position: take it as the start.
            self._next = seq + 1
            self.seen += 1
            return "ok"
        if seq == expected:
            self._next = seq + 1
            self.seen += 1
            return "ok"
        if seq > expected:
            missing = seq - expected
            room = self.max_holes - len(self.holes)
            if missing <= room:
                self.holes.update(range(expected, seq))
            else:
                self.holes.update(range(expected, expected + max(room, 0)))
                self.holes_overflow += missing - max(room, 0)
            self._next = seq + 1
            self.seen += 1
            self.gaps += 1
            return "gap"
        if seq in self.holes:
            self.holes.discard(seq)
            self.seen += 1
            self.out_of_order += 1
            return "late"
        self.duplicated += 1
        return "duplicate"

    def lost(self, final_seq: int) -> int:
        """Seqs up to ``final_seq`` never seen since the position was set."""
        if self._next is None:
            return 0
        return len(self.holes) + self.holes_overflow + max(0, final_seq - (self._next - 1))


# ----------------------------------------------------------------- scenarios


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """Parameters of a load run; subclasses are the scenarios (see :data:`SCENARIOS`).

    Common parameters: ``duration`` (seconds of the measured phase, after
    every client is set up), ``connect_rate`` (new connections per second
    while ramping up; None: as fast as the driver's handshake concurrency
    allows), ``tag`` (makes client ids, message ids and the channel unique to
    the run; drivers set a random one), ``protocol`` (the load protocol),
    ``seed`` (which clients drop and when, in ``reconnect-storm``).
    """

    name: ClassVar[str] = "base"
    #: The latency the timeline follows and thresholds like ``p99<50ms`` name.
    primary_metric: ClassVar[str] = "connect"
    #: The counter ``throughput`` means, per second of the measured phase.
    throughput_counter: ClassVar[str] = "opened"
    #: The parameter a ramp steps by default.
    ramp_parameter: ClassVar[str] = "clients"

    duration: float = 10.0
    connect_rate: float | None = None
    tag: str = "load"
    protocol: LoadProtocol = field(default_factory=NovaProtocol)
    seed: int = 1234

    @property
    def clients(self) -> int:
        """How many virtual clients the run has."""
        raise NotImplementedError

    @property
    def offered_rate(self) -> float | None:
        """Publishes per second the scenario asks for in all (None: no target, or closed loop)."""
        return None

    def validate(self) -> None:
        """Raise :class:`LoadConfigError` for a parameter out of range, naming it and the rule."""
        if not self.duration > 0:
            raise LoadConfigError(f"{self.name}: duration must be > 0 s, got {self.duration!r}")
        if self.connect_rate is not None and not self.connect_rate > 0:
            raise LoadConfigError(
                f"{self.name}: connect_rate must be > 0 connections/s (or None: as fast as possible), "
                f"got {self.connect_rate!r}"
            )
        if self.clients < 1:
            raise LoadConfigError(f"{self.name}: needs at least 1 client, got {self.clients}")
        if not self.tag or any(not (c.isalnum() or c in "-_") for c in self.tag):
            raise LoadConfigError(f"{self.name}: tag must be letters, digits, '-' or '_', got {self.tag!r}")

    def warnings(self) -> list[str]:
        """What may make the figures misleading (a rate over the server's limit...), as sentences."""
        return []

    def parameters(self) -> dict[str, Any]:
        """The parameters as JSON-safe values (the protocol by name, and its API key left out)."""
        values: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "protocol":
                values["profile"] = self.protocol.name
            else:
                values[f.name] = getattr(self, f.name)
        values["clients"] = self.clients
        return values

    def with_values(self, **changes: Any) -> Scenario:
        """A copy with ``changes`` (``clients`` maps to the field holding the client count)."""
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise LoadConfigError(
                f"{self.name}: unknown parameter(s) {sorted(unknown)}; known: {sorted(names)}"
            )
        return replace(self, **changes)

    def session(self, recorder: Recorder) -> Session:
        """Start one run: shared state, and the clients on demand (``session.client(i)``)."""
        self.validate()
        return Session(self, recorder)

    def make_client(self, session: Session, index: int) -> VirtualClient:
        """The virtual client of ``index`` (0 .. clients-1)."""
        raise NotImplementedError

    def client_id(self, index: int) -> str:
        """The client id of ``index``: unique to the run through ``tag``."""
        return f"{self.tag}-{self.name[:4]}-{index}"

    @property
    def channel_name(self) -> str:
        """The channel the scenario uses: ``channel`` when set, else one unique to the run."""
        channel = getattr(self, "channel", None)
        return channel or f"load-{self.tag}"


class Session:
    """One run of a scenario: the shared state and the clients made so far.

    ``final_seq`` is the highest seq any publisher had confirmed; a
    subscriber is settled once it saw it.
    """

    def __init__(self, scenario: Scenario, recorder: Recorder) -> None:
        self.scenario = scenario
        self.recorder = recorder
        self.final_seq = 0
        self.made: dict[int, VirtualClient] = {}

    def client(self, index: int) -> VirtualClient:
        """The client of ``index`` (made once)."""
        if not 0 <= index < self.scenario.clients:
            raise LoadConfigError(
                f"{self.scenario.name}: client index {index} out of range 0..{self.scenario.clients - 1}"
            )
        made = self.made.get(index)
        if made is None:
            made = self.made[index] = self.scenario.make_client(self, index)
        return made

    def clients(self) -> list[VirtualClient]:
        """Every client of the scenario."""
        return [self.client(i) for i in range(self.scenario.clients)]

    @property
    def ready(self) -> bool:
        """Every client made is set up, or gave up."""
        return all(c.ready or not c.live for c in self.made.values())

    @property
    def settled(self) -> bool:
        """No client made has anything outstanding (confirmations, seqs still to come)."""
        return all(c.settled or not c.live for c in self.made.values())

    def finish(self, now: float) -> None:
        """Record what only the end knows: messages lost for good, open connections."""
        recorder = self.recorder
        trackers = [c for c in self.made.values() if c.tracks_seqs]
        if trackers:
            recorder.count("lost", now, sum(c.lost() for c in trackers))
        unconfirmed = sum(c.unconfirmed for c in self.made.values())
        if unconfirmed:
            recorder.count("unconfirmed", now, unconfirmed)
        recorder.gauge("open", sum(1 for c in self.made.values() if c.state == VirtualClient.READY))
        recorder.gauge("clients", len(self.made))


# ----------------------------------------------------------------- virtual clients


class VirtualClient:
    """One simulated user: connects, authenticates, then does its role (see the module docstring).

    The base class connects and authenticates and, per ``reconnect``,
    reconnects after a server close (not after the protocol's
    ``no_reconnect`` codes).  Roles override :meth:`on_ready`,
    :meth:`on_message`, :meth:`begin`, :meth:`tick`...
    """

    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    DROPPED = "dropped"
    CLOSING = "closing"
    CLOSED = "closed"

    #: Whether the client reconnects after a server close (not after ``protocol.no_reconnect`` codes).
    reconnect: bool = False
    #: Seconds before the first reconnection attempt; each failed one doubles it (at most 1 s).
    reconnect_delay: float = 0.05
    #: Attempts in a row that do not get set up before a reconnecting client gives up.
    max_reconnect_attempts: int = 10

    def __init__(self, session: Session, index: int) -> None:
        self.session = session
        self.scenario = session.scenario
        self.recorder = session.recorder
        self.protocol = session.scenario.protocol
        self.index = index
        self.client_id = session.scenario.client_id(index)
        self.state = self.IDLE
        self.ready = False
        self.next_tick: float | None = None
        self.sending = False
        self.unconfirmed = 0
        self._connect_started = 0.0
        self._stopping = False
        self._reconnecting = False
        self._attempts = 0

    # -- what the driver reads

    def url(self, base_url: str) -> str:
        """This client's WebSocket URL under ``base_url``."""
        return self.protocol.url(base_url, self.client_id)

    @property
    def live(self) -> bool:
        """Connected or about to be (connecting, reconnecting): not given up, not closed for good."""
        return self.state not in (self.CLOSED, self.IDLE)

    @property
    def settled(self) -> bool:
        """Nothing outstanding (subclasses: confirmations, seqs)."""
        return True

    #: Whether this client checks a channel's seqs (then :meth:`lost` means something).
    tracks_seqs: bool = False

    def lost(self) -> int:
        """Messages this client should have received and never will."""
        return 0

    # -- events

    def start(self, now: float) -> list[Action]:
        """The first connection."""
        self.state = self.CONNECTING
        self._connect_started = now
        return [_CONNECT]

    def _connect_again(self, now: float) -> list[Action]:
        # Backoff: reconnect_delay, doubling per attempt that does not get set up, at most 1 s;
        # after max_reconnect_attempts of them the client gives up.
        if self._attempts >= self.max_reconnect_attempts:
            self.state = self.CLOSED
            self.next_tick = None
            return _NOTHING
        delay = min(1.0, self.reconnect_delay * 2**self._attempts) if self._attempts else self.reconnect_delay
        self._attempts += 1
        self.state = self.CONNECTING
        self._reconnecting = True
        self._connect_started = now + delay
        return [Connect(delay)]

    def opened(self, now: float) -> list[Action]:
        """The handshake completed."""
        protocol = self.protocol
        if protocol.greets:
            self.state = self.OPEN
            return _NOTHING
        if protocol.authenticates:
            self.state = self.AUTHENTICATING
            return [Send(protocol.auth_frame(self.client_id))]
        return self._authenticated(now)

    def _authenticated(self, now: float) -> list[Action]:
        self.state = self.READY
        self._attempts = 0
        recorder = self.recorder
        recorder.latency("connect", now - self._connect_started, now)
        if self._reconnecting:
            recorder.count("reconnects", now)
        else:
            recorder.count("opened", now)
        actions = self.on_ready(now, self._reconnecting)
        return actions

    def on_ready(self, now: float, reconnected: bool) -> list[Action]:
        """Authenticated (or open, without authentication): set up the role; ``ready`` once set up."""
        self.ready = True
        return _NOTHING

    def reply(self, text: str, now: float) -> str | list[Action]:
        """:meth:`frame`, answered for a driver's hot path: the same state changes and measurements.

        Returns the text of the one frame to send when :meth:`frame` would
        return exactly one :class:`Send`, else the actions :meth:`frame`
        returns (often none).  Roles may answer here without :meth:`frame`'s
        allocations, keeping that equivalence.
        """
        actions = self.frame(text, now)
        if len(actions) == 1:
            action = actions[0]
            if type(action) is Send:
                return action.text
        return actions

    def frame(self, text: str, now: float) -> list[Action]:
        """A text frame arrived."""
        incoming = self.protocol.parse(text)
        kind = incoming.kind
        if kind == _CONFIRMATION or kind == _MESSAGE:
            return self.on_message(incoming, now)
        protocol = self.protocol
        if kind == LoadProtocol.GREETING and self.state == self.OPEN:
            self.state = self.AUTHENTICATING
            return [Send(protocol.auth_frame(self.client_id))]
        if kind == LoadProtocol.AUTHENTICATED and self.state == self.AUTHENTICATING:
            return self._authenticated(now)
        if kind == LoadProtocol.AUTH_FAILED:
            self.recorder.error("auth:failed", now)
            return _NOTHING
        if kind == LoadProtocol.ERROR:
            self.recorder.error(f"error:{incoming.detail}", now)
            return self.on_error(incoming, now)
        if kind == LoadProtocol.INVALID:
            self.recorder.error("frame:invalid", now)
            return _NOTHING
        return self.on_message(incoming, now)

    def on_message(self, incoming: Incoming, now: float) -> list[Action]:
        """A frame for the role (confirmation, channel message, subscribed, other)."""
        return _NOTHING

    def on_error(self, incoming: Incoming, now: float) -> list[Action]:
        """An ``error`` frame (already counted as ``error:<code>``)."""
        return _NOTHING

    def failed(self, kind: str, now: float) -> list[Action]:
        """A connection attempt failed with ``kind`` (``connect:refused``, ``handshake:403``...)."""
        self.recorder.error(kind, now)
        self.recorder.count("failed", now)
        if self._reconnecting and not self._stopping:
            return self._connect_again(now)  # a reconnecting client keeps trying, with backoff
        self.state = self.CLOSED
        self.next_tick = None
        return _NOTHING

    def closed(self, code: int, reason: str, now: float) -> list[Action]:
        """The socket closed with ``code`` (1006: it dropped without a close frame)."""
        was = self.state
        if was == self.DROPPED:
            return self._connect_again(now)
        if self._stopping or was == self.CLOSING:
            self.state = self.CLOSED
            self.next_tick = None
            return _NOTHING
        self.recorder.count("closed_by_server", now)
        self.recorder.error(f"close:{code}", now)
        if self.reconnect and code not in self.protocol.no_reconnect:
            # Timers go on while reconnecting (a publisher counts the sends it misses).
            return self._connect_again(now)
        self.state = self.CLOSED
        self.next_tick = None
        return _NOTHING

    def begin(self, now: float) -> list[Action]:
        """The measured phase starts."""
        return _NOTHING

    def tick(self, now: float) -> list[Action]:
        """The time ``next_tick`` named has come."""
        self.next_tick = None
        return _NOTHING

    def finish_sending(self, now: float) -> list[Action]:
        """The measured phase is over: send nothing new."""
        self.sending = False
        self.next_tick = None
        return _NOTHING

    def stop(self, now: float) -> list[Action]:
        """The run is over: close (clean) when open."""
        self._stopping = True
        self.sending = False
        self.next_tick = None
        if self.state in (self.OPEN, self.AUTHENTICATING, self.READY):
            self.state = self.CLOSING
            return [_CLOSE]
        if self.state != self.CLOSED:
            self.state = self.CLOSED
        return _NOTHING


class _Idle(VirtualClient):
    """``connections``: authenticated and idle."""


class _Publisher(VirtualClient):
    """Publishes on the channel, paced at ``rate`` msgs/s or closed-loop with ``inflight`` outstanding."""

    def __init__(
        self,
        session: Session,
        index: int,
        *,
        rate: float | None,
        inflight: int,
        size: int,
        phase: float,
        max_pending: int,
    ) -> None:
        super().__init__(session, index)
        self.rate = rate
        self.inflight = inflight
        self.phase = phase
        self.max_pending = max_pending
        self.channel = session.scenario.channel_name
        self.pending: dict[str, float] = {}
        self._n = 0
        self._t0 = 0.0
        self.size = size
        self._padding = "x" * size
        self._prefix = f"{self.client_id}-"
        # The shortcut in reply() stands for frame() and on_message(): not where a subclass changed them.
        plain = type(self).frame is VirtualClient.frame and type(self).on_message is _Publisher.on_message
        self._confirmation_id = _confirmation_shortcut(self.protocol) if plain else None
        self._measure = _measurer(self.recorder)

    @property
    def settled(self) -> bool:
        return not self.pending

    def _next_frame(self, now: float) -> str:
        """The next publish's frame, awaiting its confirmation from now (the caller counts it ``sent``)."""
        self._n += 1
        message_id = self._prefix + str(self._n)
        self.pending[message_id] = now
        stamp = f"{now:.6f}|"
        # The padding is all 'x' and `size` long: its tail past the stamp pads the content to `size`.
        content = stamp + self._padding[len(stamp):]
        return self.protocol.publish_frame(self.client_id, self.channel, message_id, content)

    def _publish(self, now: float) -> Action:
        self.recorder.count("sent", now)
        return Send(self._next_frame(now))

    def begin(self, now: float) -> list[Action]:
        if self.state != self.READY:
            return _NOTHING
        self.sending = True
        self._t0 = now + self.phase
        if self.rate is None:
            return [self._publish(now) for _ in range(self.inflight)]
        self.next_tick = self._t0
        return _NOTHING

    def tick(self, now: float) -> list[Action]:
        rate = self.rate
        if not self.sending or rate is None:
            self.next_tick = None
            return _NOTHING
        due = int((now - self._t0) * rate) + 1 - self._n
        lag_cap = max(1, int(rate))  # at most a second behind; older sends are skipped
        if due > lag_cap:
            skipped = due - lag_cap
            self._n += skipped
            self.recorder.count("skipped", now, skipped)
            due = lag_cap
        actions: list[Action] = []
        if self.state == self.READY:
            room = self.max_pending - len(self.pending)
            if due > room:
                if room < due:
                    self._n += due - max(room, 0)
                    self.recorder.count("skipped", now, due - max(room, 0))
                due = max(room, 0)
            actions = [self._publish(now) for _ in range(due)]
        elif due > 0:
            # Not connected at this moment (reconnecting): these sends are not made.
            self._n += due
            self.recorder.count("skipped", now, due)
        self.next_tick = self._t0 + self._n / rate
        return actions

    def on_message(self, incoming: Incoming, now: float) -> list[Action]:
        if incoming.kind != _CONFIRMATION:
            return _NOTHING
        sent = self.pending.pop(incoming.op_id or "", None)
        recorder = self.recorder
        if sent is None:
            recorder.count("unexpected_confirmations", now)
            return _NOTHING
        recorder.latency("publish", now - sent, now)
        recorder.count("confirmed", now)
        recorder.count("received", now)
        seq = incoming.seq
        session = self.session
        if seq is not None and seq > session.final_seq:
            session.final_seq = seq
        if self.rate is None and self.sending and self.state == self.READY:
            return [self._publish(now)]
        return _NOTHING

    def reply(self, text: str, now: float) -> str | list[Action]:
        # The closed loop's per-message path.  A confirmation of a pending publish that the
        # protocol tells without parsing (no seq) is what on_message does with it, the same
        # measurements in one recorder call and the next publish as its text; anything else
        # (unknown ids included) takes the general path.
        shortcut = self._confirmation_id
        if shortcut is not None:
            op_id = shortcut(text)
            if op_id is not None:
                sent = self.pending.pop(op_id, None)
                if sent is not None:
                    if self.rate is None and self.sending and self.state == self.READY:
                        self._measure("publish", now - sent, now, _CONFIRMED_AND_SENT)
                        return self._next_frame(now)
                    self._measure("publish", now - sent, now, _CONFIRMED)
                    return _NOTHING
        return VirtualClient.reply(self, text, now)

    def on_error(self, incoming: Incoming, now: float) -> list[Action]:
        # A refused publish (rate_limited, forbidden) will never be confirmed.
        refused = incoming.op_id is not None and self.pending.pop(incoming.op_id, None) is not None
        if refused and self.rate is None and self.sending and self.state == self.READY:
            return [self._publish(now)]
        return _NOTHING

    def closed(self, code: int, reason: str, now: float) -> list[Action]:
        actions = super().closed(code, reason, now)
        if self.state == self.CLOSED:
            self.unconfirmed += len(self.pending)
            self.pending.clear()
        return actions

    def stop(self, now: float) -> list[Action]:
        self.unconfirmed += len(self.pending)
        self.pending.clear()
        return super().stop(now)


class _Subscriber(VirtualClient):
    """Subscribes to the channel, checks every seq arrives once and in order, measures delivery."""

    tracks_seqs = True

    def __init__(self, session: Session, index: int, *, drops: list[float], reconnect: bool) -> None:
        super().__init__(session, index)
        self.channel = session.scenario.channel_name
        self.tracker = SeqTracker()
        self.drops = drops
        self.reconnect = reconnect
        self._subscribing = False
        self._subscriptions = 0

    @property
    def settled(self) -> bool:
        return self.state == self.READY and self.tracker.last_seen >= self.session.final_seq

    def lost(self) -> int:
        if not self.tracker.started:
            return 0
        return self.tracker.lost(self.session.final_seq)

    def on_ready(self, now: float, reconnected: bool) -> list[Action]:
        self._subscriptions += 1
        self._subscribing = True
        since = self.tracker.last_seen if self.tracker.started else None
        op_id = f"{self.client_id}-sub-{self._subscriptions}"
        return [Send(self.protocol.subscribe_frame(self.client_id, self.channel, since, op_id))]

    def on_message(self, incoming: Incoming, now: float) -> list[Action]:
        kind = incoming.kind
        recorder = self.recorder
        if kind == _MESSAGE:
            if incoming.detail and incoming.detail != self.channel:
                return _NOTHING
            seq = incoming.seq
            if seq is None:
                recorder.error("frame:no_seq", now)
                return _NOTHING
            verdict = self.tracker.see(seq)
            if verdict == "duplicate":
                recorder.count("duplicated", now)
                return _NOTHING
            if verdict == "gap":
                recorder.count("gaps", now)
            elif verdict == "late":
                recorder.count("out_of_order", now)
            recorder.count("delivered", now)
            recorder.count("received", now)
            stamp = incoming.stamp
            if self._subscribing and self._subscriptions > 1:
                recorder.count("replayed", now)
                if stamp is not None:
                    recorder.latency("replay", now - stamp, now)
            elif stamp is not None:
                recorder.latency("delivery", now - stamp, now)
            self.session.final_seq = max(self.session.final_seq, seq)
            return _NOTHING
        if kind == LoadProtocol.SUBSCRIBED and self._subscribing:
            self._subscribing = False
            self.tracker.start(incoming.seq or 0)
            self.ready = True
        return _NOTHING

    def on_error(self, incoming: Incoming, now: float) -> list[Action]:
        if self._subscribing and incoming.op_id == f"{self.client_id}-sub-{self._subscriptions}":
            self._subscribing = False  # refused (forbidden, validation): it will never be ready
            self.state = self.CLOSING
            return [Close(1000, "subscription refused")]
        return _NOTHING

    def begin(self, now: float) -> list[Action]:
        if self.drops:
            self.drops = [now + offset for offset in self.drops]
            self.next_tick = self.drops[0]
        return _NOTHING

    def tick(self, now: float) -> list[Action]:
        drops = self.drops
        if not drops or now < drops[0]:
            self.next_tick = drops[0] if drops else None
            return _NOTHING
        drops.pop(0)
        self.next_tick = drops[0] if drops else None
        if self.state != self.READY:
            return _NOTHING  # not connected at this moment: nothing to drop
        self.state = self.DROPPED
        self.recorder.count("drops", now)
        return [Drop()]

    def finish_sending(self, now: float) -> list[Action]:
        self.drops = []
        self.next_tick = None
        return _NOTHING


# ----------------------------------------------------------------- the scenarios


def _check_rate(name: str, rate: float | None) -> None:
    if rate is not None and not rate > 0:
        raise LoadConfigError(
            f"{name}: rate must be > 0 messages/s, or None to publish as fast as confirmations come; "
            f"got {rate!r}"
        )


def _limit_warning(protocol: LoadProtocol, per_client: float | None, what: str) -> list[str]:
    limit = protocol.rate_limit
    if limit is None:
        return []
    if per_client is None:
        return [
            (
                f"{what} publish as fast as confirmations come, which can pass the server's limit of "
                f"{limit:g} messages/s per connection (then 'error:rate_limited' and close 1008); "
                "set a rate, or raise the limit (NOVA_RATE_LIMIT_PER_SECOND; the embedded server has it raised)"
            )
        ]
    if per_client > limit:
        return [
            (
                f"{what} publish {per_client:g} messages/s each, over the server's limit of {limit:g}/s "
                "per connection: expect 'error:rate_limited' and close 1008; use more clients, a lower "
                "rate, or raise the limit (NOVA_RATE_LIMIT_PER_SECOND; the embedded server has it raised)"
            )
        ]
    return []


@dataclass(frozen=True, kw_only=True)
class Connections(Scenario):
    """``connections``: ramp to ``clients`` idle (authenticated) connections, hold for ``duration``.

    Reports opened/failed/closed-by-server, connect-time percentiles
    (``connect``) and, from the driver, the server's RSS per connection.
    """

    name: ClassVar[str] = "connections"
    primary_metric: ClassVar[str] = "connect"
    throughput_counter: ClassVar[str] = "opened"
    ramp_parameter: ClassVar[str] = "clients"

    clients: int = 100

    def make_client(self, session: Session, index: int) -> VirtualClient:
        return _Idle(session, index)


@dataclass(frozen=True, kw_only=True)
class Publish(Scenario):
    """``publish``: ``clients`` publishers on ``channel``; latency publish -> confirmation (``publish``).

    ``rate`` is the total target in messages/s, spread evenly over the
    clients and paced from the clock (no drift); None publishes as fast as
    confirmations come, ``inflight`` outstanding per client.  ``size`` is the
    content length in bytes: the send time it carries (``<seconds>.<micro>|``),
    then padding; never shorter than the send time.
    """

    name: ClassVar[str] = "publish"
    primary_metric: ClassVar[str] = "publish"
    throughput_counter: ClassVar[str] = "confirmed"
    ramp_parameter: ClassVar[str] = "rate"

    clients: int = 1
    rate: float | None = None
    inflight: int = 1
    size: int = 64
    channel: str | None = None
    max_pending: int = 10_000

    @property
    def offered_rate(self) -> float | None:
        return self.rate

    def validate(self) -> None:
        super().validate()
        _check_rate(self.name, self.rate)
        if self.inflight < 1:
            raise LoadConfigError(f"{self.name}: inflight must be >= 1, got {self.inflight}")
        if self.size < 0:
            raise LoadConfigError(f"{self.name}: size must be >= 0 bytes, got {self.size}")

    def warnings(self) -> list[str]:
        per_client = None if self.rate is None else self.rate / self.clients
        return _limit_warning(self.protocol, per_client, f"{self.clients} client(s)")

    def make_client(self, session: Session, index: int) -> VirtualClient:
        per_client = None if self.rate is None else self.rate / self.clients
        # Clients start their schedules spread over one period, not all on the same instant.
        phase = 0.0 if per_client is None else index / self.clients / per_client
        return _Publisher(
            session, index, rate=per_client, inflight=self.inflight, size=self.size, phase=phase,
            max_pending=self.max_pending,
        )


def _require_channels(scenario: Scenario) -> None:
    if not scenario.protocol.channels:
        raise LoadConfigError(
            f"{scenario.name} needs channels with seqs, which the {scenario.protocol.name} profile "
            "does not have; use the nova profile, or the connections and publish scenarios"
        )


@dataclass(frozen=True, kw_only=True)
class Fanout(Scenario):
    """``fanout``: ``publishers`` publish ``rate`` msgs/s in all on one channel; ``subscribers`` receive.

    Latency publish -> ``channel_message`` at every subscriber
    (``delivery``); every subscriber must get every seq exactly once and in
    order: ``gaps``, ``duplicated``, ``out_of_order`` and ``lost`` count the
    exceptions.  Clients ``0 .. publishers-1`` publish, the others subscribe.
    """

    name: ClassVar[str] = "fanout"
    primary_metric: ClassVar[str] = "delivery"
    throughput_counter: ClassVar[str] = "delivered"
    ramp_parameter: ClassVar[str] = "subscribers"

    publishers: int = 1
    subscribers: int = 10
    rate: float | None = 100.0
    inflight: int = 1
    size: int = 64
    channel: str | None = None
    max_pending: int = 10_000

    @property
    def clients(self) -> int:
        return self.publishers + self.subscribers

    @property
    def offered_rate(self) -> float | None:
        return self.rate

    def validate(self) -> None:
        super().validate()
        _require_channels(self)
        _check_rate(self.name, self.rate)
        if self.publishers < 1 or self.subscribers < 1:
            raise LoadConfigError(
                f"{self.name}: needs at least 1 publisher and 1 subscriber, got "
                f"publishers={self.publishers} subscribers={self.subscribers}"
            )

    def warnings(self) -> list[str]:
        per_client = None if self.rate is None else self.rate / self.publishers
        return _limit_warning(self.protocol, per_client, f"{self.publishers} publisher(s)")

    def make_client(self, session: Session, index: int) -> VirtualClient:
        if index < self.publishers:
            per_client = None if self.rate is None else self.rate / self.publishers
            phase = 0.0 if per_client is None else index / self.publishers / per_client
            return _Publisher(
                session, index, rate=per_client, inflight=self.inflight, size=self.size,
                phase=phase, max_pending=self.max_pending,
            )
        return _Subscriber(session, index, drops=[], reconnect=False)


@dataclass(frozen=True, kw_only=True)
class ReconnectStorm(Fanout):
    """``reconnect-storm``: a fanout where a share of the subscribers drop mid-run and come back.

    ``drop_share`` of the subscribers (chosen with ``seed``) each drop their
    socket ``drops_per_client`` times, at seeded moments spread over the
    middle of the run (10% .. 80% of ``duration``): the driver aborts the TCP
    connection, the client reconnects after ``reconnect_delay`` seconds,
    authenticates and resubscribes with ``since_seq`` = the last seq it saw.
    ``lost`` and ``duplicated`` must be 0; ``drops`` and ``reconnects``
    count the storm, ``replay`` is the latency of the replayed messages.
    """

    name: ClassVar[str] = "reconnect-storm"
    primary_metric: ClassVar[str] = "delivery"
    throughput_counter: ClassVar[str] = "delivered"
    ramp_parameter: ClassVar[str] = "subscribers"

    subscribers: int = 20
    rate: float | None = 50.0
    drop_share: float = 0.5
    drops_per_client: int = 2
    reconnect_delay: float = 0.05

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.drop_share <= 1.0:
            raise LoadConfigError(f"{self.name}: drop_share must be within 0..1, got {self.drop_share!r}")
        if self.drops_per_client < 0:
            raise LoadConfigError(f"{self.name}: drops_per_client must be >= 0, got {self.drops_per_client}")
        if self.reconnect_delay < 0:
            raise LoadConfigError(f"{self.name}: reconnect_delay must be >= 0 s, got {self.reconnect_delay!r}")

    @property
    def dropping(self) -> list[int]:
        """The indexes of the subscribers that drop."""
        indexes = list(range(self.publishers, self.clients))
        count = round(self.drop_share * len(indexes))
        return sorted(random.Random(self.seed).sample(indexes, count))

    def drop_offsets(self, index: int) -> list[float]:
        """When subscriber ``index`` drops, in seconds from the measured phase's start (sorted)."""
        rng = random.Random(self.seed * 1_000_003 + index)
        return sorted(rng.uniform(0.1, 0.8) * self.duration for _ in range(self.drops_per_client))

    def make_client(self, session: Session, index: int) -> VirtualClient:
        if index < self.publishers:
            return super().make_client(session, index)
        drops = self.drop_offsets(index) if index in set(self.dropping) else []
        client = _Subscriber(session, index, drops=drops, reconnect=True)
        client.reconnect_delay = self.reconnect_delay
        return client


#: Scenario name (the CLI's) -> class.  ``ramp`` is :class:`harness.load.ramp.Ramp`.
SCENARIOS: dict[str, type[Scenario]] = {
    "connections": Connections,
    "publish": Publish,
    "fanout": Fanout,
    "reconnect-storm": ReconnectStorm,
}


def create(name: str, protocol: LoadProtocol | None = None, **parameters: Any) -> Scenario:
    """The scenario called ``name`` with ``parameters`` (``clients`` sets ``subscribers`` for fanout).

    Parameters given as None keep their defaults (so a CLI can pass every
    option it has); build the class directly for ``rate=None`` where the
    default is a rate.

    Raises :class:`LoadConfigError` for an unknown name or parameter, or a
    value out of range.

    >>> create("publish", clients=4, rate=200.0).offered_rate
    200.0
    """
    cls = SCENARIOS.get(name)
    if cls is None:
        raise LoadConfigError(
            f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))} (and ramp)"
        )
    values: dict[str, Any] = {k: v for k, v in parameters.items() if v is not None}
    if "clients" in values and issubclass(cls, Fanout):
        values["subscribers"] = values.pop("clients")
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise LoadConfigError(f"{name}: unknown parameter(s) {sorted(unknown)}; known: {sorted(known - {'protocol'})}")
    if protocol is not None:
        values["protocol"] = protocol
    try:
        scenario = cls(**values)
    except TypeError as exc:
        raise LoadConfigError(f"{name}: {exc}") from exc
    scenario.validate()
    return scenario

