"""Threshold expressions: the grammar, the verdicts, and the message for a bad one."""

from __future__ import annotations

import pytest

from harness.load import Histogram, LoadConfigError, RunResult, StepResult, evaluate
from harness.load.thresholds import parse


def _run(**step: object) -> RunResult:
    histogram = Histogram()
    for ms in range(1, 101):
        histogram.record(ms / 1000)
    connect = Histogram()
    connect.record(0.2)
    values: dict[str, object] = {
        "index": 0, "parameters": {}, "started": 0.0, "setup": 1.0, "duration": 10.0,
        "throughput": 1500.0,
        "counters": {"sent": 1000, "opened": 10, "lost": 0, "duplicated": 2},
        "errors": {"close:1008": 5},
        "gauges": {"open": 10.0},
        "latency": {"publish": histogram.summary(), "connect": connect.summary()},
    }
    values.update(step)
    return RunResult(
        scenario="publish", url="ws://127.0.0.1:1", parameters={}, started_at="t", duration=11.0,
        steps=[StepResult(**values)],  # type: ignore[arg-type]
        primary_metric="publish", throughput_counter="confirmed",
    )


@pytest.mark.parametrize(
    ("expression", "passed"),
    [
        ("p99<50ms", False),
        ("p99<=200ms", True),
        ("p99.9 <= 101ms", True),
        ("p50<51ms", True),
        ("publish.max<0.2s", True),
        ("connect.p99<1s", True),
        ("connect.p99<100ms", False),
        ("mean<60000us", True),
        ("errors<1%", True),  # 5 errors in 1010 operations
        ("errors<0.1%", False),
        ("errors==0", False),
        ("errors<=5", True),
        ("lost==0", True),
        ("duplicated==0", False),
        ("open>=10", True),
        ("throughput>=1000/s", True),
        ("throughput>2000", False),
    ],
)
def test_thresholds_judge_the_run(expression: str, passed: bool) -> None:
    (outcome,) = evaluate([expression], _run())
    assert outcome.passed is passed, outcome.message
    assert outcome.expression == expression.strip()


def test_the_outcome_says_what_was_observed() -> None:
    (outcome,) = evaluate(["p99<50ms"], _run())
    assert outcome.message == "p99<50ms: FAILED, publish p99 was 99.007 ms"
    assert outcome.unit == "us" and outcome.limit == 50_000


def test_a_latency_nobody_measured_fails() -> None:
    (outcome,) = evaluate(["delivery.p99<1s"], _run())
    assert not outcome.passed and outcome.observed is None
    assert "no delivery latency was measured" in outcome.message


def test_limits_are_in_base_units() -> None:
    assert parse("p99<1.5s").limit == 1_500_000
    assert parse("errors<2.5%").limit == pytest.approx(0.025)
    assert parse("throughput>=1e3/s").limit == 1000


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("p99", "it is not NAME OP NUMBER"),
        ("p99<50", "a latency needs a unit"),
        ("p98<50ms", "unknown name 'p98'"),
        ("latency.p99<5ms", "unknown latency metric 'latency'"),
        ("errors<5ms", "errors take a count or a percentage"),
        ("lsot==0", "unknown name 'lsot'"),
        ("lost==0%", "lost is a count and takes no unit"),
        ("throughput>5ms", "throughput is per second"),
        ("p99=<5ms", "it is not NAME OP NUMBER"),
    ],
)
def test_a_bad_expression_names_the_grammar(expression: str, why: str) -> None:
    with pytest.raises(LoadConfigError) as info:
        parse(expression)
    message = str(info.value)
    assert why in message
    assert message.startswith(f"bad threshold {expression!r}")
    assert "e.g. p99<50ms, connect.p99<1s, errors<1%, lost==0, throughput>=1000/s" in message
