"""What the fault proxy (no toxics) costs, against a direct connection and against socat.

The same client drives the same echo/bulk server through four paths, in the
same run, rounds interleaved so that machine load hits every path alike:

- ``direct``: client -> server;
- ``socat``: client -> ``socat TCP-LISTEN:0,fork,reuseaddr TCP:127.0.0.1:SERVER`` -> server
  (a C relay in its own process: the baseline the goals refer to), and the same with
  ``-b 262144`` (socat's default 8 KiB buffer caps its throughput; this row shows a relay
  reading 256 KiB at a time, like the proxy);
- ``proxy (process)``: client -> a :class:`harness.proxy.FaultProxy` in its own Python
  process -> server (the like-for-like comparison with socat);
- ``proxy (in-process)``: the proxy on its own thread in the client's process, as the
  pytest plugin runs it (it shares the GIL with the client).

Measured: small-message round-trip latency (64-byte messages, TCP_NODELAY,
p50 and p99; the *added* p50 is the median, over interleaved batches, of a path's
batch p50 minus the direct path's in the same turn) on a plain connection and on a WebSocket upgrade (where the proxy
parses every frame header, as it does for a browser's socket), and bulk
throughput, server to client and client to server (MB/s).
The goals (issue 5): the proxy's *added* p50 latency at most 2x socat's, its
throughput at least 50% of socat's.

    python benchmarks/proxy_overhead.py                     # default sizes
    python benchmarks/proxy_overhead.py --round-trips 5000 --bulk-mb 128 --rounds 5

Loopback only; every socket has a timeout and the whole run a deadline.
Needs socat (``apt-get install socat``); without it the socat rows are skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

SOCKET_TIMEOUT_S = 30.0
RUN_DEADLINE_S = 600.0
MB = 1_000_000  # throughput in decimal MB/s

SERVER = r"""
import asyncio, struct, sys

BLOCK = b"\xa5" * 262144

class Server(asyncio.Protocol):
    # First byte picks the mode: e = echo; d + 8-byte n = send n bytes; u + 8-byte n = read n, reply b"k".
    def connection_made(self, transport):
        self.t = transport
        self.mode = None
        self.head = b""
        self.left = 0

    def data_received(self, data):
        if self.mode == "e":
            self.t.write(data)
            return
        if self.mode == "u":
            self.left -= len(data)
            if self.left <= 0:
                self.t.write(b"k")
            return
        self.head += data
        if self.head[:1] == b"G":
            # A WebSocket opening handshake (not validated), then echo: the proxy sees an
            # upgraded connection and parses every frame, as it does for a browser's socket.
            end = self.head.find(b"\r\n\r\n")
            if end >= 0:
                self.mode = "e"
                self.t.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n\r\n")
                if len(self.head) > end + 4:
                    self.t.write(self.head[end + 4:])
            return
        if self.head[:1] == b"e":
            self.mode = "e"
            if len(self.head) > 1:
                self.t.write(self.head[1:])
            return
        if len(self.head) < 9:
            return
        kind, n, rest = self.head[:1], struct.unpack("!Q", self.head[1:9])[0], self.head[9:]
        if kind == b"u":
            self.mode = "u"
            self.left = n
            if rest:
                self.data_received(rest)
        else:
            self.mode = "d"
            self.left = n
            self.pump()

    def pump(self):
        while self.left > 0 and self.t.get_write_buffer_size() < 1 << 20:
            block = BLOCK[: min(len(BLOCK), self.left)]
            self.t.write(block)
            self.left -= len(block)

    def resume_writing(self):
        if self.mode == "d":
            self.pump()

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Server, "127.0.0.1", 0)
    print("listening", server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""

PROXY = r"""
import sys
from harness.proxy import FaultProxy
proxy = FaultProxy(("127.0.0.1", int(sys.argv[1])), seed=0).start()
print("listening", proxy.port, flush=True)
sys.stdin.read()
proxy.stop()
"""


@dataclass
class Path:
    name: str
    port: int
    latencies_ms: list[float] = field(default_factory=list)
    ws_latencies_ms: list[float] = field(default_factory=list)
    batch_p50s: list[float] = field(default_factory=list)
    ws_batch_p50s: list[float] = field(default_factory=list)
    down_mbps: list[float] = field(default_factory=list)
    up_mbps: list[float] = field(default_factory=list)

    def pct(self, q: float, ws: bool = False) -> float:
        data = sorted(self.ws_latencies_ms if ws else self.latencies_ms)
        return data[min(len(data) - 1, int(q * len(data)))]

    def added_us(self, base: Path, ws: bool = False) -> float:
        """Median over batches of (this path's batch p50 - the base's p50 in the same turn), in us.

        Pairing each batch with the base's batch of the same turn cancels the
        load drift of a shared machine, which pooled percentiles do not.
        """
        mine = self.ws_batch_p50s if ws else self.batch_p50s
        theirs = base.ws_batch_p50s if ws else base.batch_p50s
        return statistics.median(a - b for a, b in zip(mine, theirs, strict=True)) * 1000


def _spawn(cmd: list[str], marker: str, stream: str = "stdout") -> tuple[subprocess.Popen[str], int]:
    """Start a process and read the port it prints (``marker ... PORT``), with a deadline."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    assert pipe is not None
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = pipe.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return proc, int(line.strip().rsplit(":", 1)[-1].split()[-1])
    proc.kill()
    raise RuntimeError(f"{cmd[:3]} did not report a port within 30 s: {''.join(lines[-5:])}")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.stdin:
        proc.stdin.close()
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> None:
    view = memoryview(bytearray(min(n, 1 << 20)))
    while n > 0:
        got = sock.recv_into(view, min(n, len(view)))
        if not got:
            raise RuntimeError(f"connection closed with {n} bytes still expected")
        n -= got


WS_REQUEST = (b"GET /bench/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
# A masked 64-byte binary frame (the echo sends it back as is; the proxy parses both ways).
WS_FRAME = b"\x82\xc0" + b"\x01\x02\x03\x04" + bytes(64)


def _open_for_latency(port: int, ws: bool) -> socket.socket:
    sock = _connect(port)
    if not ws:
        sock.sendall(b"e")
        return sock
    sock.sendall(WS_REQUEST)
    head = b""
    while b"\r\n\r\n" not in head:
        got = sock.recv(4096)
        if not got:
            raise RuntimeError("connection closed during the handshake")
        head += got
    return sock


def measure_latency(all_paths: list[Path], n: int, *, ws: bool = False, batch: int = 50,
                    warmup: int = 200) -> None:
    """``n`` round trips of a 64-byte message per path, one connection each.

    Paths take turns every ``batch`` round trips, so a burst of load on the
    shared machine lands on all of them alike; milliseconds go to each path.
    With ``ws`` the connection is a WebSocket upgrade and each message a frame.
    """
    message = WS_FRAME if ws else b"m" * 64
    socks = [_open_for_latency(p.port, ws) for p in all_paths]
    try:
        for done in range(-warmup, n, batch):
            for path, sock in zip(all_paths, socks, strict=True):
                batch_ms = []
                for _ in range(batch):
                    t0 = time.perf_counter()
                    sock.sendall(message)
                    _recv_exactly(sock, len(message))
                    batch_ms.append((time.perf_counter() - t0) * 1000)
                if done >= 0:
                    (path.ws_latencies_ms if ws else path.latencies_ms).extend(batch_ms)
                    (path.ws_batch_p50s if ws else path.batch_p50s).append(statistics.median(batch_ms))
    finally:
        for sock in socks:
            sock.close()


def measure_down(port: int, nbytes: int) -> float:
    """Server-to-client bulk transfer; MB/s."""
    with _connect(port) as sock:
        t0 = time.perf_counter()
        sock.sendall(b"d" + nbytes.to_bytes(8, "big"))
        _recv_exactly(sock, nbytes)
        return nbytes / (time.perf_counter() - t0) / MB


def measure_up(port: int, nbytes: int) -> float:
    """Client-to-server bulk transfer, until the server acknowledges the last byte; MB/s."""
    block = b"\x5a" * (1 << 20)
    with _connect(port) as sock:
        t0 = time.perf_counter()
        sock.sendall(b"u" + nbytes.to_bytes(8, "big"))
        left = nbytes
        while left > 0:
            chunk = block[: min(len(block), left)]
            sock.sendall(chunk)
            left -= len(chunk)
        _recv_exactly(sock, 1)
        return nbytes / (time.perf_counter() - t0) / MB


@contextmanager
def paths(server_port: int, use_socat: bool) -> Iterator[list[Path]]:
    from harness.proxy import FaultProxy

    procs: list[subprocess.Popen[str]] = []
    inproc = FaultProxy(("127.0.0.1", server_port), seed=0).start()
    try:
        out = [Path("direct", server_port)]
        if use_socat:
            proc, port = _spawn(
                ["socat", "-d", "-d", "TCP-LISTEN:0,bind=127.0.0.1,fork,reuseaddr",
                 f"TCP:127.0.0.1:{server_port}"],
                "listening on", stream="stderr",
            )
            procs.append(proc)
            out.append(Path("socat", port))
            # socat relays through an 8 KiB buffer by default; with 256 KiB (the proxy's
            # read size) its throughput is a fairer ceiling for a relay.
            proc, port = _spawn(
                ["socat", "-d", "-d", "-b", "262144", "TCP-LISTEN:0,bind=127.0.0.1,fork,reuseaddr",
                 f"TCP:127.0.0.1:{server_port}"],
                "listening on", stream="stderr",
            )
            procs.append(proc)
            out.append(Path("socat -b 262144", port))
        proc, port = _spawn([sys.executable, "-c", PROXY, str(server_port)], "listening")
        procs.append(proc)
        out.append(Path("proxy (process)", port))
        out.append(Path("proxy (in-process)", inproc.port))
        yield out
    finally:
        inproc.stop()
        for proc in procs:
            _stop(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round-trips", type=int, default=5000, help="per path per round")
    parser.add_argument("--bulk-mb", type=int, default=64, help="MB per bulk transfer")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    args = parser.parse_args(argv)

    use_socat = shutil.which("socat") is not None
    if not use_socat:
        print("socat not found: the socat baseline is skipped. Install it with "
              "`apt-get install socat` (Debian/Ubuntu).", file=sys.stderr)
    deadline = time.monotonic() + RUN_DEADLINE_S
    server, server_port = _spawn([sys.executable, "-c", SERVER], "listening")
    try:
        with paths(server_port, use_socat) as all_paths:
            nbytes = args.bulk_mb * MB
            for _ in range(args.rounds):
                measure_latency(all_paths, args.round_trips)
                measure_latency(all_paths, args.round_trips, ws=True)
                for path in all_paths:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"benchmark exceeded its {RUN_DEADLINE_S:.0f} s deadline")
                    path.down_mbps.append(measure_down(path.port, nbytes))
                    path.up_mbps.append(measure_up(path.port, nbytes))
    finally:
        _stop(server)

    report(all_paths, args, use_socat)
    return 0


def report(all_paths: list[Path], args: argparse.Namespace, use_socat: bool) -> None:
    by = {p.name: p for p in all_paths}
    direct = by["direct"]
    print(f"proxy overhead: {args.rounds} rounds x {args.round_trips} round trips (64 B), "
          f"bulk {args.bulk_mb} MB each way; loadavg {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    print(f"{'path':<20} | {'p50 ms':>7} | {'p99 ms':>7} | {'added p50 us':>12} | "
          f"{'WS p50 ms':>9} | {'WS p99 ms':>9} | {'down MB/s':>9} | {'up MB/s':>8}")
    print("-" * 104)
    for p in all_paths:
        added = p.added_us(direct)
        print(f"{p.name:<20} | {p.pct(0.5):>7.3f} | {p.pct(0.99):>7.3f} | "
              f"{added if p is not direct else 0:>12.1f} | "
              f"{p.pct(0.5, ws=True):>9.3f} | {p.pct(0.99, ws=True):>9.3f} | "
              f"{statistics.median(p.down_mbps):>9.0f} | {statistics.median(p.up_mbps):>8.0f}")
    if not use_socat:
        return
    socat = by["socat"]
    socat_added = socat.added_us(direct)
    ws_socat = socat.added_us(direct, ws=True)
    print()
    big = by["socat -b 262144"]
    for name in ("proxy (process)", "proxy (in-process)"):
        p = by[name]
        latency_ratio = p.added_us(direct) / socat_added if socat_added > 0 else float("inf")
        ws_added = p.added_us(direct, ws=True)
        ws_ratio = ws_added / ws_socat if ws_socat > 0 else float("inf")
        down = statistics.median(p.down_mbps) / statistics.median(socat.down_mbps)
        up = statistics.median(p.up_mbps) / statistics.median(socat.up_mbps)
        verdict: Callable[[bool], str] = lambda ok: "ok" if ok else "MISSED"
        print(f"{name:<20} added p50 = {latency_ratio:.2f}x socat's (goal <= 2: "
              f"{verdict(latency_ratio <= 2)}; WebSocket frames: {ws_ratio:.2f}x); throughput down {down:.0%}, up {up:.0%} "
              f"of socat's (goal >= 50%: {verdict(min(down, up) >= 0.5)}); "
              f"vs socat -b 262144: down {statistics.median(p.down_mbps) / statistics.median(big.down_mbps):.0%}, "
              f"up {statistics.median(p.up_mbps) / statistics.median(big.up_mbps):.0%}")


if __name__ == "__main__":
    sys.exit(main())
