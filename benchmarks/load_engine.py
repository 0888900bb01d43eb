"""The load engine against the physical limit, Locust and Artillery, on the same echo server.

One bare python-websockets echo server runs in its own process on a loopback
ephemeral port for the whole run; each load generator drives it in turn, with
the same number of connections, each connection sending a frame and waiting
for its echo as fast as it can:

- ``bare``: a bare asyncio python-websockets client loop in this process
  (the physical limit of a Python client here);
- ``engine``: the harness's asyncio engine (``harness.load``), the
  ``publish`` scenario of the generic profile (a publish is a frame carrying
  its id; its echo confirms it), closed loop, one message in flight per client;
- ``locust N``: Locust with a WebSocket user (websocket-client on gevent),
  headless, ``--master`` plus N ``--worker`` processes (``0``: one
  standalone process), ``--csv`` reports (the figures come from its final
  ``--json-file`` report: the CSV is written periodically).  The user is
  ``--locust-user``: ``harness``, the harness's own users
  (``harness.load.locust``, the same ``publish`` scenario), the default
  once ``harness/load/locustfile.py`` exists; or ``baseline``, the minimal
  websocket-client echo user in ``benchmarks/_locust_echo_baseline.py``
  (what Locust costs with no scenario logic on top);
- ``artillery``: Artillery's WebSocket engine (``benchmarks/artillery/echo.yml``),
  installed with ``npm install`` into ``--artillery-dir`` (a temporary folder
  by default); skipped with a note when npm is missing or the install fails.

Every generator is measured the same way, by the server and by psutil:
after its first echoed message and ``--warmup`` seconds, ``--duration``
seconds in which the server's echo count gives msgs/s and the CPU seconds
(user + system) of the generator's processes (this process for bare and
engine; Locust's master and workers; node) give msgs per CPU-second.  So a
generator's start-up (Locust's imports, node's) is outside the window, and
so is the server's CPU.  p50/p99 are each generator's own latency figures
(send -> echo): exact for bare and engine, Locust's whole milliseconds
under 100 ms, Artillery's 0.1 ms.  Rounds (``--repeat``) run every generator in
turn, each round starting one generator further down the list (after a
short unreported warm-up of the server); the figures are medians over
rounds, the ratios medians of the per-round ratios, so a drift of the
machine's load touches both sides.  The server's CPU seconds in each window
and the load average are printed too: on a shared machine they say which
rounds to trust::

    python benchmarks/load_engine.py                                  # 10 clients, 5 s, 3 rounds
    python benchmarks/load_engine.py --clients 50 --duration 10 --repeat 5 --artillery-dir ~/.cache/nova-artillery
    python benchmarks/load_engine.py --skip-artillery --skip-locust   # bare and engine only

Goals (issue 11): the engine reaches >= 0.80 of the bare loop's msgs/s, and
is ahead of Locust and Artillery in msgs per CPU-second.  Exit status 1 when a
generator that was not skipped failed (the engine included: it is never
left out silently), else 0; the goals are reported, not enforced.
Traffic goes only to 127.0.0.1; every run has a deadline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psutil
from _load_baselines import (
    EchoServer,
    Measurement,
    bare_echo_loop,
    bare_payload,
    cpu_seconds,
    measure_window,
    tree_cpu_seconds,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE_LOCUSTFILE = HERE / "_locust_echo_baseline.py"
ARTILLERY_SCRIPT = HERE / "artillery" / "echo.yml"
#: The last Artillery release whose package.json accepts Node.js 20 (2.0.22 and later need >= 22.13).
ARTILLERY_VERSION = "2.0.21"
NPM_INSTALL_TIMEOUT_S = 900.0
#: Time a generator has, after the window, to stop and write its report.
STOP_DEADLINE_S = 60.0
#: Extra run time a generator is given past the window, as a safety cap.
RUN_MARGIN_S = 120.0


@dataclass
class Row:
    """One generator in one round: its measurement, or why it has none."""

    name: str
    measurement: Measurement | None = None
    failure: str | None = None
    skipped: str | None = None


# ----------------------------------------------------------------------------- engine


def run_engine(server: EchoServer, args: argparse.Namespace) -> Measurement:
    """The harness's engine: ``publish`` on the generic profile, closed loop, one in flight per client.

    Started with ``harness.load.start_background`` (its own thread and event
    loop in this process, an unbounded duration) and stopped once the window
    closes, so the engine's CPU is this process's, as for the bare loop.
    """
    try:
        from harness.load import GenericProtocol, Publish, start_background
    except ImportError as exc:
        raise RuntimeError(
            f"the harness's load engine is not importable ({exc}); expected "
            "harness.load.start_background (harness/load/engine.py, issue 11)"
        ) from exc
    scenario = Publish(
        clients=args.clients, duration=math.inf, protocol=GenericProtocol(), size=args.size, inflight=1,
    )
    me = psutil.Process()
    handle = start_background(scenario, server.url)
    try:
        window = measure_window(
            server, lambda: cpu_seconds(me), warmup=args.warmup, duration=args.duration,
            alive=lambda: not handle.done,
        )
    finally:
        result = handle.stop(timeout=STOP_DEADLINE_S)
    if result.aborted:
        raise RuntimeError(f"the engine's run was aborted: {result.aborted}")
    total = result.total
    latency = total.latency.get("publish")
    if latency is None or not latency.count:
        raise RuntimeError(f"the engine recorded no publish latency; counters {total.counters}, errors {total.errors}")
    notes = [f"errors {total.errors}"] if total.errors else []
    return Measurement("engine (publish, generic)", window, latency.p50_us / 1000, latency.p99_us / 1000, notes)


# ----------------------------------------------------------------------------- Locust


def _listening_port(proc: psutil.Process, deadline_s: float) -> int:
    """The one TCP port ``proc`` listens on (Locust's master, bound to port 0), read back with a deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        ports = sorted(
            {c.laddr.port for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        )
        if len(ports) == 1:
            return int(ports[0])
        if len(ports) > 1:
            raise RuntimeError(f"Locust's master listens on {ports}; expected one port (its worker port)")
        time.sleep(0.05)
    raise RuntimeError(f"Locust's master listened on no port within {deadline_s:g} s")


def _locust_percentiles(report: Path, name: str) -> tuple[float, float, int]:
    """p50, p99 (ms) and the count of the requests named ``name`` in Locust's final ``--json-file`` report."""
    entries = [e for e in json.loads(report.read_text()) if e.get("name") == name]
    if not entries:
        raise RuntimeError(f"Locust's report {report} has no requests named {name!r}")
    buckets: dict[float, int] = {}
    for entry in entries:
        for key, count in entry["response_times"].items():
            buckets[float(key)] = buckets.get(float(key), 0) + int(count)
    total = sum(buckets.values())
    if not total:
        raise RuntimeError(f"Locust's report {report} has no requests")

    def pct(q: float) -> float:
        # Locust's own rule (stats.calculate_response_time_percentile): the first bucket past q.
        rank = int(total * q)
        seen = 0
        for value in sorted(buckets, reverse=True):
            seen += buckets[value]
            if total - seen <= rank:
                return value
        return min(buckets)

    return pct(0.5), pct(0.99), total


def _harness_locustfile() -> Path:
    """The harness's locustfile (harness/load/locustfile.py), else a shim importing its users."""
    official = ROOT / "harness" / "load" / "locustfile.py"
    return official if official.exists() else HERE / "_locust_harness_users.py"


def _default_locust_user() -> str:
    """``harness`` once harness/load/locustfile.py (the harness's Locust entry point) exists, else ``baseline``."""
    return "harness" if (ROOT / "harness" / "load" / "locustfile.py").exists() else "baseline"


def run_locust(server: EchoServer, args: argparse.Namespace, workers: int, out: Path, tag: str) -> Measurement:
    """Locust headless against the echo server: standalone (``workers == 0``) or master + ``workers``."""
    prefix = out / f"locust-{workers}w-{tag}"
    run_time = int(args.warmup + args.duration + RUN_MARGIN_S)
    env = {**os.environ, "LOCUST_ECHO_PAYLOAD": bare_payload(args.size)}
    if args.locust_user == "harness":
        locustfile, request_name, user_note = str(_harness_locustfile()), "publish", "harness.load.locust users"
        # The scenario's measured phase outlasts the window; SIGTERM ends it.
        scenario_args = ["--scenario", "publish", "--ws-profile", "generic", "--clients", str(args.clients),
                         "--size", str(args.size), "--duration", str(run_time)]
    else:
        locustfile, request_name = str(BASELINE_LOCUSTFILE), "echo"
        user_note = f"baseline websocket-client user: {BASELINE_LOCUSTFILE.name}"
        scenario_args = []
    common = ["-f", locustfile, "--loglevel", "WARNING", *scenario_args]
    head = [
        sys.executable, "-m", "locust", *common, "--headless", "-u", str(args.clients), "-r", str(args.clients),
        "--run-time", f"{run_time}s", "--host", server.url, "--csv", str(prefix), "--json-file", str(prefix),
        "--only-summary", "--stop-timeout", "5",
    ]
    logs: list[Path] = []
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(cmd: list[str], name: str) -> subprocess.Popen[bytes]:
        log = out / f"{prefix.name}-{name}.log"
        logs.append(log)
        with log.open("wb") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        procs.append(proc)
        return proc

    try:
        if workers == 0:
            master = spawn(head, "standalone")
        else:
            master = spawn(
                [*head, "--master", "--expect-workers", str(workers), "--master-bind-host", "127.0.0.1",
                 "--master-bind-port", "0"],
                "master",
            )
            port = _listening_port(psutil.Process(master.pid), 60.0)
            for i in range(workers):
                spawn([sys.executable, "-m", "locust", *common, "--worker", "--master-host", "127.0.0.1",
                       "--master-port", str(port)], f"worker{i + 1}")
        window = measure_window(
            server,
            lambda: tree_cpu_seconds(p.pid for p in procs),
            warmup=args.warmup,
            duration=args.duration,
            alive=lambda: all(p.poll() is None for p in procs),
        )
        master.send_signal(signal.SIGTERM)
        master.wait(STOP_DEADLINE_S)
        for proc in procs:
            proc.wait(STOP_DEADLINE_S)
    except BaseException as exc:
        tails = "; ".join(f"{log.name}: {log.read_text(errors='replace')[-400:]!r}" for log in logs if log.exists())
        raise RuntimeError(f"{exc} (Locust's logs: {tails})") from exc
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    report = next((p for p in (prefix, prefix.with_name(prefix.name + ".json")) if p.exists()), None)
    if report is None:
        raise RuntimeError(f"Locust wrote no --json-file report at {prefix} or {prefix}.json")
    p50, p99, _ = _locust_percentiles(report, request_name)
    label = "locust (1 process)" if workers == 0 else f"locust (master + {workers} worker{'s' if workers > 1 else ''})"
    return Measurement(label, window, p50, p99, notes=[user_note])


# ----------------------------------------------------------------------------- Artillery


def ensure_artillery(folder: Path, version: str) -> tuple[Path | None, str]:
    """The ``artillery`` executable installed in ``folder`` (installing it there if needed), or None and why."""
    exe = folder / "node_modules" / ".bin" / "artillery"
    package = folder / "node_modules" / "artillery" / "package.json"
    if exe.exists() and package.exists() and json.loads(package.read_text()).get("version") == version:
        return exe, f"artillery {version} from {folder}"
    npm = shutil.which("npm")
    node = shutil.which("node")
    if npm is None or node is None:
        return None, "npm or node is not on PATH (apt-get install npm, or install Node.js)"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"installing artillery@{version} into {folder} with npm (once: --artillery-dir keeps it) ...", flush=True)
    # --ignore-scripts: Artillery's Playwright dependency downloads a browser in its install script,
    # which the WebSocket engine never uses (and which fails on a machine without that network).
    cmd = [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--ignore-scripts",
           "--loglevel=error", f"artillery@{version}"]
    try:
        done = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=NPM_INSTALL_TIMEOUT_S,
            env={**os.environ, "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"},
        )
    except subprocess.TimeoutExpired:
        return None, f"npm install took over {NPM_INSTALL_TIMEOUT_S:g} s"
    if done.returncode != 0 or not exe.exists():
        return None, f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}"
    return exe, f"artillery {version} installed into {folder}"


def run_artillery(server: EchoServer, args: argparse.Namespace, exe: Path, out: Path, tag: str) -> Measurement:
    """``artillery run`` of echo.yml: one virtual user per client, each looping send -> echo until told to stop."""
    report = out / f"artillery-{tag}.json"
    stop_file = out / f"artillery-{tag}.stop"
    log = out / f"artillery-{tag}.log"
    overrides = {
        "config": {
            "phases": [{"duration": 1, "arrivalCount": args.clients}],
            "variables": {"payload": bare_payload(args.size)},
        }
    }
    env = {
        **os.environ,
        "NOVA_BENCH_STOP_FILE": str(stop_file),
        "NOVA_BENCH_END_MS": str(int((time.time() + args.warmup + args.duration + RUN_MARGIN_S) * 1000)),
        "ARTILLERY_DISABLE_TELEMETRY": "true",
    }
    cmd = [str(exe), "run", "--target", server.url, "--overrides", json.dumps(overrides), "--output", str(report),
           str(ARTILLERY_SCRIPT)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        window = measure_window(
            server, lambda: tree_cpu_seconds([proc.pid]), warmup=args.warmup, duration=args.duration,
            alive=lambda: proc.poll() is None,
        )
        stop_file.touch()
        code = proc.wait(STOP_DEADLINE_S)
    except BaseException as exc:
        raise RuntimeError(f"{exc} (Artillery's log: {log.read_text(errors='replace')[-600:]!r})") from exc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    if code != 0 or not report.exists():
        raise RuntimeError(f"artillery exited {code} without a report; its log: {log.read_text(errors='replace')[-600:]!r}")
    aggregate = json.loads(report.read_text())["aggregate"]
    summary = aggregate.get("summaries", {}).get("echo.latency_ms")
    if summary is None:
        raise RuntimeError(f"Artillery's report {report} has no echo.latency_ms summary (processor.js not loaded?)")
    failed = aggregate.get("counters", {}).get("vusers.failed", 0)
    notes = [f"{failed} virtual user(s) failed"] if failed else []
    return Measurement("artillery (ws engine)", window, float(summary["p50"]), float(summary["p99"]), notes)


# ----------------------------------------------------------------------------- report


def _fmt(value: float, spec: str = ".0f") -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def _print_report(rounds: list[list[Row]], args: argparse.Namespace, load: tuple[float, float]) -> None:
    print()
    print(f"{args.clients} client(s), {args.duration:g} s measured after {args.warmup:g} s of warm-up, "
          f"{len(rounds)} round(s), frames of {len(bare_payload(args.size))} bytes, one in flight per client")
    print(f"{os.cpu_count()} CPU(s); load average (1 min) {load[0]:.2f} at the start, {load[1]:.2f} at the end "
          "(other processes share the cores: compare figures within a round)")
    header = (f"{'round':>5} | {'generator':<32} | {'msgs/s':>8} | {'msgs/CPU-s':>10} | {'CPU s':>6} | "
              f"{'server CPU s':>12} | {'p50 ms':>7} | {'p99 ms':>7}")
    print(header)
    print("-" * len(header))
    for index, rows in enumerate(rounds, 1):
        for row in rows:
            m = row.measurement
            if m is None:
                print(f"{index:>5} | {row.name:<32} | {'FAILED' if row.failure else 'skipped'}: "
                      f"{row.failure or row.skipped}")
                continue
            w = m.window
            note = f"  ({'; '.join(m.notes)})" if m.notes else ""
            print(f"{index:>5} | {m.name:<32} | {w.rate:>8.0f} | {w.per_cpu_second:>10.0f} | {w.cpu_seconds:>6.2f} | "
                  f"{w.server_cpu_seconds:>12.2f} | {m.p50_ms:>7.2f} | {m.p99_ms:>7.2f}{note}")

    def series(key: str, value: Callable[[Measurement], float]) -> list[float]:
        return [value(r.measurement) for rows in rounds for r in rows if r.name == key and r.measurement]

    names = [r.name for r in rounds[0]]
    print()
    print("medians over rounds")
    print(f"{'generator':<32} | {'msgs/s':>8} | {'msgs/CPU-s':>10} | {'p50 ms':>7} | {'p99 ms':>7}")
    for name in names:
        rates = series(name, lambda m: m.window.rate)
        if not rates:
            continue
        per_cpu = series(name, lambda m: m.window.per_cpu_second)
        p50 = series(name, lambda m: m.p50_ms)
        p99 = series(name, lambda m: m.p99_ms)
        label = next(r.measurement.name for rows in rounds for r in rows if r.name == name and r.measurement)
        print(f"{label:<32} | {statistics.median(rates):>8.0f} | {statistics.median(per_cpu):>10.0f} | "
              f"{statistics.median(p50):>7.2f} | {statistics.median(p99):>7.2f}")

    def ratio(a: str, b: str, value: Callable[[Measurement], float]) -> float:
        pairs = []
        for rows in rounds:
            by = {r.name: r.measurement for r in rows if r.measurement}
            if a in by and b in by and value(by[b]) > 0:
                pairs.append(value(by[a]) / value(by[b]))
        return statistics.median(pairs) if pairs else float("nan")

    print()
    print("ratios (medians of the per-round ratios)")
    rate = ratio("engine", "bare", lambda m: m.window.rate)
    bare_cpu = ratio("engine", "bare", lambda m: m.window.per_cpu_second)
    bare_p99 = ratio("engine", "bare", lambda m: m.p99_ms)
    print(f"engine / bare:               msgs/s {_fmt(rate, '.2f')}  (goal >= 0.80); "
          f"msgs per CPU-second {_fmt(bare_cpu, '.2f')}; p99 {_fmt(bare_p99, '.2f')}")
    for name in names:
        if name in ("bare", "engine"):
            continue
        cpu_ratio = ratio("engine", name, lambda m: m.window.per_cpu_second)
        p99_ratio = ratio("engine", name, lambda m: m.p99_ms)
        print(f"engine / {name + ':':<19} msgs per CPU-second {_fmt(cpu_ratio, '.2f')}  (goal > 1.00); "
              f"p99 {_fmt(p99_ratio, '.2f')}")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10, help="connections of every generator (default 10)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per generator (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds after a generator's first echo before its window opens (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians over them (default 3)")
    parser.add_argument("--size", type=int, default=64, help="content bytes of a frame (default 64)")
    parser.add_argument("--skip-locust", action="store_true", help="leave Locust out")
    parser.add_argument("--locust-workers", type=int, nargs="+", default=[1, 2], metavar="N",
                        help="Locust runs: master + N workers each (0: one standalone process); default 1 2")
    parser.add_argument("--locust-user", choices=["harness", "baseline"], default=None,
                        help="harness: the harness's Locust users (publish, generic profile); baseline: the minimal "
                             "websocket-client user in benchmarks/ (default: harness once harness/load/locustfile.py exists)")
    parser.add_argument("--skip-artillery", action="store_true", help="leave Artillery out")
    parser.add_argument("--artillery-dir", type=Path,
                        help="folder to npm-install Artillery into and reuse on later runs (default: a temporary one)")
    parser.add_argument("--artillery-version", default=ARTILLERY_VERSION,
                        help=f"Artillery release to install (default {ARTILLERY_VERSION}, the last for Node.js 20)")
    parser.add_argument("--out", type=Path, help="keep the generators' reports and logs here (default: discarded)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.repeat < 1 or args.size < 0:
        parser.error("--clients and --repeat must be >= 1, --duration > 0, --warmup and --size >= 0")
    args.locust_user = args.locust_user or _default_locust_user()
    if min(args.locust_workers) < 0:
        parser.error("--locust-workers must be >= 0")

    with tempfile.TemporaryDirectory(prefix="nova-load-bench-") as tmp:
        out = args.out or Path(tmp) / "reports"
        out.mkdir(parents=True, exist_ok=True)
        artillery: Path | None = None
        artillery_note = "--skip-artillery"
        if not args.skip_artillery:
            artillery, artillery_note = ensure_artillery(args.artillery_dir or Path(tmp) / "artillery",
                                                         args.artillery_version)
            print(artillery_note if artillery else f"Artillery skipped: {artillery_note}", flush=True)
        rounds: list[list[Row]] = []
        load_before = os.getloadavg()[0]
        with EchoServer() as server:
            print(f"echo server pid {server.pid} on {server.url}; warming it up", flush=True)
            bare_echo_loop(server, clients=args.clients, warmup=0.0, duration=0.5, size=args.size)
            for index in range(1, args.repeat + 1):
                rows: list[Row] = []
                plan: list[tuple[str, Callable[[], Measurement] | None, str | None]] = [
                    ("bare", lambda: bare_echo_loop(server, clients=args.clients, warmup=args.warmup,
                                                    duration=args.duration, size=args.size), None),
                    ("engine", lambda: run_engine(server, args), None),
                ]
                for workers in args.locust_workers:
                    plan.append((
                        "locust standalone" if workers == 0 else f"locust master+{workers}w",
                        None if args.skip_locust else partial(run_locust, server, args, workers, out, f"r{index}"),
                        "--skip-locust" if args.skip_locust else None,
                    ))
                plan.append((
                    "artillery",
                    None if artillery is None else partial(run_artillery, server, args, artillery, out, f"r{index}"),
                    artillery_note if artillery is None else None,
                ))
                # Each round starts with the next generator, so none is always the first after
                # a pause (or always right after the heaviest one).
                shift = (index - 1) % len(plan)
                for name, job, why in plan[shift:] + plan[:shift]:
                    if job is None:
                        rows.append(Row(name, skipped=why))
                        continue
                    print(f"round {index}: {name} ...", flush=True)
                    try:
                        rows.append(Row(name, measurement=job()))
                    except Exception as exc:  # noqa: BLE001 - a failed generator is a row, the others still run
                        rows.append(Row(name, failure=f"{type(exc).__name__}: {exc}"))
                order = [name for name, _, _ in plan]
                rounds.append(sorted(rows, key=lambda r: order.index(r.name)))
        _print_report(rounds, args, (load_before, os.getloadavg()[0]))
        if args.out:
            print(f"\nreports and logs in {out}")
    failed = sorted({r.name for rows in rounds for r in rows if r.failure})
    if failed:
        print(f"\nFAILED: {', '.join(failed)} (see the rows above)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
