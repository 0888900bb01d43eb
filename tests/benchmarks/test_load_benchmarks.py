"""The load benchmarks run end to end with tiny sizes and print their ratios.

Each script runs as its users run it (``python benchmarks/...``, in a
subprocess, loopback only) with sizes that finish in seconds.  What is
checked is that every generator produced a row and every ratio a number:
never a figure (a ratio in one run is a measurement, not a pass mark).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
#: Each script's run is bounded; these sizes take a few seconds.
RUN_TIMEOUT_S = 180.0


def _run(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
        env={**os.environ, **(env or {})},
    )


def _number_after(label: str, text: str) -> float:
    match = re.search(r"\s+".join(map(re.escape, label.split())) + r"\s+([0-9.]+)", text)
    assert match, f"no number after {label!r} in:\n{text}"
    return float(match.group(1))


def test_load_engine_compares_every_generator_and_prints_the_ratios(tmp_path: Path) -> None:
    """bare, engine and Locust each get a measured row; Artillery, with no npm on PATH, a note."""
    done = _run(
        "load_engine.py", "--clients", "2", "--duration", "0.5", "--warmup", "0.2", "--repeat", "1",
        "--locust-workers", "0", "--artillery-dir", str(tmp_path / "artillery"),
        env={"PATH": str(Path(sys.executable).parent)},  # python, no npm: Artillery is skipped
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Artillery skipped: npm or node is not on PATH" in out
    for row in ("bare asyncio loop", "engine (publish, generic)", "locust (1 process)"):
        assert re.search(re.escape(row) + r"[^|]*\|\s+\d+ \|\s+\d+ \|", out), f"no measured {row!r} row in:\n{out}"
    assert _number_after("engine / bare: msgs/s", out) > 0
    assert _number_after("engine / locust standalone: msgs per CPU-second", out) > 0
    assert re.search(r"engine / artillery: +msgs per CPU-second n/a", out), out


def test_connection_limit_measures_both_servers_and_prints_the_ratio() -> None:
    """The bare server and the reference server each hold N idle (authenticated) connections."""
    done = _run("connection_limit.py", "--connections", "20", "--rate", "200", "--settle", "0")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"bare websockets\s+\|.*\|\s+-?[0-9.]+ \|", out), out
    assert re.search(r"reference server\s+\|.*\|\s+-?[0-9.]+ \|", out), out
    assert "20 idle connections per server" in out
    assert re.search(r"RSS per connection, reference / bare: (-?\d+\.\d+|n/a)", out), out


def test_server_throughput_measures_another_version_in_the_same_rounds(tmp_path: Path) -> None:
    """``--compare DIR`` adds a third server, run from DIR's reference_server, with its own ratio row."""
    other = tmp_path / "before"
    shutil.copytree(ROOT / "reference_server", other / "reference_server",
                    ignore=shutil.ignore_patterns("__pycache__"))
    done = _run("server_throughput.py", "--round-trips", "100", "--repeat", "1", "--clients", "1",
                "--compare", str(other))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for server in ("bare websockets echo", "nova publish", "compared nova publish"):
        assert re.search(rf"\|\s+1 \| {server}\s+\|\s+\d+", out), f"no row for {server!r}:\n{out}"
    # rate and p99 ratios, then CPU (nan when 100 round trips take less than a clock tick)
    ratios = re.findall(r"^\s+1 \|\s+([0-9.]+) \|\s+([0-9.]+) \|\s+(?:[0-9.]+|nan)(.*)$", out, re.MULTILINE)
    assert len(ratios) == 2, out
    assert f"(compared: {other.resolve()})" in ratios[1][2]
    assert all(float(value) > 0 for row in ratios for value in row[:2])


def test_server_throughput_refuses_a_compare_folder_without_the_package(tmp_path: Path) -> None:
    done = _run("server_throughput.py", "--compare", str(tmp_path))
    assert done.returncode == 2
    assert f"--compare {tmp_path}: no reference_server/__main__.py there" in done.stderr
    assert "git archive COMMIT reference_server" in done.stderr
