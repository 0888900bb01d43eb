"""FaultMiddleware: server-depth faults for a foreign ASGI app, end to end.

Depth: server (the harness's fault controller, applied by the middleware in
the app's process).  The app is a small Starlette chat app (tests/harness/
_chat_app.py) served by plain uvicorn on an ephemeral loopback port through
the harness's own runner; clients are python-websockets, the control API is
called with httpx and with :class:`harness.FaultControl`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as sync_connect

from harness import FaultControl, FaultControlError
from harness.asgi import FaultMiddleware
from harness.faults.ports import ServerFaultPort
from harness.serving import UvicornThread, bind_loopback, plain_uvicorn_config
from tests.harness import _chat_app
from tests.harness.conftest import TIMEOUT, wait_for, wait_until

TOKEN = "asgi-test-token"
HEADERS = {"X-Harness-Token": TOKEN}


@dataclass
class Served:
    """The chat app behind a FaultMiddleware, on its own uvicorn thread."""

    url: str
    middleware: FaultMiddleware

    def ws(self, path: str) -> str:
        return "ws" + self.url.removeprefix("http") + path

    async def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, headers=HEADERS, timeout=TIMEOUT) as http:
            return await http.request(method, f"/__harness{path}", json=body)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.api(method, path, body)
        assert response.status_code == 200, response.text
        return response.json()


@contextmanager
def serving(app: Any, middleware: FaultMiddleware | None = None) -> Iterator[Served]:
    """Serve ``app`` (``middleware``, or ``app`` itself when it is one) on plain uvicorn."""
    thread = UvicornThread(plain_uvicorn_config(app), bind_loopback(), name="asgi-tests")
    thread.start(TIMEOUT)
    try:
        yield Served(thread.url, middleware or app)
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One server for the module (start once); ``server`` resets its rules per test."""
    with serving(FaultMiddleware(_chat_app.app, ws_path="/chat/{client_id}", token=TOKEN)) as served:
        yield served


@pytest.fixture
def server(served: Served) -> Iterator[Served]:
    """The module's server; every rule is lifted after the test."""
    yield served
    response = httpx.delete(f"{served.url}/__harness/faults", headers=HEADERS, timeout=TIMEOUT)
    assert response.status_code == 200, response.text


def new_id() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


async def open_chat(server: Served, client_id: str) -> ClientConnection:
    """Connect as ``client_id`` and take the app's welcome frame."""
    ws = await connect(server.ws(f"/chat/{client_id}"), proxy=None, open_timeout=TIMEOUT)
    assert json.loads(await recv(ws)) == {"type": "welcome", "user": client_id}
    return ws


async def recv(ws: ClientConnection) -> str:
    frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(frame, str)
    return frame


async def rejected(server: Served, path: str, **kwargs: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        await connect(server.ws(path), proxy=None, open_timeout=TIMEOUT, **kwargs)
    return info.value


def chat(user: str, text: str, type: str = "chat") -> str:
    return json.dumps({"type": type, "user": user, "text": text})


# ----------------------------------------------------------------- handshakes


async def test_a_rejected_handshake_gets_the_status_and_body(
    server: Served, server_errors: list[logging.LogRecord]
) -> None:
    cid, other = new_id(), new_id()
    await server.ok("POST", f"/clients/{cid}/reject", {"status": 503, "body": "down for a deploy"})

    refused = await rejected(server, f"/chat/{cid}")
    assert refused.response.status_code == 503
    assert bytes(refused.response.body or b"") == b"down for a deploy"
    assert f"/chat/{cid}" not in _chat_app.ACCEPTED, "the app must not see a rejected handshake"
    async with await open_chat(server, other) as ws:  # another client is not affected
        await ws.send(chat(other, "hi"))
        assert json.loads(await recv(ws))["text"] == "hi"
    assert server_errors == [], "a rejected handshake must not log an ERROR (uvicorn#3138)"


async def test_a_reject_with_a_count_is_used_up_then_handshakes_are_accepted(server: Served) -> None:
    cid = new_id()
    rules = await server.ok("POST", f"/clients/{cid}/reject", {"status": 403, "count": 1})
    assert rules["rules"]["reject"] == {"status": 403, "remaining": 1, "body": ""}

    refused = await rejected(server, f"/chat/{cid}")
    assert refused.response.status_code == 403
    assert b"rejected by a harness fault rule" in bytes(refused.response.body or b"")
    async with await open_chat(server, cid):
        pass
    assert (await server.ok("GET", f"/clients/{cid}"))["rules"]["reject"] is None


async def test_a_held_handshake_completes_only_once_released(server: Served) -> None:
    cid = new_id()
    await server.ok("POST", f"/clients/{cid}/hold", {})
    opening = asyncio.create_task(open_chat(server, cid))
    await wait_until(lambda: server.middleware.held(cid) == 1, "the handshake is held")
    assert not opening.done()
    assert f"/chat/{cid}" not in _chat_app.ACCEPTED, "the app is not called while held"
    assert (await server.ok("GET", f"/clients/{cid}"))["held_handshakes"] == 1

    assert (await server.ok("POST", f"/clients/{cid}/release"))["released"] == 1
    ws = await asyncio.wait_for(opening, TIMEOUT)
    await ws.close()
    assert server.middleware.held(cid) == 0


async def test_a_reject_set_during_a_hold_rejects_the_released_handshake(server: Served) -> None:
    cid = new_id()
    await server.ok("POST", f"/clients/{cid}/hold", {})
    opening = asyncio.create_task(rejected(server, f"/chat/{cid}"))
    await wait_until(lambda: server.middleware.held(cid) == 1, "the handshake is held")
    await server.ok("POST", f"/clients/{cid}/reject", {"status": 503, "count": 1})

    await server.ok("POST", f"/clients/{cid}/release")
    refused = await asyncio.wait_for(opening, TIMEOUT)
    assert refused.response.status_code == 503
    assert (await server.ok("GET", f"/clients/{cid}"))["rules"]["reject"] is None  # counted


async def test_a_hold_with_a_timeout_lets_the_handshake_go_by_itself(server: Served) -> None:
    cid = new_id()
    await server.ok("POST", f"/clients/{cid}/hold", {"timeout_ms": 150})
    started = time.monotonic()
    async with await open_chat(server, cid):
        assert time.monotonic() - started >= 0.15
    assert server.middleware.held(cid) == 0


async def test_a_client_that_leaves_while_held_is_forgotten(server: Served) -> None:
    cid = new_id()
    await server.ok("POST", f"/clients/{cid}/hold", {})
    _, writer = await asyncio.open_connection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    writer.write(
        f"GET /chat/{cid} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    await wait_until(lambda: server.middleware.held(cid) == 1, "the handshake is held")

    writer.close()
    await writer.wait_closed()
    await wait_until(lambda: server.middleware.held(cid) == 0, "the held handshake is forgotten")
    await server.ok("POST", f"/clients/{cid}/release")
    assert f"/chat/{cid}" not in _chat_app.ACCEPTED, "the app never saw the gone client"


async def test_rules_set_through_the_in_process_controller_wake_held_handshakes(server: Served) -> None:
    cid = new_id()
    controller = server.middleware.controller  # this test runs on another thread than the server
    controller.hold_handshakes(cid)
    opening = asyncio.create_task(open_chat(server, cid))
    await wait_until(lambda: server.middleware.held(cid) == 1, "the handshake is held")

    assert controller.release_handshakes(cid) == 1
    ws = await asyncio.wait_for(opening, TIMEOUT)
    await ws.close()


async def test_a_request_without_a_client_id_is_keyed_by_the_cookie(server: Served) -> None:
    cid = new_id()
    await server.ok("POST", f"/clients/{cid}/reject", {"status": 503})
    cookie = {"Cookie": f"theme=dark; nova_ws_client_id={cid}"}

    refused = await rejected(server, "/plain", additional_headers=cookie)
    assert refused.response.status_code == 503
    async with await connect(server.ws("/plain"), proxy=None, open_timeout=TIMEOUT) as ws:
        await ws.send("no client id: untouched")
        assert await recv(ws) == "no client id: untouched"


async def test_rules_for_every_client_leave_requests_without_a_client_id_alone(server: Served) -> None:
    await server.ok("POST", "/clients/*/reject", {"status": 503})
    refused = await rejected(server, f"/chat/{new_id()}")
    assert refused.response.status_code == 503
    async with await connect(server.ws("/plain"), proxy=None, open_timeout=TIMEOUT) as ws:
        await ws.send("still here")
        assert await recv(ws) == "still here"


# ----------------------------------------------------------------- commands on the live socket


async def test_close_sends_a_real_close_frame_and_the_app_sees_disconnect(
    server: Served, server_errors: list[logging.LogRecord]
) -> None:
    cid, other = new_id(), new_id()
    ws = await open_chat(server, cid)
    bystander = await open_chat(server, other)

    answer = await server.ok("POST", f"/clients/{cid}/close", {"code": 4000, "reason": "bye"})
    assert answer == {"client_id": cid, "closed": 1, "code": 4000, "reason": "bye"}
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    assert ws.protocol.close_rcvd is not None, "a close frame arrived"
    assert (ws.close_code, ws.close_reason) == (4000, "bye")
    path = f"/chat/{cid}"
    await wait_until(lambda: path in _chat_app.DISCONNECTS, "the app sees the disconnect")
    assert _chat_app.DISCONNECTS[path] == (4000, "bye")
    assert not (await server.ok("GET", f"/clients/{cid}"))["connected"]

    await bystander.send(chat(other, "still open"))
    assert json.loads(await recv(bystander))["text"] == "still open"
    await bystander.close()
    assert server_errors == [], "the app's send after the close is dropped, not an error"


async def test_commands_act_on_the_newest_socket_of_the_client(server: Served) -> None:
    cid = new_id()
    older = await open_chat(server, cid)
    newer = await open_chat(server, cid)
    info = await server.ok("GET", f"/clients/{cid}")
    assert info["connected"] and len(info["connections"]) == 2

    await server.ok("POST", f"/clients/{cid}/close", {"code": 4003, "reason": "replaced"})
    await asyncio.wait_for(newer.wait_closed(), TIMEOUT)
    assert newer.close_code == 4003
    await older.send(chat(cid, "older one"))
    assert json.loads(await recv(older))["text"] == "older one"
    await older.close()


async def test_abort_drops_the_connection_without_a_close_frame(
    server: Served, server_errors: list[logging.LogRecord]
) -> None:
    cid = new_id()
    ws = await open_chat(server, cid)

    answer = await server.ok("POST", f"/clients/{cid}/abort")
    assert answer == {"client_id": cid, "aborted": 1, "fallback_1011": 0}
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    assert ws.protocol.close_rcvd is None, "no close frame"
    assert ws.close_code == 1006
    path = f"/chat/{cid}"
    await wait_until(lambda: path in _chat_app.DISCONNECTS, "the app sees the disconnect")
    assert _chat_app.DISCONNECTS[path][0] == 1006
    assert server_errors == []


async def test_push_and_push_raw_send_one_frame_bypassing_rules(server: Served) -> None:
    cid = new_id()
    async with await open_chat(server, cid) as ws:
        await server.ok("POST", f"/clients/{cid}/drop", {})  # every frame the app sends
        notice = {"type": "notice", "text": "maintenance at noon"}
        answer = await server.ok("POST", f"/clients/{cid}/push", {"message": notice, "validate": True})
        assert answer == {"client_id": cid, "pushed": 1}
        assert json.loads(await recv(ws)) == notice

        await server.ok("POST", f"/clients/{cid}/push", {"raw": "not json {"})
        assert await recv(ws) == "not json {"

        await ws.send(chat(cid, "dropped echo"))
        await server.ok("POST", f"/clients/{cid}/push", {"raw": "after the echo"})
        assert await recv(ws) == "after the echo", "the app's echo was dropped"


# ----------------------------------------------------------------- outbound rules


async def test_drop_discards_frames_of_a_foreign_type(server: Served) -> None:
    cid = new_id()
    async with await open_chat(server, cid) as ws:
        await server.ok("POST", f"/clients/{cid}/drop", {"types": ["presence"]})
        await ws.send(chat(cid, "typing", type="presence"))
        await ws.send(chat(cid, "hello"))
        assert json.loads(await recv(ws)) == {"type": "chat", "user": cid, "text": "hello"}
        drop = (await server.ok("GET", f"/clients/{cid}"))["rules"]["drop"]
        assert drop == {"types": ["presence"], "remaining": None, "dropped": 1}

        await server.ok("POST", f"/clients/{cid}/drop", {"types": ["chat"], "count": 1})
        await ws.send(chat(cid, "first"))
        await ws.send(chat(cid, "second"))
        assert json.loads(await recv(ws))["text"] == "second"


async def test_frames_that_are_not_typed_json_meet_only_rules_without_types(server: Served) -> None:
    cid = new_id()
    async with await open_chat(server, cid) as ws:
        await server.ok("POST", f"/clients/{cid}/drop", {"types": ["chat"]})
        await ws.send("plain text")
        await ws.send(json.dumps({"no type": True}))
        assert await recv(ws) == "plain text"
        assert json.loads(await recv(ws)) == {"no type": True}

        await server.ok("POST", f"/clients/{cid}/drop", {"types": None, "count": 1})
        await ws.send("dropped")
        await ws.send("kept")
        assert await recv(ws) == "kept"


async def test_delay_holds_back_frames_of_a_type_and_keeps_their_order(server: Served) -> None:
    cid = new_id()
    async with await open_chat(server, cid) as ws:
        await server.ok("POST", f"/clients/{cid}/delay", {"ms": 300, "types": ["slow"]})
        sent = time.monotonic()
        await ws.send(chat(cid, "one", type="slow"))
        await ws.send(chat(cid, "two"))
        assert json.loads(await recv(ws))["text"] == "one"
        assert json.loads(await recv(ws))["text"] == "two", "an undelayed frame does not overtake"
        assert time.monotonic() - sent >= 0.3

        sent = time.monotonic()
        await ws.send(chat(cid, "alone"))
        assert json.loads(await recv(ws))["text"] == "alone"
        assert time.monotonic() - sent < 0.3, "frames of other types are not delayed"

        await server.ok("POST", f"/clients/{cid}/delay", {"ms": 0})
        assert (await server.ok("GET", f"/clients/{cid}"))["rules"]["delay"] is None


async def test_the_type_key_may_be_a_dotted_path() -> None:
    middleware = FaultMiddleware(
        _chat_app.app, ws_path="/chat/{client_id}", token=TOKEN, type_key="meta.kind"
    )
    with serving(middleware) as other:
        cid = new_id()
        await other.ok("POST", f"/clients/{cid}/drop", {"types": ["presence"]})
        async with await open_chat(other, cid) as ws:
            await ws.send(json.dumps({"meta": {"kind": "presence"}}))
            await ws.send(json.dumps({"meta": {"kind": "chat"}}))
            assert json.loads(await recv(ws)) == {"meta": {"kind": "chat"}}


# ----------------------------------------------------------------- the control API


def test_the_control_api_wants_the_token(server: Served) -> None:
    missing = httpx.get(f"{server.url}/__harness/faults", timeout=TIMEOUT)
    assert missing.status_code == 401 and "X-Harness-Token" in missing.json()["detail"]
    wrong = httpx.post(
        f"{server.url}/__harness/clients/x/reject",
        json={"status": "bad"},
        headers={"X-Harness-Token": "nope"},
        timeout=TIMEOUT,
    )
    assert wrong.status_code == 403, "the token is checked before the body"
    assert "does not match" in wrong.json()["detail"]
    right = httpx.get(f"{server.url}/__harness/faults", headers=HEADERS, timeout=TIMEOUT)
    assert right.json() == {"rules": {}, "held_handshakes": {}}


async def test_without_a_token_the_control_api_is_off_and_the_path_is_the_apps() -> None:
    transport = httpx.ASGITransport(app=FaultMiddleware(_chat_app.app))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        mine = await http.get("/__harness/faults", headers=HEADERS)
        assert mine.json() == {"answered_by": "the app"}
        assert (await http.get("/hello")).json() == {"hello": "world"}


@pytest.mark.parametrize("token", ["", "   "])
def test_an_empty_token_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="token=None to leave it off"):
        FaultMiddleware(_chat_app.app, token=token)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("GET", "/nothing"),
        ("GET", "/clients/x/reject"),
        ("POST", "/clients/x/explode"),
        ("PUT", "/faults"),
    ],
)
async def test_unknown_urls_and_methods_answer_404(server: Served, method: str, path: str) -> None:
    answer = await server.api(method, path)
    assert answer.status_code == 404
    assert f"no harness endpoint {method} /__harness{path}" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("command", "body"), [("close", {"code": 4000}), ("abort", {}), ("push", {"raw": "x"})]
)
async def test_commands_on_a_client_without_a_live_socket_answer_409(
    server: Served, command: str, body: Any
) -> None:
    answer = await server.api("POST", f"/clients/ghost/{command}", body)
    assert answer.status_code == 409
    assert "'ghost' has no open WebSocket connection" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("reject", {"status": 200}, "400-599"),
        ("reject", {"status": "503"}, "must be an integer"),
        ("reject", {}, "'status' is required"),
        ("reject", {"status": 503, "count": 0}, "count must be >= 1"),
        ("reject", {"status": 503, "colour": "red"}, "unknown field(s) ['colour']"),
        ("reject", {"status": 503, "body": "x" * 10_001}, "longer than 10000 bytes"),
        ("hold", {"timeout_ms": -1}, "timeout_ms must be >= 0"),
        ("delay", {"ms": -1}, "ms must be >= 0"),
        ("delay", {"ms": 600_001}, "at most 600000"),
        ("delay", {"ms": 10, "types": []}, "non-empty list"),
        ("delay", {"ms": 10, "types": "chat"}, "non-empty list"),
        ("drop", {"count": 0}, "count must be >= 1"),
        ("drop", {"types": [1]}, "non-empty list"),
        ("close", {"code": 1005}, "reserved"),
        ("close", {"code": 999}, "cannot be sent"),
        ("close", {"code": 4000, "reason": "é" * 62}, "longer than 123 bytes"),
        ("push", {}, "exactly one of"),
        ("push", {"message": {}, "raw": "x"}, "exactly one of"),
        ("push", {"raw": "x", "validate": "yes"}, "true or false"),
        ("push", [1, 2], "must be a JSON object"),
    ],
)
async def test_bad_bodies_answer_422_saying_what_was_expected(
    server: Served, path: str, body: Any, expected: str
) -> None:
    answer = await server.api("POST", f"/clients/someone/{path}", body)
    assert answer.status_code == 422, answer.text
    assert expected in answer.json()["detail"]


def test_a_body_that_is_not_json_and_an_unknown_rule_kind_answer_422(server: Served) -> None:
    with httpx.Client(base_url=server.url, headers=HEADERS, timeout=TIMEOUT) as http:
        garbled = http.post("/__harness/clients/x/hold", content=b"{nope")
        assert garbled.status_code == 422 and "not JSON" in garbled.json()["detail"]
        kind = http.delete("/__harness/clients/x/faults/everything")
        assert kind.status_code == 422 and "reject, hold, delay, drop" in kind.json()["detail"]


class _WrapsSend:
    """Middleware outside FaultMiddleware that wraps ``send``: the server's transport is out of reach."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def wrapped(message: Any) -> None:
            await send(message)

        await self.app(scope, receive, wrapped)


async def test_abort_without_the_servers_transport_is_an_error_naming_the_alternative() -> None:
    middleware = FaultMiddleware(_chat_app.app, ws_path="/chat/{client_id}", token=TOKEN)
    with serving(_WrapsSend(middleware), middleware) as other:
        cid = new_id()
        async with await open_chat(other, cid) as ws:
            answer = await other.api("POST", f"/clients/{cid}/abort")
            assert answer.status_code == 501
            detail = answer.json()["detail"]
            assert "uvicorn" in detail and "reset()" in detail and "outermost" in detail
            await ws.send("still connected")
            assert await recv(ws) == "still connected"


# ----------------------------------------------------------------- FaultControl against it


def test_fault_control_drives_every_fault_of_the_middleware(server: Served) -> None:
    control = FaultControl(server.url, TOKEN)
    assert isinstance(control, ServerFaultPort) and control.where == "server"
    cid = new_id()
    url = server.ws(f"/chat/{cid}")
    try:
        assert control.reject_handshakes(cid, 503, count=1)["rules"]["reject"]["remaining"] == 1
        with pytest.raises(InvalidStatus, match="503"):
            sync_connect(url, proxy=None, open_timeout=TIMEOUT)

        control.hold_handshakes(cid)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            opening = pool.submit(sync_connect, url, proxy=None, open_timeout=TIMEOUT)
            wait_for(lambda: control.client_info(cid)["held_handshakes"] == 1, "a held handshake")
            assert control.release_handshakes(cid)["released"] == 1
            held = opening.result(TIMEOUT)
        with held as ws:
            assert json.loads(ws.recv(TIMEOUT))["type"] == "welcome"
            assert control.remove_rule(cid, "reject")["removed"] is False  # used up already

            control.drop(cid, ["presence"], count=1)
            control.delay(cid, 50, ["chat"])
            ws.send(chat(cid, "typing", type="presence"))
            ws.send(chat(cid, "hello"))
            assert json.loads(ws.recv(TIMEOUT))["text"] == "hello"
            rules = control.state()["rules"][cid]
            assert rules["drop"] is None and rules["delay"] == {"ms": 50, "types": ["chat"]}
            assert control.remove_rule(cid, "delay")["removed"] is True

            assert [c["client_id"] for c in control.clients() if c["client_id"] == cid] == [cid]
            info = control.client_info(cid)
            assert info["connected"] is True and info["held_handshakes"] == 0

            control.push(cid, {"type": "notice", "text": "hi"})
            assert json.loads(ws.recv(TIMEOUT)) == {"type": "notice", "text": "hi"}
            control.push_raw(cid, "raw text")
            assert ws.recv(TIMEOUT) == "raw text"

            control.close_socket(cid, 4001, "auth failed")
            with pytest.raises(ConnectionClosed):
                ws.recv(TIMEOUT)
            assert (ws.close_code, ws.close_reason) == (4001, "auth failed")

        with sync_connect(url, proxy=None, open_timeout=TIMEOUT) as ws:
            assert json.loads(ws.recv(TIMEOUT))["type"] == "welcome"
            control.abort(cid)
            with pytest.raises(ConnectionClosed):
                ws.recv(TIMEOUT)
            assert ws.close_code == 1006 and ws.protocol.close_rcvd is None

        with pytest.raises(FaultControlError) as refused:
            control.close_socket(cid)
        assert refused.value.status == 409

        control.drop(cid)
        control.clear(cid)
        assert control.client_info(cid)["rules"]["drop"] is None
        control.reject_handshakes("*", 503)
        control.clear()
        assert control.state() == {"rules": {}, "held_handshakes": {}}
    finally:
        control.close()
