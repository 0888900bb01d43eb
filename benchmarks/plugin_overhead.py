"""Per-test cost of ``ws_helper`` against bare pytest-playwright, serial and with ``-n 2``.

Two generated suites of N tests load the same reference page and wait for the
socket to be connected:

* bare: pytest-playwright's ``page`` + ``ws_server`` (only to have a server),
  ``page.goto`` straight to the server (no fault proxy) and an ``expect`` on
  the status;
* harness: ``ws_helper`` (journal route, paused virtual clock, seeded
  randomness, protocol validation, fault cleanup at teardown).

Each suite runs serially and with ``-n 2`` in the same invocation of this
script; the per-test cost is the mean of setup + call + teardown over the
tests (the first test of each worker, which launches the browser, excluded).

    python benchmarks/plugin_overhead.py            # N = 40
    python benchmarks/plugin_overhead.py --tests 120
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE = '''
import uuid
import pytest
from playwright.sync_api import expect

@pytest.mark.parametrize("i", range({n}))
def test_bare(page, ws_server, i):
    # Straight to the server, as a project without the harness would load its page.
    page.goto(ws_server.config.page_url(ws_server.http_url, "bare-" + uuid.uuid4().hex[:12]))
    expect(page.get_by_test_id("connection-status")).to_have_text("connected")
'''

HARNESS = '''
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_harness(ws_helper, i):
    ws_helper.wait_for_connection_status("connected")
'''


def run_suite(folder: Path, source: str, n: int, workers: int) -> tuple[float, float]:
    """Return (wall seconds, mean per-test seconds without each worker's first test)."""
    test_file = folder / "test_suite.py"
    test_file.write_text(source.format(n=n))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0",
           "--durations-min=0", str(test_file), "-o", "addopts="]
    if workers > 1:
        cmd += ["-n", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"suite failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    per_test: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)s (setup|call|teardown)\s+(\S+)", line)
        if m:
            per_test[m.group(3)] = per_test.get(m.group(3), 0.0) + float(m.group(1))
    costs = sorted(per_test.values())
    # Drop the slowest `workers` tests: each worker's first test launches the browser.
    trimmed = costs[: max(1, len(costs) - workers)]
    return wall, sum(trimmed) / len(trimmed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=40)
    args = parser.parse_args(argv)
    results: dict[tuple[str, int], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in (("bare pytest-playwright", BARE), ("ws_helper", HARNESS)):
            for workers in (1, 2):
                folder = Path(tmp) / f"{name.split()[0]}-{workers}"
                folder.mkdir()
                results[(name, workers)] = run_suite(folder, source, args.tests, workers)
    print(f"{args.tests} tests per suite")
    print(f"{'suite':<24} | {'workers':>7} | {'wall s':>7} | {'per test s':>10}")
    print("-" * 58)
    for (name, workers), (wall, per) in results.items():
        print(f"{name:<24} | {workers:>7} | {wall:>7.1f} | {per:>10.3f}")
    bare1, harness1 = results[("bare pytest-playwright", 1)], results[("ws_helper", 1)]
    bare2, harness2 = results[("bare pytest-playwright", 2)], results[("ws_helper", 2)]
    print()
    print(f"per-test cost ws_helper / bare (serial):  {harness1[1] / bare1[1]:.2f}   goal <= 1.20")
    print(f"-n 2 / serial wall, bare:                 {bare2[0] / bare1[0]:.2f}")
    print(f"-n 2 / serial wall, ws_helper:            {harness2[0] / harness1[0]:.2f}   goal <= bare's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
