"""What the plugin costs an unrelated pytest run in the same environment.

Runs a one-test suite that uses no harness fixture, alternately with the
plugin (``nova_ws``, loaded by its entry point as in any environment where the
package is installed) and without it (``-p no:nova_ws``), and reports the
median wall time of each, their difference, and how many modules each run
imported.  Both runs load every other installed plugin (pytest-playwright,
xdist...), so the difference is the plugin's own.

    python benchmarks/plugin_import.py --runs 15
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CONFTEST = """
import sys

def pytest_sessionfinish(session):
    print(f"MODULES {len(sys.modules)}")
"""


def _run(folder: Path, *extra: str) -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *extra, str(folder)],
        capture_output=True,
        text=True,
        check=False,
        cwd=folder,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"pytest failed:\n{result.stdout}\n{result.stderr}")
    modules = int(result.stdout.split("MODULES ", 1)[1].split()[0])
    return elapsed, modules


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=11, help="runs of each variant (default 11)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "conftest.py").write_text(_CONFTEST)
        (folder / "test_unrelated.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
        with_plugin: list[float] = []
        without: list[float] = []
        modules = {}
        _run(folder)  # warm the file cache
        for _ in range(args.runs):
            elapsed, modules["with"] = _run(folder)
            with_plugin.append(elapsed)
            elapsed, modules["without"] = _run(folder, "-p", "no:nova_ws")
            without.append(elapsed)
    a, b = statistics.median(with_plugin), statistics.median(without)
    paired = statistics.median(w - o for w, o in zip(with_plugin, without, strict=True))
    print(f"unrelated run, median of {args.runs}: with the plugin {a * 1000:.0f} ms, without {b * 1000:.0f} ms")
    print(f"plugin cost: {paired * 1000:+.0f} ms, the median of the {args.runs} paired differences "
          f"(runs alternate); ratio of medians {a / b:.3f}; modules imported: "
          f"{modules['with']} with, {modules['without']} without")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
