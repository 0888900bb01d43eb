"""JSON and CSV files, built from to_dict() only."""

from __future__ import annotations

import csv
from pathlib import Path

from harness.load import read_json, write_csv, write_json

from .test_results import _run


def test_json_file_reads_back_as_the_same_result(tmp_path: Path) -> None:
    path = write_json(_run(), tmp_path / "out" / "run.json")
    assert read_json(path) == _run()


def test_csv_has_a_row_per_step_and_a_timeline_beside_it(tmp_path: Path) -> None:
    steps_path, timeline_path = write_csv(_run(), tmp_path / "run.csv")
    assert timeline_path == tmp_path / "run_timeline.csv"
    with steps_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["0", "1"]
    assert rows[1]["param.rate"] == "200.0"
    assert abs(float(rows[1]["publish.p99_ms"]) - 80.0) < 0.1
    assert rows[1]["error.error:rate_limited"] == "3" and rows[0]["error.error:rate_limited"] == "0"
    assert rows[1]["degraded"] == "p99"
    with timeline_path.open() as f:
        timeline = list(csv.DictReader(f))
    assert {r["step"] for r in timeline} == {"0", "1"}
    assert sum(int(r["sent"]) for r in timeline) == 200
