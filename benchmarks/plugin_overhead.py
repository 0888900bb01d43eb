"""Per-test cost of ``ws_helper`` against bare pytest-playwright, serial and with ``-n 2``.

Two generated suites of N tests load the same reference page and wait for the
socket to be connected:

* bare: pytest-playwright's ``page`` + ``ws_server`` (only to have a server),
  ``page.goto`` straight to the server (no fault proxy) and an ``expect`` on
  the status;
* harness: ``ws_helper`` (journal route, paused virtual clock, seeded
  randomness, protocol validation, fault cleanup at teardown).

The same ``ws_helper`` suite also runs on the reference page with
``--ws-profile=generic`` (no hook: readiness by the page's first open socket,
state from the socket log), so the two profiles are compared on one app.

The same pair runs on the foreign demo app (fixtures/apps/chat, served with
``--ws-app``), where ``ws_helper`` uses the generic profile (socket log,
readiness by the page's first open socket, FaultMiddleware in front of the
app), so the generic profile's cost is a ratio against its own bare baseline,
next to the Nova profile's.

Each suite runs serially and with ``-n 2`` in the same invocation of this
script; the per-test cost is the mean of setup + call + teardown over the
tests (the first test of each worker, which launches the browser, excluded).

    python benchmarks/plugin_overhead.py                          # N = 40, one round
    python benchmarks/plugin_overhead.py --tests 30 --repeat 3 --e2e

``--repeat`` runs every suite once per round, in turn, and reports medians, so
a drift in the machine's load touches both sides of a ratio.  ``--e2e`` adds
this project's e2e suite, serially and with ``-n 2``, for the parallel ratio
the bare suite is compared with.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
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

BARE_CHAT = '''
import uuid
import pytest
from playwright.sync_api import expect

@pytest.mark.parametrize("i", range({n}))
def test_bare(page, ws_server, i):
    page.goto(ws_server.config.page_url(ws_server.http_url, "bare-" + uuid.uuid4().hex[:12]))
    expect(page.get_by_test_id("status")).to_have_text("connected")
'''

#: The chat app's settings, as its team would give them.
CHAT_OPTIONS = [
    "--ws-app=fixtures.apps.chat.app:app",
    "--ws-path=/ws/{client_id}",
    "--ws-page-path=/?client={client_id}",
    "--ws-test-ids=connection_status=status",
]

#: name -> (source, extra pytest arguments)
SUITES = {
    "bare pytest-playwright": (BARE, []),
    "ws_helper": (HARNESS, []),
    "ws_helper generic, ref.": (HARNESS, ["--ws-profile=generic"]),
    "bare, chat app": (BARE_CHAT, CHAT_OPTIONS),
    "ws_helper generic, chat": (HARNESS, CHAT_OPTIONS),
}


ROOT = Path(__file__).resolve().parent.parent


def run_pytest(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the demo app is importable from the suites' folders
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800, check=False, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"suite failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def run_suite(folder: Path, source: str, n: int, workers: int, extra: list[str]) -> tuple[float, float]:
    """Return (wall seconds, mean per-test seconds without each worker's first test)."""
    test_file = folder / "test_suite.py"
    test_file.write_text(source.format(n=n))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0",
           "--durations-min=0", str(test_file), "-o", "addopts=", *extra]
    if workers > 1:
        cmd += ["-n", str(workers)]
    wall, stdout = run_pytest(cmd, folder)
    per_test: dict[str, float] = {}
    for line in stdout.splitlines():
        m = re.match(r"\s*([\d.]+)s (setup|call|teardown)\s+(\S+)", line)
        if m:
            per_test[m.group(3)] = per_test.get(m.group(3), 0.0) + float(m.group(1))
    costs = sorted(per_test.values())
    # Drop the slowest `workers` tests: each worker's first test launches the browser.
    trimmed = costs[: max(1, len(costs) - workers)]
    return wall, sum(trimmed) / len(trimmed)


def run_e2e(workers: int) -> tuple[float, float]:
    """Wall seconds of this project's e2e suite (per-test cost not measured: the tests differ)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "e2e"]
    if workers > 1:
        cmd += ["-n", str(workers)]
    wall, _ = run_pytest(cmd, ROOT)
    return wall, float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=40, help="tests per generated suite (default 40)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds, each running every suite once in turn; medians are reported (default 1)")
    parser.add_argument("--e2e", action="store_true",
                        help="also run this project's e2e suite serially and with -n 2")
    args = parser.parse_args(argv)
    if args.tests < 3 or args.repeat < 1:
        parser.error("--tests must be at least 3 and --repeat at least 1")
    names = [*SUITES] + (["e2e suite"] if args.e2e else [])
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeat):
            for workers in (1, 2):
                for name in names:
                    if name == "e2e suite":
                        result = run_e2e(workers)
                    else:
                        folder = Path(tmp) / f"{names.index(name)}-{workers}-{round_}"
                        folder.mkdir()
                        source, extra = SUITES[name]
                        result = run_suite(folder, source, args.tests, workers, extra)
                    runs.setdefault((name, workers), []).append(result)
    results = {
        key: (statistics.median(w for w, _ in values), statistics.median(p for _, p in values))
        for key, values in runs.items()
    }
    print(f"{args.tests} tests per generated suite, {args.repeat} round(s), medians")
    print(f"{'suite':<24} | {'workers':>7} | {'wall s':>7} | {'per test s':>10}")
    print("-" * 58)
    for (name, workers), (wall, per) in sorted(results.items(), key=lambda kv: (names.index(kv[0][0]), kv[0][1])):
        per_s = "-" if math.isnan(per) else f"{per:.3f}"  # not measured for the e2e suite
        print(f"{name:<24} | {workers:>7} | {wall:>7.1f} | {per_s:>10}")
    bare1, harness1 = results[("bare pytest-playwright", 1)], results[("ws_helper", 1)]
    bare2, harness2 = results[("bare pytest-playwright", 2)], results[("ws_helper", 2)]
    print()
    nova_ratio = harness1[1] / bare1[1]
    generic_ratio = results[("ws_helper generic, chat", 1)][1] / results[("bare, chat app", 1)][1]
    print(f"per-test cost ws_helper / bare (serial):  {nova_ratio:.2f}   goal <= 1.20")
    print(f"the same, generic profile on the chat app: {generic_ratio:.2f}")
    same_app = results[("ws_helper generic, ref.", 1)][1] / harness1[1]
    print(f"per-test cost generic / Nova profile, same reference page (serial): {same_app:.2f}   goal <= 1.00")
    print(f"-n 2 / serial wall, bare:                 {bare2[0] / bare1[0]:.2f}")
    print(f"-n 2 / serial wall, ws_helper:            {harness2[0] / harness1[0]:.2f}   goal <= bare's")
    if args.e2e:
        e2e1, e2e2 = results[("e2e suite", 1)], results[("e2e suite", 2)]
        print(f"-n 2 / serial wall, e2e suite:            {e2e2[0] / e2e1[0]:.2f}   goal <= bare's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
