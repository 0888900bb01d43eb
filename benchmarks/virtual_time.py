"""The seed test in virtual time against the same flow with the page's real timers.

Both variants run the seed project's flow in real mode (server-depth faults)
with the same seed; the real-timer variant is marked ``ws_real_time``, so
the page's backoff waits its actual delays.  Each variant runs ``--repeat``
times in one pytest session; the figure is the mean test call time.

    python benchmarks/virtual_time.py              # 3 runs of each
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = '''
import pytest

def _seed_flow(ws_helper):
    ws_helper.set_connection_status("error")
    ws_helper.simulate_error("Network error")
    for attempt in range(1, 4):
        ws_helper.set_connection_status("connecting")
        ws_helper.wait_for_reconnect_info(attempt, timeout=60)
        ws_helper.set_connection_status("error")
        ws_helper.wait_for_error_details("Network error")
    ws_helper.set_connection_status("connected")
    ws_helper.authenticate("valid-test-key")
    ws_helper.wait_for_auth_status("Authenticated", timeout=60)

@pytest.mark.parametrize("run", range({repeat}))
def test_virtual_time(ws_helper, run):
    _seed_flow(ws_helper)

@pytest.mark.ws_real_time
@pytest.mark.parametrize("run", range({repeat}))
def test_real_timers(ws_helper, run):
    _seed_flow(ws_helper)
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        test_file = Path(tmp) / "test_seed_timing.py"
        test_file.write_text(SOURCE.format(repeat=args.repeat))
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0",
             "--durations-min=0", "-o", "addopts=", "--ws-timeout=60", str(test_file)],
            cwd=tmp, capture_output=True, text=True, timeout=1800, check=False,
        )
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-2000:])
        return 1
    calls: dict[str, list[float]] = {"virtual_time": [], "real_timers": []}
    for line in proc.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)s call\s+\S+::test_(virtual_time|real_timers)\[", line)
        if m:
            calls[m.group(2)].append(float(m.group(1)))
    virtual = sum(calls["virtual_time"]) / len(calls["virtual_time"])
    real = sum(calls["real_timers"]) / len(calls["real_timers"])
    print(f"seed flow, mean call time over {args.repeat} runs each")
    print(f"  virtual time : {virtual:7.3f} s")
    print(f"  real timers  : {real:7.3f} s")
    print(f"  speed-up     : {real / virtual:7.1f}x   goal >= 10x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
