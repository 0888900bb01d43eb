"""The ``ramp`` scenario: step another scenario's load up and find the knee, pure.

A :class:`Ramp` names a base scenario, the parameter it steps (the base's
``ramp_parameter`` by default: ``rate`` for ``publish``, ``subscribers``
for ``fanout`` and ``reconnect-storm``, ``clients`` for ``connections``) and
its values, and the limits that mark a step as degraded:

- ``max_p99``: the primary metric's p99 above this many seconds;
- ``max_error_rate``: errors per operation above this ratio (0.01 is 1%);
- ``min_achieved``: the achieved rate below this share of the offered one
  (the server, or the machine, no longer keeps up).

The engine runs the steps one after the other, each a fresh run of the
stepped scenario (its own clients and connections), asking
:meth:`Ramp.next_step` what to run next: the next value, or None once every
value ran, a step aborted, or (``stop_at_knee``) a step degraded.
:meth:`Ramp.knee` is the index of the first degraded step: where it breaks.

>>> from harness.load.scenarios import Publish
>>> ramp = Ramp(Publish(clients=4), values=parse_values("100..800*2"))
>>> [s.rate for s in (ramp.step(i) for i in range(len(ramp.values)))]
[100.0, 200.0, 400.0, 800.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .errors import LoadConfigError
from .results import StepResult
from .scenarios import Scenario

__all__ = ["Ramp", "parse_values"]

#: Most steps a ramp may have.
MAX_STEPS = 100


def parse_values(spec: str) -> tuple[float, ...]:
    """Step values from text: ``10,20,40``; ``100..1600*2`` (doubling); ``100..1000+100`` (adding).

    Raises :class:`LoadConfigError` naming the forms for anything else.
    """
    forms = "a list '10,20,40', a geometric range '100..1600*2' or a linear one '100..1000+100'"
    text = spec.replace(" ", "")
    try:
        if ".." in text:
            start_text, rest = text.split("..", 1)
            if "*" in rest:
                stop_text, factor_text = rest.split("*", 1)
                start, stop, factor = float(start_text), float(stop_text), float(factor_text)
                if not (start > 0 and factor > 1 and stop >= start):
                    raise ValueError("needs start > 0, factor > 1 and stop >= start")
                values: list[float] = []
                value = start
                while value <= stop * (1 + 1e-9) and len(values) <= MAX_STEPS:
                    values.append(value)
                    value *= factor
            elif "+" in rest:
                stop_text, step_text = rest.split("+", 1)
                start, stop, step = float(start_text), float(stop_text), float(step_text)
                if not (start > 0 and step > 0 and stop >= start):
                    raise ValueError("needs start > 0, step > 0 and stop >= start")
                count = math.floor((stop - start) / step + 1e-9) + 1
                if count > MAX_STEPS:
                    raise ValueError(f"{count} steps, more than {MAX_STEPS}")
                values = [start + i * step for i in range(count)]
            else:
                raise ValueError("a range needs '*FACTOR' or '+STEP' after its end")
        else:
            values = [float(v) for v in text.split(",") if v]
            if not values or any(not v > 0 for v in values):
                raise ValueError("needs values > 0")
    except ValueError as exc:
        raise LoadConfigError(f"bad ramp values {spec!r}: {exc}; expected {forms}") from None
    if len(values) > MAX_STEPS:
        raise LoadConfigError(f"bad ramp values {spec!r}: more than {MAX_STEPS} steps; expected {forms}")
    return tuple(values)


@dataclass(frozen=True)
class Ramp:
    """Steps ``base``'s ``parameter`` through ``values``; see the module docstring for the limits."""

    name: ClassVar[str] = "ramp"

    base: Scenario
    values: tuple[float, ...]
    parameter: str | None = None
    max_p99: float | None = 0.1
    max_error_rate: float | None = 0.01
    min_achieved: float | None = None
    stop_at_knee: bool = True

    def __post_init__(self) -> None:
        if not self.values:
            raise LoadConfigError("a ramp needs at least one step value")
        if len(self.values) > MAX_STEPS:
            raise LoadConfigError(f"a ramp has at most {MAX_STEPS} steps, got {len(self.values)}")
        names = {f.name for f in fields(self.base)} | {"clients"}
        if self.stepped not in names:
            raise LoadConfigError(
                f"ramp: {self.base.name} has no parameter {self.stepped!r}; "
                f"known: {', '.join(sorted(names - {'protocol'}))}"
            )
        for limit, value in (("max_p99", self.max_p99), ("max_error_rate", self.max_error_rate),
                             ("min_achieved", self.min_achieved)):
            if value is not None and not value > 0:
                raise LoadConfigError(f"ramp: {limit} must be > 0 (or None: not checked), got {value!r}")
        self.step(0).validate()

    @property
    def stepped(self) -> str:
        """The name of the parameter that changes from step to step."""
        return self.parameter or self.base.ramp_parameter

    @property
    def primary_metric(self) -> str:
        """The base scenario's primary latency."""
        return self.base.primary_metric

    @property
    def throughput_counter(self) -> str:
        """The base scenario's throughput counter."""
        return self.base.throughput_counter

    def step(self, index: int) -> Scenario:
        """The scenario of step ``index``: the base with the stepped parameter at ``values[index]``."""
        value: float | int = self.values[index]
        name = self.stepped
        if name == "clients" and "clients" not in {f.name for f in fields(self.base)}:
            name = "subscribers"  # fanout and reconnect-storm count their subscribers as clients
        current = getattr(self.base, name, None)
        if isinstance(current, int) and not isinstance(current, bool):
            value = max(1, round(value))
        return self.base.with_values(**{name: value})

    def degraded(self, step: StepResult) -> str | None:
        """Why ``step`` counts as degraded, or None."""
        if step.aborted:
            return f"aborted: {step.aborted}"
        reasons = []
        primary = step.latency.get(self.primary_metric)
        limit_us = None if self.max_p99 is None else self.max_p99 * 1_000_000
        if limit_us is not None and primary is not None and primary.count and primary.p99_us > limit_us:
            reasons.append(
                f"{self.primary_metric} p99 {primary.p99_us / 1000:.2f} ms > {limit_us / 1000:g} ms"
            )
        if self.max_error_rate is not None and step.error_rate > self.max_error_rate:
            reasons.append(f"errors {step.error_rate:.2%} > {self.max_error_rate:.2%}")
        if (
            self.min_achieved is not None
            and step.offered_rate
            and step.achieved_rate is not None
            and step.achieved_rate < self.min_achieved * step.offered_rate
        ):
            reasons.append(
                f"achieved {step.achieved_rate:.0f}/s < {self.min_achieved:.0%} of offered {step.offered_rate:g}/s"
            )
        return "; ".join(reasons) or None

    def next_step(self, done: Sequence[StepResult]) -> Scenario | None:
        """The scenario to run after the steps ``done`` (judged by :meth:`degraded`), or None: finished."""
        if len(done) >= len(self.values):
            return None
        if done:
            last = done[-1]
            if last.aborted:
                return None
            if self.stop_at_knee and self.degraded(last):
                return None
        return self.step(len(done))

    def knee(self, steps: Sequence[StepResult]) -> int | None:
        """The index of the first degraded step, None when none degraded."""
        for i, step in enumerate(steps):
            if self.degraded(step):
                return i
        return None

    def parameters(self) -> dict[str, Any]:
        """JSON-safe: the stepped scenario, its parameters, the values and the limits."""
        return {
            "base": self.base.name,
            "base_parameters": self.base.parameters(),
            "parameter": self.stepped,
            "values": list(self.values),
            "max_p99": self.max_p99,
            "max_error_rate": self.max_error_rate,
            "min_achieved": self.min_achieved,
            "stop_at_knee": self.stop_at_knee,
        }

    def warnings(self) -> list[str]:
        """The warnings of the heaviest step."""
        return self.step(len(self.values) - 1).warnings()
