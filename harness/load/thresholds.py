"""Thresholds that fail a load run: ``p99<50ms``, ``errors<1%``, ``lost==0``, ``throughput>=1000/s``.

Pure.  Grammar (spaces allowed around the operator)::

    threshold := latency | errors | counter | throughput
    latency   := [METRIC "."] STAT OP NUMBER ("us" | "ms" | "s")
    errors    := "errors" OP NUMBER ["%"]      with %: errors per operation; without: a count
    counter   := COUNTER OP NUMBER
    throughput:= "throughput" OP NUMBER ["/s"]
    STAT      := p50 | p90 | p99 | p99.9 | max | min | mean
    OP        := < | <= | > | >= | == | !=
    METRIC    := connect | publish | delivery | replay   (default: the scenario's primary metric)
    COUNTER   := lost | duplicated | out_of_order | gaps | failed | closed_by_server | ...

Examples: ``p99<50ms``, ``p99.9<=200ms``, ``connect.p99<1s``, ``errors<1%``,
``errors==0``, ``lost==0``, ``duplicated==0``, ``throughput>=1000/s``.

:func:`parse` raises :class:`~harness.load.errors.LoadConfigError` naming
this grammar for anything else; :func:`evaluate` judges a run's steps taken
together (:attr:`RunResult.total <harness.load.results.RunResult.total>`).
A latency nobody measured fails its threshold (nothing was shown to be fast).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from .errors import LoadConfigError
from .metrics import LatencySummary
from .results import RunResult, StepResult, ThresholdOutcome

__all__ = ["COUNTERS", "GRAMMAR", "LATENCY_METRICS", "Threshold", "evaluate", "parse", "parse_all"]

GRAMMAR = (
    "[METRIC.]STAT OP NUMBER(us|ms|s) | errors OP NUMBER[%] | COUNTER OP NUMBER | "
    "throughput OP NUMBER[/s], where STAT is p50, p90, p99, p99.9, max, min or mean, OP is "
    "<, <=, >, >=, == or !=, METRIC is connect, publish, delivery or replay; "
    "e.g. p99<50ms, connect.p99<1s, errors<1%, lost==0, throughput>=1000/s"
)

#: Latency metrics a threshold may name (scenarios record these).
LATENCY_METRICS = ("connect", "publish", "delivery", "replay")

#: Counters (and the ``open`` gauge) a threshold may name.
COUNTERS = (
    "sent",
    "received",
    "confirmed",
    "delivered",
    "opened",
    "open",
    "failed",
    "closed_by_server",
    "drops",
    "reconnects",
    "replayed",
    "lost",
    "duplicated",
    "out_of_order",
    "gaps",
    "skipped",
    "unconfirmed",
)

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}

_UNITS_US = {"us": 1.0, "µs": 1.0, "ms": 1000.0, "s": 1_000_000.0}

_EXPRESSION = re.compile(
    r"^\s*(?P<lhs>[A-Za-z_][A-Za-z0-9_.]*)\s*(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<value>[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>us|µs|ms|s|%|/s)?\s*$"
)

Kind = Literal["latency", "errors", "error_rate", "counter", "throughput"]


@dataclass(frozen=True)
class Threshold:
    """A parsed threshold: ``kind``, what it reads, the operator and the limit in base units.

    ``limit`` is in microseconds for ``latency``, a ratio (0.01 is 1%) for
    ``error_rate``, a count for ``errors`` and ``counter``, per second for
    ``throughput``.  ``metric`` None means the scenario's primary metric.
    """

    expression: str
    kind: Kind
    op: str
    limit: float
    metric: str | None = None
    stat: str | None = None
    counter: str | None = None

    def check(self, observed: float) -> bool:
        """Whether ``observed`` (in the limit's unit) passes."""
        return _OPS[self.op](observed, self.limit)

    def evaluate(self, step: StepResult, primary_metric: str) -> ThresholdOutcome:
        """Judge ``step`` (usually a run's total); ``primary_metric`` stands in for a missing METRIC."""
        if self.kind == "latency":
            metric = self.metric or primary_metric
            summary: LatencySummary | None = step.latency.get(metric)
            label = f"{metric} {self.stat}"
            if summary is None or summary.count == 0:
                return ThresholdOutcome(
                    self.expression, label, None, self.limit, "us", False,
                    f"{self.expression}: failed, no {metric} latency was measured",
                )
            observed = summary.stat_us(self.stat or "p99")
            return self._outcome(label, observed, "us", f"{observed / 1000:.3f} ms")
        if self.kind == "error_rate":
            observed = step.error_rate
            return self._outcome("error rate", observed, "ratio", f"{observed:.3%} ({step.error_count} errors)")
        if self.kind == "errors":
            observed = float(step.error_count)
            kinds = ", ".join(f"{k} x{n}" for k, n in sorted(step.errors.items())) or "none"
            return self._outcome("errors", observed, "count", f"{observed:.0f} ({kinds})")
        if self.kind == "counter":
            name = self.counter or ""
            observed = float(step.gauges.get(name, 0.0) if name == "open" else step.counter(name))
            return self._outcome(name, observed, "count", f"{observed:g}")
        observed = step.throughput
        return self._outcome("throughput", observed, "per_s", f"{observed:.1f}/s")

    def _outcome(self, label: str, observed: float, unit: str, shown: str) -> ThresholdOutcome:
        passed = self.check(observed)
        verdict = "ok" if passed else "FAILED"
        return ThresholdOutcome(
            self.expression, label, observed, self.limit, unit, passed,
            f"{self.expression}: {verdict}, {label} was {shown}",
        )


def _bad(expression: str, why: str) -> LoadConfigError:
    return LoadConfigError(f"bad threshold {expression!r}: {why}; expected {GRAMMAR}")


def parse(expression: str) -> Threshold:
    """Parse one threshold expression (see the module docstring for the grammar)."""
    match = _EXPRESSION.match(expression)
    if match is None:
        raise _bad(expression, "it is not NAME OP NUMBER[UNIT]")
    lhs, op, unit = match["lhs"], match["op"], match["unit"]
    value = float(match["value"])
    if not math.isfinite(value):
        raise _bad(expression, "the number is not finite")
    text = expression.strip()
    if lhs == "errors":
        if unit == "%":
            return Threshold(text, "error_rate", op, value / 100.0)
        if unit is not None:
            raise _bad(expression, f"errors take a count or a percentage, not {unit!r}")
        return Threshold(text, "errors", op, value)
    if lhs == "throughput":
        if unit not in (None, "/s"):
            raise _bad(expression, f"throughput is per second ('/s'), not {unit!r}")
        return Threshold(text, "throughput", op, value)
    metric, stat = None, lhs
    if lhs not in LatencySummary.STATS:
        head, dot, tail = lhs.partition(".")
        if dot and tail in LatencySummary.STATS:
            metric, stat = head, tail
    if stat in LatencySummary.STATS:
        if metric is not None and metric not in LATENCY_METRICS:
            raise _bad(expression, f"unknown latency metric {metric!r} (known: {', '.join(LATENCY_METRICS)})")
        if unit not in _UNITS_US:
            raise _bad(expression, "a latency needs a unit: us, ms or s")
        return Threshold(text, "latency", op, value * _UNITS_US[unit], metric=metric, stat=stat)
    if lhs in COUNTERS:
        if unit is not None:
            raise _bad(expression, f"{lhs} is a count and takes no unit, not {unit!r}")
        return Threshold(text, "counter", op, value, counter=lhs)
    raise _bad(expression, f"unknown name {lhs!r} (counters: {', '.join(COUNTERS)})")


def parse_all(expressions: Iterable[str]) -> list[Threshold]:
    """Parse every expression (the first bad one raises)."""
    return [parse(e) for e in expressions]


def evaluate(thresholds: Iterable[Threshold | str], result: RunResult) -> list[ThresholdOutcome]:
    """Judge ``result`` (its steps taken together) against each threshold, in order."""
    total = result.total
    parsed = [t if isinstance(t, Threshold) else parse(t) for t in thresholds]
    return [t.evaluate(total, result.primary_metric) for t in parsed]
