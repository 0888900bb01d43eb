"""The figures of a load run, as typed values that round-trip through JSON.

- :class:`RunResult`: one run: the scenario, the URL, its parameters, when it
  started, how long it took, its :class:`StepResult` steps (a plain run has
  one; a ramp one per load level), the ramp's knee, the threshold outcomes,
  ``aborted`` (why the run ended early, or None) and, when the server is
  local, :class:`ServerStats` (its RSS per connection).
- :class:`StepResult`: one load level: counters, errors by kind, gauges,
  latency summaries (with their histograms, so steps merge exactly), the
  timeline, offered and achieved rates, and why it degraded (in a ramp).
- :class:`ThresholdOutcome`: one threshold expression, what was observed,
  whether it passed.

``to_dict()`` gives JSON-safe dicts and ``from_dict()`` reads them back
(``RunResult.from_dict(r.to_dict()) == r``); the JSON, CSV and HTML reports
are built from ``to_dict()`` only.  Times are seconds, latencies
microseconds, rates per second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .metrics import LatencySummary, TimelinePoint

__all__ = ["FORMAT", "RunResult", "ServerStats", "StepResult", "ThresholdOutcome"]

#: The ``format`` key of a serialised run; bumped when a field changes meaning.
FORMAT = "nova-ws-load/1"


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class ThresholdOutcome:
    """One threshold: its text, the value observed (None: nothing to measure), the verdict, a sentence.

    ``unit`` is what ``observed`` and ``limit`` are in: ``us`` for
    latencies, ``ratio`` for error rates (0.01 is 1%), ``count``, ``per_s``.
    """

    expression: str
    metric: str
    observed: float | None
    limit: float
    unit: str
    passed: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_dict` reads it back."""
        return {
            "expression": self.expression,
            "metric": self.metric,
            "observed": self.observed,
            "limit": self.limit,
            "unit": self.unit,
            "passed": self.passed,
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThresholdOutcome:
        """The outcome :meth:`to_dict` wrote."""
        return cls(
            expression=str(data["expression"]),
            metric=str(data["metric"]),
            observed=_opt_float(data.get("observed")),
            limit=float(data["limit"]),
            unit=str(data["unit"]),
            passed=bool(data["passed"]),
            message=str(data["message"]),
        )


@dataclass(frozen=True)
class ServerStats:
    """The local server's memory: RSS (bytes) before the clients connected and while they were held.

    ``rss_per_connection`` is ``(rss_loaded - rss_before) / connections``
    (bytes), None when not measured.
    """

    pid: int
    rss_before: int
    rss_loaded: int
    connections: int

    @property
    def rss_per_connection(self) -> float | None:
        """Bytes of server RSS per open connection (None with no connection)."""
        if self.connections <= 0:
            return None
        return (self.rss_loaded - self.rss_before) / self.connections

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (with ``rss_per_connection``); :meth:`from_dict` reads it back."""
        return {
            "pid": self.pid,
            "rss_before": self.rss_before,
            "rss_loaded": self.rss_loaded,
            "connections": self.connections,
            "rss_per_connection": self.rss_per_connection,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerStats:
        """The stats :meth:`to_dict` wrote."""
        return cls(
            pid=int(data["pid"]),
            rss_before=int(data["rss_before"]),
            rss_loaded=int(data["rss_loaded"]),
            connections=int(data["connections"]),
        )


@dataclass(frozen=True)
class StepResult:
    """One load level of a run (see the module docstring).

    ``parameters``: the scenario's parameters at this step; ``started``:
    seconds from the run's start; ``setup``: seconds to connect and set up
    the clients; ``duration``: seconds of the measured phase (shorter than
    asked when aborted); ``offered_rate``: publishes/s asked for;
    ``achieved_rate``: ``sent`` per second of the measured phase;
    ``throughput``: the scenario's throughput counter (``confirmed``,
    ``delivered``, ``opened``) per second of the measured phase (for
    ``connections``: per second of setup).  ``degraded``: why a ramp
    judged this step degraded, None if it did not.
    """

    index: int
    parameters: dict[str, Any]
    started: float
    setup: float
    duration: float
    offered_rate: float | None = None
    achieved_rate: float | None = None
    throughput: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    latency: dict[str, LatencySummary] = field(default_factory=dict)
    timeline: list[TimelinePoint] = field(default_factory=list)
    degraded: str | None = None
    aborted: str | None = None

    @property
    def error_count(self) -> int:
        """Errors of every kind together."""
        return sum(self.errors.values())

    @property
    def operations(self) -> int:
        """What errors are a share of: connection attempts plus publishes sent."""
        c = self.counters
        attempts = c.get("opened", 0) + c.get("reconnects", 0) + c.get("failed", 0)
        return attempts + c.get("sent", 0)

    @property
    def error_rate(self) -> float:
        """Errors per operation (0.0 with no operation and no error; 1.0 with errors and no operation)."""
        operations = self.operations
        if operations == 0:
            return 1.0 if self.error_count else 0.0
        return self.error_count / operations

    def counter(self, name: str) -> int:
        """Counter ``name``, 0 when never counted."""
        return self.counters.get(name, 0)

    def with_degraded(self, reason: str | None) -> StepResult:
        """A copy with ``degraded`` set."""
        return replace(self, degraded=reason)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_dict` reads it back."""
        return {
            "index": self.index,
            "parameters": dict(self.parameters),
            "started": self.started,
            "setup": self.setup,
            "duration": self.duration,
            "offered_rate": self.offered_rate,
            "achieved_rate": self.achieved_rate,
            "throughput": self.throughput,
            "counters": dict(self.counters),
            "errors": dict(self.errors),
            "error_rate": self.error_rate,
            "gauges": dict(self.gauges),
            "latency": {name: summary.to_dict() for name, summary in self.latency.items()},
            "timeline": [point.to_dict() for point in self.timeline],
            "degraded": self.degraded,
            "aborted": self.aborted,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepResult:
        """The step :meth:`to_dict` wrote."""
        return cls(
            index=int(data["index"]),
            parameters=dict(data.get("parameters", {})),
            started=float(data.get("started", 0.0)),
            setup=float(data.get("setup", 0.0)),
            duration=float(data.get("duration", 0.0)),
            offered_rate=_opt_float(data.get("offered_rate")),
            achieved_rate=_opt_float(data.get("achieved_rate")),
            throughput=float(data.get("throughput", 0.0)),
            counters={str(k): int(v) for k, v in data.get("counters", {}).items()},
            errors={str(k): int(v) for k, v in data.get("errors", {}).items()},
            gauges={str(k): float(v) for k, v in data.get("gauges", {}).items()},
            latency={
                str(k): LatencySummary.from_dict(v) for k, v in data.get("latency", {}).items()
            },
            timeline=[TimelinePoint.from_dict(p) for p in data.get("timeline", [])],
            degraded=data.get("degraded"),
            aborted=data.get("aborted"),
        )

    @staticmethod
    def combined(steps: list[StepResult]) -> StepResult:
        """Every step as one: counters and errors summed, histograms merged, rates over the total time.

        Gauges and timeline are the last step's; a single step is returned as it is.
        """
        if len(steps) == 1:
            return steps[0]
        if not steps:
            return StepResult(index=0, parameters={}, started=0.0, setup=0.0, duration=0.0)
        counters: dict[str, int] = {}
        errors: dict[str, int] = {}
        latency: dict[str, LatencySummary] = {}
        for step in steps:
            for name, n in step.counters.items():
                counters[name] = counters.get(name, 0) + n
            for kind, n in step.errors.items():
                errors[kind] = errors.get(kind, 0) + n
            for name, summary in step.latency.items():
                latency[name] = latency[name].merged(summary) if name in latency else summary
        duration = sum(s.duration for s in steps)
        setup = sum(s.setup for s in steps)
        sent = counters.get("sent", 0)
        achieved = sent / duration if duration > 0 and any(s.achieved_rate is not None for s in steps) else None
        throughput = sum(s.throughput * s.duration for s in steps) / duration if duration > 0 else 0.0
        last = steps[-1]
        return StepResult(
            index=0,
            parameters=dict(last.parameters),
            started=steps[0].started,
            setup=setup,
            duration=duration,
            offered_rate=last.offered_rate,
            achieved_rate=achieved,
            throughput=throughput,
            counters=counters,
            errors=errors,
            gauges=dict(last.gauges),
            latency=latency,
            timeline=list(last.timeline),
            aborted=next((s.aborted for s in steps if s.aborted), None),
        )


@dataclass(frozen=True)
class RunResult:
    """One load run (see the module docstring).

    ``scenario`` is the CLI's name (``ramp`` for a ramp, whose ``parameters``
    name the stepped scenario); ``profile`` the load protocol (``nova``,
    ``generic``); ``started_at`` ISO-8601 UTC; ``duration`` seconds from
    start to end; ``knee`` the index of the first degraded step (a ramp),
    None when none degraded; ``aborted`` why the run ended early, None when
    it ran to the end (the figures so far are kept either way);
    ``primary_metric`` and ``throughput_counter`` say which latency and
    counter the headline figures are.
    """

    scenario: str
    url: str
    parameters: dict[str, Any]
    started_at: str
    duration: float
    steps: list[StepResult]
    profile: str = "nova"
    primary_metric: str = "connect"
    throughput_counter: str = "opened"
    knee: int | None = None
    thresholds: list[ThresholdOutcome] = field(default_factory=list)
    aborted: str | None = None
    server: ServerStats | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Not aborted, and every threshold passed."""
        return self.aborted is None and all(t.passed for t in self.thresholds)

    @property
    def total(self) -> StepResult:
        """Every step as one (:meth:`StepResult.combined`): what thresholds are evaluated on."""
        return StepResult.combined(self.steps)

    @property
    def knee_step(self) -> StepResult | None:
        """The first degraded step, or None."""
        return self.steps[self.knee] if self.knee is not None else None

    def with_thresholds(self, outcomes: list[ThresholdOutcome]) -> RunResult:
        """A copy with ``thresholds`` set."""
        return replace(self, thresholds=list(outcomes))

    def headline(self) -> str:
        """One line: where it broke, or how it went (for a terminal or a log)."""
        total = self.total
        parts = [f"{self.scenario}"]
        primary = total.latency.get(self.primary_metric)
        if primary is not None and primary.count:
            parts.append(
                f"{self.primary_metric} p50 {primary.p50_us / 1000:.2f} ms, p99 {primary.p99_us / 1000:.2f} ms"
            )
        parts.append(f"{self.throughput_counter} {total.throughput:.0f}/s")
        if total.offered_rate is not None and total.achieved_rate is not None:
            parts.append(f"offered {total.offered_rate:g}/s, achieved {total.achieved_rate:.0f}/s")
        if total.errors:
            parts.append(f"errors {total.error_count} ({total.error_rate:.2%})")
        for name in ("lost", "duplicated"):
            if name in total.counters:
                parts.append(f"{name} {total.counters[name]}")
        if self.knee is not None and self.knee_step is not None:
            parts.append(f"knee at step {self.knee} {self.knee_step.parameters} ({self.knee_step.degraded})")
        failed = [t.expression for t in self.thresholds if not t.passed]
        if failed:
            parts.append(f"thresholds failed: {', '.join(failed)}")
        if self.aborted:
            parts.append(f"ABORTED: {self.aborted}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_dict` reads it back."""
        return {
            "format": FORMAT,
            "scenario": self.scenario,
            "profile": self.profile,
            "url": self.url,
            "parameters": dict(self.parameters),
            "started_at": self.started_at,
            "duration": self.duration,
            "primary_metric": self.primary_metric,
            "throughput_counter": self.throughput_counter,
            "steps": [step.to_dict() for step in self.steps],
            "knee": self.knee,
            "thresholds": [t.to_dict() for t in self.thresholds],
            "aborted": self.aborted,
            "passed": self.passed,
            "server": self.server.to_dict() if self.server else None,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """The run :meth:`to_dict` wrote (``ValueError`` for another format)."""
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT:
            raise ValueError(f"not a load result of format {FORMAT!r}: format is {fmt!r}")
        server = data.get("server")
        knee = data.get("knee")
        return cls(
            scenario=str(data["scenario"]),
            profile=str(data.get("profile", "nova")),
            url=str(data["url"]),
            parameters=dict(data.get("parameters", {})),
            started_at=str(data["started_at"]),
            duration=float(data["duration"]),
            primary_metric=str(data.get("primary_metric", "connect")),
            throughput_counter=str(data.get("throughput_counter", "opened")),
            steps=[StepResult.from_dict(s) for s in data.get("steps", [])],
            knee=None if knee is None else int(knee),
            thresholds=[ThresholdOutcome.from_dict(t) for t in data.get("thresholds", [])],
            aborted=data.get("aborted"),
            server=ServerStats.from_dict(server) if server else None,
            warnings=[str(w) for w in data.get("warnings", [])],
        )
