"""RSS per idle connection: the reference server against a bare python-websockets echo server.

Each server runs in its own process on a loopback ephemeral port; a second
process (``_load_baselines.py hold``) opens ``--connections`` idle
connections to it at ``--rate`` per second at most (``--concurrency``
handshakes in flight), within ``--deadline`` seconds, printing its progress,
and holds them.  The figure is the server's RSS per connection (psutil, the
server's process only)::

    RSS per connection = (RSS with N open - RSS before) / N

"before" is taken after one warm-up connection has opened and closed, so
code paths loaded on first use are not charged to the N.  ``after`` is
read ``--settle`` seconds after the last connection opened.

- bare: ``websockets.asyncio.server.serve`` echoing, no compression; the
  connections just open;
- reference: ``python -m reference_server`` (its page off); every connection
  is authenticated the Nova way: open ``/debug/{client_id}``, wait for
  ``connection_established``, send ``connect`` with the API key
  ``valid-test-key``, wait for ``auth_success``.  Its caps on
  connections that have not authenticated yet (64 per address, 1024 in
  all) would refuse a fast ramp from one address, so the run raises them to
  N (``NOVA_MAX_UNAUTHENTICATED_PER_ADDRESS``/``_TOTAL``); nothing else is
  changed.

Both see the same client: no compression offered, no client pings (the
servers' own keep-alive pings stay on).  The soft RLIMIT_NOFILE is raised to
the hard limit in this process and the children it starts; a limit below N
plus a margin is an error naming the fix::

    python benchmarks/connection_limit.py                      # 10,000 connections each
    python benchmarks/connection_limit.py --connections 2000 --rate 1000

Goal (issue 11): reference / bare <= 2.0.  Loopback only; every wait has a
deadline.  Exit status 1 when a server could not hold the N connections.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from _load_baselines import (
    ConnectionHolder,
    EchoServer,
    ServerProcess,
    raise_nofile_limit,
    start_reference_server,
)

KIB = 1024
#: File descriptors a process needs besides its connections (stdio, the listener, the database...).
FD_MARGIN = 100


@dataclass
class Held:
    """One server holding N idle connections."""

    name: str
    connections: int
    rss_before: int
    rss_after: int
    open_seconds: float

    @property
    def per_connection(self) -> float:
        """Bytes of RSS per connection."""
        return (self.rss_after - self.rss_before) / self.connections


def _wait_until_idle(server: ServerProcess, deadline_s: float = 30.0) -> None:
    """Wait until the server holds no established TCP connection (the warm-up one is reaped)."""
    end = time.monotonic() + deadline_s
    while True:
        established = [
            c for c in server.process.net_connections(kind="tcp") if c.status == psutil.CONN_ESTABLISHED
        ]
        if not established:
            return
        if time.monotonic() > end:
            raise RuntimeError(
                f"{server.name} still holds {len(established)} connection(s) {deadline_s:g} s after "
                "the warm-up connection closed"
            )
        time.sleep(0.05)


def _hold(server: ServerProcess, name: str, url: str, args: argparse.Namespace, auth: str) -> Held:
    with ConnectionHolder(url, 1, rate=args.rate, auth=auth, deadline=60.0) as warm:
        warm.wait_held(progress=lambda line: None)
    _wait_until_idle(server)
    before = server.rss()
    print(f"{name}: RSS before {before / KIB / KIB:.1f} MiB; opening {args.connections} connections "
          f"at <= {args.rate:g}/s", flush=True)
    start = time.monotonic()
    with ConnectionHolder(
        url, args.connections, rate=args.rate, auth=auth, concurrency=args.concurrency, deadline=args.deadline
    ) as holder:
        holder.wait_held(progress=lambda line: print(f"{name}: {line}", flush=True))
        opened = time.monotonic() - start
        time.sleep(args.settle)
        after = server.rss()
    held = Held(name, args.connections, before, after, opened)
    print(f"{name}: {args.connections} open in {opened:.1f} s; RSS {after / KIB / KIB:.1f} MiB, "
          f"{held.per_connection / KIB:.1f} KiB per connection", flush=True)
    return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000, help="idle connections per server (default 10000)")
    parser.add_argument("--rate", type=float, default=1000.0, help="connections opened per second at most (default 1000)")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight at most (default 50)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds between the last connection opening and reading RSS (default 2)")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds to open them all, per server (default 600)")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.rate <= 0 or args.concurrency < 1 or args.settle < 0 or args.deadline <= 0:
        parser.error("--connections, --rate, --concurrency and --deadline must be positive, --settle >= 0")

    limit = raise_nofile_limit()
    if limit < args.connections + FD_MARGIN:
        print(
            f"connection_limit: {args.connections} connections need a file descriptor limit of at least "
            f"{args.connections + FD_MARGIN} per process; the hard limit here is {limit}. "
            f"Raise it (ulimit -Hn, /etc/security/limits.conf) or pass --connections {limit - FD_MARGIN}",
            file=sys.stderr,
        )
        return 2
    print(f"RLIMIT_NOFILE soft limit raised to {limit}", flush=True)

    results: list[Held] = []
    try:
        with EchoServer() as echo:
            results.append(_hold(echo, "bare websockets", echo.url, args, "none"))
        with tempfile.TemporaryDirectory(prefix="nova-connection-limit-") as tmp:
            caps = str(max(args.connections, 1024))
            env = {"NOVA_MAX_UNAUTHENTICATED_PER_ADDRESS": caps, "NOVA_MAX_UNAUTHENTICATED_TOTAL": caps}
            with start_reference_server(Path(tmp) / "limit.db", env=env) as nova:
                results.append(_hold(nova, "reference server", f"ws://127.0.0.1:{nova.port}", args, "nova"))
    except RuntimeError as exc:
        print(f"connection_limit: {exc}", file=sys.stderr)
        return 1

    bare, ours = results
    print()
    print(f"{args.connections} idle connections per server, opened at <= {args.rate:g}/s "
          f"({args.concurrency} handshakes in flight), RSS read {args.settle:g} s after the last")
    print(f"{'server':<18} | {'RSS before MiB':>14} | {'RSS after MiB':>13} | {'KiB/connection':>14} | {'open s':>6}")
    for r in results:
        print(f"{r.name:<18} | {r.rss_before / KIB / KIB:>14.1f} | {r.rss_after / KIB / KIB:>13.1f} | "
              f"{r.per_connection / KIB:>14.1f} | {r.open_seconds:>6.1f}")
    if bare.per_connection > 0:
        print(f"\nRSS per connection, reference / bare: {ours.per_connection / bare.per_connection:.2f}  (goal <= 2.00)")
    else:
        print("\nRSS per connection, reference / bare: n/a (the bare server's RSS did not grow: "
              "measure more connections)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
