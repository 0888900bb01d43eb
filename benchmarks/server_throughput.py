"""Publish -> delivery_confirmation round trips against a bare websockets echo server.

Both servers run as subprocesses on loopback ephemeral ports and are driven by
the same asyncio client code in this process, in the same run, so the figures
are ratios on the same machine at the same moment:

    python benchmarks/server_throughput.py            # 3000 round trips per scenario, 3 rounds
    python benchmarks/server_throughput.py --round-trips 1000 --clients 1 50 --repeat 5
    git archive bf7ec5e reference_server | tar -x -C /tmp/before   # another version ...
    python benchmarks/server_throughput.py --compare /tmp/before      # ... in the same rounds

For each client count it prints round trips per second, p50 and p99 latency
for the Nova server (authenticated ``publish`` answered by
``delivery_confirmation``, committed to SQLite first) and for the bare echo
server (the same frame echoed back), then the Nova/bare ratios.  Each round
measures both servers in turn; the ratios reported are the medians over the
rounds, so a drift in the machine's load touches both sides of a ratio.  Traffic goes
only to 127.0.0.1 and every loop is bounded by a count and a deadline.

``--compare DIR`` adds a third server: the reference server whose package is
``DIR/reference_server`` (another version of it, say), measured in the same
rounds right after this tree's, and its ratios to the bare server next to this
tree's.

Each round also times, in this process, what storing one publish costs the
event loop: ``Storage.append_message`` alone, committed on the loop (WAL,
``synchronous=NORMAL``, checkpoints on the storage's checkpointer thread), with
nothing else to do.  It is printed next to the single-client round trips it is
part of: a lower bound, since in the server the SQL runs with colder caches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

ECHO_SERVER = """
import asyncio, sys
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", 0, compression=None, max_size=2**20) as server:
        print("listening", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""

DEADLINE_S = 120.0


@dataclass
class Result:
    name: str
    clients: int
    round_trips: int
    seconds: float
    latencies_ms: list[float]
    server_cpu_s: float = 0.0

    @property
    def cpu_us_per_rt(self) -> float:
        return self.server_cpu_s / self.round_trips * 1e6

    @property
    def rate(self) -> float:
        return self.round_trips / self.seconds

    def pct(self, q: float) -> float:
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))]


def _frame(client_id: str, op: str) -> str:
    return json.dumps(
        {
            "type": "publish",
            "data": {"channel": "bench", "content": "x" * 64},
            "timestamp": "2026-01-01T00:00:00.000Z",
            "client_id": client_id,
            "id": op,
        }
    )


def _start(
    cmd: list[str], marker: str, *, pythonpath: Path | None = None
) -> tuple[subprocess.Popen[str], int]:
    # The per-connection rate limit protects a real deployment; a benchmark measures past it.
    env = {**os.environ, "NOVA_RATE_LIMIT_PER_SECOND": "1000000", "NOVA_RATE_LIMIT_BURST": "1000000"}
    if pythonpath is not None:
        # ``python -m`` puts its working directory first on sys.path, before PYTHONPATH.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        cwd=pythonpath,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if marker in line:
            # "Nova server listening on http://127.0.0.1:PORT" or "listening PORT"
            return proc, int(line.strip().replace(":", " ").split()[-1])
    proc.kill()
    raise RuntimeError(f"{cmd[:3]} did not start within 30 s")


async def _nova_client(port: int, n: int, latencies: list[float]) -> None:
    cid = f"bench-{uuid.uuid4().hex[:12]}"
    async with connect(f"ws://127.0.0.1:{port}/debug/{cid}", compression=None) as ws:
        json.loads(await ws.recv())  # connection_established
        await ws.send(json.dumps({
            "type": "connect", "data": {"api_key": "valid-test-key"},
            "timestamp": "2026-01-01T00:00:00.000Z", "client_id": cid, "id": "auth",
        }))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "auth_success", reply
        await _loop(ws, cid, n, latencies, expect="delivery_confirmation")


async def _echo_client(port: int, n: int, latencies: list[float]) -> None:
    cid = f"bench-{uuid.uuid4().hex[:12]}"
    async with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        await _loop(ws, cid, n, latencies, expect="publish")


async def _loop(ws: ClientConnection, cid: str, n: int, latencies: list[float], *, expect: str) -> None:
    for i in range(n):
        frame = _frame(cid, f"{cid}-{i}")
        t0 = time.perf_counter()
        await ws.send(frame)
        reply = json.loads(await ws.recv())
        latencies.append((time.perf_counter() - t0) * 1000)
        if reply.get("type") != expect:
            raise RuntimeError(f"expected {expect}, got {reply}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(name: str, port: int, clients: int, total: int, nova: bool, pid: int = 0) -> Result:
    per_client = max(1, total // clients)
    latencies: list[float] = []
    worker = _nova_client if nova else _echo_client
    cpu0 = _cpu_seconds(pid)
    t0 = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(worker(port, per_client, latencies) for _ in range(clients))), DEADLINE_S
    )
    elapsed = time.perf_counter() - t0
    return Result(name, clients, per_client * clients, elapsed, latencies, _cpu_seconds(pid) - cpu0)


async def _storage_commit_us(path: Path, n: int = 2000) -> float:
    """Microseconds per lone ``append_message`` on this process's event loop (a commit each)."""
    from reference_server.storage import Storage

    storage = Storage(path)
    await storage.open()
    try:
        for i in range(200):
            await storage.append_message("bench", sender="bench", content="x" * 64, message_id=f"warm-{i}")
        t0 = time.perf_counter()
        for i in range(n):
            await storage.append_message("bench", sender="bench", content="x" * 64, message_id=f"m-{i}")
        return (time.perf_counter() - t0) / n * 1e6
    finally:
        await storage.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round-trips", type=int, default=3000, help="round trips per scenario")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds, each measuring both servers in turn; ratios are medians over rounds")
    parser.add_argument("--compare", type=Path, metavar="DIR",
                        help="also measure the reference server in DIR/reference_server, in the same rounds")
    args = parser.parse_args(argv)
    if args.round_trips < 100 or args.repeat < 1 or min(args.clients) < 1:
        parser.error("--round-trips must be at least 100, --repeat and --clients at least 1")
    if args.compare is not None:
        if not (args.compare / "reference_server" / "__main__.py").is_file():
            parser.error(
                f"--compare {args.compare}: no reference_server/__main__.py there; give a folder holding "
                "another version's package, e.g. git archive COMMIT reference_server | tar -x -C DIR"
            )
        args.compare = args.compare.resolve()
        imported = subprocess.run(
            [sys.executable, "-c", "import reference_server; print(reference_server.__file__)"],
            cwd=args.compare, capture_output=True, text=True, check=True,
        ).stdout.strip()
        if not Path(imported).is_relative_to(args.compare):
            parser.error(f"--compare {args.compare}: Python imports reference_server from {imported} there")

    rounds: dict[int, list[tuple[Result, Result, Result | None]]] = {c: [] for c in args.clients}
    with tempfile.TemporaryDirectory() as tmp:

        def nova_server(db: str, pythonpath: Path | None = None) -> tuple[subprocess.Popen[str], int]:
            return _start(
                [sys.executable, "-m", "reference_server", "--port", "0", "--frontend-port", "-1",
                 "--db", str(Path(tmp) / db), "--log-level", "warning"],
                "listening on",
                pythonpath=pythonpath,
            )

        procs: list[subprocess.Popen[str]] = []
        try:
            nova, nova_port = nova_server("bench.db")
            procs.append(nova)
            echo, echo_port = _start([sys.executable, "-c", ECHO_SERVER], "listening")
            procs.append(echo)
            other: tuple[subprocess.Popen[str], int] | None = None
            if args.compare is not None:
                other = nova_server("compared.db", args.compare)
                procs.append(other[0])
            asyncio.run(_measure("warm", echo_port, 1, 200, nova=False))
            asyncio.run(_measure("warm", nova_port, 1, 200, nova=True))
            if other is not None:
                asyncio.run(_measure("warm", other[1], 1, 200, nova=True))
            commits: list[float] = []
            for index in range(args.repeat):
                commits.append(asyncio.run(_storage_commit_us(Path(tmp) / f"commit-{index}.db")))
                for clients in args.clients:
                    bare = asyncio.run(
                        _measure("bare websockets echo", echo_port, clients, args.round_trips, False, echo.pid)
                    )
                    ours = asyncio.run(
                        _measure("nova publish", nova_port, clients, args.round_trips, True, nova.pid)
                    )
                    compared = None
                    if other is not None:
                        compared = asyncio.run(
                            _measure("compared nova publish", other[1], clients, args.round_trips, True,
                                     other[0].pid)
                        )
                    rounds[clients].append((bare, ours, compared))
        finally:
            for proc in procs:
                if proc.stdin:
                    proc.stdin.close()
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()

    print(f"{args.round_trips} round trips per scenario, {args.repeat} round(s)")
    print(f"{'round':>5} | {'clients':>7} | {'server':<22} | {'rt/s':>8} | {'p50 ms':>7} | {'p99 ms':>7}"
          f" | {'server CPU us/rt':>16}")
    print("-" * 91)
    for clients, rows in rounds.items():
        for index, row in enumerate(rows, 1):
            for r in filter(None, row):
                print(
                    f"{index:>5} | {clients:>7} | {r.name:<22} | {r.rate:>8.0f} | {r.pct(0.5):>7.2f}"
                    f" | {r.pct(0.99):>7.2f} | {r.cpu_us_per_rt:>16.0f}"
                )
    print()
    print("medians over rounds of the per-round ratios")
    print(f"{'clients':>7} | {'rate nova/bare':>14} | {'p99 nova/bare':>13} | {'CPU/rt nova/bare':>16}")
    for clients, rows in rounds.items():
        for label, which in (("", 1), ("compared ", 2)):
            pairs = [(row[0], row[which]) for row in rows if row[which] is not None]
            if not pairs:
                continue
            rate = statistics.median(ours.rate / bare.rate for bare, ours in pairs)
            p99 = statistics.median(ours.pct(0.99) / bare.pct(0.99) for bare, ours in pairs)
            cpu = statistics.median(
                ours.cpu_us_per_rt / bare.cpu_us_per_rt if bare.cpu_us_per_rt else float("nan")
                for bare, ours in pairs
            )
            print(f"{clients:>7} | {rate:>14.2f} | {p99:>13.2f} | {cpu:>16.2f}"
                  + (f"   ({label.strip()}: {args.compare})" if label else ""))
    print("goal: rate nova/bare >= 0.50 with 1 client, p99 nova/bare <= 3.0")
    if 1 in rounds:
        commit = statistics.median(commits)
        bare_rt = statistics.median(1e6 / row[0].rate for row in rounds[1])
        nova_rt = statistics.median(1e6 / row[1].rate for row in rounds[1])
        print(
            f"\nstorage commit on the event loop (one append_message, in this process): "
            f"{commit:.0f} us (median over rounds)\n"
            f"1 client: bare round trip {bare_rt:.0f} us, Nova publish {nova_rt:.0f} us; the rate goal allows "
            f"Nova {2 * bare_rt:.0f} us, {bare_rt:.0f} us more than the bare round trip, "
            f"{commit / bare_rt:.0%} of which the commit alone takes"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
