"""Results round-trip through JSON; steps combine; the headline says where it broke."""

from __future__ import annotations

import json

from harness.load import Histogram, Metrics, RunResult, ServerStats, StepResult, ThresholdOutcome


def _step(index: int, ms: float, errors: int = 0) -> StepResult:
    metrics = Metrics(start=0.0, primary="publish")
    for i in range(100):
        metrics.count("sent", i / 100)
        metrics.latency("publish", ms / 1000, i / 100)
    if errors:
        metrics.error("error:rate_limited", 0.5, errors)
    return StepResult(
        index=index, parameters={"rate": 100.0 * (index + 1)}, started=float(index), setup=0.1,
        duration=1.0, offered_rate=100.0, achieved_rate=100.0, throughput=100.0,
        counters=dict(metrics.counters), errors=dict(metrics.errors),
        latency=metrics.summaries(), timeline=metrics.timeline_points(1.0),
    )


def _run() -> RunResult:
    return RunResult(
        scenario="ramp", url="ws://127.0.0.1:8000", parameters={"base": "publish"},
        started_at="2026-01-01T00:00:00Z", duration=2.5, steps=[_step(0, 1.0), _step(1, 80.0, errors=3).with_degraded("p99")],
        primary_metric="publish", throughput_counter="confirmed", knee=1,
        thresholds=[ThresholdOutcome("p99<50ms", "publish p99", 80_000.0, 50_000.0, "us", False, "x")],
        aborted=None, server=ServerStats(pid=42, rss_before=100_000, rss_loaded=300_000, connections=10),
        warnings=["w"],
    )


def test_a_run_round_trips_through_json() -> None:
    result = _run()
    text = json.dumps(result.to_dict())
    assert RunResult.from_dict(json.loads(text)) == result


def test_the_dict_carries_derived_figures_for_reports() -> None:
    data = _run().to_dict()
    assert data["format"] == "nova-ws-load/1"
    assert data["passed"] is False
    assert data["server"]["rss_per_connection"] == 20_000
    assert data["steps"][1]["error_rate"] == 3 / 100
    assert data["steps"][0]["latency"]["publish"]["hdr"]  # mergeable after reading back


def test_steps_combine_with_exact_percentiles() -> None:
    total = _run().total
    assert total.counters["sent"] == 200
    assert total.latency["publish"].count == 200
    reference = Histogram()
    for _ in range(100):
        reference.record(0.001)
        reference.record(0.080)
    assert total.latency["publish"].p99_us == reference.percentile_us(99)
    assert total.duration == 2.0


def test_the_headline_names_the_knee_and_failures() -> None:
    line = _run().headline()
    assert "knee at step 1 {'rate': 200.0} (p99)" in line
    assert "thresholds failed: p99<50ms" in line


def test_an_aborted_run_did_not_pass() -> None:
    from dataclasses import replace

    aborted = replace(_run(), thresholds=[], aborted="no client could connect")
    assert not aborted.passed
    assert aborted.headline().endswith("ABORTED: no client could connect")
