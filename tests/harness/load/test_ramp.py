"""The ramp's stepping decision and the knee, from synthetic step results."""

from __future__ import annotations

import pytest

from harness.load import Fanout, Histogram, LoadConfigError, Publish, Ramp, StepResult, parse_values


def _step(index: int, p99_ms: float, errors: int = 0, achieved: float | None = None) -> StepResult:
    histogram = Histogram()
    for _ in range(100):
        histogram.record(p99_ms / 1000)
    return StepResult(
        index=index, parameters={}, started=0.0, setup=0.0, duration=1.0,
        offered_rate=100.0, achieved_rate=achieved,
        counters={"sent": 100}, errors={"error:rate_limited": errors} if errors else {},
        latency={"publish": histogram.summary()},
    )


def test_the_knee_is_the_first_degraded_step() -> None:
    ramp = Ramp(Publish(clients=2), values=(100, 200, 400, 800), max_p99=0.05, max_error_rate=0.01)
    steps = [_step(0, 2), _step(1, 10), _step(2, 70), _step(3, 90)]
    assert ramp.knee(steps) == 2
    assert ramp.degraded(steps[2]) == "publish p99 70.02 ms > 50 ms"
    assert ramp.knee(steps[:2]) is None


def test_errors_and_a_rate_not_kept_up_degrade_a_step() -> None:
    ramp = Ramp(Publish(), values=(100,), max_p99=None, max_error_rate=0.01, min_achieved=0.9)
    assert ramp.degraded(_step(0, 1, errors=2)) == "errors 2.00% > 1.00%"
    assert ramp.degraded(_step(0, 1, achieved=80.0)) == "achieved 80/s < 90% of offered 100/s"
    assert ramp.degraded(_step(0, 1, achieved=95.0)) is None


def test_next_step_walks_the_values_and_stops_at_the_knee() -> None:
    ramp = Ramp(Publish(clients=4), values=(100, 200, 400), max_p99=0.05)
    first = ramp.next_step([])
    assert isinstance(first, Publish) and first.rate == 100
    second = ramp.next_step([_step(0, 1)])
    assert isinstance(second, Publish) and second.rate == 200
    assert ramp.next_step([_step(0, 1), _step(1, 60)]) is None
    assert Ramp(Publish(), values=(1, 2), stop_at_knee=False).next_step([_step(0, 500)]) is not None
    assert ramp.next_step([_step(0, 1), _step(1, 1), _step(2, 1)]) is None


def test_a_ramp_over_clients_steps_fanout_subscribers_as_whole_numbers() -> None:
    ramp = Ramp(Fanout(publishers=1), values=(10, 25.4), parameter="clients")
    step = ramp.step(1)
    assert isinstance(step, Fanout) and step.subscribers == 25 and step.clients == 26
    assert ramp.parameters()["parameter"] == "clients"


def test_a_ramp_refuses_an_unknown_parameter() -> None:
    with pytest.raises(LoadConfigError, match="publish has no parameter 'speed'"):
        Ramp(Publish(), values=(1,), parameter="speed")


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        ("10,20,40", (10.0, 20.0, 40.0)),
        ("100..1600*2", (100.0, 200.0, 400.0, 800.0, 1600.0)),
        ("100..1000*3", (100.0, 300.0, 900.0)),
        ("100..400+100", (100.0, 200.0, 300.0, 400.0)),
    ],
)
def test_parse_values(spec: str, values: tuple[float, ...]) -> None:
    assert parse_values(spec) == values


@pytest.mark.parametrize("spec", ["", "a,b", "100..200", "100..50*2", "0..10+1", "1..1000000+1", "10..20*1"])
def test_bad_values_name_the_forms(spec: str) -> None:
    with pytest.raises(LoadConfigError, match="expected a list '10,20,40'"):
        parse_values(spec)
