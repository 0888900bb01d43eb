"""Locust users (harness.load.locust): short headless runs of harness/load/locustfile.py, as subprocesses.

Locust and gevent are never imported here: gevent monkey-patches the process
that imports it, which would change pytest's sockets and threads.  Each run
is a ``python -m locust`` subprocess against a loopback server on an
ephemeral port, bounded by a timeout; its CSV files, exit status and log are
what a user reads too.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from harness.load.embedded import EmbeddedServer, start_embedded_server
from tests._waits import wait_for

from .conftest import WsApp

ROOT = Path(__file__).resolve().parents[3]
LOCUSTFILE = ROOT / "harness" / "load" / "locustfile.py"
#: The longest a whole Locust run (start-up, the run, the shutdown) may take.
RUN_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def nova() -> Iterator[EmbeddedServer]:
    """The reference server in its own process, rate limits raised (a load run comes from one address)."""
    server = start_embedded_server()
    try:
        yield server
    finally:
        server.stop()


def _locust(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--loglevel", "INFO", *args]


def _headless(tmp_path: Path, host: str, *args: str, users: int = 4, seconds: int = 3) -> tuple[
    subprocess.CompletedProcess[str], dict[str, dict[str, str]], list[dict[str, str]]
]:
    """Run Locust headless; its exit, its ``_stats.csv`` rows by name and its ``_failures.csv`` rows."""
    prefix = tmp_path / "run"
    proc = subprocess.run(
        _locust("--headless", "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--host", host,
                "--csv", str(prefix), "--only-summary", *args),
        check=False, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    return proc, _stats(prefix), _failures(prefix)


def _stats(prefix: Path) -> dict[str, dict[str, str]]:
    path = prefix.with_name(prefix.name + "_stats.csv")
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f) if row["Type"] == "WS"}


def _failures(prefix: Path) -> list[dict[str, str]]:
    path = prefix.with_name(prefix.name + "_failures.csv")
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _log(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}; Locust's output:\n{proc.stderr[-4000:]}{proc.stdout[-2000:]}"


def _requests(row: dict[str, str]) -> int:
    return int(row["Request Count"])


def test_importing_harness_load_needs_neither_locust_nor_gevent() -> None:
    code = "import sys, harness.load; print([m for m in ('locust', 'gevent', 'websocket') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["locust", "websocket"])
def test_without_the_load_extra_the_error_names_the_install_command(module: str) -> None:
    code = f"import sys; sys.modules[{module!r}] = None; import harness.load.locust"
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "LoadDependencyError" in out.stderr  # an ImportError too: pytest.importorskip skips on it
    assert "pip install 'nova-ws-harness[load]'" in out.stderr


def test_headless_publish_run_reports_each_message_as_a_ws_request(tmp_path: Path, nova: EmbeddedServer) -> None:
    proc, stats, failures = _headless(tmp_path, nova.url, "--scenario", "publish", "--rate", "200")
    assert proc.returncode == 0, _log(proc)
    assert set(stats) == {"connect", "publish"}, _log(proc)
    assert _requests(stats["connect"]) == 4  # one authenticated connection per user
    publish = stats["publish"]
    assert _requests(publish) > 100  # 200/s over most of 3 s (the CSV is Locust's last 1 s snapshot)
    assert float(publish["Average Response Time"]) > 0
    assert float(publish["Average Content Size"]) > 0  # the confirmation frame's length
    assert all(int(row["Failure Count"]) == 0 for row in stats.values())
    assert failures == []
    assert "publish (this process, 4 clients)" in proc.stderr  # the process's own counters at the end


def test_a_refused_port_is_a_connect_failure_per_user(tmp_path: Path, refused_url: str) -> None:
    proc, stats, failures = _headless(tmp_path, refused_url, "--scenario", "publish", users=2, seconds=2)
    assert proc.returncode == 1, _log(proc)  # Locust's exit status for a run with failures
    assert int(stats["connect"]["Failure Count"]) == 2, _log(proc)
    assert [(row["Name"], int(row["Occurrences"])) for row in failures] == [("connect", 2)]
    assert "connect:refused" in failures[0]["Error"]
    assert "--host" in failures[0]["Error"]  # the message names the likely fix


def test_a_server_that_closes_the_connection_is_a_failure(tmp_path: Path) -> None:
    # The reference server as deployed: 100 messages/s per connection, then rate_limited and close 1008.
    with start_embedded_server(raise_limits=False) as strict:
        proc, stats, failures = _headless(tmp_path, strict.url, "--scenario", "publish", "--rate", "400",
                                          users=1, seconds=3)
    assert proc.returncode == 1, _log(proc)
    by_name = {row["Name"]: row["Error"] for row in failures}
    assert "close:1008" in by_name.get("close", ""), _log(proc)
    assert "error:rate_limited" in by_name.get("error", "")
    assert int(stats["publish"]["Failure Count"]) == 0  # what was confirmed is still measured


def test_generic_profile_publishes_to_an_echo_server(tmp_path: Path, ws_app: Callable[..., WsApp]) -> None:
    app = ws_app()
    proc, stats, failures = _headless(tmp_path, app.url, "--scenario", "publish", "--ws-profile", "generic",
                                      "--rate", "max", users=2)
    assert proc.returncode == 0, _log(proc)
    assert _requests(stats["publish"]) > 100, _log(proc)
    assert failures == []


def test_reconnect_storm_drops_and_resubscribes_with_nothing_lost(tmp_path: Path, nova: EmbeddedServer) -> None:
    proc, stats, failures = _headless(
        tmp_path, nova.url, "--scenario", "reconnect-storm", "--rate", "100", "--drop-share", "1",
        "--drops-per-client", "2", users=5, seconds=4,
    )
    # Exit 0: no failure at all, including lost/duplicated/out_of_order counted when the test stops.
    assert proc.returncode == 0, _log(proc)
    assert failures == []
    assert _requests(stats["connect"]) > 5, _log(proc)  # 5 first connections, then the reconnections
    assert _requests(stats["delivery"]) > 0
    counters = dict(re.findall(r"\b(\w+)=(\d+)", proc.stderr))
    # 4 subscribers x 2 drops; a drop due while its client is still reconnecting is not made.
    assert int(counters.get("drops", 0)) >= 4, _log(proc)
    assert counters.get("lost") == "0" and "duplicated" not in counters


def test_bad_scenario_parameters_stop_locust_at_start_with_the_rule(tmp_path: Path) -> None:
    proc = subprocess.run(
        _locust("--headless", "-u", "2", "-t", "2s", "--host", "ws://127.0.0.1:9", "--scenario", "fanout",
                "--ws-profile", "generic"),
        check=False, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    assert "fanout needs channels with seqs" in proc.stderr
    assert "use the nova profile" in proc.stderr


def _listening_port(pid: int, proc: subprocess.Popen[str], timeout: float) -> int:
    """The one TCP port ``pid`` listens on (the master's worker port, bound to 0), within ``timeout``."""
    process = psutil.Process(pid)
    ports: set[int] = set()

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"Locust's master exited ({proc.returncode}) before listening")
        ports.update(c.laddr.port for c in process.net_connections("tcp") if c.status == psutil.CONN_LISTEN)
        return bool(ports)

    wait_for(listening, "Locust's master listens on a port", timeout)
    assert len(ports) == 1, f"expected the master to listen on one port, it listens on {ports}"
    return ports.pop()


def test_master_and_one_worker_run_fanout_from_the_masters_options(tmp_path: Path, nova: EmbeddedServer) -> None:
    prefix = tmp_path / "run"
    master = subprocess.Popen(
        _locust("--headless", "-u", "3", "-r", "3", "-t", "3s", "--host", nova.url, "--csv", str(prefix),
                "--only-summary", "--scenario", "fanout", "--rate", "50", "--master", "--expect-workers", "1",
                "--master-bind-host", "127.0.0.1", "--master-bind-port", "0"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )
    worker: subprocess.Popen[str] | None = None
    try:
        port = _listening_port(master.pid, master, 30.0)
        # The worker is given no scenario: it runs the master's (forwarded with each spawn message).
        worker = subprocess.Popen(
            _locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, stdin=subprocess.DEVNULL,
        )
        master_log, _ = master.communicate(timeout=RUN_TIMEOUT)
        worker_log, _ = worker.communicate(timeout=30)
    finally:
        for proc in (master, worker):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert master.returncode == 0, master_log[-4000:]
    assert worker.returncode == 0, worker_log[-4000:]
    stats = _stats(prefix)
    assert {"connect", "publish", "delivery"} <= set(stats), master_log[-4000:]
    assert _requests(stats["connect"]) == 3
    assert _requests(stats["delivery"]) > 0
    assert _failures(prefix) == []
    assert '"WsPublisherUser": 1' in master_log  # exactly --publishers publishers, over all workers
    assert "fanout (this process, 3 clients)" in worker_log and "lost=0" in worker_log
