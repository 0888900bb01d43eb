"""``nova-ws load SCENARIO ...``: run a load scenario from the command line and say where it breaks.

The entry point is :func:`main` (``nova-ws`` hands it the arguments after
``load``, through the ``nova_ws.commands`` entry point group).  The options
for the scenarios' parameters are made from the scenario dataclasses'
fields and ``--help`` from their docstrings, so neither can drift from
:mod:`harness.load.scenarios`.

Exit status (:data:`EXIT_PASSED` ...):

- 0: the run ended and every threshold passed;
- 1: a threshold failed;
- 2: bad input: an unknown scenario (the known ones are listed, with a close
  match), a bad threshold (the grammar is named), a bad parameter, ramp or
  URL; nothing was sent;
- 3: the run was aborted: no client could connect (an unreachable URL, a
  rejected handshake), the server closed every connection mid-run, the
  embedded server did not start, or Ctrl-C.

In every case ``--json``, ``--csv`` and ``--html`` are written before the
exit, with the figures gathered so far (``aborted`` says why the run
stopped; for bad input, a run with no step saying what was wrong).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import textwrap
import typing
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

from .errors import LoadConfigError, LoadError
from .output import write_csv, write_json
from .progress import ProgressLine
from .ramp import Ramp, parse_values
from .report import describe_error, findings, step_label, verdict, write_html
from .results import RunResult
from .scenarios import SCENARIOS, GenericProtocol, LoadProtocol, NovaProtocol, Scenario, create
from .thresholds import GRAMMAR, parse_all

__all__ = [
    "EXIT_ABORTED",
    "EXIT_BAD_INPUT",
    "EXIT_PASSED",
    "EXIT_THRESHOLD_FAILED",
    "build_parser",
    "main",
    "parse_ramp",
    "summary",
]

#: Exit statuses (the module docstring says when each happens).
EXIT_PASSED = 0
EXIT_THRESHOLD_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ABORTED = 3

#: Fields of the scenario dataclasses that are not command-line options (the engine sets ``tag``).
_NOT_OPTIONS = {"protocol", "tag"}

#: What each scenario parameter means, for ``--help`` (the list of options itself comes from the fields).
_PARAMETER_HELP = {
    "clients": "virtual clients (fanout, reconnect-storm: the subscribers)",
    "publishers": "clients that publish",
    "subscribers": "clients subscribed to the channel",
    "rate": "messages/s published in all, or 'max': as fast as confirmations come",
    "duration": "seconds of the measured phase, after every client is set up",
    "connect_rate": "new connections per second while ramping up (default: as fast as handshakes allow)",
    "inflight": "publishes outstanding per client with --rate max",
    "size": "bytes of content per message",
    "channel": "channel name (default: one unique to the run)",
    "max_pending": "most unconfirmed publishes a client keeps track of",
    "drop_share": "share of the subscribers that drop their socket (0..1)",
    "drops_per_client": "times each dropping subscriber drops",
    "reconnect_delay": "seconds before a dropped subscriber reconnects",
    "seed": "seed choosing who drops and when",
}

#: A ramp step is degraded past these (``--knee-p99``, ``--knee-errors``).
_KNEE_P99 = 0.1
_KNEE_ERRORS = 0.01

#: Parameters in seconds, which also take 500ms, 2s...
_SECONDS = {"duration", "reconnect_delay"}

_EXIT_HELP = """\
exit status:
  0  passed: the run ended and every threshold passed
  1  a threshold failed
  2  bad input: unknown scenario, bad threshold, parameter, ramp or URL (nothing was sent)
  3  aborted: unreachable URL, handshake rejected, server closed every connection mid-run,
     embedded server did not start, or Ctrl-C
  --json/--csv/--html are written in every case, with the figures gathered so far."""

_EXAMPLES = """\
examples:
  nova-ws load fanout                                  # embedded reference server, defaults
  nova-ws load publish --clients 4 --rate 400 --duration 10 --threshold 'p99<50ms' --json run.json
  nova-ws load publish --rate max --inflight 8         # as fast as confirmations come
  nova-ws load reconnect-storm --reset-via-proxy       # drops are TCP resets at a fault proxy
  nova-ws load ramp --ramp publish:rate=100..1600*2 --knee-p99 50ms --html ramp.html
  nova-ws load connections --clients 2000 --connect-rate 500 --url ws://127.0.0.1:8000 --server-pid 1234
  nova-ws load publish --profile generic --url ws://127.0.0.1:9000/echo   # any echo server"""

_RAMP_HELP = """\
--ramp SCENARIO:[PARAMETER=]VALUES steps one parameter of SCENARIO through VALUES, each step a
fresh run of the scenario, until a step degrades (the knee: primary p99 over --knee-p99, errors
over --knee-errors, achieved rate under --knee-achieved of the offered one). PARAMETER defaults to
the scenario's own ({defaults}). VALUES: a list 10,20,40; a geometric range 100..1600*2 (doubling);
a linear range 100..1000+100. The other options set the scenario's other parameters.
e.g. --ramp publish:rate=100..1600*2, --ramp fanout:subscribers=10,50,100, --ramp connections:500..5000+500"""


class _UsageError(Exception):
    """The command line does not parse (argparse's message)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


# ----------------------------------------------------------------- values


class _Max:
    """``--rate max``: no target rate, publish as fast as confirmations come."""

    def __repr__(self) -> str:
        return "max"


_MAX = _Max()

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(us|µs|ms|s)?\s*$")


def _seconds(text: str) -> float:
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration like 100ms, 0.5s or 2 (seconds), got {text!r}")
    scale = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0}[match.group(2)]
    return float(match.group(1)) * scale


def _share(text: str) -> float:
    value = text.strip()
    try:
        return float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share like 1% or 0.01, got {text!r}") from None


def _rate(text: str) -> float | _Max:
    if text.strip().lower() in ("max", "none"):
        return _MAX
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected messages/s (a number) or 'max', got {text!r}") from None


@dataclass(frozen=True)
class _Parameter:
    name: str
    type: type
    scenarios: tuple[str, ...]


def _parameters() -> list[_Parameter]:
    """Every scenario field that is an option, in first-seen order, with the scenarios that have it."""
    found: dict[str, _Parameter] = {}
    for scenario_name, cls in SCENARIOS.items():
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.name in _NOT_OPTIONS:
                continue
            hint = hints[f.name]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            kind = args[0] if args else hint
            known = found.get(f.name)
            found[f.name] = _Parameter(f.name, kind, (*known.scenarios, scenario_name) if known else (scenario_name,))
    if "clients" in found:
        found["clients"] = _Parameter("clients", int, tuple(SCENARIOS))  # fanout maps it to subscribers
    order = list(_PARAMETER_HELP)
    return sorted(found.values(), key=lambda p: order.index(p.name) if p.name in order else len(order))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(cls: type[Scenario], name: str) -> str:
    for f in fields(cls):
        if f.name == name:
            if f.default is MISSING:
                return "?"
            if f.default is None:
                return {"rate": "max", "connect_rate": "max", "channel": "per run"}.get(name, "none")
            return f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
    return {"clients": "= --subscribers"}.get(name, "?")


# ----------------------------------------------------------------- help


def _plain(doc: str) -> str:
    """A docstring as terminal text: roles and double backquotes dropped."""
    doc = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: m.group(1).rsplit(".", 1)[-1], doc)
    return re.sub(r"``([^`]+)``", r"\1", doc)


def _doc(cls: type) -> str:
    import inspect

    return _plain(inspect.getdoc(cls) or "")


def _scenarios_help() -> str:
    lines = ["scenarios (SCENARIO), from harness.load.scenarios:"]
    width = 96
    for name, cls in SCENARIOS.items():
        doc = _doc(cls)
        doc = re.sub(rf"^{re.escape(name)}:\s*", "", doc)
        lines.append(f"  {name}")
        for paragraph in doc.split("\n\n"):
            lines.extend(textwrap.wrap(" ".join(paragraph.split()), width, initial_indent="      ",
                                       subsequent_indent="      ", break_on_hyphens=False))
        params = [p for p in _parameters() if name in p.scenarios]
        options = ", ".join(f"{_flag(p.name)} ({_default_text(cls, p.name)})" for p in params)
        lines.extend(textwrap.wrap(f"options (default): {options}", width, initial_indent="      ",
                                   subsequent_indent="        ", break_on_hyphens=False))
        lines.append(
            f"      primary latency: {cls.primary_metric}; throughput: {cls.throughput_counter}/s; "
            f"a ramp steps: {cls.ramp_parameter}"
        )
    defaults = ", ".join(f"{n}: {c.ramp_parameter}" for n, c in SCENARIOS.items())
    lines.append("  ramp")
    for paragraph in _RAMP_HELP.format(defaults=defaults).split("\n\n"):
        lines.extend(textwrap.wrap(" ".join(paragraph.split()), width, initial_indent="      ",
                                   subsequent_indent="      ", break_on_hyphens=False))
    lines.append("")
    lines.append("thresholds (--threshold, repeatable; judged on the whole run; every one must pass):")
    lines.extend(textwrap.wrap(GRAMMAR, width, initial_indent="  ", subsequent_indent="  "))
    lines.append("  A latency without METRIC is the scenario's primary one; a latency nobody measured fails.")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The ``nova-ws load`` parser (its epilog documents every scenario, the thresholds and the exit status)."""
    parser = _Parser(
        prog="nova-ws load",
        description=textwrap.fill(
            "Load, latency and connection-limit testing of a WebSocket server with the asyncio engine. "
            "With no --url the reference server is started on an ephemeral loopback port for the run; "
            "the summary at the end says where it breaks.",
            96,
        ),
        epilog=f"{_scenarios_help()}\n\n{_EXIT_HELP}\n\n{_EXAMPLES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", metavar="SCENARIO", help=f"one of {', '.join([*SCENARIOS, 'ramp'])}")
    target = parser.add_argument_group("target")
    target.add_argument("--url", help="server base URL, ws:// or http:// (Nova: the client path is appended; "
                                      "or a full URL with {client_id}); default: the embedded reference server")
    target.add_argument("--profile", choices=("nova", "generic"), default="nova",
                        help="nova: the Nova protocol (authenticates, channels); generic: any server echoing "
                             "text frames (connections and publish only); default nova")
    target.add_argument("--api-key", help=f"Nova API key (default {NovaProtocol.api_key!r})")
    target.add_argument("--allow-remote", action="store_true",
                        help="allow a URL that is not on this machine (a server you are entitled to load)")
    target.add_argument("--server-pid", type=int, metavar="PID",
                        help="pid of the local server behind --url, for its RSS per connection")
    scenario = parser.add_argument_group("scenario parameters (the scenarios that take each are listed)")
    for p in _parameters():
        kind: Any = p.type
        metavar = {int: "N", float: "X", str: "NAME"}.get(p.type, "VALUE")
        if p.name == "rate":
            kind, metavar = _rate, "R"
        elif p.name in _SECONDS:
            kind, metavar = _seconds, "DURATION"
        elif p.name.endswith("_rate"):
            metavar = "R"
        where = "all" if len(p.scenarios) == len(SCENARIOS) else ", ".join(p.scenarios)
        scenario.add_argument(_flag(p.name), dest=p.name, type=kind, default=None, metavar=metavar,
                              help=f"{_PARAMETER_HELP.get(p.name, 'scenario parameter')} [{where}]")
    ramp = parser.add_argument_group("ramp")
    ramp.add_argument("--ramp", metavar="SCENARIO:[PARAM=]VALUES",
                      help="what the ramp steps, e.g. publish:rate=100..1600*2 (see below)")
    ramp.add_argument("--knee-p99", type=_seconds, default=None, metavar="DURATION",
                      help="a step whose primary p99 is above this degraded (default 100ms)")
    ramp.add_argument("--knee-errors", type=_share, default=None, metavar="SHARE",
                      help="a step with more errors per operation degraded (default 1%%)")
    ramp.add_argument("--knee-achieved", type=_share, default=None, metavar="SHARE",
                      help="a step achieving less than this share of its offered rate degraded (e.g. 90%%)")
    ramp.add_argument("--all-steps", action="store_true", help="run every step, past the knee")
    checks = parser.add_argument_group("thresholds and output")
    checks.add_argument("--threshold", action="append", default=[], metavar="EXPR",
                        help="fail the run (exit 1) unless EXPR holds, e.g. p99<50ms, errors<1%%, lost==0")
    checks.add_argument("--json", type=Path, metavar="FILE", help="write the whole result as JSON")
    checks.add_argument("--csv", type=Path, metavar="FILE",
                        help="write one row per step, and the timeline beside it (FILE_timeline.csv)")
    checks.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report")
    checks.add_argument("--quiet", "-q", action="store_true", help="no live progress line (the summary is printed)")
    engine = parser.add_argument_group("engine")
    engine.add_argument("--connect-concurrency", type=int, metavar="N",
                        help="handshakes in progress at once while setting up (default 50)")
    engine.add_argument("--open-timeout", type=_seconds, metavar="DURATION", help="one handshake's deadline (default 5s)")
    engine.add_argument("--setup-timeout", type=_seconds, metavar="DURATION",
                        help="set-up deadline (default 10s plus what --connect-rate needs)")
    engine.add_argument("--drain-timeout", type=_seconds, metavar="DURATION",
                        help="longest wait for outstanding confirmations after the run (default 5s)")
    engine.add_argument("--reset-via-proxy", action="store_true",
                        help="reconnect-storm: clients go through a fault proxy put in front of the server, "
                             "and each drop is a TCP reset there (the server sees it too), not the client's abort")
    return parser


# ----------------------------------------------------------------- planning


def _unknown_scenario(name: str) -> LoadConfigError:
    known = [*SCENARIOS, "ramp"]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return LoadConfigError(f"unknown scenario {name!r}{hint} known: {', '.join(sorted(known))}")


def _protocol(args: argparse.Namespace) -> LoadProtocol:
    if args.profile == "generic":
        if args.api_key is not None:
            raise LoadConfigError("--api-key applies to the nova profile; the generic profile does not authenticate")
        return GenericProtocol()
    return NovaProtocol() if args.api_key is None else NovaProtocol(api_key=args.api_key)


def _scenario(name: str, values: dict[str, Any], protocol: LoadProtocol) -> Scenario:
    cls = SCENARIOS[name]
    accepted = {f.name for f in fields(cls)} | {"clients"}
    for key in values:
        if key not in accepted:
            owners = [n for n, c in SCENARIOS.items() if key in {f.name for f in fields(c)}]
            raise LoadConfigError(
                f"{_flag(key)} does not apply to {name}; it applies to {', '.join(owners)} "
                f"(nova-ws load --help lists each scenario's options)"
            )
    if "clients" in values and "subscribers" in values and "clients" not in {f.name for f in fields(cls)}:
        raise LoadConfigError(f"{name}: --clients sets the subscribers; give --clients or --subscribers, not both")
    closed_loop = values.get("rate") is _MAX
    values = {k: v for k, v in values.items() if v is not _MAX}
    scenario = create(name, protocol, **values)
    if closed_loop:
        scenario = scenario.with_values(rate=None)
        scenario.validate()
    return scenario


def parse_ramp(spec: str) -> tuple[str, str | None, tuple[float, ...]]:
    """``SCENARIO:[PARAMETER=]VALUES`` -> (scenario, parameter or None, values); LoadConfigError when bad."""
    form = "SCENARIO:[PARAMETER=]VALUES, e.g. publish:rate=100..1600*2 or connections:100,200,400"
    name, colon, rest = spec.partition(":")
    name = name.strip()
    if not colon or not rest.strip():
        raise LoadConfigError(f"bad --ramp {spec!r}: expected {form}")
    if name not in SCENARIOS:
        raise LoadConfigError(f"bad --ramp {spec!r}: {_unknown_scenario(name).args[0].replace(', ramp', '')}")
    parameter, equals, values = rest.partition("=")
    if not equals:
        parameter, values = "", rest
    parameter = parameter.strip().replace("-", "_")
    return name, parameter or None, parse_values(values)


@dataclass(frozen=True)
class _Plan:
    target: Scenario | Ramp
    thresholds: list[str]
    url: str | None


def _plan(args: argparse.Namespace) -> _Plan:
    name = args.scenario
    if name != "ramp" and name not in SCENARIOS:
        raise _unknown_scenario(name)
    thresholds = list(args.threshold)
    parse_all(thresholds)
    values = {p.name: getattr(args, p.name) for p in _parameters() if getattr(args, p.name) is not None}
    protocol = _protocol(args)
    target: Scenario | Ramp
    if name == "ramp":
        if not args.ramp:
            raise LoadConfigError(
                "the ramp scenario needs --ramp SCENARIO:[PARAMETER=]VALUES, e.g. "
                "nova-ws load ramp --ramp publish:rate=100..1600*2"
            )
        base_name, parameter, steps = parse_ramp(args.ramp)
        stepped = parameter or SCENARIOS[base_name].ramp_parameter
        base_values = {k: v for k, v in values.items() if k != stepped}
        target = Ramp(
            _scenario(base_name, base_values, protocol), values=steps, parameter=parameter,
            max_p99=_KNEE_P99 if args.knee_p99 is None else args.knee_p99,
            max_error_rate=_KNEE_ERRORS if args.knee_errors is None else args.knee_errors,
            min_achieved=args.knee_achieved,
            stop_at_knee=not args.all_steps,
        )
    else:
        ramp_only = [flag for flag, given in (
            ("--knee-p99", args.knee_p99 is not None), ("--knee-errors", args.knee_errors is not None),
            ("--knee-achieved", args.knee_achieved is not None), ("--all-steps", args.all_steps),
        ) if given]
        if ramp_only:
            raise LoadConfigError(
                f"{', '.join(ramp_only)} judge the steps of a ramp; {name} is one run: "
                f"nova-ws load ramp --ramp {name}:VALUES {' '.join(ramp_only)} ..."
            )
        if args.ramp:
            raise LoadConfigError(
                f"--ramp belongs to the ramp scenario: nova-ws load ramp --ramp {name}:{args.ramp}"
                if ":" not in args.ramp
                else f"--ramp belongs to the ramp scenario: nova-ws load ramp --ramp {args.ramp}"
            )
        target = _scenario(name, values, protocol)
    dropping = (target.base if isinstance(target, Ramp) else target).name == "reconnect-storm"
    if args.reset_via_proxy and not dropping:
        raise LoadConfigError(
            f"--reset-via-proxy resets the connections reconnect-storm drops; {target.name} drops none: "
            "nova-ws load reconnect-storm --reset-via-proxy"
        )
    if args.url is not None:
        from .engine import check_url

        check_url(args.url, allow_remote=args.allow_remote)
    return _Plan(target, thresholds, args.url)


def _options(args: argparse.Namespace) -> Any:
    from .engine import EngineOptions

    given = {
        name: getattr(args, name)
        for name in ("connect_concurrency", "open_timeout", "setup_timeout", "drain_timeout")
        if getattr(args, name) is not None
    }
    return EngineOptions(handle_sigint=True, reset_via_proxy=args.reset_via_proxy, **given)


# ----------------------------------------------------------------- output


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stub(scenario: str, url: str | None, profile: str, reason: str) -> RunResult:
    """A run that never started: no step, ``aborted`` saying why."""
    return RunResult(
        scenario=scenario, url=url or "", parameters={}, started_at=_now_iso(), duration=0.0, steps=[],
        profile=profile, aborted=reason,
    )


def _write(result: RunResult, json_path: Path | None, csv_path: Path | None, html_path: Path | None) -> list[Path]:
    written: list[Path] = []
    data = result.to_dict()
    if json_path is not None:
        written.append(write_json(data, json_path))
    if csv_path is not None:
        written.extend(write_csv(data, csv_path))
    if html_path is not None:
        written.append(write_html(data, html_path))
    return written


def _latency_line(name: str, s: dict[str, Any]) -> str:
    stats = "  ".join(
        f"{label} {s[key] / 1000:.2f}"
        for label, key in (("p50", "p50_us"), ("p90", "p90_us"), ("p99", "p99_us"), ("p99.9", "p999_us"),
                           ("max", "max_us"))
    )
    count = s["count"]
    return f"  {name:<10} {stats} ms  ({count:,} value{'' if count == 1 else 's'})"


def summary(result: RunResult | dict[str, Any], *, embedded: bool = False, written: Sequence[Path] = ()) -> str:
    """The text printed at the end of a run: figures, thresholds, errors, then ``where it breaks: ...``.

    Built from ``to_dict()`` like the reports; ``embedded`` says the URL was
    the embedded reference server's, ``written`` lists the files written.
    """
    data = result.to_dict() if isinstance(result, RunResult) else result
    total = RunResult.from_dict(data).total.to_dict()
    v = verdict(data)
    failed = [t for t in data.get("thresholds", []) if not t.get("passed")]
    status = {"passed": "PASSED", "failed": f"FAILED ({len(failed)} threshold(s))", "aborted": "ABORTED"}[v]
    lines = [f"nova-ws load {data['scenario']}: {status}"]
    where = " (embedded reference server)" if embedded else ""
    if data.get("url") or data.get("steps"):
        lines.append(f"  url {data.get('url')}{where}, profile {data.get('profile')}, "
                     f"{float(data.get('duration', 0.0)):.1f} s")
    for name, s in sorted((total.get("latency") or {}).items()):
        if s.get("count"):
            lines.append(_latency_line(name, s))
    if data.get("steps"):
        rate = f"  throughput {data.get('throughput_counter')} {total.get('throughput', 0.0):,.0f}/s"
        offered, achieved = total.get("offered_rate"), total.get("achieved_rate")
        if achieved is not None and len(data["steps"]) == 1:  # a ramp's steps show their own
            rate += f"; offered {'max' if offered is None else f'{offered:,.0f}/s'}, achieved {achieved:,.0f}/s"
            if offered:
                rate += f" ({achieved / offered:.0%})"
        lines.append(rate)
        counters = total.get("counters") or {}
        exact = [f"{n} {counters[n]:,}" for n in ("lost", "duplicated", "out_of_order", "gaps", "drops",
                                                  "reconnects", "skipped", "unconfirmed") if n in counters]
        resets = [step["gauges"]["proxy_resets"] for step in data["steps"] if "proxy_resets" in step.get("gauges", {})]
        if resets:
            exact.append(f"reset at the fault proxy {int(sum(resets)):,}")
        if exact:
            lines.append("  " + ", ".join(exact))
        errors = total.get("errors") or {}
        if errors:
            lines.append(f"  errors     {sum(errors.values()):,} ({total.get('error_rate', 0.0):.2%} of operations)")
            for kind, n in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"    {describe_error(kind)} x{n:,}")
        server = data.get("server") or {}
        if server.get("rss_per_connection") is not None:
            lines.append(f"  server RSS {server['rss_per_connection'] / 1024:.1f} KiB per connection "
                         f"({server.get('connections')} connections)")
    if len(data.get("steps", [])) > 1 or data.get("scenario") == "ramp":
        primary = data.get("primary_metric")
        for step in data.get("steps", []):
            s = (step.get("latency") or {}).get(primary) or {}
            p99 = f"p99 {s['p99_us'] / 1000:.2f} ms" if s.get("count") else "p99 -"
            achieved = step.get("achieved_rate")
            mark = ""
            if step.get("index") == data.get("knee"):
                mark = f"  <- knee: {step.get('degraded')}"
            elif step.get("aborted"):
                mark = f"  <- aborted: {step['aborted']}"
            lines.append(
                f"  step {step['index']} {step_label(data, step)}: "
                + (f"achieved {achieved:,.0f}/s, " if achieved is not None else "")
                + f"{data.get('throughput_counter')} {step.get('throughput', 0.0):,.0f}/s, {p99}, "
                f"errors {step.get('error_rate', 0.0):.2%}{mark}"
            )
    for t in data.get("thresholds", []):
        lines.append(f"  {'ok  ' if t.get('passed') else 'FAIL'} {t.get('message')}")
    for w in data.get("warnings", []):
        lines.append(f"  warning: {w}")
    if written:
        lines.append("  wrote " + ", ".join(str(p) for p in written))
    lines.append("where it breaks: " + "; ".join(findings(data)))
    return "\n".join(lines)


def _output_paths(argv: Sequence[str]) -> tuple[Path | None, Path | None, Path | None]:
    """The --json/--csv/--html of a command line that does not parse otherwise."""
    lenient = argparse.ArgumentParser(add_help=False)
    for name in ("--json", "--csv", "--html"):
        lenient.add_argument(name, type=Path)
    try:
        known, _ = lenient.parse_known_args(list(argv))
    except SystemExit:
        return None, None, None
    return known.json, known.csv, known.html


def _bad_input(message: str, argv: Sequence[str], scenario: str, url: str | None, profile: str,
               stderr: TextIO) -> int:
    print(f"nova-ws load: {message}", file=stderr)
    paths = _output_paths(argv)
    if any(paths):
        try:
            _write(_stub(scenario, url, profile, f"bad input: {message}"), *paths)
        except OSError as exc:
            print(f"nova-ws load: could not write the output files: {exc}", file=stderr)
    return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nova-ws load`` with ``argv`` (the arguments after ``load``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    stdout, stderr = sys.stdout, sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        first = next((a for a in argv if not a.startswith("-")), "")
        return _bad_input(f"{exc}\n{parser.format_usage().strip()}", argv, first, None, "nova", stderr)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        plan = _plan(args)
        options = _options(args)
    except LoadConfigError as exc:
        return _bad_input(str(exc), argv, args.scenario, args.url, args.profile, stderr)

    from .engine import run

    progress = ProgressLine.for_stdout(quiet=args.quiet, label=args.scenario)
    try:
        with progress:
            result = run(
                plan.target, plan.url, thresholds=plan.thresholds, options=options,
                allow_remote=args.allow_remote, server_pid=args.server_pid, on_progress=progress,
            )
    except LoadConfigError as exc:
        return _bad_input(str(exc), argv, args.scenario, args.url, args.profile, stderr)
    except LoadError as exc:  # the embedded server did not start; websockets changed
        result = _stub(args.scenario, args.url, args.profile, str(exc))
    except KeyboardInterrupt:  # a second Ctrl-C (the first ends the run with its figures)
        result = _stub(args.scenario, args.url, args.profile, "interrupted")

    try:
        written = _write(result, args.json, args.csv, args.html)
    except OSError as exc:
        print(f"nova-ws load: could not write the output files: {exc}", file=stderr)
        print(summary(result, embedded=plan.url is None), file=stdout)
        return EXIT_BAD_INPUT
    print(summary(result, embedded=plan.url is None and bool(result.steps), written=written), file=stdout)
    if result.aborted:
        print(f"nova-ws load: aborted: {result.aborted}", file=stderr)
        return EXIT_ABORTED
    return EXIT_THRESHOLD_FAILED if not result.passed else EXIT_PASSED

