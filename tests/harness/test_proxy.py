"""The fault proxy with real sockets: forwarding, flow control, every toxic end to end.

Network depth.  Each test runs its own small asyncio server (raw TCP echo,
or a real ``websockets`` server) on the test's loop, a :class:`FaultProxy`
on its own thread in front of it, and a real client -- all on 127.0.0.1,
ephemeral ports.  Every wait has a deadline; nothing sleeps to wait for a
condition (proxy events are awaited with ``wait_for_event``, off the test
loop so the servers keep running).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedError
from websockets.protocol import State

import harness.proxy as proxy_pkg
from harness.errors import WaitTimeoutError
from harness.proxy import (
    Bandwidth,
    Blackhole,
    Chunk,
    EventKind,
    FaultProxy,
    Latency,
    LimitData,
    ProxyConfigError,
    ProxyError,
    ProxyEvent,
    ResetPeer,
    Slicer,
    SlowClose,
    Stage,
    Step,
    Target,
    Toxic,
)

T = TypeVar("T")
MB = 1024 * 1024
TIMEOUT = 10.0
"""Seconds any single wait may take (the machine is shared and loaded)."""

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def within(awaitable: Awaitable[T], timeout: float = TIMEOUT) -> T:
    return await asyncio.wait_for(awaitable, timeout)


@asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    """A raw TCP server on the test loop; yields its port; closes its connections on exit."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await handler(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await asyncio.wait_for(
            asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True), TIMEOUT
        )


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until the client half-closes, then close."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextmanager
def running_proxy(port: int, **options: Any) -> Iterator[FaultProxy]:
    proxy = FaultProxy(("127.0.0.1", port), seed=1234, **options).start()
    try:
        yield proxy
    finally:
        proxy.stop()


async def event(proxy: FaultProxy, kind: str, **options: Any) -> ProxyEvent:
    """Wait (off the test loop) for a proxy event."""
    options.setdefault("timeout", TIMEOUT)
    return await asyncio.to_thread(proxy.wait_for_event, kind, **options)


async def open_client(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await within(asyncio.open_connection("127.0.0.1", proxy.port))


async def expect_reset_on_connect(proxy: FaultProxy) -> None:
    """Connect and read: an RST must come (it may beat the connect's completion)."""
    opened: list[asyncio.StreamWriter] = []
    with pytest.raises(ConnectionResetError):
        reader, writer = await open_client(proxy)
        opened.append(writer)
        await within(reader.read())
    for writer in opened:
        writer.close()


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     data: bytes) -> float:
    start = time.monotonic()
    writer.write(data)
    assert await within(reader.readexactly(len(data))) == data
    return time.monotonic() - start


# ---------------------------------------------------------------- forwarding


@pytest.mark.asyncio
async def test_forwards_5_mb_of_random_bytes_exactly_both_ways() -> None:
    payload = random.Random(1).randbytes(5 * MB)
    async with tcp_server(echo) as port:
        with running_proxy(port) as proxy:
            reader, writer = await open_client(proxy)

            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            _, received = await within(asyncio.gather(send(), reader.read()))
            writer.close()
            assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
            closed = await event(proxy, "closed")
            assert (closed.detail["bytes_up"], closed.detail["bytes_down"]) == (5 * MB, 5 * MB)


@pytest.mark.asyncio
async def test_half_close_the_server_still_sends_after_the_client_shuts_its_write_side() -> None:
    async def reply_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # until the client's FIN
        writer.write(b"got %d bytes;" % len(request) + b"z" * 100_000)
        await writer.drain()
        writer.close()

    async with tcp_server(reply_after_eof) as port:
        with running_proxy(port) as proxy:
            reader, writer = await open_client(proxy)
            writer.write(b"q" * 1000)
            writer.write_eof()
            reply = await within(reader.read())
            writer.close()
            assert reply == b"got 1000 bytes;" + b"z" * 100_000
            up = await event(proxy, "half_closed")
            down = await event(proxy, "half_closed", after=up.seq)
            assert (up.detail["direction"], down.detail["direction"]) == ("upstream", "downstream")
            assert (await event(proxy, "closed")).detail["reason"] == "closed"


async def flood_until_blocked(
    writer: asyncio.StreamWriter, blocked: asyncio.Event, digest: Any, limit: int = 64 * MB
) -> int:
    """Write random 64 KiB blocks until a drain stalls for 0.5 s (or ``limit``); return bytes written."""
    rng = random.Random(2)
    written = 0
    while written < limit:
        block = rng.randbytes(65536)
        writer.write(block)
        digest.update(block)
        written += len(block)
        try:
            await asyncio.wait_for(writer.drain(), 0.5)
        except TimeoutError:
            blocked.set()
            break
    return written


@pytest.mark.asyncio
@pytest.mark.parametrize("toxic", [None, Blackhole()], ids=["no-toxic", "blackhole"])
async def test_a_slow_reader_does_not_make_the_proxy_buffer_without_bound(toxic: Any) -> None:
    limit = 64 * 1024
    blocked = asyncio.Event()
    sent_digest, got_digest = hashlib.sha256(), hashlib.sha256()
    total: list[int] = []

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total.append(await flood_until_blocked(writer, blocked, sent_digest))
        await writer.drain()
        writer.close()

    async with tcp_server(flood) as port:
        with running_proxy(port, buffer_limit=limit) as proxy:
            handle = proxy.add_toxic(toxic, "downstream") if toxic else None
            reader, writer = await open_client(proxy)  # and read nothing yet
            await within(blocked.wait(), 60)
            (info,) = proxy.connections()
            # buffer_limit, plus one 256 KiB read, plus the transport's 64 KiB high-water mark.
            bound = limit + 256 * 1024 + 64 * 1024
            assert info.downstream.peak_buffered <= bound, info.downstream
            if toxic is not None:
                assert info.downstream.sent < 1024, "the blackhole let data through"
                handle.remove()  # type: ignore[union-attr]
            received = 0
            while chunk := await within(reader.read(256 * 1024)):
                got_digest.update(chunk)
                received += len(chunk)
            writer.close()
            assert received == total[0] and got_digest.digest() == sent_digest.digest()
            assert proxy.connections()[0].downstream.peak_buffered <= bound


@pytest.mark.asyncio
async def test_both_sides_of_a_proxied_connection_have_tcp_nodelay() -> None:
    """Without it, Nagle and the browser's delayed ACK hold a response's second write ~40 ms."""
    async with tcp_server(echo) as port:
        with running_proxy(port) as proxy:
            reader, writer = await open_client(proxy)
            await round_trip(reader, writer, b"ping")  # the connection is up on both sides
            (conn,) = proxy._conns.values()
            for side in (conn.client, conn.server):
                assert side.transport is not None
                raw = side.transport.get_extra_info("socket")
                assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0, side.role
            writer.close()


# ---------------------------------------------------------------- toxics on raw TCP


@pytest.mark.asyncio
async def test_latency_both_ways_adds_at_least_its_delay_each_way() -> None:
    async with tcp_server(echo) as port:
        with running_proxy(port) as proxy:
            reader, writer = await open_client(proxy)
            await round_trip(reader, writer, b"warm-up")
            with proxy.add_toxic(Latency(100), "both"):
                await round_trip(reader, writer, b"ping")  # the connection is up on both sides.2
            writer.close()


@pytest.mark.asyncio
async def test_bandwidth_limits_the_rate() -> None:
    async with tcp_server(echo) as port:
        with running_proxy(port) as proxy:
            proxy.add_toxic(Bandwidth(800), "to_client")  # 100 000 bytes/s
            reader, writer = await open_client(proxy)
            elapsed = await round_trip(reader, writer, bytes(30_000))
            writer.close()
            assert elapsed >= 0.29


@pytest.mark.asyncio
async def test_slow_close_delays_the_fin_not_the_data() -> None:
    closed_at: list[float] = []

    async def say_bye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(3)
        writer.write(b"bye")
        await writer.drain()
        closed_at.append(time.monotonic())
        writer.close()

    async with tcp_server(say_bye) as port:
        with running_proxy(port) as proxy:
            proxy.add_toxic(SlowClose(300), "downstream")
            reader, writer = await open_client(proxy)
            writer.write(b"hi!")
            assert await within(reader.readexactly(3)) == b"bye"
            assert await within(reader.read()) == b""
            writer.close()
            assert time.monotonic() - closed_at[0] >= 0.3


@pytest.mark.asyncio
async def test_blackhole_holds_data_without_closing_and_releases_it_when_removed() -> None:
    received: list[tuple[float, bytes]] = []
    got = asyncio.Event()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(100):
            received.append((time.monotonic(), data))
            got.set()
        writer.close()

    async with tcp_server(record) as port:
        with running_proxy(port) as proxy:
            hole = proxy.add_toxic(Blackhole(), "upstream")
            _reader, writer = await open_client(proxy)
            writer.write(b"held")
            await within(writer.drain())
            await event(proxy, "request")  # the proxy has read it (not HTTP, so opaque)
            (info,) = proxy.connections()
            assert not info.closed and info.upstream.sent == 0
            removed_at = time.monotonic()
            hole.remove()
            await within(got.wait())
            assert received[0][1] == b"held" and received[0][0] >= removed_at
            writer.close()


@pytest.mark.asyncio
async def test_blackhole_with_a_timeout_closes_after_it() -> None:
    async with tcp_server(echo) as port:
        with running_proxy(port) as proxy:
            proxy.add_toxic(Blackhole(timeout_ms=300), "both")
            start = time.monotonic()
            reader, writer = await open_client(proxy)
            writer.write(b"lost")
            assert await within(reader.read()) == b""
            assert time.monotonic() - start >= 0.3
            writer.close()
            assert (await event(proxy, "closed")).detail["reason"] == "blackhole timeout"


@pytest.mark.asyncio
async def test_reset_peer_toxic_and_reset_connections_send_an_rst() -> None:
    async with tcp_server(echo) as port:
        with running_proxy(port) as proxy:
            reader, writer = await open_client(proxy)
            await round_trip(reader, writer, b"up")
            added = time.monotonic()
            proxy.add_toxic(ResetPeer(timeout_ms=200), "downstream")
            with pytest.raises(ConnectionResetError):
                await within(reader.read())
            assert time.monotonic() - added >= 0.2
            writer.close()
            assert (await event(proxy, "reset")).detail["reason"] == "reset_peer"
            proxy.clear()

            reader, writer = await open_client(proxy)
            await round_trip(reader, writer, b"up")
            (live,) = proxy.connections(live_only=True)
            assert proxy.reset_connections() == [live.id]
            with pytest.raises(ConnectionResetError):
                await within(reader.read())
            writer.close()


@pytest.mark.asyncio
async def test_limit_data_closes_after_exactly_n_bytes() -> None:
    async with tcp_server(echo) as port:
        with running_proxy(port) as proxy:
            proxy.add_toxic(LimitData(1000), "to_client")
            reader, writer = await open_client(proxy)
            writer.write(bytes(5000))
            assert await within(reader.read()) == bytes(1000)
            writer.close()
            cut = await event(proxy, "cut")
            assert cut.detail == {"direction": "downstream", "reason": "limit_data",
                                  "at_byte": 1000, "at_boundary": None}


@pytest.mark.asyncio
async def test_slicer_keeps_every_byte_in_order() -> None:
    payload = random.Random(3).randbytes(50_000)
    async with tcp_server(echo) as port:
        with running_proxy(port) as proxy:
            proxy.add_toxic(Slicer(100, size_variation=60), "both")
            reader, writer = await open_client(proxy)
            await round_trip(reader, writer, payload)
            writer.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["refuse", "reset", "close"])
async def test_refused_connections_and_back(how: Any) -> None:
    async with tcp_server(echo) as port:
        with running_proxy(port) as proxy:
            with proxy.refuse_connections(how=how):
                if how == "refuse":
                    with pytest.raises(ConnectionRefusedError):
                        await open_client(proxy)
                elif how == "reset":
                    await expect_reset_on_connect(proxy)
                else:
                    reader, writer = await open_client(proxy)
                    assert await within(reader.read()) == b""
                    writer.close()
                if how != "refuse":
                    assert (await event(proxy, "refused")).detail["how"] == how
            reader, writer = await open_client(proxy)
            await round_trip(reader, writer, b"back")
            writer.close()


@pytest.mark.asyncio
async def test_an_unreachable_upstream_resets_the_client_and_says_so() -> None:
    async with tcp_server(echo) as port:
        pass  # closed: nothing listens on that port now
    with running_proxy(port) as proxy:
        await expect_reset_on_connect(proxy)
        failed = await event(proxy, "upstream_failed")
        assert "ConnectionRefusedError" in failed.detail["error"]


# ---------------------------------------------------------------- a real WebSocket client and server


async def ws_handler(ws: ServerConnection) -> None:
    """``/echo/...`` echoes; ``/burst/...`` answers ``go`` with three 100-byte messages."""
    assert ws.request is not None
    if ws.request.path.startswith("/burst"):
        await ws.recv()
        for i in range(3):
            await ws.send(bytes([i]) * 100)
        await ws.wait_closed()
        return
    async for message in ws:
        await ws.send(message)


@asynccontextmanager
async def ws_server() -> AsyncIterator[int]:
    async with serve(ws_handler, "127.0.0.1", 0, compression=None, ping_interval=None) as server:
        yield next(iter(server.sockets)).getsockname()[1]


def ws_connect(proxy: FaultProxy, path: str) -> Any:
    return connect(proxy.ws_url(path), proxy=None, open_timeout=TIMEOUT, close_timeout=2,
                   ping_interval=None, compression=None)


async def ws_round_trip(ws: ClientConnection, message: str | bytes) -> float:
    start = time.monotonic()
    await ws.send(message)
    assert await within(ws.recv()) == message
    return time.monotonic() - start


@pytest.mark.asyncio
async def test_websocket_messages_arrive_intact_through_the_slicer() -> None:
    async with ws_server() as port:
        with running_proxy(port) as proxy:
            proxy.add_toxic(Slicer(7, size_variation=3, delay_us=20), "both")
            async with ws_connect(proxy, "/echo/sliced") as ws:
                for size in (1, 125, 126, 1000, 20_000):
                    await ws_round_trip(ws, random.Random(size).randbytes(size))
                await ws_round_trip(ws, "unicode ✓ text")
            (info,) = proxy.connections()
            assert info.websocket and info.upgraded and info.downstream.frames >= 6


@pytest.mark.asyncio
async def test_websocket_latency_adds_at_least_the_configured_delay() -> None:
    async with ws_server() as port:
        with running_proxy(port) as proxy:
            async with ws_connect(proxy, "/echo/slow") as ws:
                with proxy.add_toxic(Latency(200), "downstream", target=Target(websocket_only=True)):
                    assert await ws_round_trip(ws, "hello") >= 0.2


@pytest.mark.asyncio
async def test_websocket_blackhole_ping_times_out_while_the_socket_stays_open() -> None:
    async with ws_server() as port:
        with running_proxy(port) as proxy:
            async with ws_connect(proxy, "/echo/dead") as ws:
                with proxy.add_toxic(Blackhole(), "both"):
                    pong = await ws.ping()
                    with pytest.raises(TimeoutError):
                        await asyncio.wait_for(pong, 0.5)
                    assert ws.state is State.OPEN
                    assert not proxy.connections()[0].closed
                # The path recovers: held frames are delivered, the connection works again.
                await within(await ws.ping())
                await ws_round_trip(ws, "alive")


@pytest.mark.asyncio
async def test_websocket_reset_is_an_abnormal_closure_1006() -> None:
    async with ws_server() as port:
        with running_proxy(port) as proxy:
            async with ws_connect(proxy, "/echo/reset") as ws:
                await ws_round_trip(ws, "before")
                assert len(proxy.reset_connections(Target(websocket_only=True))) == 1
                with pytest.raises(ConnectionClosedError) as caught:
                    await within(ws.recv())
                assert caught.value.rcvd is None and ws.close_code == 1006


@pytest.mark.asyncio
@pytest.mark.parametrize("at_frame_boundary", [False, True], ids=["mid-frame", "at-boundary"])
async def test_websocket_limit_data_mid_frame_or_at_a_frame_boundary(at_frame_boundary: bool) -> None:
    # Three 100-byte binary messages from the server: three 102-byte frames.
    async with ws_server() as port:
        with running_proxy(port) as proxy:
            async with ws_connect(proxy, "/burst/cut") as ws:
                handshake = proxy.connections()[0].downstream.sent  # the 101 response
                proxy.add_toxic(LimitData(250, at_frame_boundary=at_frame_boundary), "downstream")
                await ws.send("go")
                assert await within(ws.recv()) == bytes([0]) * 100
                assert await within(ws.recv()) == bytes([1]) * 100
                with pytest.raises(ConnectionClosedError):
                    await within(ws.recv())
                assert ws.close_code == 1006
            cut = await event(proxy, "cut")
            delivered = proxy.connections()[0].downstream.sent - handshake
            assert delivered == (204 if at_frame_boundary else 250)
            assert cut.detail["at_byte"] == handshake + delivered
            assert cut.detail["at_boundary"] is at_frame_boundary


@pytest.mark.asyncio
async def test_a_target_by_path_leaves_other_connections_alone() -> None:
    async with ws_server() as port:
        with running_proxy(port) as proxy:
            proxy.add_toxic(Latency(400), "downstream", target=Target(path_contains="client-1"))
            async with ws_connect(proxy, "/echo/client-1") as one, \
                    ws_connect(proxy, "/echo/client-2") as two:
                assert await ws_round_trip(two, "fast") < 0.4
                assert await ws_round_trip(one, "slow") >= 0.4
                assert proxy.reset_connections(Target(path_contains="client-1")) != []
                with pytest.raises(ConnectionClosedError):
                    await within(one.recv())
                await ws_round_trip(two, "still here")
            by_path = {c.path: c for c in proxy.connections()}
            assert by_path["/echo/client-1"].toxics == ("latency_1/downstream",)
            assert by_path["/echo/client-2"].toxics == ()


@pytest.mark.asyncio
async def test_websocket_connect_is_refused_then_accepted_again() -> None:
    async with ws_server() as port:
        with running_proxy(port) as proxy:
            refusal = proxy.refuse_connections()
            with pytest.raises(ConnectionRefusedError):
                async with ws_connect(proxy, "/echo/refused"):
                    pass
            refusal.remove()
            async with ws_connect(proxy, "/echo/accepted") as ws:
                await ws_round_trip(ws, "in")


# ---------------------------------------------------------------- events and control


@pytest.mark.asyncio
async def test_the_event_log_tells_a_connection_story() -> None:
    async with ws_server() as port:
        with running_proxy(port) as proxy:
            handle = proxy.add_toxic(Latency(1), "upstream", target=Target(websocket_only=True))
            async with ws_connect(proxy, "/echo/story?client=42") as ws:
                await ws_round_trip(ws, "x" * 10)
            closed = await event(proxy, "closed")
            handle.remove()
            story = [(e.kind.value, e.connection_id) for e in proxy.events]
            assert story[:7] == [
                ("started", None), ("toxic_added", None), ("opened", 1), ("request", 1),
                ("toxic_applied", 1), ("response", 1), ("close_frame", 1),
            ]
            request = next(e for e in proxy.events if e.kind == EventKind.REQUEST)
            assert request.detail == {"http": True, "method": "GET", "path": "/echo/story?client=42",
                                      "websocket": True}
            codes = [e.detail["code"] for e in proxy.events if e.kind == "close_frame"]
            assert codes == [1000, 1000]
            assert closed.detail["websocket"] is True and closed.detail["bytes_down"] > 0
            assert proxy.events[-1].kind == "toxic_removed"
            times = [e.time for e in proxy.events]
            assert times == sorted(times)
            with pytest.raises(WaitTimeoutError, match="kind=reset"):
                proxy.wait_for_event("reset", timeout=0.05)


@pytest.mark.asyncio
async def test_control_calls_do_not_wait_for_traffic_held_by_a_blackhole() -> None:
    async with tcp_server(echo) as port:
        with running_proxy(port, buffer_limit=64 * 1024) as proxy:
            proxy.add_toxic(Blackhole(), "upstream")
            _reader, writer = await open_client(proxy)
            writer.write(bytes(2 * MB))  # far more than the proxy will hold

            def control() -> list[float]:
                timings = []
                for call in (
                    lambda: proxy.add_toxic(Latency(10), "downstream").remove(),
                    proxy.connections,
                    lambda: proxy.refuse_connections(how="reset").remove(),
                    lambda: proxy.reset_connections(Target(path_contains="nobody")),
                ):
                    start = time.monotonic()
                    call()
                    timings.append(time.monotonic() - start)
                return timings

            await event(proxy, "toxic_applied")
            timings = await within(asyncio.to_thread(control))
            (info,) = proxy.connections()
            assert info.upstream.buffered > 0 and info.upstream.sent == 0, "still held"
            assert max(timings) < 2.0, timings
            writer.close()


def test_add_toxic_rejects_bad_arguments_clearly() -> None:
    with FaultProxy(("127.0.0.1", 9), seed=0) as proxy:
        with pytest.raises(ProxyConfigError, match="unknown direction 'sideways'.*'both'"):
            proxy.add_toxic(Latency(1), "sideways")
        with pytest.raises(ProxyConfigError, match="expects a toxic"):
            proxy.add_toxic("latency")  # type: ignore[arg-type]
        proxy.add_toxic(Latency(1), name="slow")
        with pytest.raises(ProxyConfigError, match="already active"):
            proxy.add_toxic(Latency(2), name="slow")
        proxy.remove_toxic("slow")
        assert proxy.toxics() == []


def test_control_calls_are_thread_safe() -> None:
    with FaultProxy(("127.0.0.1", 9), seed=0) as proxy:
        errors: list[BaseException] = []

        def churn(n: int) -> None:
            try:
                for i in range(25):
                    proxy.add_toxic(Latency(i), name=f"t{n}-{i}").remove()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert not errors and proxy.toxics() == []
        added = [e for e in proxy.events if e.kind == "toxic_added"]
        assert len(added) == 100 and len({e.detail["toxic_id"] for e in added}) == 100


@pytest.mark.asyncio
async def test_stop_closes_live_connections_and_later_calls_say_why_they_fail() -> None:
    async with tcp_server(echo) as port:
        proxy = FaultProxy(("127.0.0.1", port)).start()
        handle = proxy.add_toxic(Latency(1))
        reader, writer = await open_client(proxy)
        await round_trip(reader, writer, b"x")
        await asyncio.to_thread(proxy.stop)
        assert await within(reader.read()) == b""
        writer.close()
        handle.remove()  # a no-op now
        with pytest.raises(ProxyError, match="stopped"):
            proxy.add_toxic(Latency(1))
        assert proxy.connections()[0].close_reason == "proxy stopped"
        assert proxy.events[-1].kind == "stopped"


class _Broken(Toxic):
    """A custom toxic whose stage raises: a bug the proxy must not swallow."""

    kind = "broken"

    def stage(self, rng: random.Random) -> Stage:
        class Raise(Stage):
            def on_chunk(self, chunk: Chunk) -> list[Step]:
                raise RuntimeError("bug in a custom toxic")

        return Raise()


@pytest.mark.asyncio
async def test_a_bug_on_the_proxy_loop_is_logged_and_raised_by_stop() -> None:
    async with tcp_server(echo) as port:
        proxy = FaultProxy(("127.0.0.1", port)).start()
        try:
            proxy.add_toxic(_Broken(), "upstream")
            _reader, writer = await open_client(proxy)
            writer.write(b"boom")
            error = await event(proxy, "error")
            assert "bug in a custom toxic" in error.detail["error"]
            writer.close()
        finally:
            with pytest.raises(ProxyError, match="1 unexpected error.*bug in a custom toxic"):
                await asyncio.to_thread(proxy.stop)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.asyncio
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
async def test_listens_on_ipv6_loopback() -> None:
    async with tcp_server(echo) as port:
        with FaultProxy(("127.0.0.1", port), host="::1") as proxy:
            assert proxy.url == f"http://[::1]:{proxy.port}"
            reader, writer = await within(asyncio.open_connection("::1", proxy.port))
            await round_trip(reader, writer, b"six")
            writer.close()
            assert proxy.connections()[0].peer.startswith("::1:")


def test_the_package_exports_exactly_its_documented_names() -> None:
    public = {n for n, v in vars(proxy_pkg).items() if not n.startswith("_") and not inspect.ismodule(v)}
    assert set(proxy_pkg.__all__) == public - {"annotations"}
    for name in proxy_pkg.__all__:
        obj = getattr(proxy_pkg, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"harness.proxy.{name} has no docstring"
