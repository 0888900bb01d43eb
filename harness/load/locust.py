"""Locust users for the load scenarios: the same sans-I/O virtual clients, driven on gevent.

Locust has no WebSocket user of its own; this module is that user for the
scenarios of :mod:`harness.load.scenarios` (``connections``, ``publish``,
``fanout``, ``reconnect-storm``), so one locustfile runs them on Locust's web
UI, headless, or on a master and its workers (docs/locust.md)::

    locust -f harness/load/locustfile.py --host ws://127.0.0.1:8000 --scenario fanout --rate 200

It needs the ``load`` extra (``pip install 'nova-ws-harness[load]'``);
:mod:`harness.load` never imports this module, so the pure API and the
asyncio engine do not need Locust or gevent.

How a scenario maps onto Locust
-------------------------------
- **One Locust user is one virtual client** (``session.client(i)``) with
  one websocket-client connection: the user's task greenlet connects,
  reconnects and runs the client's timer (``next_tick``) on gevent; a second
  greenlet per connection receives frames and feeds them to the client.
- **One session per Locust process.** Each process (the standalone process,
  or each worker) builds the scenario from the command line (custom arguments
  such as ``--scenario`` and ``--rate``, which the master forwards to its
  workers) and gives its users the indexes ``0, 1, 2...`` of each role in the
  order they spawn.  Client ids carry a tag unique to the process
  (``<run>w<worker index>``), so processes never share a client id, while the
  channel (``load-<run>``, or ``--channel``) is shared by the whole run.
- **Roles**: :class:`WsClientUser` is every client of ``connections`` and
  ``publish`` and the subscribers of ``fanout`` and ``reconnect-storm``;
  :class:`WsPublisherUser` is their publishers, with Locust's ``fixed_count``
  set to ``--publishers`` (the master spawns exactly that many over all
  workers).  For the other scenarios :class:`WsPublisherUser` is taken out of
  the run.
- **Rates**: ``--rate`` is the run's total, spread evenly: each publisher of
  ``fanout`` sends ``rate / publishers``, each client of ``publish``
  ``rate / clients``, where ``clients`` is ``--clients``, else the number of
  users the run was started with (``-u``, or the web UI's field) minus the
  publishers.
- **The measured phase** (``vc.begin``) starts for each user as soon as it is
  set up (authenticated, subscribed): Locust spawns users over time
  (``--spawn-rate``) and has no barrier across workers.  ``--reset-stats``
  drops what was recorded while users were still spawning.
- **The end**: when Locust stops a user, it stops sending, waits up to
  ``--drain-timeout`` for its outstanding confirmations or seqs, then closes
  cleanly; when the test stops, each process records what only the end knows
  (messages lost for good, unconfirmed publishes) and logs its counters.

Every measurement is a Locust request event of type ``WS``
(:class:`LocustRecorder`): latencies by metric name (``connect``,
``publish``, ``delivery``, ``replay``) with the length of the frame that
completed them; errors as failures: a failed connection attempt (refused,
timed out, a handshake answered with an HTTP status, the API key refused) under
``connect`` with the attempt's duration, a close by the server under
``close``, an ``error`` frame under ``error``, an unparsable frame under
``frame``, correctness counters (``lost``, ``duplicated``, ``out_of_order``,
``gaps``, ``unconfirmed``, ``skipped``) under their own names, and a failure
of the scenario itself under ``scenario``.

Clock: ``now`` is the monotonic clock shifted to the wall clock once at
import, so it never jumps and a ``delivery`` latency measured on another
process or machine is right to within the clocks' agreement (NTP on a
cluster).
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import secrets
import socket
import struct
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, ClassVar
from weakref import WeakKeyDictionary

from .errors import LoadConfigError, LoadDependencyError, LoadError

try:
    import gevent
    import locust
    from gevent.event import Event
    from locust import User, constant, events, task
    from locust.env import Environment
    from locust.runners import WorkerRunner
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess without Locust
    raise LoadDependencyError(
        "harness.load.locust needs Locust (and its gevent) and websocket-client, the 'load' extra; "
        f"importing them failed ({_missing}). Install them with: pip install 'nova-ws-harness[load]'"
    ) from _missing
try:
    import websocket
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess without websocket-client
    raise LoadDependencyError(
        "harness.load.locust needs websocket-client (the 'load' extra) for its gevent-friendly "
        f"WebSocket client; importing it failed ({_missing}). Install it with: "
        "pip install 'nova-ws-harness[load]'"
    ) from _missing

from .metrics import Metrics
from .scenarios import (
    SCENARIOS,
    Close,
    Connect,
    Drop,
    Fanout,
    GenericProtocol,
    LoadProtocol,
    NovaProtocol,
    Scenario,
    Send,
    Session,
    VirtualClient,
    create,
)

__all__ = [
    "FAILURE_COUNTERS",
    "LocustRecorder",
    "ScenarioUser",
    "WsClientUser",
    "WsPublisherUser",
    "add_arguments",
    "scenario_from_options",
]

logger = logging.getLogger(__name__)


def _probe() -> None:
    # What this module uses of websocket-client beyond create_connection; a release without
    # it must fail here, with the fix, not as an AttributeError in every user.
    missing = [name for name in ("recv_data_frame", "send_close", "abort", "shutdown", "settimeout")
               if not callable(getattr(websocket.WebSocket, name, None))]
    missing += [name for name in ("create_connection", "ABNF", "WebSocketException",
                                  "WebSocketBadStatusException", "WebSocketTimeoutException")
                if not hasattr(websocket, name)]
    if missing:
        raise LoadError(
            f"websocket-client {getattr(websocket, '__version__', '?')} lacks {', '.join(missing)}, "
            "which harness.load.locust uses; install a release that has them: "
            "pip install 'websocket-client>=1.8,<2'"
        )
    if not hasattr(events, "request") or not hasattr(events, "init_command_line_parser"):
        raise LoadError(
            f"Locust {getattr(locust, '__version__', '?')} has no events.request or "
            "events.init_command_line_parser, which harness.load.locust uses; install "
            "pip install 'locust>=2.30'"
        )


_probe()

_TEXT = websocket.ABNF.OPCODE_TEXT
_BINARY = websocket.ABNF.OPCODE_BINARY
_CLOSE_OPCODE = websocket.ABNF.OPCODE_CLOSE
#: Seconds a stopping client waits for the server's close frame before aborting.
_CLOSE_TIMEOUT = 2.0

#: Counters that are failures in Locust's terms: each unit fires one failed ``WS`` request event.
FAILURE_COUNTERS: dict[str, str] = {
    "lost": "a message the subscriber never received (seq missing at the end)",
    "duplicated": "a seq the subscriber had received before",
    "out_of_order": "a seq that arrived after a later one",
    "gaps": "seqs skipped on arrival (a hole opened)",
    "unconfirmed": "a publish never confirmed by the end",
    "skipped": "a send the schedule asked for and the generator could not make in time (overloaded, "
               "or not connected)",
}

#: The Locust request name an error kind's failures are listed under (by the kind's prefix).
_ERROR_NAMES = {"connect": "connect", "handshake": "connect", "auth": "connect", "close": "close",
                "error": "error", "frame": "frame"}

_ERROR_TEXT = {
    "connect:refused": "the server refused the TCP connection; is it listening at --host?",
    "connect:timeout": "no WebSocket handshake within --open-timeout",
    "connect:reset": "the server reset the TCP connection during the handshake",
    "connect:address": "--host's name did not resolve",
    "auth:failed": "the server refused the API key (--api-key)",
    "frame:invalid": "a frame the load protocol could not parse",
}


def _describe(kind: str) -> str:
    text = _ERROR_TEXT.get(kind)
    if text is not None:
        return f"{kind}: {text}"
    head, _, detail = kind.partition(":")
    if head == "handshake":
        return f"{kind}: the server answered the WebSocket upgrade with HTTP {detail}"
    if head == "close":
        return f"{kind}: the server closed the connection with code {detail}"
    if head == "error":
        return f"{kind}: the server sent an error frame with code {detail!r}"
    if head == "connect":
        return f"{kind}: the connection attempt failed"
    return kind


# ----------------------------------------------------------------- the recorder


class LocustRecorder:
    """A :class:`~harness.load.scenarios.Recorder` that fires a Locust request event per measurement.

    ``fire`` is ``environment.events.request.fire``.  A latency fires a
    successful ``WS`` request named after the metric, ``response_time`` in
    milliseconds and ``response_length`` = :attr:`length` (the driver sets it
    to the size of the frame it is handing to a client); an error fires a
    failed one (see the module docstring for the names), its
    ``response_time`` the time since :attr:`attempt` for connection
    failures, else 0; each unit of a :data:`FAILURE_COUNTERS` counter fires a
    failure named after the counter.  Everything is also kept in
    :attr:`metrics` (exact histograms and every counter) for the process's
    summary at the end.
    """

    def __init__(self, fire: Callable[..., None], metrics: Metrics) -> None:
        self.fire = fire
        self.metrics = metrics
        #: Bytes of the frame being handled (the ``response_length`` of a latency).
        self.length = 0
        #: When the current connection attempt began (clock seconds), for connect failures.
        self.attempt: float | None = None

    def latency(self, name: str, seconds: float, now: float) -> None:
        """Record ``seconds`` of ``name`` and fire it as a successful request."""
        self.metrics.latency(name, seconds, now)
        self.fire(request_type="WS", name=name, response_time=seconds * 1000.0,
                  response_length=self.length, exception=None, context={})

    def count(self, name: str, now: float, n: int = 1) -> None:
        """Add ``n`` to counter ``name``; a failure counter also fires ``n`` failures."""
        self.metrics.count(name, now, n)
        description = FAILURE_COUNTERS.get(name)
        if description is not None and n > 0:
            exception = LoadError(f"{name}: {description}")
            for _ in range(n):
                self.fire(request_type="WS", name=name, response_time=0.0, response_length=0,
                          exception=exception, context={})

    def error(self, kind: str, now: float, n: int = 1) -> None:
        """Count ``n`` errors of ``kind`` and fire each as a failure."""
        self.metrics.error(kind, now, n)
        head = kind.partition(":")[0]
        name = _ERROR_NAMES.get(head, head or "error")
        elapsed = 0.0
        if name == "connect" and self.attempt is not None:
            elapsed = max(0.0, now - self.attempt) * 1000.0
        exception = LoadError(_describe(kind))
        for _ in range(n):
            self.fire(request_type="WS", name=name, response_time=elapsed, response_length=0,
                      exception=exception, context={})

    def gauge(self, name: str, value: float) -> None:
        """Set gauge ``name`` (kept for the summary; Locust has no gauges)."""
        self.metrics.gauge(name, value)

    def failure(self, name: str, exception: BaseException) -> None:
        """Fire a failure that is not a scenario measurement (a bug in a scenario, a bad option)."""
        self.fire(request_type="WS", name=name, response_time=0.0, response_length=0,
                  exception=exception, context={})


# ----------------------------------------------------------------- options


_OFFSET = time.time() - time.monotonic()


def _now() -> float:
    return time.monotonic() + _OFFSET


def _rate(text: str) -> float | str:
    if text.strip().lower() == "max":
        return "max"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected messages/s (a number) or 'max' (as fast as confirmations come), got {text!r}"
        ) from None


#: Scenario options: argparse dest -> scenario field.  None = not given (the scenario's default).
_FIELDS = {
    "clients": "clients",
    "publishers": "publishers",
    "size": "size",
    "inflight": "inflight",
    "channel": "channel",
    "drop_share": "drop_share",
    "drops_per_client": "drops_per_client",
    "reconnect_delay": "reconnect_delay",
    "duration": "duration",
    "seed": "seed",
}


def add_arguments(parser: Any) -> None:
    """Add this module's options to Locust's parser (an ``init_command_line_parser`` listener).

    ``--scenario`` and its parameters (as ``nova-ws load`` names them),
    ``--ws-profile``, ``--api-key``, ``--open-timeout`` and
    ``--drain-timeout``; two hidden ones carry what the master resolves at
    each test start (the run's tag, the client count) to its workers.
    """
    # On the parser itself: only Locust's own add_argument knows include_in_web_ui and is_secret.
    group = parser
    group.add_argument("--scenario", choices=sorted(SCENARIOS), default="publish",
                       include_in_web_ui=False,
                       help="what every virtual client does (default: publish)")
    group.add_argument("--clients", type=int, default=None,
                       help="clients the rate is spread over (publish, connections) or subscribers "
                            "(fanout, reconnect-storm); default: the users started, minus the publishers")
    group.add_argument("--publishers", type=int, default=None, include_in_web_ui=False,
                       help="publishers of fanout and reconnect-storm (default: 1); spawned first, "
                            "exactly this many over all workers")
    group.add_argument("--rate", type=_rate, default=None,
                       help="messages/s in all, spread over the publishers, or 'max' (as fast as "
                            "confirmations come); default: the scenario's")
    group.add_argument("--size", type=int, default=None, help="message content in bytes (default: 64)")
    group.add_argument("--inflight", type=int, default=None,
                       help="outstanding publishes per client with --rate max (default: 1)")
    group.add_argument("--channel", default=None,
                       help="channel of publish and fanout (default: one unique to the run)")
    group.add_argument("--drop-share", type=float, default=None,
                       help="reconnect-storm: share of subscribers that drop (default: 0.5)")
    group.add_argument("--drops-per-client", type=int, default=None,
                       help="reconnect-storm: drops per dropping subscriber (default: 2)")
    group.add_argument("--reconnect-delay", type=float, default=None,
                       help="reconnect-storm: seconds before a dropped subscriber reconnects (default: 0.05)")
    group.add_argument("--duration", type=float, default=None,
                       help="reconnect-storm: seconds over which the drops are spread "
                            "(default: --run-time, else 60)")
    group.add_argument("--seed", type=int, default=None,
                       help="reconnect-storm: which subscribers drop, and when (default: 1234)")
    group.add_argument("--ws-profile", choices=("nova", "generic"), default="nova", include_in_web_ui=False,
                       help="load protocol: nova (the reference server's; authenticates, channels) or "
                            "generic (any echo server; connections and publish only)")
    group.add_argument("--api-key", default=NovaProtocol.api_key, is_secret=True,
                       help=f"Nova API key (default: {NovaProtocol.api_key})")
    group.add_argument("--open-timeout", type=float, default=5.0,
                       help="seconds for one connection's TCP and WebSocket handshake (default: 5)")
    group.add_argument("--drain-timeout", type=float, default=2.0,
                       help="seconds a stopping user waits for its outstanding confirmations (default: 2)")
    group.add_argument("--ws-run-tag", default=None, include_in_web_ui=False, help=argparse.SUPPRESS)
    group.add_argument("--ws-run-clients", type=int, default=None, include_in_web_ui=False,
                       help=argparse.SUPPRESS)


def _protocol(options: Any) -> LoadProtocol:
    if getattr(options, "ws_profile", "nova") == "generic":
        return GenericProtocol()
    return NovaProtocol(api_key=getattr(options, "api_key", None) or NovaProtocol.api_key)


def scenario_from_options(
    options: Any, *, users: int | None = None, tag: str = "load", timestamp: str | None = None
) -> Scenario:
    """The scenario Locust's parsed ``options`` describe (see :func:`add_arguments`).

    ``users`` is the number of users the run starts with, the default client
    count (minus the publishers of ``fanout`` and ``reconnect-storm``);
    ``tag`` makes client ids unique.  Raises :class:`LoadConfigError` for a
    parameter the scenario does not have or a value out of range.
    """
    name = getattr(options, "scenario", None) or "publish"
    cls = SCENARIOS.get(name)
    if cls is None:
        raise LoadConfigError(f"unknown --scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    known = {f.name for f in fields(cls)} | {"clients"}
    values: dict[str, Any] = {}
    for dest, field_name in _FIELDS.items():
        value = getattr(options, dest, None)
        if value is None:
            continue
        if field_name not in known:
            raise LoadConfigError(
                f"--{dest.replace('_', '-')} does not apply to the {name} scenario; its parameters: "
                f"{', '.join(sorted(known - {'protocol', 'tag', 'connect_rate', 'max_pending'}))}"
            )
        values[field_name] = value
    rate = getattr(options, "rate", None)
    closed_loop = rate == "max"
    if rate is not None:
        if "rate" not in known:
            raise LoadConfigError(f"--rate does not apply to the {name} scenario (it sends no messages)")
        if not closed_loop:
            values["rate"] = float(rate)
    if "duration" not in values:
        run_time = getattr(options, "run_time", None)
        values["duration"] = float(run_time) if run_time else 60.0
    if "clients" not in values:
        resolved = getattr(options, "ws_run_clients", None)
        if resolved is not None:
            values["clients"] = resolved
        elif users is not None:
            publishers = values.get("publishers", 1) if issubclass(cls, Fanout) else 0
            if users - publishers < 1:
                raise LoadConfigError(
                    f"{name}: {users} user(s) leave no room for a client beside {publishers} "
                    f"publisher(s); start at least {publishers + 1} users (-u)"
                )
            values["clients"] = users - publishers
    scenario = create(name, _protocol(options), **values)
    if closed_loop:
        scenario = scenario.with_values(rate=None)
    changes: dict[str, Any] = {"tag": tag}
    if timestamp is not None:
        changes["protocol"] = scenario.protocol.with_timestamp(timestamp)
    scenario = scenario.with_values(**changes)
    scenario.validate()
    return scenario


def _base_url(host: str | None) -> str:
    if not host:
        raise LoadConfigError(
            "no --host: pass the server's WebSocket base URL, e.g. --host ws://127.0.0.1:8000 "
            "(Nova clients append /debug/{client_id})"
        )
    for http, ws in (("http://", "ws://"), ("https://", "wss://")):
        if host.startswith(http):
            return ws + host[len(http):]
    if not host.startswith(("ws://", "wss://")):
        raise LoadConfigError(f"--host must be a ws://, wss://, http:// or https:// URL, got {host!r}")
    return host


# ----------------------------------------------------------------- one process's run


class _Run:
    """One Locust process's share of a run: the session, and the indexes handed to users by role."""

    def __init__(self, environment: Environment) -> None:
        options = environment.parsed_options
        runner = environment.runner
        run_tag = getattr(options, "ws_run_tag", None) or secrets.token_hex(4)
        worker = getattr(runner, "worker_index", None) if isinstance(runner, WorkerRunner) else None
        process = f"w{worker}" if isinstance(worker, int) else secrets.token_hex(2)
        users = runner.target_user_count if runner is not None else None
        scenario = scenario_from_options(
            options, users=users, tag=f"{run_tag}{process}",
            timestamp=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )
        if "channel" in {f.name for f in fields(scenario)} and not getattr(options, "channel", None):
            scenario = scenario.with_values(channel=f"load-{run_tag}")
        self.scenario = scenario
        self.base_url = _base_url(environment.host)
        self.metrics = Metrics(start=_now(), primary=scenario.primary_metric)
        self.recorder = LocustRecorder(environment.events.request.fire, self.metrics)
        self.session: Session = scenario.session(self.recorder)
        self.open_timeout = float(getattr(options, "open_timeout", None) or 5.0)
        self.drain_timeout = float(getattr(options, "drain_timeout", None) or 0.0)
        publishers = scenario.publishers if isinstance(scenario, Fanout) else 0
        self._next = {"publisher": 0, "client": publishers}
        self._end = {"publisher": publishers, "client": scenario.clients}
        self.drivers: list[_Driver] = []
        self.finished = False

    def take(self, role: str) -> VirtualClient:
        """The next virtual client of ``role`` on this process."""
        scenario = self.scenario
        if role == "publisher" and not isinstance(scenario, Fanout):
            raise LoadConfigError(
                f"WsPublisherUser runs the publishers of fanout and reconnect-storm; the {scenario.name} "
                "scenario has none (its WsClientUser users publish): leave WsPublisherUser out"
            )
        index = self._next[role]
        if index >= self._end[role]:
            what = "publisher(s) (--publishers)" if role == "publisher" else "client(s) (--clients)"
            first = 0 if role == "publisher" else self._end["publisher"]
            count = self._end[role] - first
            raise LoadConfigError(
                f"{scenario.name}: this Locust process already runs all {count} {what}; a user beyond "
                "them has no virtual client: start no more users than that, or raise the option"
            )
        self._next[role] = index + 1
        return self.session.client(index)

    def stop_sending(self) -> None:
        """Stop every client's publishing at once (Locust is stopping the test)."""
        now = _now()
        for driver in self.drivers:
            driver.stop_sending(now)

    def finish(self) -> None:
        """Record what only the end knows, and log this process's figures."""
        if self.finished:
            return
        self.finished = True
        self.session.finish(_now())
        metrics = self.metrics
        counters = ", ".join(f"{k}={v}" for k, v in sorted(metrics.counters.items())) or "none"
        errors = ", ".join(f"{k}={v}" for k, v in sorted(metrics.errors.items())) or "none"
        latencies = "; ".join(
            f"{name} n={s.count} p50={s.p50_us / 1000:.2f}ms p99={s.p99_us / 1000:.2f}ms"
            for name, s in metrics.summaries().items()
        ) or "none"
        logger.info(
            "nova-ws load %s (this process, %d clients): counters: %s; errors: %s; latencies: %s",
            self.scenario.name, len(self.session.made), counters, errors, latencies,
        )


_RUNS: WeakKeyDictionary[Environment, _Run] = WeakKeyDictionary()


def _run_of(environment: Environment) -> _Run:
    run = _RUNS.get(environment)
    if run is None:
        run = _RUNS[environment] = _Run(environment)
    return run


# ----------------------------------------------------------------- one virtual client on gevent


def _failure_kind(exc: BaseException) -> str:
    """The error kind of a failed connection attempt: ``connect:refused``, ``handshake:403``..."""
    if isinstance(exc, websocket.WebSocketBadStatusException):
        return f"handshake:{exc.status_code}"
    if isinstance(exc, (websocket.WebSocketTimeoutException, TimeoutError, socket.timeout)):
        return "connect:timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connect:refused"
    if isinstance(exc, ConnectionResetError):
        return "connect:reset"
    if isinstance(exc, (websocket.WebSocketAddressException, socket.gaierror)):
        return "connect:address"
    if isinstance(exc, websocket.WebSocketException):
        return "handshake:invalid"
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, "")
        return f"connect:{name.lower() or 'oserror'}"
    return f"connect:{type(exc).__name__}"


def _close_code(data: bytes) -> tuple[int, str]:
    if len(data) < 2:
        return 1005, ""
    return int.from_bytes(data[:2], "big"), data[2:].decode("utf-8", "replace")


class _Driver:
    """Pumps one virtual client: connects on its task greenlet, receives on a greenlet of its own.

    Both greenlets call into the client; gevent switches only at I/O, and a
    client's methods do none, so the calls never interleave.
    """

    def __init__(self, run: _Run, vc: VirtualClient) -> None:
        self.owner = run
        self.vc = vc
        self.url = vc.url(run.base_url)
        self.recorder = run.recorder
        self.ws: Any = None
        self.receiver: Any = None
        self.pending: Connect | None = None
        self.wake = Event()
        #: What the task greenlet sleeps until (-inf while it runs): a frame wakes it only for an earlier tick.
        self.waiting_for = -math.inf
        self.quitting = False
        self.closing = False
        self.sending_stopped = False
        self.draining = False
        self.begun = False
        self.attempt = 0.0
        self.broken = False

    # -- actions

    def apply(self, actions: Sequence[object]) -> None:
        for action in actions:
            kind = type(action)
            if kind is Send:
                ws = self.ws
                if ws is not None:
                    try:
                        ws.send(action.text)  # type: ignore[attr-defined]
                    except (websocket.WebSocketException, OSError):
                        pass  # the receiver sees the connection go and tells the client
            elif kind is Close:
                ws = self.ws
                if ws is not None:
                    try:
                        ws.send_close(action.code, action.reason)  # type: ignore[attr-defined]
                    except (websocket.WebSocketException, OSError, ValueError):
                        _abort(ws)
            elif kind is Drop:
                if self.ws is not None:
                    _abort(self.ws)
            elif kind is Connect:
                self.pending = action  # type: ignore[assignment]
                if self.ws is not None:
                    _abort(self.ws)
        self.after()

    def after(self) -> None:
        """Start the measured phase once set up; wake the task greenlet when it has something to do."""
        vc = self.vc
        if not self.begun and vc.ready and vc.state == vc.READY and not self.sending_stopped:
            self.begun = True
            self.apply(vc.begin(_now()))
            return
        t = vc.next_tick
        if self.pending is not None or self.draining or (t is not None and t < self.waiting_for):
            self.wake.set()

    def call(self, method: Callable[..., list[Any]], *args: Any, length: int = 0) -> None:
        recorder = self.recorder
        recorder.length = length
        recorder.attempt = self.attempt
        try:
            actions = method(*args)
        except Exception as exc:  # noqa: BLE001 - a scenario bug becomes a failure event, not a dead user
            self.broke(exc)
            return
        self.apply(actions)

    def broke(self, exc: BaseException) -> None:
        # A scenario that raises is a bug to see, not a reason to take the whole run down.
        if not self.broken:
            self.broken = True
            logger.error("load scenario error in %s:\n%s", self.vc.client_id, traceback.format_exc())
        self.recorder.failure("scenario", exc)

    # -- the task greenlet

    def run(self) -> None:
        """Connect, reconnect and tick until the user is stopped (then return)."""
        vc = self.vc
        wake = self.wake
        self.attempt = _now()
        self.call(vc.start, self.attempt)
        burst = 0
        while not self.quitting:
            wake.clear()
            pending = self.pending
            if pending is not None:
                self.pending = None
                if pending.delay > 0:
                    self._sleep(_now() + pending.delay)
                    if self.quitting:
                        break
                self.connect()
                continue
            now = _now()
            t = vc.next_tick if self.begun else None
            if t is not None and t <= now:
                self.call(vc.tick, now)
                burst += 1
                if burst % 64 == 0:
                    gevent.sleep(0)  # a long catch-up must let the receivers run
                continue
            burst = 0
            self._sleep(math.inf if t is None else t)

    def _sleep(self, until: float) -> None:
        self.waiting_for = until
        try:
            self.wake.wait(None if until == math.inf else max(0.0, until - _now()))
        finally:
            self.waiting_for = -math.inf

    def connect(self) -> None:
        vc = self.vc
        self.attempt = started = _now()
        try:
            ws = websocket.create_connection(
                self.url, timeout=self.owner.open_timeout, enable_multithread=True,
                skip_utf8_validation=True, http_no_proxy=["*"],
            )
        except Exception as exc:  # noqa: BLE001 - whatever the client raises is this attempt's failure
            if isinstance(exc, (websocket.WebSocketException, OSError)):
                self.call(vc.failed, _failure_kind(exc), _now())
            else:
                self.broke(exc)
            return
        ws.settimeout(None)  # an idle connection waits for frames as long as it lives
        if self.closing:
            ws.close(1000, b"load run finished", timeout=1)
            return
        self.ws = ws
        self.attempt = started
        self.call(vc.opened, _now())
        if self.ws is ws:
            self.receiver = gevent.spawn(self.receive, ws)

    # -- the receiving greenlet

    def receive(self, ws: Any) -> None:
        vc = self.vc
        code, reason = 1006, ""
        try:
            while True:
                opcode, frame = ws.recv_data_frame(True)
                if opcode == _TEXT or opcode == _BINARY:
                    data = frame.data
                    self.call(vc.frame, data.decode("utf-8", "replace"), _now(), length=len(data))
                elif opcode == _CLOSE_OPCODE:
                    code, reason = _close_code(frame.data)
                    break
        except (websocket.WebSocketException, OSError, ValueError):
            pass  # the connection went without a close frame: 1006
        except Exception as exc:  # noqa: BLE001 - a scenario bug becomes a failure event, not a dead user
            self.broke(exc)
        finally:
            ws.shutdown()
            if self.ws is ws:
                self.ws = None
            if self.receiver is gevent.getcurrent():
                self.receiver = None
        self.call(vc.closed, code, reason, _now())

    # -- the end

    def stop_sending(self, now: float) -> None:
        """The measured phase is over for this client: it sends nothing new."""
        if not self.sending_stopped:
            self.sending_stopped = True
            self.call(self.vc.finish_sending, now)

    def finish(self) -> None:
        """Stop sending, wait (bounded) for what is outstanding, close cleanly, then abort what remains.

        The wait goes on through a reconnection (a subscriber dropped by
        ``reconnect-storm`` resubscribes and catches up), so a client is not
        counted as losing what it was about to replay.
        """
        vc = self.vc
        self.quitting = True
        try:
            self.stop_sending(_now())
            self.draining = True
            deadline = _now() + self.owner.drain_timeout
            while not vc.settled and vc.live and _now() < deadline:
                self.wake.clear()
                pending = self.pending
                if pending is not None:
                    self.pending = None
                    if pending.delay > 0:
                        self.wake.wait(min(pending.delay, max(0.0, deadline - _now())))
                    self.connect()
                    continue
                self.wake.wait(max(0.0, deadline - _now()))
            self.draining = False
            self.closing = True
            self.call(vc.stop, _now())
            receiver = self.receiver
            if receiver is not None:
                receiver.join(timeout=_CLOSE_TIMEOUT)
        finally:
            self.closing = True
            receiver = self.receiver
            if receiver is not None:
                receiver.kill(block=True, timeout=1.0)
            if self.ws is not None:
                _abort(self.ws)
                self.ws = None


def _abort(ws: Any) -> None:
    # No close frame: SO_LINGER 0 turns the close into a TCP reset; the server sees the socket vanish.
    sock = ws.sock
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    ws.shutdown()


# ----------------------------------------------------------------- the users


class ScenarioUser(User):
    """A Locust user that is one virtual client of the process's scenario (see the module docstring).

    ``role`` picks which clients of the scenario this class takes:
    ``client`` or ``publisher``.  Subclasses may change Locust attributes
    such as ``weight``; the run itself is configured by the command line
    (:func:`add_arguments`).  The one task lasts the client's whole life, so
    ``wait_time`` plays no part.
    """

    abstract = True
    role: ClassVar[str] = "client"
    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._driver: _Driver | None = None

    def on_start(self) -> None:
        """Take this process's next virtual client of the role (a failure ``scenario`` when there is none)."""
        try:
            run = _run_of(self.environment)
            vc = run.take(self.role)
        except LoadError as exc:
            logger.error("%s", exc)
            self.environment.events.request.fire(
                request_type="WS", name="scenario", response_time=0.0, response_length=0,
                exception=exc, context={},
            )
            return
        self._driver = _Driver(run, vc)
        run.drivers.append(self._driver)

    @task
    def run_client(self) -> None:
        """The virtual client's whole life: returns only when Locust stops the user."""
        driver = self._driver
        if driver is None:
            Event().wait()  # no client to drive (reported at start): idle until Locust stops the user
            return
        driver.run()

    def stop(self, force: bool = False) -> bool:
        """Locust's stop; a graceful one (``--stop-timeout``) also ends the client's loop."""
        driver = self._driver
        if driver is not None and not force:
            driver.quitting = True
            driver.wake.set()
        return bool(super().stop(force))

    def on_stop(self) -> None:
        """Stop sending, drain (``--drain-timeout``), close cleanly."""
        driver = self._driver
        if driver is not None:
            driver.finish()


class WsClientUser(ScenarioUser):
    """The scenario's clients: every client of ``connections`` and ``publish``, the fanout subscribers."""

    abstract = False
    role = "client"


class WsPublisherUser(ScenarioUser):
    """The publishers of ``fanout`` and ``reconnect-storm``: ``fixed_count`` = ``--publishers``."""

    abstract = False
    role = "publisher"
    fixed_count = 1


# ----------------------------------------------------------------- Locust's events


def _is_worker(environment: Environment) -> bool:
    return isinstance(environment.runner, WorkerRunner)


def _configure_classes(environment: Environment, scenario: Scenario) -> None:
    # Only the master (or a standalone process) decides which classes spawn and how many publishers.
    if isinstance(scenario, Fanout):
        for cls in environment.user_classes:
            if issubclass(cls, WsPublisherUser):
                cls.fixed_count = scenario.publishers
    else:
        kept = [cls for cls in environment.user_classes if not issubclass(cls, WsPublisherUser)]
        if kept:
            environment.user_classes[:] = kept


def _on_parser(parser: Any, **_kwargs: Any) -> None:
    add_arguments(parser)


def _on_init(environment: Environment, **_kwargs: Any) -> None:
    # gevent's timers count from the loop's cached time, which has not moved since the hub was made
    # if the loop has not run yet: after a slow start (imports on a busy machine) Locust's --run-time
    # timer, set right after this event, would fire at once.
    gevent.get_hub().loop.update_now()
    if _is_worker(environment) or environment.parsed_options is None:
        return
    options = environment.parsed_options
    users = getattr(options, "num_users", None)
    scenario = scenario_from_options(options, users=users)
    for warning in scenario.warnings():
        logger.warning("%s", warning)
    if environment.host:
        _base_url(environment.host)
    _configure_classes(environment, scenario)


def _on_test_start(environment: Environment, **_kwargs: Any) -> None:
    _RUNS.pop(environment, None)
    options = environment.parsed_options
    if _is_worker(environment) or options is None:
        return
    # Resolved once here and forwarded to the workers with the options of each spawn message.
    options.ws_run_tag = secrets.token_hex(4)
    options.ws_run_clients = None
    runner = environment.runner
    scenario = scenario_from_options(options, users=runner.target_user_count if runner else None)
    options.ws_run_clients = scenario.clients - (scenario.publishers if isinstance(scenario, Fanout) else 0)
    _configure_classes(environment, scenario)


def _on_test_stopping(environment: Environment, **_kwargs: Any) -> None:
    run = _RUNS.get(environment)
    if run is not None:
        run.stop_sending()


def _on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    run = _RUNS.get(environment)
    if run is not None:
        run.finish()


# Registered on import, as Locust plugins do: a locustfile that imports the users gets the options.
_LISTENERS: dict[str, Callable[..., None]] = {
    "init_command_line_parser": _on_parser,
    "init": _on_init,
    "test_start": _on_test_start,
    "test_stopping": _on_test_stopping,
    "test_stop": _on_test_stop,
}
for _event, _listener in _LISTENERS.items():
    _hook: Any = getattr(events, _event)
    _hook.add_listener(_listener)
