"""The HTML report of a load run, and the "where it breaks" sentences the CLI prints.

Built from ``RunResult.to_dict()`` only (the JSON a run wrote is enough to
draw its report again: ``write_html(read_json("run.json"), "run.html")``).

- :func:`findings`: where the run broke, as sentences: the run aborted, the
  ramp's knee, thresholds that failed, errors by kind (close codes named),
  messages lost or duplicated, a rate the load generator or the server could
  not keep (offered against achieved).  Never empty: a run where nothing broke
  says so with its figures.
- :func:`verdict`: ``passed``, ``failed`` (a threshold) or ``aborted``.
- :func:`render_html` / :func:`write_html`: one self-contained HTML file that
  opens offline: no script, no stylesheet, font or image fetched from
  anywhere; the charts (latency p50/p99 over time, throughput over time) are
  inline SVG drawn here.  Every string that comes from the run (URL,
  parameters, error kinds, messages) is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from .output import write_text
from .results import RunResult

__all__ = ["CLOSE_CODES", "describe_error", "findings", "render_html", "step_label", "verdict", "write_html"]

#: Close codes a report names (RFC 6455 and the Nova protocol's own, docs/protocol.md).
CLOSE_CODES: dict[int, str] = {
    1000: "normal closure",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status",
    1006: "dropped without a close frame",
    1007: "invalid frame payload",
    1008: "policy violation (bad origin, rate limit)",
    1009: "message too big",
    1011: "internal server error",
    1012: "service restart",
    1013: "try again later",
    4001: "authentication failed",
    4002: "authentication timeout",
    4003: "replaced by a newer connection",
}

Verdict = Literal["passed", "failed", "aborted"]

#: Below this share of the offered rate, a report says the rate was not produced.
_ACHIEVED_SHARE = 0.95


def describe_error(kind: str) -> str:
    """``kind`` with its close code named: ``close:1008`` -> ``close:1008 (policy violation ...)``."""
    head, _, code = kind.partition(":")
    if head == "close" and code.isdigit() and int(code) in CLOSE_CODES:
        return f"{kind} ({CLOSE_CODES[int(code)]})"
    return kind


def verdict(data: Mapping[str, Any]) -> Verdict:
    """``aborted`` when the run ended early, ``failed`` when a threshold failed, else ``passed``."""
    if data.get("aborted"):
        return "aborted"
    if any(not t.get("passed") for t in data.get("thresholds", [])):
        return "failed"
    return "passed"


def _ms(us: float) -> str:
    return f"{us / 1000:.2f} ms"


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}/s"


def _error_list(errors: Mapping[str, int], limit: int = 5) -> str:
    ranked = sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{describe_error(k)} x{n}" for k, n in ranked[:limit])
    if len(ranked) > limit:
        shown += f" and {len(ranked) - limit} more kinds"
    return shown


def _total(data: Mapping[str, Any]) -> dict[str, Any]:
    # Every step as one, histograms merged exactly: what the thresholds judged.
    return RunResult.from_dict(data).total.to_dict()


def step_label(data: Mapping[str, Any], step: Mapping[str, Any]) -> str:
    """What a step loaded: ``rate=400`` (the ramp's stepped parameter), else ``step N``."""
    name = (data.get("parameters") or {}).get("parameter")
    parameters = step.get("parameters") or {}
    if name and name in parameters:
        return f"{name}={parameters[name]:g}" if isinstance(parameters[name], (int, float)) else f"{name}={parameters[name]}"
    return f"step {step.get('index')}"


def findings(data: Mapping[str, Any]) -> list[str]:
    """Where the run broke, most important first (see the module docstring); never empty."""
    out: list[str] = []
    total = _total(data)
    steps: list[Mapping[str, Any]] = list(data.get("steps", []))
    if data.get("aborted"):
        out.append(f"the run was aborted: {data['aborted']}")
    knee = data.get("knee")
    if knee is not None and 0 <= knee < len(steps):
        step = steps[knee]
        out.append(f"knee at step {knee} ({step_label(data, step)}): {step.get('degraded') or 'degraded'}")
    for t in data.get("thresholds", []):
        if not t.get("passed"):
            out.append(f"threshold failed: {t.get('message') or t.get('expression')}")
    errors = total.get("errors") or {}
    aborted = str(data.get("aborted") or "")
    if errors and not all(kind in aborted for kind in errors):
        count = sum(errors.values())
        out.append(f"{count} error(s), {total.get('error_rate', 0.0):.2%} of operations: {_error_list(errors)}")
    counters = total.get("counters") or {}
    broken = [f"{name} {counters[name]}" for name in ("lost", "duplicated", "out_of_order", "unconfirmed")
              if counters.get(name)]
    if broken:
        out.append("messages not delivered exactly once: " + ", ".join(broken))
    for step in steps:
        offered, achieved = step.get("offered_rate"), step.get("achieved_rate")
        if offered and achieved is not None and step.get("duration", 0) > 0 and achieved < _ACHIEVED_SHARE * offered:
            skipped = (step.get("counters") or {}).get("skipped", 0)
            who = (
                f"the load generator skipped {skipped} sends it was too late for"
                if skipped
                else "the server or the load generator did not keep up"
            )
            where = f"step {step['index']} ({step_label(data, step)}): " if len(steps) > 1 else ""
            out.append(
                f"{where}offered {offered:,.0f}/s, achieved {achieved:,.0f}/s "
                f"({achieved / offered:.0%}): {who}"
            )
    if out:
        return out
    primary = data.get("primary_metric", "")
    summary = (total.get("latency") or {}).get(primary)
    figures = []
    if summary and summary.get("count"):
        figures.append(f"{primary} p99 {_ms(summary['p99_us'])}")
    figures.append(f"{data.get('throughput_counter', 'throughput')} {total.get('throughput', 0.0):,.0f}/s")
    if data.get("scenario") == "ramp" and steps:
        return [f"nothing broke up to {step_label(data, steps[-1])}: no step degraded, no error ("
                + ", ".join(figures) + ")"]
    return ["nothing broke at this load: no error, no threshold failed (" + ", ".join(figures) + ")"]


# ----------------------------------------------------------------- SVG charts

_WIDTH, _HEIGHT = 760, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 28, 36


def _nice_step(span: float, ticks: int = 4) -> float:
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= factor * power:
            return factor * power
    return 10.0 * power


def _tick_label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


Series = tuple[str, str, list[tuple[float, float | None]]]


def _chart(
    title: str,
    y_unit: str,
    series: Sequence[Series],
    x_max: float,
    boundaries: Sequence[tuple[float, str]],
    knee: tuple[float, float] | None,
) -> str:
    """An SVG line chart: ``series`` are (label, colour, [(x, y or None for a gap)])."""
    values = [y for _, _, points in series for _, y in points if y is not None]
    y_top = max(values) if values else 1.0
    y_step = _nice_step(y_top)
    y_max = max(y_step, math.ceil(y_top / y_step) * y_step)
    x_max = max(x_max, 1e-9)
    x_step = _nice_step(x_max, 6)
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + x / x_max * plot_w

    def sy(y: float) -> float:
        return _TOP + plot_h - y / y_max * plot_h

    e = html.escape
    parts = [
        (
            f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}" '
            f'role="img" aria-label="{e(title)}">'
        ),
        f"<title>{e(title)}</title>",
    ]
    if knee is not None:
        x0, x1 = sx(knee[0]), sx(min(knee[1], x_max))
        parts.append(
            f'<rect class="knee" x="{x0:.1f}" y="{_TOP}" width="{max(x1 - x0, 1):.1f}" height="{plot_h}"/>'
            f'<text class="knee-label" x="{x0 + 4:.1f}" y="{_TOP + 12}">knee</text>'
        )
    y = 0.0
    while y <= y_max + y_step / 2:
        py = sy(y)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" y1="{py:.1f}" x2="{_WIDTH - _RIGHT}" y2="{py:.1f}"/>'
            f'<text class="tick" x="{_LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{e(_tick_label(y))}</text>'
        )
        y += y_step
    x = 0.0
    while x <= x_max + x_step / 100:
        px = sx(x)
        parts.append(
            f'<text class="tick" x="{px:.1f}" y="{_HEIGHT - _BOTTOM + 16}" text-anchor="middle">'
            f"{e(_tick_label(x))}</text>"
        )
        x += x_step
    for bx, label in boundaries:
        px = sx(bx)
        parts.append(
            f'<line class="boundary" x1="{px:.1f}" y1="{_TOP}" x2="{px:.1f}" y2="{_TOP + plot_h}"/>'
            f'<text class="tick" x="{px + 3:.1f}" y="{_TOP + plot_h - 4}">{e(label)}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_WIDTH - _RIGHT}" y2="{_TOP + plot_h}"/>'
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}"/>'
        f'<text class="tick" x="{_WIDTH - _RIGHT}" y="{_HEIGHT - 4}" text-anchor="end">seconds from start</text>'
        f'<text class="tick" x="{_LEFT - 6}" y="{_TOP - 10}" text-anchor="end">{e(y_unit)}</text>'
    )
    legend_x = _LEFT + 8
    for label, colour, points in series:
        path: list[str] = []
        pen_down = False
        for px_, py_ in points:
            if py_ is None:
                pen_down = False
                continue
            path.append(f"{'L' if pen_down else 'M'}{sx(px_):.1f} {sy(py_):.1f}")
            pen_down = True
        if path:
            parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
            # A lone point (a one-interval run) still shows.
            if len(path) == 1:
                head = path[0][1:].split()
                parts.append(f'<circle cx="{head[0]}" cy="{head[1]}" r="2.5" fill="{colour}"/>')
        parts.append(
            f'<rect x="{legend_x}" y="{_TOP - 20}" width="10" height="10" fill="{colour}"/>'
            f'<text class="legend" x="{legend_x + 14}" y="{_TOP - 11}">{e(label)}</text>'
        )
        legend_x += 24 + 7 * len(label)
    parts.append("</svg>")
    return "".join(parts)


def _timeline(data: Mapping[str, Any]) -> list[tuple[float, Mapping[str, Any]]]:
    # (middle of the interval in seconds from the run's start, point)
    out = []
    for step in data.get("steps", []):
        started = float(step.get("started", 0.0))
        for point in step.get("timeline", []):
            out.append((started + float(point["t"]) + float(point["interval"]) / 2, point))
    return out


def _charts(data: Mapping[str, Any]) -> str:
    points = _timeline(data)
    steps: list[Mapping[str, Any]] = list(data.get("steps", []))
    if not points:
        return '<p class="muted">No timeline: the run recorded no interval.</p>'
    x_max = max(
        [float(s.get("started", 0.0)) + float(p["t"]) + float(p["interval"]) for s in steps for p in s.get("timeline", [])]
    )
    boundaries = [(float(s.get("started", 0.0)), f"step {s['index']}") for s in steps] if len(steps) > 1 else []
    knee = None
    k = data.get("knee")
    if k is not None and 0 <= k < len(steps):
        start = float(steps[k].get("started", 0.0))
        end = float(steps[k + 1].get("started", x_max)) if k + 1 < len(steps) else x_max
        knee = (start, end)
    primary = str(data.get("primary_metric", "latency"))
    latency: list[Series] = [
        (f"{primary} p50", "#2b6cb0", [(x, p["p50_us"] / 1000 if p.get("latency_count") else None) for x, p in points]),
        (f"{primary} p99", "#c53030", [(x, p["p99_us"] / 1000 if p.get("latency_count") else None) for x, p in points]),
    ]
    colours = {"sent": "#2f855a", "received": "#2b6cb0", "opened": "#805ad5", "errors": "#c53030"}
    throughput: list[Series] = [
        (f"{name}/s", colour, [(x, _per_second(p, name)) for x, p in points])
        for name, colour in colours.items()
        if any(p.get(name, 0) for _, p in points)
    ]
    parts = [
        "<h2>Latency over time</h2>",
        _chart(f"{primary} latency p50 and p99 per interval", "ms", latency, x_max, boundaries, knee),
        "<h2>Throughput over time</h2>",
        _chart("messages and connections per second", "per s", throughput or [("sent/s", colours["sent"], [])],
               x_max, boundaries, knee),
    ]
    return "\n".join(parts)


# ----------------------------------------------------------------- HTML

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:980px;
color:#1a202c;padding:0 16px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e2e8f0}
table{border-collapse:collapse;margin:4px 0}th,td{padding:3px 10px;border-bottom:1px solid #edf2f7;
text-align:left;vertical-align:top}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;overflow-wrap:anywhere}
.verdict{display:inline-block;padding:1px 8px;border-radius:4px;color:#fff;font-size:14px;vertical-align:middle}
.passed{background:#2f855a}.failed{background:#c53030}.aborted{background:#975a16}
.ok{color:#2f855a;font-weight:600}.bad{color:#c53030;font-weight:600}
tr.knee td{background:#fff5f5}.muted{color:#718096}ul.where li{margin:2px 0}
svg.chart{max-width:100%;height:auto;font:11px system-ui,sans-serif}
svg .grid{stroke:#edf2f7}svg .axis{stroke:#a0aec0}svg .boundary{stroke:#a0aec0;stroke-dasharray:4 3}
svg .tick,svg .legend{fill:#4a5568}svg .knee{fill:#fed7d7;opacity:.6}svg .knee-label{fill:#c53030}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[bool] | None = None,
           row_classes: Sequence[str] | None = None) -> str:
    """A table of already-escaped cells."""
    numeric = numeric or [False] * len(headers)
    head = "".join(f'<th{" class=n" if n else ""}>{_e(h)}</th>' for h, n in zip(headers, numeric, strict=True))
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td{" class=n" if n else ""}>{c}</td>' for c, n in zip(row, numeric, strict=True))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _value(value: object) -> str:
    if isinstance(value, float):
        return _e(f"{value:g}")
    if isinstance(value, (list, tuple)):
        return _e(", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value))
    if isinstance(value, dict):
        return "<br>".join(f"<code>{_e(k)}</code> = {_value(v)}" for k, v in value.items())
    return _e("" if value is None else value)


def _summary(data: Mapping[str, Any], total: Mapping[str, Any]) -> str:
    counters = total.get("counters") or {}
    rows: list[tuple[str, str]] = [
        ("scenario", f"<code>{_e(data.get('scenario'))}</code>"),
        ("profile", _e(data.get("profile"))),
        ("URL", f"<code>{_e(data.get('url'))}</code>"),
        ("started", _e(data.get("started_at"))),
        ("duration", _e(f"{float(data.get('duration', 0.0)):.1f} s (measured {float(total.get('duration', 0.0)):.1f} s, "
                        f"set-up {float(total.get('setup', 0.0)):.1f} s)")),
        (f"throughput ({data.get('throughput_counter')})", _e(_rate(total.get("throughput")))),
    ]
    single = len(data.get("steps", [])) == 1  # a ramp's steps show their own rates
    if single and (total.get("offered_rate") is not None or total.get("achieved_rate") is not None):
        offered = "as fast as confirmations come" if total.get("offered_rate") is None else _rate(total.get("offered_rate"))
        rows.append(("offered / achieved rate", _e(f"{offered} / {_rate(total.get('achieved_rate'))}")))
    rows.append(("errors", _e(f"{sum((total.get('errors') or {}).values())} ({float(total.get('error_rate', 0.0)):.2%} "
                              "of operations)")))
    gauges = total.get("gauges") or {}
    if "open" in gauges or "clients" in gauges:
        rows.append(("connections open at the end", _e(f"{gauges.get('open', 0):g} of {gauges.get('clients', 0):g}")))
    server = data.get("server")
    if server:
        per = server.get("rss_per_connection")
        per_text = "n/a" if per is None else f"{per / 1024:.1f} KiB"
        rows.append(("server RSS per connection",
                     _e(f"{per_text} (pid {server.get('pid')}, {server.get('connections')} connections, "
                        f"{server.get('rss_before', 0) / 2**20:.1f} -> {server.get('rss_loaded', 0) / 2**20:.1f} MiB)")))
    parts = [_table(["", ""], [(f"<b>{_e(k)}</b>", v) for k, v in rows])]
    if counters:
        parts.append("<h2>Counters</h2>")
        parts.append(_table(["counter", "value"], [(f"<code>{_e(k)}</code>", _e(f"{v:,}"))
                                                    for k, v in sorted(counters.items())], [False, True]))
    return "\n".join(parts)


def _latency(total: Mapping[str, Any]) -> str:
    latency = total.get("latency") or {}
    if not latency:
        return '<p class="muted">No latency was measured.</p>'
    keys = ("mean_us", "min_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us")
    rows = [
        [f"<code>{_e(name)}</code>", _e(f"{s.get('count', 0):,}")] + [_e(_ms(float(s.get(k, 0)))) for k in keys]
        for name, s in sorted(latency.items())
    ]
    return _table(["metric", "count", "mean", "min", "p50", "p90", "p99", "p99.9", "max"], rows,
                  [False] + [True] * 8)


def _thresholds(data: Mapping[str, Any]) -> str:
    thresholds = data.get("thresholds") or []
    if not thresholds:
        return '<p class="muted">No threshold was set (--threshold p99&lt;50ms ...).</p>'
    rows = [
        [
            '<span class="ok">pass</span>' if t.get("passed") else '<span class="bad">FAIL</span>',
            f"<code>{_e(t.get('expression'))}</code>",
            _e(t.get("message")),
        ]
        for t in thresholds
    ]
    return _table(["", "threshold", "outcome"], rows)


def _errors(total: Mapping[str, Any]) -> str:
    errors = total.get("errors") or {}
    if not errors:
        return '<p class="muted">No error.</p>'
    rows = [[f"<code>{_e(kind)}</code>", _e(describe_error(kind)[len(kind):].strip(" ()")), _e(f"{n:,}")]
            for kind, n in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))]
    return _table(["kind", "meaning", "count"], rows, [False, False, True])


def _steps(data: Mapping[str, Any]) -> str:
    steps: list[Mapping[str, Any]] = list(data.get("steps", []))
    if not steps:
        return '<p class="muted">No step ran.</p>'
    primary = str(data.get("primary_metric", ""))
    knee = data.get("knee")
    rows, classes = [], []
    for step in steps:
        summary = (step.get("latency") or {}).get(primary) or {}
        marks = []
        if step.get("index") == knee:
            marks.append('<span class="bad">knee</span>')
        if step.get("degraded"):
            marks.append(_e(step["degraded"]))
        if step.get("aborted"):
            marks.append(_e(f"aborted: {step['aborted']}"))
        rows.append([
            _e(step.get("index")),
            _e(step_label(data, step)),
            _e(_rate(step.get("offered_rate")) or "max"),
            _e(_rate(step.get("achieved_rate"))),
            _e(_rate(step.get("throughput"))),
            _e(_ms(summary.get("p50_us", 0)) if summary.get("count") else ""),
            _e(_ms(summary.get("p99_us", 0)) if summary.get("count") else ""),
            _e(f"{float(step.get('error_rate', 0.0)):.2%}"),
            " ".join(marks),
        ])
        classes.append("knee" if step.get("index") == knee else "")
    return _table(
        ["step", "load", "offered", "achieved", "throughput", f"{primary} p50", f"{primary} p99", "errors", ""],
        rows, [True, False, True, True, True, True, True, True, False], classes,
    )


def render_html(data: Mapping[str, Any] | RunResult) -> str:
    """The report of a run (its ``to_dict()``, or the result itself) as one self-contained HTML page."""
    d: Mapping[str, Any] = data.to_dict() if isinstance(data, RunResult) else data
    total = _total(d)
    v = verdict(d)
    title = f"nova-ws load {d.get('scenario')}: {v.upper()}"
    where = "".join(f"<li>{_e(s)}</li>" for s in findings(d))
    warnings = d.get("warnings") or []
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f'<h1>nova-ws load <code>{_e(d.get("scenario"))}</code> <span class="verdict {v}">{v.upper()}</span></h1>',
        f'<p class="muted">{_e(d.get("started_at"))} against <code>{_e(d.get("url"))}</code></p>',
        f'<h2>Where it breaks</h2><ul class="where">{where}</ul>',
        "<h2>Summary</h2>",
        _summary(d, total),
        "<h2>Latency</h2>",
        _latency(total),
        "<h2>Thresholds</h2>",
        _thresholds(d),
        "<h2>Errors by kind</h2>",
        _errors(total),
        "<h2>Steps</h2>",
        _steps(d),
        _charts(d),
    ]
    if warnings:
        parts.append("<h2>Warnings</h2><ul>" + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul>")
    parts += [
        "<h2>Parameters</h2>",
        _table(["parameter", "value"],
               [(f"<code>{_e(k)}</code>", _value(val)) for k, val in (d.get("parameters") or {}).items()]),
        f'<p class="muted">Report format {_e(d.get("format", ""))}, drawn from the run\'s JSON.</p>',
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


#: A step's last, open interval shorter than this (seconds) shows no rate: a few
#: messages over a few milliseconds would read as a spike.
MIN_RATE_SPAN = 0.2


def _per_second(point: Mapping[str, Any], name: str) -> float | None:
    span = float(point["interval"])
    return point.get(name, 0) / span if span >= MIN_RATE_SPAN else None


def write_html(result: RunResult | Mapping[str, Any], path: str | Path) -> Path:
    """Write the report of ``result`` (or its ``to_dict()``) at ``path``, whole or not at all; return the path."""
    target = Path(path)
    write_text(target, render_html(result))
    return target
