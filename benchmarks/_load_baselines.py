"""Shared pieces of the load benchmarks: the bare echo server, the bare client loop, idle connections.

Used by ``benchmarks/load_engine.py`` and ``benchmarks/connection_limit.py``
(imported as ``_load_baselines``: a script's own folder is first on
``sys.path``).  Also a small command line for the processes it starts::

    python benchmarks/_load_baselines.py echo-server
    python benchmarks/_load_baselines.py hold URL --connections N [--rate R] [--auth nova]

What each piece is for:

- :class:`EchoServer`: a bare python-websockets echo server
  (``websockets.asyncio.server.serve``, no compression) in its own process
  on a loopback ephemeral port that it binds and prints.  It counts the
  messages it echoed; the parent reads the count through the child's stdin
  and stdout (:meth:`EchoServer.echoed`), so every load generator, whatever
  it reports itself, is measured by the same counter.  Closing its stdin
  stops it.
- :func:`measure_window`: the measured window every generator gets: wait
  for the first echoed messages, let ``warmup`` seconds pass, then read the
  server's count and the generator's CPU seconds at both ends of
  ``duration`` seconds.  A generator's start-up and shutdown (Locust's
  imports, node's) are outside the window.
- :func:`bare_echo_loop`: the physical limit: C python-websockets client
  connections in this process, each sending a frame and awaiting its echo
  as fast as it can (``window`` frames in flight per connection), latency
  recorded per frame.
- :class:`ConnectionHolder`: N idle connections opened at a bounded rate by
  a child process (``hold``), so that the server's RSS is measured apart
  from the client's; with ``auth="nova"`` each connection is authenticated
  the Nova way (``connection_established``, ``connect`` with an API key,
  ``auth_success``).

CPU seconds are user + system time from psutil, of the generator's
processes only (the benchmark process for the in-process loops; every
process of a Locust or Artillery run, children included), never of the
server.  Traffic goes only to 127.0.0.1; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import psutil

__all__ = [
    "STARTUP_DEADLINE_S",
    "ConnectionHolder",
    "EchoServer",
    "LineReader",
    "Measurement",
    "ServerProcess",
    "Window",
    "bare_echo_loop",
    "bare_payload",
    "cpu_seconds",
    "measure_window",
    "percentile",
    "raise_nofile_limit",
    "start_reference_server",
    "stop_process",
    "tree_cpu_seconds",
]

#: How long a child process has to print that it is ready.
STARTUP_DEADLINE_S = 60.0
#: How long a generator has, once started, to get its first message echoed.
FIRST_MESSAGE_DEADLINE_S = 60.0
HERE = Path(__file__).resolve()


# ----------------------------------------------------------------------------- processes


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of one process (all its threads), 0.0 once it is gone."""
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds of the processes ``pids`` and of every live descendant of theirs."""
    total = 0.0
    seen: set[int] = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            members = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in members:
            if proc.pid not in seen:
                seen.add(proc.pid)
                total += cpu_seconds(proc)
    return total


class LineReader:
    """The lines a child prints, read on a daemon thread, so a wait for one can have a deadline."""

    def __init__(self, proc: subprocess.Popen[str], name: str) -> None:
        assert proc.stdout is not None
        self.name = name
        self.tail: deque[str] = deque(maxlen=20)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stdout = proc.stdout
        threading.Thread(target=self._pump, name=f"{name}-stdout", daemon=True).start()

    def _pump(self) -> None:
        for line in self._stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, prefix: str, deadline_s: float, *, on_line: Callable[[str], None] | None = None) -> str:
        """The next line starting with ``prefix``; other lines go to ``on_line``.

        Raises RuntimeError naming the child and its last lines when it exits
        first or ``deadline_s`` passes.
        """
        end = time.monotonic() + deadline_s
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"{self.name}: expected a line starting {prefix!r} within {deadline_s:g} s; "
                    f"last lines: {list(self.tail)}"
                )
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(
                    f"{self.name} exited before printing {prefix!r}; last lines: {list(self.tail)}"
                )
            self.tail.append(line)
            if line.startswith(prefix):
                return line
            if on_line is not None:
                on_line(line)


def stop_process(proc: subprocess.Popen[str], timeout_s: float = 15.0, *, stdin_stops: bool = True) -> None:
    """Stop a child: close its stdin (how the children here are told to stop), then terminate, then kill.

    ``stdin_stops=False``: a child that ignores its stdin (the reference
    server) is sent SIGTERM at once.
    """
    if stdin_stops and proc.poll() is None and proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout_s)
            return
        except subprocess.TimeoutExpired:
            pass
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


class ServerProcess:
    """A server in a child process on a loopback port it bound itself and printed."""

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        name: str,
        ready_prefix: str,
        env: dict[str, str] | None = None,
        stdin_stops: bool = True,
    ) -> None:
        self.name = name
        self.stdin_stops = stdin_stops
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, env={**os.environ, **(env or {})},
        )
        self.lines = LineReader(self.proc, name)
        try:
            line = self.lines.wait_for(ready_prefix, STARTUP_DEADLINE_S)
        except BaseException:
            stop_process(self.proc, stdin_stops=stdin_stops)
            raise
        # "listening PORT" or "Nova server listening on http://127.0.0.1:PORT"
        self.port = int(line.rsplit(":", 1)[-1].split()[-1])
        self.process = psutil.Process(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        """The server's resident set size in bytes."""
        return int(self.process.memory_info().rss)

    def cpu_seconds(self) -> float:
        """The server's CPU seconds so far."""
        return cpu_seconds(self.process)

    def close(self) -> None:
        stop_process(self.proc, stdin_stops=self.stdin_stops)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EchoServer(ServerProcess):
    """The bare python-websockets echo server in its own process (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__([sys.executable, str(HERE), "echo-server"], name="echo server", ready_prefix="listening")
        self.url = f"ws://127.0.0.1:{self.port}/"
        self._lock = threading.Lock()

    def echoed(self) -> int:
        """How many messages the server has echoed so far (asked over its stdin, answered on stdout)."""
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write("count\n")
            self.proc.stdin.flush()
            return int(self.lines.wait_for("count ", 10.0).split()[1])



async def _serve_echo() -> None:
    from websockets.asyncio.server import ServerConnection, serve

    raise_nofile_limit()
    echoed = 0

    async def echo(ws: ServerConnection) -> None:
        nonlocal echoed
        async for message in ws:
            echoed += 1
            await ws.send(message)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with serve(echo, "127.0.0.1", 0, compression=None, max_size=2**20, backlog=4096) as server:
        print("listening", server.sockets[0].getsockname()[1], flush=True)
        while line := await reader.readline():
            if line.strip() == b"count":
                print("count", echoed, flush=True)


def start_reference_server(db: Path, *, env: dict[str, str] | None = None) -> ServerProcess:
    """``python -m reference_server`` on an ephemeral loopback port, its page off, logging warnings only.

    It stops on SIGTERM (its clean shutdown: every WebSocket is sent 1001).
    """
    return ServerProcess(
        [sys.executable, "-m", "reference_server", "--port", "0", "--frontend-port", "-1",
         "--db", str(db), "--log-level", "warning"],
        name="reference server", ready_prefix="Nova server listening on", env=env, stdin_stops=False,
    )


# ----------------------------------------------------------------------------- measuring


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by rank, NaN when empty."""
    if not values:
        return float("nan")
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))]


@dataclass
class Window:
    """What the server echoed, and the generator and the server spent, between two instants."""

    messages: int
    seconds: float
    cpu_seconds: float
    server_cpu_seconds: float = float("nan")

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds > 0 else float("nan")

    @property
    def per_cpu_second(self) -> float:
        """Messages per CPU-second of the generator."""
        return self.messages / self.cpu_seconds if self.cpu_seconds > 0 else float("nan")


def measure_window(
    server: EchoServer,
    generator_cpu: Callable[[], float],
    *,
    warmup: float,
    duration: float,
    alive: Callable[[], bool] = lambda: True,
) -> Window:
    """Wait for the generator's first echoed message, then ``warmup`` s, then measure ``duration`` s.

    ``generator_cpu`` returns the generator's CPU seconds so far; ``alive``
    says whether it still runs (a generator that dies while the window waits
    fails the measurement instead of leaving it to a deadline).  Raises
    RuntimeError when no message is echoed within
    :data:`FIRST_MESSAGE_DEADLINE_S` or the generator stops early.
    """
    start = server.echoed()
    deadline = time.monotonic() + FIRST_MESSAGE_DEADLINE_S
    while server.echoed() == start:
        if not alive():
            raise RuntimeError("the load generator stopped before the server echoed any message")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the server echoed nothing within {FIRST_MESSAGE_DEADLINE_S:g} s of the load generator's start"
            )
        time.sleep(0.05)
    time.sleep(warmup)
    t0, n0, c0, s0 = time.monotonic(), server.echoed(), generator_cpu(), server.cpu_seconds()
    time.sleep(duration)
    t1, n1, c1, s1 = time.monotonic(), server.echoed(), generator_cpu(), server.cpu_seconds()
    if not alive():
        raise RuntimeError(
            "the load generator stopped inside the measured window: give it a longer run "
            "(the window is warmup + duration after its first message)"
        )
    return Window(n1 - n0, t1 - t0, c1 - c0, s1 - s0)


@dataclass
class Measurement:
    """One generator's figures in one run: the window, its latency percentiles, notes."""

    name: str
    window: Window
    p50_ms: float
    p99_ms: float
    notes: list[str] = field(default_factory=list)


def bare_payload(size: int) -> str:
    """The bare loop's frame: as long as the engine's generic publish frame of ``size`` content bytes.

    That frame is ``<client id>-<n>|<content>``, the content ``size`` bytes
    (the send time, then padding), the id about 18 characters.
    """
    return "c0000000-publ-0-0|" + "x" * max(0, size)


async def _bare_connection(
    url: str, payload: str, window: int, stop: asyncio.Event, latencies: list[float]
) -> None:
    from websockets.asyncio.client import connect

    clock = time.perf_counter
    async with connect(url, compression=None, ping_interval=None, max_size=2**20) as ws:
        sent: deque[float] = deque()
        for _ in range(window):
            sent.append(clock())
            await ws.send(payload)
        record = latencies.append
        while not stop.is_set():
            await ws.recv()
            now = clock()
            record(now - sent.popleft())
            sent.append(now)
            await ws.send(payload)
        while sent:
            await ws.recv()
            sent.popleft()


def bare_echo_loop(
    server: EchoServer, *, clients: int, warmup: float, duration: float, size: int = 64, window: int = 1
) -> Measurement:
    """The physical limit: ``clients`` connections in this process, each echoing as fast as it can.

    The loop runs until the measured window (see :func:`measure_window`,
    measured on a thread with this process's CPU seconds) closes; latency is
    each frame's send -> echo time, over the whole run.
    """
    me = psutil.Process()
    latencies: list[float] = []
    result: list[Window] = []
    errors: list[BaseException] = []

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def measure() -> None:
            try:
                result.append(measure_window(server, lambda: cpu_seconds(me), warmup=warmup, duration=duration))
            except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
                errors.append(exc)
            finally:
                loop.call_soon_threadsafe(stop.set)

        payload = bare_payload(size)
        tasks = [
            asyncio.create_task(_bare_connection(server.url, payload, window, stop, latencies))
            for _ in range(clients)
        ]
        watcher = threading.Thread(target=measure, name="bare-window", daemon=True)
        watcher.start()
        deadline = warmup + duration + FIRST_MESSAGE_DEADLINE_S + 30
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), deadline)
        finally:
            stop.set()
            watcher.join(timeout=30)

    asyncio.run(run())
    if errors:
        raise errors[0]
    return Measurement(
        f"bare asyncio loop (window {window})",
        result[0],
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
    )


# ----------------------------------------------------------------------------- idle connections


class ConnectionHolder:
    """A child process that opens ``connections`` idle connections to ``url`` and holds them.

    Connections open at ``rate`` per second at most, ``concurrency``
    handshakes (and authentications) in flight at most, within ``deadline``
    seconds; progress lines go to ``progress``.  :meth:`wait_held` returns
    once the child has opened them all, raising RuntimeError with the
    failures when some did not open.  Closing it (its stdin) ends the child
    and its connections.
    """

    def __init__(
        self,
        url: str,
        connections: int,
        *,
        rate: float,
        auth: str = "none",
        api_key: str = "valid-test-key",
        concurrency: int = 50,
        deadline: float = 300.0,
    ) -> None:
        self.connections = connections
        self.deadline = deadline
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            [sys.executable, str(HERE), "hold", url, "--connections", str(connections), "--rate", str(rate),
             "--auth", auth, "--api-key", api_key, "--concurrency", str(concurrency),
             "--deadline", str(deadline)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        self.lines = LineReader(self.proc, "connection holder")

    def wait_held(self, progress: Callable[[str], None] = print) -> None:
        """Wait until every connection is open (and authenticated); progress lines go to ``progress``."""
        line = self.lines.wait_for("held ", self.deadline + 30, on_line=progress)
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        if int(fields["open"]) != self.connections:
            raise RuntimeError(
                f"expected {self.connections} open connections, the holder has {fields['open']} "
                f"(failures: {fields.get('failures', '{}')}); raise the server's limits or lower --rate"
            )

    def close(self) -> None:
        stop_process(self.proc, timeout_s=60.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _envelope(type_: str, data: dict[str, object], client_id: str, op_id: str) -> str:
    return json.dumps(
        {"type": type_, "data": data, "timestamp": "2026-01-01T00:00:00.000Z", "client_id": client_id, "id": op_id}
    )


async def _hold(args: argparse.Namespace) -> int:
    from websockets.asyncio.client import ClientConnection, connect

    raise_nofile_limit()
    held: list[ClientConnection] = []
    failures: dict[str, int] = {}
    gate = asyncio.Semaphore(args.concurrency)
    start = time.monotonic()
    end = start + args.deadline

    async def open_one(index: int) -> None:
        await asyncio.sleep(max(0.0, start + index / args.rate - time.monotonic()))
        async with gate:
            try:
                if args.auth == "nova":
                    client_id = f"idle-{uuid.uuid4().hex[:12]}"
                    ws = await connect(
                        f"{args.url.rstrip('/')}/debug/{client_id}", compression=None, ping_interval=None,
                        open_timeout=30,
                    )
                    first = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if first.get("type") != "connection_established":
                        raise RuntimeError(f"first frame {first.get('type')}")
                    await ws.send(_envelope("connect", {"api_key": args.api_key}, client_id, "auth"))
                    reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if reply.get("type") != "auth_success":
                        raise RuntimeError(f"auth answered {reply.get('type')}")
                else:
                    ws = await connect(args.url, compression=None, ping_interval=None, open_timeout=30)
                held.append(ws)
            except Exception as exc:  # noqa: BLE001 - counted by kind; one failure must not end the run
                kind = type(exc).__name__
                failures[kind] = failures.get(kind, 0) + 1

    async def report() -> None:
        while True:
            await asyncio.sleep(1.0)
            print(f"progress open={len(held)} failed={sum(failures.values())} of {args.connections} "
                  f"after {time.monotonic() - start:.1f} s", flush=True)

    reporter = asyncio.create_task(report())
    try:
        await asyncio.wait_for(
            asyncio.gather(*(open_one(i) for i in range(args.connections))), max(1.0, end - time.monotonic())
        )
    except TimeoutError:
        failures["deadline"] = args.connections - len(held) - sum(failures.values())
    reporter.cancel()
    print(f"held open={len(held)} seconds={time.monotonic() - start:.1f} failures={json.dumps(failures)}",
          flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()  # EOF: the parent is done measuring
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("echo-server", help="the bare echo server (prints 'listening PORT'; stdin 'count')")
    hold = sub.add_parser("hold", help="open N idle connections at a bounded rate and hold them until stdin ends")
    hold.add_argument("url")
    hold.add_argument("--connections", type=int, required=True)
    hold.add_argument("--rate", type=float, default=500.0, help="connections opened per second at most")
    hold.add_argument("--concurrency", type=int, default=50, help="handshakes in flight at most")
    hold.add_argument("--auth", choices=["none", "nova"], default="none")
    hold.add_argument("--api-key", default="valid-test-key")
    hold.add_argument("--deadline", type=float, default=300.0, help="seconds to open them all")
    args = parser.parse_args(argv)
    if args.command == "echo-server":
        asyncio.run(_serve_echo())
        return 0
    if args.connections < 1 or args.rate <= 0 or args.concurrency < 1:
        parser.error("--connections, --rate and --concurrency must be positive")
    return asyncio.run(_hold(args))


if __name__ == "__main__":
    raise SystemExit(main())
