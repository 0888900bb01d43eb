"""The fault proxy's server-depth faults, on real WebSockets: reject, hold, close, abort, push.

Server depth, applied by the proxy (:class:`harness.proxy.ProxyFaultControl`),
for an app that has no harness code in it.  Each test runs the "app" -- a
python-websockets server that echoes, answers ``GET /health``, records every
request head it saw and the close code each socket got -- on the test's loop
at 127.0.0.1:0, a :class:`FaultProxy` with ``ws_path`` in front of it, and
python-websockets clients through the proxy.  Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.http11 import Request, Response

from harness.errors import ConfigurationError, FaultControlError
from harness.faults.ports import ServerFaultPort
from harness.proxy import (
    Blackhole,
    FaultProxy,
    HttpResponse,
    Latency,
    ProxyFaultControl,
    StreamTracker,
    Target,
)
from harness.proxy.frames import (
    FrameParser,
    Opcode,
    close_payload,
    encode_frame,
    parse_frame_header,
)
from harness.proxy.tracking import error_response
from tests._waits import wait_until

T = TypeVar("T")
TIMEOUT = 10.0
"""Seconds any single wait may take (the machine is shared and loaded)."""


async def within(awaitable: Awaitable[T], timeout: float = TIMEOUT) -> T:
    return await asyncio.wait_for(awaitable, timeout)


async def eventually(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Wait until ``condition()`` holds, failing after ``timeout`` with what was expected."""
    await wait_until(condition, what, timeout)


class App:
    """The app under test: an echo server that knows nothing of the harness."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.closes: list[tuple[str, int | None, str | None]] = []
        self.second_fragment = asyncio.Event()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request.path)
        if request.path == "/health":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    async def fragments(self) -> AsyncIterator[str]:
        yield "part one, "
        await self.second_fragment.wait()
        yield "part two"

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        try:
            async for message in ws:
                if message == "send a fragmented message":
                    await ws.send(self.fragments())
                else:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            self.closes.append((ws.request.path, ws.close_code, ws.close_reason))


@asynccontextmanager
async def app_behind_proxy(
    ws_path: str = "/ws/{client_id}", *, compression: str | None = None, **options: Any
) -> AsyncIterator[tuple[App, FaultProxy, ProxyFaultControl]]:
    app = App()
    async with serve(app.handler, "127.0.0.1", 0, process_request=app.process_request,
                     compression=compression, ping_interval=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        proxy = FaultProxy(("127.0.0.1", port), seed=1234, ws_path=ws_path, **options).start()
        try:
            yield app, proxy, ProxyFaultControl(proxy)
        finally:
            proxy.stop()


def client(proxy: FaultProxy, client_id: str | None = None, *, path: str | None = None,
           cookie: str | None = None, compression: str | None = None,
           open_timeout: float = TIMEOUT) -> connect:
    """A python-websockets client through the proxy, to ``/ws/{client_id}`` or ``path``."""
    headers = {"Cookie": f"nova_ws_client_id={cookie}"} if cookie else None
    return connect(proxy.ws_url(path or f"/ws/{client_id}"), proxy=None, open_timeout=open_timeout,
                   close_timeout=2, ping_interval=None, compression=compression,
                   additional_headers=headers)


async def opening(proxy: FaultProxy, client_id: str, **options: Any) -> ClientConnection:
    return await client(proxy, client_id, **options)


async def echo(ws: ClientConnection, message: str) -> str:
    await ws.send(message)
    answer = await within(ws.recv())
    assert isinstance(answer, str)
    return answer


def held(faults: ProxyFaultControl, client_id: str) -> int:
    count = faults.client_info(client_id)["held_handshakes"]
    assert isinstance(count, int)
    return count


# ---------------------------------------------------------------- reject


@pytest.mark.asyncio
async def test_reject_answers_the_upgrade_itself_then_the_count_runs_out() -> None:
    async with app_behind_proxy() as (app, proxy, faults):
        answer = faults.reject_handshakes("c1", 503, count=1, body="busy, come back later")
        assert answer["rules"]["reject"] == {"status": 503, "remaining": 1, "body": "busy, come back later"}
        with pytest.raises(InvalidStatus) as caught:
            await within(opening(proxy, "c1"))
        response = caught.value.response
        assert response.status_code == 503 and response.body == b"busy, come back later"
        assert response.headers["Connection"] == "close"
        assert app.requests == [], "the app never saw the rejected upgrade"
        async with client(proxy, "c1") as ws:
            assert await echo(ws, "in at last") == "in at last"
        assert app.requests == ["/ws/c1"]
        assert faults.client_info("c1")["rules"]["reject"] is None
        rejected = proxy.wait_for_event("rejected", timeout=TIMEOUT)
        assert rejected.detail == {"client_id": "c1", "status": 503}
        first = proxy.connections()[0]
        assert first.client_id == "c1" and not first.websocket and first.close_reason == "closed"


@pytest.mark.asyncio
async def test_reject_without_a_body_says_a_harness_rule_did_it_and_keys_by_cookie() -> None:
    async with app_behind_proxy("/ws") as (app, proxy, faults):
        faults.reject_handshakes("c1", 403)
        with pytest.raises(InvalidStatus) as caught:
            await within(opening(proxy, "", path="/ws", cookie="c1"))
        assert caught.value.response.status_code == 403
        assert b"rejected by a harness fault rule" in (caught.value.response.body or b"")
        # Another client's cookie, or none: not this rule's business.
        async with client(proxy, path="/ws", cookie="c2") as other, client(proxy, path="/ws") as anonymous:
            assert await echo(other, "c2") == "c2" and await echo(anonymous, "none") == "none"
        assert app.requests == ["/ws", "/ws"]
        assert [c.client_id for c in proxy.connections()] == ["c1", "c2", None]


# ---------------------------------------------------------------- hold


@pytest.mark.asyncio
async def test_a_held_upgrade_completes_only_once_released() -> None:
    async with app_behind_proxy() as (app, proxy, faults):
        faults.hold_handshakes("c1")
        connecting = asyncio.create_task(opening(proxy, "c1"))
        await eventually(lambda: held(faults, "c1") == 1, "the upgrade is held")
        assert not connecting.done() and app.requests == []
        assert proxy.connections()[0].held
        assert faults.release_handshakes("c1")["released"] == 1
        ws = await within(connecting)
        try:
            assert await echo(ws, "through") == "through"
        finally:
            await ws.close()
        assert app.requests == ["/ws/c1"] and held(faults, "c1") == 0
        ended = proxy.wait_for_event("hold_ended", timeout=TIMEOUT)
        assert ended.detail == {"client_id": "c1", "outcome": "accepted"}


@pytest.mark.asyncio
async def test_a_reject_set_while_held_rejects_the_upgrade_on_release() -> None:
    async with app_behind_proxy() as (app, proxy, faults):
        faults.hold_handshakes("c1")
        connecting = asyncio.create_task(opening(proxy, "c1"))
        await eventually(lambda: held(faults, "c1") == 1, "the upgrade is held")
        faults.reject_handshakes("c1", 403, count=1)
        faults.release_handshakes("c1")
        with pytest.raises(InvalidStatus) as caught:
            await within(connecting)
        assert caught.value.response.status_code == 403
        assert app.requests == []
        assert faults.client_info("c1")["rules"]["reject"] is None, "the rejection counted"


@pytest.mark.asyncio
async def test_a_hold_with_a_timeout_lets_the_upgrade_go_on_its_own() -> None:
    async with app_behind_proxy() as (_app, proxy, faults):
        faults.hold_handshakes("c1", timeout_ms=200)
        start = time.monotonic()
        async with client(proxy, "c1") as ws:
            assert time.monotonic() - start >= 0.2
            assert await echo(ws, "late") == "late"


@pytest.mark.asyncio
async def test_a_client_that_leaves_while_held_is_forgotten() -> None:
    async with app_behind_proxy() as (app, proxy, faults):
        faults.hold_handshakes("c1")
        with pytest.raises(TimeoutError):
            await opening(proxy, "c1", open_timeout=0.5)
        await eventually(lambda: held(faults, "c1") == 0, "the held count drops")
        ended = proxy.wait_for_event("hold_ended", timeout=TIMEOUT)
        assert ended.detail["outcome"] == "gone"
        assert proxy.connections(live_only=True) == [] and app.requests == []


@pytest.mark.asyncio
async def test_clear_releases_held_upgrades_and_lifts_the_rules() -> None:
    async with app_behind_proxy() as (_app, proxy, faults):
        faults.hold_handshakes("c1")
        faults.reject_handshakes("c2", 503)
        connecting = asyncio.create_task(opening(proxy, "c1"))
        await eventually(lambda: held(faults, "c1") == 1, "the upgrade is held")
        assert faults.state() == {
            "rules": {
                "c1": {"reject": None, "hold": {"timeout_ms": None}, "delay": None, "drop": None},
                "c2": {"reject": {"status": 503, "remaining": None, "body": ""}, "hold": None,
                       "delay": None, "drop": None},
            },
            "held_handshakes": {"c1": 1},
        }
        assert faults.remove_rule("c2", "reject")["removed"] is True
        assert faults.clear() == {"rules": {}, "held_handshakes": {}}
        ws = await within(connecting)
        await ws.close()


# ---------------------------------------------------------------- commands on the live socket


@pytest.mark.asyncio
async def test_close_socket_runs_a_real_close_handshake_with_both_peers() -> None:
    async with app_behind_proxy() as (app, proxy, faults):
        async with client(proxy, "c1") as ws:
            await echo(ws, "before")
            answer = faults.close_socket("c1", 4000, "bye")
            assert answer == {"client_id": "c1", "closed": 1, "code": 4000, "reason": "bye"}
            with pytest.raises(ConnectionClosedError) as caught:
                await within(ws.recv())
            await within(ws.wait_closed())
        # The client got a close frame, answered it, then the TCP connection ended: clean.
        assert ws.close_code == 4000 and ws.close_reason == "bye"
        assert caught.value.rcvd is not None and caught.value.rcvd.code == 4000
        assert caught.value.sent is not None and caught.value.rcvd_then_sent
        await eventually(lambda: bool(app.closes), "the app saw its socket close")
        assert app.closes == [("/ws/c1", 4000, "bye")]
        closed = proxy.wait_for_event("closed", timeout=TIMEOUT)
        assert closed.detail["reason"] == "close handshake 4000 run by the proxy", "both answered"
        injected = [e.detail for e in proxy.events if e.kind == "injected"]
        assert [(d["direction"], d["opcode"], d["code"]) for d in injected] == [
            ("downstream", "close", 4000), ("upstream", "close", 4000),
        ]
        with pytest.raises(FaultControlError) as gone:
            faults.push_raw("c1", "too late")
        assert gone.value.status == 409


@pytest.mark.asyncio
async def test_close_socket_closes_tcp_after_its_deadline_when_a_peer_does_not_answer() -> None:
    async with app_behind_proxy(close_timeout=0.3) as (app, proxy, faults):
        async with client(proxy, "c1") as ws:
            await echo(ws, "before")
            # The server never gets the proxy's close frame, so it never answers it.
            proxy.add_toxic(Blackhole(), "upstream", target=Target(client_id="c1"))
            faults.close_socket("c1", 4002, "too slow")
            with pytest.raises(ConnectionClosedError):
                await within(ws.recv())
            assert ws.close_code == 4002
        closed = proxy.wait_for_event("closed", timeout=TIMEOUT)
        assert "did not answer within 0.3s" in closed.detail["reason"]
        await eventually(lambda: bool(app.closes), "the app saw its socket close")
        assert app.closes[0][1] == 1006, "the app saw TCP end without a close frame"


@pytest.mark.asyncio
async def test_abort_resets_the_connection_and_the_client_sees_1006() -> None:
    async with app_behind_proxy() as (app, proxy, faults):
        async with client(proxy, "c1") as ws:
            await echo(ws, "before")
            assert faults.abort("c1") == {"client_id": "c1", "aborted": 1, "fallback_1011": 0}
            with pytest.raises(ConnectionClosedError) as caught:
                await within(ws.recv())
            assert caught.value.rcvd is None and ws.close_code == 1006
        assert proxy.wait_for_event("reset", timeout=TIMEOUT).detail["reason"].startswith("abort")
        await eventually(lambda: bool(app.closes), "the app saw its socket close")
        assert app.closes[0][1] == 1006


@pytest.mark.asyncio
@pytest.mark.parametrize("compression", [None, "deflate"], ids=["plain", "permessage-deflate"])
async def test_push_raw_and_push_arrive_as_text_frames(compression: str | None) -> None:
    async with (
        app_behind_proxy(compression=compression) as (_app, proxy, faults),
        client(proxy, "c1", compression=compression) as ws,
    ):
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response else None
        assert (extensions is not None and "permessage-deflate" in extensions) == bool(compression)
        assert await echo(ws, "a" * 2000) == "a" * 2000
        assert faults.push_raw("c1", "not json {") == {"client_id": "c1", "pushed": 1}
        assert await within(ws.recv()) == "not json {"
        faults.push("c1", {"type": "error", "message": "boom ✓"}, validate=True)
        assert json.loads(await within(ws.recv())) == {"type": "error", "message": "boom ✓"}
        big = "b" * 70_000  # a 64-bit length
        faults.push_raw("c1", big)
        assert await within(ws.recv()) == big
        # The app's own (compressed) messages still decode: its context is untouched.
        assert await echo(ws, "a" * 2000) == "a" * 2000


@pytest.mark.asyncio
async def test_a_push_waits_for_the_end_of_a_fragmented_message() -> None:
    async with app_behind_proxy() as (app, proxy, faults), client(proxy, "c1") as ws:
        frames_before = proxy.connections()[0].downstream.frames
        await ws.send("send a fragmented message")
        await eventually(lambda: proxy.connections()[0].downstream.frames == frames_before + 1,
                         "the first fragment went through the proxy")
        faults.push_raw("c1", "pushed")
        assert [e for e in proxy.events if e.kind == "injected"] == [], "not inside the message"
        app.second_fragment.set()
        assert await within(ws.recv()) == "part one, part two"
        assert await within(ws.recv()) == "pushed"
        assert await echo(ws, "still fine") == "still fine"


@pytest.mark.asyncio
async def test_other_clients_and_plain_http_through_the_proxy_are_unaffected() -> None:
    async with (
        app_behind_proxy() as (_app, proxy, faults),
        client(proxy, "c1") as one,
        client(proxy, "c2") as two,
    ):
        faults.push_raw("c1", "for c1 only")
        assert await within(one.recv()) == "for c1 only"
        faults.close_socket("c1", 4001, "")
        with pytest.raises(ConnectionClosedError):
            await within(one.recv())
        assert one.close_code == 4001
        assert await echo(two, "c2 is still here") == "c2 is still here"
        # Every client's upgrades are rejected now, but only upgrades of a client.
        faults.reject_handshakes("*", 503)
        with pytest.raises(InvalidStatus):
            await within(opening(proxy, "c3"))
        async with client(proxy, path="/no-client-id") as anonymous:
            assert await echo(anonymous, "anonymous") == "anonymous"
        reader, writer = await within(asyncio.open_connection("127.0.0.1", proxy.port))
        writer.write(b"GET /health HTTP/1.1\r\nHost: app\r\nCookie: nova_ws_client_id=c2\r\n"
                     b"Connection: close\r\n\r\n")
        answer = await within(reader.read())
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok\n")
        assert await echo(two, "and still") == "and still"
        assert [c["client_id"] for c in faults.clients()] == ["c2"]


@pytest.mark.asyncio
async def test_a_target_by_client_id_limits_a_toxic_to_that_client() -> None:
    async with app_behind_proxy() as (_app, proxy, _faults):
        proxy.add_toxic(Latency(300), "downstream", target=Target(client_id="slow"))
        async with client(proxy, "slow") as slow, client(proxy, "fast") as fast:
            start = time.monotonic()
            await echo(fast, "quick")
            assert time.monotonic() - start < 0.3
            await echo(slow, "late")
            assert time.monotonic() - start >= 0.3
        assert {c.client_id: c.toxics for c in proxy.connections()} == {
            "slow": ("latency_1/downstream",), "fast": (),
        }


# ---------------------------------------------------------------- errors and the port


@pytest.mark.asyncio
async def test_commands_without_a_live_socket_answer_409_and_say_why() -> None:
    async with app_behind_proxy() as (_app, proxy, faults):
        commands: list[Callable[[], Any]] = [
            lambda: faults.close_socket("ghost", 4000), lambda: faults.abort("ghost"),
            lambda: faults.push_raw("ghost", "x"), lambda: faults.push("ghost", {}),
        ]
        for command in commands:
            with pytest.raises(FaultControlError, match="no open WebSocket.*connect it first") as caught:
                command()
            assert caught.value.status == 409
        faults.hold_handshakes("c1")
        connecting = asyncio.create_task(opening(proxy, "c1"))
        await eventually(lambda: held(faults, "c1") == 1, "the upgrade is held")
        with pytest.raises(FaultControlError, match="1 handshake.*held: release them first") as caught:
            faults.push_raw("c1", "x")
        assert caught.value.status == 409
        assert faults.client_info("c1")["connected"] is False
        faults.release_handshakes("c1")
        ws = await within(connecting)
        assert faults.client_info("c1")["connected"] is True
        await ws.close()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f: f.close_socket("c1", 1006), "reserved"),
        (lambda f: f.close_socket("c1", 999), "cannot be sent"),
        (lambda f: f.close_socket("c1", 5000), "cannot be sent"),
        (lambda f: f.close_socket("c1", 4000, "é" * 62), "124 bytes.*123"),
        (lambda f: f.reject_handshakes("c1", 200), "400-599"),
        (lambda f: f.reject_handshakes("c1", 503, count=0), "count"),
        (lambda f: f.hold_handshakes("c1", timeout_ms=-1), "timeout_ms"),
        (lambda f: f.remove_rule("c1", "everything"), "unknown rule kind"),
        (lambda f: f.push("c1", {"not": {1, 2}}), "JSON"),
        (lambda f: f.push_raw("", "x"), "non-empty"),
    ],
)
def test_bad_values_answer_422_with_the_fix(call: Callable[[ProxyFaultControl], Any], message: str) -> None:
    with FaultProxy(("127.0.0.1", 9), ws_path="/ws/{client_id}") as proxy:
        with pytest.raises(FaultControlError, match=message) as caught:
            call(ProxyFaultControl(proxy))
        assert caught.value.status == 422


def test_it_is_a_server_fault_port_without_message_faults() -> None:
    with FaultProxy(("127.0.0.1", 9), ws_path="/ws/{client_id}") as proxy:
        faults = ProxyFaultControl(proxy)
        assert isinstance(faults, ServerFaultPort) and faults.where == "proxy"
        unsupported_calls: list[Callable[[], Any]] = [
            lambda: faults.delay("c1", 100), lambda: faults.drop("c1", ["pong"]),
        ]
        for unsupported in unsupported_calls:
            with pytest.raises(ConfigurationError, match=r"ws_faults\.delay/drop"):
                unsupported()
    with FaultProxy(("127.0.0.1", 9)) as plain, pytest.raises(ConfigurationError, match="ws_path="):
        ProxyFaultControl(plain)
    with pytest.raises(ValueError, match="ws_path"):
        FaultProxy(("127.0.0.1", 9), ws_path="")


# ---------------------------------------------------------------- the pure parts


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
@pytest.mark.parametrize("mask", [None, b"\x01\x02\x03\x04"])
def test_encode_frame_writes_what_the_parser_reads(size: int, mask: bytes | None) -> None:
    frame = encode_frame(Opcode.TEXT, b"t" * size, mask=mask)
    header = parse_frame_header(frame)
    assert header is not None
    assert (header.fin, header.rsv, header.opcode, header.payload_length) == (True, 0, Opcode.TEXT, size)
    assert header.mask == mask and header.frame_length == len(frame)
    (info,) = FrameParser().feed(frame)
    assert info.end == len(frame)
    close = FrameParser().feed(encode_frame(Opcode.CLOSE, close_payload(4000, "bye"), mask=mask))
    assert close[0].close_code == 4000 and close[0].payload == b"\x0f\xa0bye"
    with pytest.raises(ValueError, match="125"):
        encode_frame(Opcode.CLOSE, b"x" * 126)


def _fragment(payload: bytes, opcode: int, fin: bool) -> bytes:
    frame = bytearray(encode_frame(opcode, payload))
    if not fin:
        frame[0] &= 0x7F
    return bytes(frame)


def test_the_tracker_tells_frame_boundaries_from_message_boundaries() -> None:
    tracker = StreamTracker()
    tracker.feed("upstream", 0.0, b"GET /ws/c1 HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
    tracker.feed("downstream", 0.0, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    assert tracker.at_boundary("downstream", message=True)
    first = _fragment(b"one", Opcode.TEXT, fin=False)
    ping = encode_frame(Opcode.PING, b"")
    last = _fragment(b"two", Opcode.CONTINUATION, fin=True)
    tracker.feed("downstream", 0.0, first)
    assert tracker.at_boundary("downstream") and not tracker.at_boundary("downstream", message=True)
    rest = ping + last + b"\x81"  # and the first byte of the next frame
    assert tracker.next_boundary("downstream", rest) == 0, "between two frames already"
    assert tracker.next_boundary("downstream", rest, message=True) == len(ping + last)
    assert tracker.next_boundary("downstream", ping, message=True) is None
    tracker.feed("downstream", 0.0, rest)
    assert not tracker.at_boundary("downstream")
    assert tracker.next_boundary("downstream", b"\x00", message=True) == 1, "an empty text frame ends"


def test_error_response_is_a_whole_http_answer_that_closes() -> None:
    raw = error_response(503, "busy ✓")
    head, _, body = raw.partition(b"\r\n\r\n")
    response = HttpResponse.parse(head)
    assert response is not None
    assert (response.status, response.reason) == (503, "Service Unavailable")
    assert response.header("connection") == "close"
    assert response.header("content-type") == "text/plain; charset=utf-8"
    assert body == "busy ✓".encode() and response.header("content-length") == str(len(body))
    assert error_response(599, "").startswith(b"HTTP/1.1 599 Error\r\n")
