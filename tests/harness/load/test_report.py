"""The HTML report opens offline, shows where the run broke, and escapes everything from the run."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from harness.load import Metrics, RunResult, StepResult, ThresholdOutcome
from harness.load.report import describe_error, findings, render_html, verdict, write_html

HOSTILE_KIND = 'error:<script>alert("x")</script>&amp;'
HOSTILE_URL = 'http://127.0.0.1:8000/"><img src=x onerror=alert(1)>?a=<b>&c=1'


def _step(index: int, rate: float, ms: float, errors: dict[str, int] | None = None,
          achieved: float | None = None) -> StepResult:
    """A step of a publish ramp: 3 s of 1 s intervals at ``rate``, latency ``ms``."""
    metrics = Metrics(start=0.0, primary="publish")
    metrics.count("opened", 0.05, 4)
    metrics.latency("connect", 0.004, 0.05)
    sent = int(achieved if achieved is not None else rate)
    for second in range(3):
        for i in range(sent):
            now = second + i / sent
            metrics.count("sent", now)
            metrics.count("confirmed", now)
            metrics.latency("publish", ms / 1000 * (1 + second), now)
    for kind, n in (errors or {}).items():
        metrics.error(kind, 1.5, n)
    return StepResult(
        index=index, parameters={"rate": rate, "clients": 4}, started=3.2 * index, setup=0.1, duration=3.0,
        offered_rate=rate, achieved_rate=float(sent), throughput=float(sent),
        counters=dict(metrics.counters), errors=dict(metrics.errors), gauges={"open": 4.0, "clients": 4.0},
        latency=metrics.summaries(), timeline=metrics.timeline_points(3.0),
    )


def _ramp() -> dict[str, Any]:
    steps = [
        _step(0, 50.0, 1.0),
        _step(1, 100.0, 2.0),
        _step(2, 200.0, 90.0, errors={"close:1008": 2, HOSTILE_KIND: 3}, achieved=120.0).with_degraded(
            "publish p99 270.00 ms > 100 ms"
        ),
    ]
    run = RunResult(
        scenario="ramp", url=HOSTILE_URL,
        parameters={"base": "publish", "parameter": "rate", "values": [50.0, 100.0, 200.0], "max_p99": 0.1},
        started_at="2026-01-01T00:00:00.000Z", duration=10.0, steps=steps, profile="nova",
        primary_metric="publish", throughput_counter="confirmed", knee=2,
        thresholds=[
            ThresholdOutcome("errors<1%", "error rate", 0.004, 0.01, "ratio", True, "errors<1%: ok, error rate was 0.4%"),
            ThresholdOutcome("p99<50ms", "publish p99", 270_000.0, 50_000.0, "us", False,
                             "p99<50ms: FAILED, publish p99 was 270.000 ms"),
        ],
        warnings=["step 2: offered 200/s, achieved 120/s"],
    )
    # Exactly what a report is given: the JSON a run wrote.
    data: dict[str, Any] = json.loads(json.dumps(run.to_dict()))
    assert RunResult.from_dict(data) == run
    return data


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.rows: list[tuple[str, str]] = []  # (class of the <tr>, its text)
        self._row: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self._row = (dict(attrs).get("class") or "", [])

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._row is not None:
            self.rows.append((self._row[0], " ".join(self._row[1])))
            self._row = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._row is not None:
            self._row[1].append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def test_the_report_is_one_offline_file_with_two_svg_charts() -> None:
    html = render_html(_ramp())
    page = _parse(html)
    names = [tag for tag, _ in page.tags]
    assert names.count("svg") == 2
    assert names.count("path") >= 4  # p50 and p99; sent/s and received/s
    # Nothing is fetched: no script, stylesheet link, image, frame or font; no attribute naming a resource.
    assert not {"script", "link", "img", "iframe", "object", "embed", "image", "use"} & set(names)
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            assert name not in ("src", "href", "xlink:href", "srcset"), (tag, name, value)
            assert not re.search(r"https?://", value or ""), (tag, name, value)
    assert "@import" not in html and "url(" not in html
    # The only http(s) URL in the page is the run's own, shown as text.
    text = "".join(page.text)
    assert text.count(HOSTILE_URL) == 2
    assert len(re.findall(r"https?://", text)) == 2


def test_strings_from_the_run_are_escaped() -> None:
    html = render_html(_ramp())
    assert "<script>" not in html and "<img" not in html
    page = _parse(html)
    text = "".join(page.text)
    assert HOSTILE_KIND in text  # shown as the text it is
    assert not any(tag in ("script", "img") for tag, _ in page.tags)


def test_the_report_shows_where_it_breaks() -> None:
    page = _parse(render_html(_ramp()))
    text = " ".join(page.text)
    assert "knee at step 2 (rate=200): publish p99 270.00 ms > 100 ms" in text
    assert "threshold failed: p99<50ms: FAILED" in text
    assert "close:1008 (policy violation" in text
    assert "offered 200/s, achieved 120/s (60%)" in text
    knee_rows = [row for cls, row in page.rows if cls == "knee"]
    assert len(knee_rows) == 1 and "rate=200" in knee_rows[0] and "knee" in knee_rows[0]
    # Thresholds with their verdicts.
    assert any("pass" in row and "errors<1%" in row for _, row in page.rows)
    assert any("FAIL" in row and "p99<50ms" in row for _, row in page.rows)
    # The knee is marked on the charts too.
    assert sum(1 for tag, attrs in page.tags if tag == "rect" and attrs.get("class") == "knee") == 2


def test_the_latency_chart_follows_the_timeline() -> None:
    data = _ramp()
    page = _parse(render_html(data))
    p99 = [attrs["d"] for tag, attrs in page.tags if tag == "path" and attrs.get("stroke") == "#c53030"]
    points = sum(1 for s in data["steps"] for p in s["timeline"] if p["latency_count"])
    assert p99 and (p99[0] or "").count(" ") == 2 * points - 1  # "Mx y Lx y ..." : one pair per interval
    ys = [float(y) for y in re.findall(r"[ML][0-9.]+ ([0-9.]+)", p99[0] or "")]
    last_step = sum(1 for p in data["steps"][-1]["timeline"] if p["latency_count"])
    # SVG y grows downwards: the slowest interval (the knee step's last) is drawn highest.
    assert ys.index(min(ys)) >= len(ys) - last_step
    assert max(ys) - min(ys) > 100  # pixels: the spike stands out


def test_verdict_and_findings_of_an_aborted_run() -> None:
    data = _ramp()
    data["aborted"] = "every connection was closed 1.2 s into the run: close:1011 x4"
    assert verdict(data) == "aborted"
    assert findings(data)[0].startswith("the run was aborted: every connection was closed")


def test_a_run_where_nothing_broke_says_so_with_its_figures() -> None:
    run = RunResult(
        scenario="publish", url="ws://127.0.0.1:8000", parameters={}, started_at="2026-01-01T00:00:00Z",
        duration=3.3, steps=[_step(0, 50.0, 1.0)], primary_metric="publish", throughput_counter="confirmed",
    )
    (line,) = findings(run.to_dict())
    assert line.startswith("nothing broke at this load") and "publish p99" in line and "confirmed 50/s" in line
    assert verdict(run.to_dict()) == "passed"


def test_a_run_that_never_started_still_renders() -> None:
    run = RunResult(scenario="fanuot", url="", parameters={}, started_at="2026-01-01T00:00:00Z", duration=0.0,
                    steps=[], aborted="bad input: unknown scenario 'fanuot'")
    page = _parse(render_html(run))
    text = " ".join(page.text)
    assert "ABORTED" in text and "unknown scenario 'fanuot'" in text and "No step ran" in text


def test_close_codes_are_named() -> None:
    assert describe_error("close:4001") == "close:4001 (authentication failed)"
    assert describe_error("close:1006") == "close:1006 (dropped without a close frame)"
    assert describe_error("connect:refused") == "connect:refused"


def test_write_html_writes_the_page(tmp_path: Path) -> None:
    data = _ramp()
    path = write_html(data, tmp_path / "out" / "report.html")
    assert path.read_text(encoding="utf-8") == render_html(data)
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary file left


def test_messages_not_delivered_exactly_once_are_a_finding() -> None:
    step = _step(0, 50.0, 1.0)
    step = StepResult.from_dict({**step.to_dict(), "counters": {**step.counters, "lost": 3, "duplicated": 1}})
    run = RunResult(scenario="reconnect-storm", url="ws://127.0.0.1:8000", parameters={},
                    started_at="2026-01-01T00:00:00Z", duration=3.3, steps=[step], primary_metric="delivery",
                    throughput_counter="delivered")
    assert findings(run.to_dict()) == ["messages not delivered exactly once: lost 3, duplicated 1"]
