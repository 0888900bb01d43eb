"""Writing a run's figures: JSON and CSV, built from ``RunResult.to_dict()`` only.

- :func:`write_json`: the whole result, as ``to_dict()`` gives it
  (:func:`read_json` reads it back into a :class:`RunResult`).
- :func:`write_csv`: two files, as Locust does: ``PATH`` has one row per
  step (its parameters, rates, counters, errors and the p50/p90/p99/p99.9/max
  of each latency, in milliseconds) and ``PATH`` with ``_timeline`` before
  its suffix has one row per step and interval (sent, received, opened,
  errors, primary latency p50/p99 in ms).  Returns both paths.

Files are written whole to a temporary name and renamed, so a reader (or a
run interrupted while writing) never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .results import RunResult

__all__ = ["read_json", "steps_table", "timeline_path", "timeline_table", "write_csv", "write_json", "write_text"]

_STATS = (("p50", "p50_us"), ("p90", "p90_us"), ("p99", "p99_us"), ("p99.9", "p999_us"), ("max", "max_us"))


def write_text(path: Path, text: str) -> None:
    """Write ``text`` at ``path`` whole or not at all (a temporary name, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8", newline="")
    tmp.replace(path)


def write_json(result: RunResult | Mapping[str, Any], path: str | Path) -> Path:
    """Write ``result`` (or its ``to_dict()``) as indented JSON; return the path."""
    data = result.to_dict() if isinstance(result, RunResult) else dict(result)
    target = Path(path)
    write_text(target, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return target


def read_json(path: str | Path) -> RunResult:
    """The :class:`RunResult` a :func:`write_json` file holds."""
    return RunResult.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def timeline_path(path: str | Path) -> Path:
    """Where :func:`write_csv` puts the timeline next to ``path`` (``run.csv`` -> ``run_timeline.csv``)."""
    target = Path(path)
    return target.with_name(f"{target.stem}_timeline{target.suffix or '.csv'}")


def _ms(us: Any) -> str:
    return f"{float(us) / 1000:.3f}"


def steps_table(data: Mapping[str, Any]) -> list[dict[str, str]]:
    """The rows of the steps CSV, from a ``to_dict()`` (every row has every column)."""
    steps = list(data.get("steps", []))
    parameter_names = sorted({k for s in steps for k in s.get("parameters", {})})
    counter_names = sorted({k for s in steps for k in s.get("counters", {})})
    error_names = sorted({k for s in steps for k in s.get("errors", {})})
    metric_names = sorted({k for s in steps for k in s.get("latency", {})})
    rows = []
    for step in steps:
        row: dict[str, str] = {
            "scenario": str(data.get("scenario", "")),
            "step": str(step["index"]),
        }
        for name in parameter_names:
            value = step.get("parameters", {}).get(name)
            row[f"param.{name}"] = "" if value is None else str(value)
        row["setup_s"] = f"{step.get('setup', 0.0):.3f}"
        row["duration_s"] = f"{step.get('duration', 0.0):.3f}"
        offered, achieved = step.get("offered_rate"), step.get("achieved_rate")
        row["offered_per_s"] = "" if offered is None else f"{offered:g}"
        row["achieved_per_s"] = "" if achieved is None else f"{achieved:.1f}"
        row["throughput_per_s"] = f"{step.get('throughput', 0.0):.1f}"
        row["error_rate"] = f"{step.get('error_rate', 0.0):.6f}"
        for name in counter_names:
            row[name] = str(step.get("counters", {}).get(name, 0))
        for name in error_names:
            row[f"error.{name}"] = str(step.get("errors", {}).get(name, 0))
        for metric in metric_names:
            summary = step.get("latency", {}).get(metric)
            row[f"{metric}.count"] = str(summary["count"]) if summary else "0"
            for stat, key in _STATS:
                row[f"{metric}.{stat}_ms"] = _ms(summary[key]) if summary else ""
        row["degraded"] = step.get("degraded") or ""
        row["aborted"] = step.get("aborted") or ""
        rows.append(row)
    return rows


def timeline_table(data: Mapping[str, Any]) -> list[dict[str, str]]:
    """The rows of the timeline CSV, from a ``to_dict()``."""
    rows = []
    for step in data.get("steps", []):
        for point in step.get("timeline", []):
            rows.append(
                {
                    "step": str(step["index"]),
                    "t_s": f"{point['t']:.3f}",
                    "interval_s": f"{point['interval']:g}",
                    "sent": str(point.get("sent", 0)),
                    "received": str(point.get("received", 0)),
                    "opened": str(point.get("opened", 0)),
                    "errors": str(point.get("errors", 0)),
                    "latency_count": str(point.get("latency_count", 0)),
                    "p50_ms": _ms(point.get("p50_us", 0)),
                    "p99_ms": _ms(point.get("p99_us", 0)),
                }
            )
    return rows


_TIMELINE_COLUMNS = [
    "step", "t_s", "interval_s", "sent", "received", "opened", "errors", "latency_count", "p50_ms", "p99_ms",
]


def _csv_text(rows: list[dict[str, str]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(result: RunResult | Mapping[str, Any], path: str | Path) -> tuple[Path, Path]:
    """Write the steps CSV at ``path`` and the timeline CSV beside it; return both paths."""
    data = result.to_dict() if isinstance(result, RunResult) else dict(result)
    steps = steps_table(data)
    columns = list(steps[0]) if steps else ["scenario", "step"]
    target = Path(path)
    write_text(target, _csv_text(steps, columns))
    timeline = timeline_path(target)
    write_text(timeline, _csv_text(timeline_table(data), _TIMELINE_COLUMNS))
    return target, timeline
