"""Histograms and the timeline: percentiles against known data, bounded memory, merging."""

from __future__ import annotations

import pytest

from harness.load import Histogram, LatencySummary, Metrics, Timeline


def test_percentiles_match_known_data_within_the_precision() -> None:
    histogram = Histogram()
    for us in range(1, 10_001):  # 1 us .. 10 ms, uniform
        histogram.record(us / 1_000_000)
    assert histogram.count == 10_000
    for percentile, expected in ((50, 5_000), (90, 9_000), (99, 9_900), (99.9, 9_990)):
        assert histogram.percentile_us(percentile) == pytest.approx(expected, rel=1e-3)
    assert histogram.max_us == pytest.approx(10_000, rel=1e-3)
    assert histogram.mean_us == pytest.approx(5_000.5, rel=1e-3)


def test_values_past_the_range_are_clamped_and_counted() -> None:
    histogram = Histogram()
    histogram.record(120.0)
    histogram.record(-1.0)
    assert histogram.clamped == 1
    assert histogram.max_us == pytest.approx(60_000_000, rel=1e-3)
    assert histogram.min_us == 1


def test_histograms_merge_exactly_even_through_their_text() -> None:
    fast, slow = Histogram(), Histogram()
    for _ in range(990):
        fast.record(0.001)
    for _ in range(10):
        slow.record(0.5)
    merged = Histogram.decode(fast.encode())
    merged.merge(Histogram.decode(slow.encode()))
    assert merged.count == 1000
    assert merged.percentile_us(50) == pytest.approx(1000, rel=1e-3)
    assert merged.percentile_us(99.9) == pytest.approx(500_000, rel=1e-3)
    summary = fast.summary().merged(slow.summary())
    assert summary.count == 1000 and summary.p999_us == merged.percentile_us(99.9)


def test_an_empty_histogram_summarises_as_zeros() -> None:
    assert Histogram().summary() == LatencySummary()
    assert Histogram.decode("").count == 0


def test_timeline_has_one_point_per_second_with_zeros_for_stalls() -> None:
    metrics = Metrics(start=100.0, primary="publish")
    metrics.count("sent", 100.2, 5)
    metrics.latency("publish", 0.002, 100.3)
    metrics.error("close:1006", 100.9)
    metrics.count("received", 102.5)  # nothing happened in second 1
    points = metrics.timeline_points(102.6)
    assert [(p.t, p.sent, p.received, p.errors) for p in points] == [(0.0, 5, 0, 1), (1.0, 0, 0, 0), (2.0, 0, 1, 0)]
    assert points[0].latency_count == 1
    assert points[0].p99_us == 2000


def test_timeline_percentiles_come_from_a_bounded_sample() -> None:
    timeline = Timeline(start=0.0)
    for i in range(100_000):
        timeline.latency((i % 1000 + 1) / 1_000_000, 0.5)  # 1..1000 us, uniform
    assert len(timeline._samples) <= Timeline.SAMPLE
    (point,) = timeline.points(0.9)
    assert point.latency_count == 100_000
    assert point.p50_us == pytest.approx(500, rel=0.05)
    assert point.p99_us == pytest.approx(990, rel=0.02)


def test_timeline_stays_bounded_by_merging_neighbours() -> None:
    metrics = Metrics(start=0.0, primary="publish", max_points=8)
    for second in range(100):
        metrics.count("sent", second + 0.5)
        metrics.latency("publish", 0.001 * (10 if second == 37 else 1), second + 0.5)
    points = metrics.timeline_points(99.9)
    assert len(points) <= 8
    assert sum(p.sent for p in points) == 100
    assert all(p.interval == points[0].interval for p in points[:-1])
    assert max(p.p99_us for p in points) == 10_000  # the spike survives


def test_metrics_record_counters_errors_and_merge() -> None:
    a, b = Metrics(start=0.0, primary="publish"), Metrics(start=0.0, primary="publish")
    a.count("sent", 0.1, 3)
    a.latency("publish", 0.001, 0.1)
    b.error("close:1008", 0.2)
    b.latency("publish", 0.003, 0.2)
    b.gauge("open", 7)
    a.merge(b)
    assert a.counters == {"sent": 3}
    assert a.errors == {"close:1008": 1} and a.error_count == 1
    assert a.latencies["publish"].count == 2
    assert a.gauges == {"open": 7}
    assert set(a.summaries()) == {"publish"}


def test_the_open_interval_spans_only_the_time_passed() -> None:
    """A rate over the last, open interval is not diluted by the part of it still to come."""
    metrics = Metrics(start=0.0, primary="publish")
    for i in range(10):
        metrics.count("sent", 0.1 * i)
    for i in range(5):
        metrics.count("sent", 1.0 + 0.05 * i)
    points = metrics.timeline_points(1.25)
    assert [p.interval for p in points] == [1.0, 0.25]
    assert points[-1].sent / points[-1].interval == pytest.approx(20.0)
