"""WsClient against a foreign protocol: a small python-websockets chat server, not Nova.

The server speaks ``{"type": "chat", "user": ..., "text": ...}`` (echoed
with an ``id``), answers the text frame ``ping`` with the text frame
``pong``, echoes binary frames, closes with 4001 on ``{"type": "kick"}``,
answers ``{"type": "whoami"}`` with the request's headers, and echoes any
other JSON as is.  It sends nothing on connect, and refuses ``/forbidden``.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from harness.client import NovaClient, ProtocolClientError, WsClient
from harness.errors import WaitTimeoutError


class ForeignChatServer:
    """The chat server above on its own event loop thread, on an ephemeral loopback port."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="foreign-chat", daemon=True)
        self._cond = threading.Condition()
        self._closes: dict[str, tuple[int | None, str | None]] = {}
        self._next_id = 0
        self._server: Server | None = None
        self.port = 0

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=5)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def url(self, path: str | None = None) -> str:
        return f"ws://127.0.0.1:{self.port}{path or '/chat/' + uuid.uuid4().hex}"

    def close_seen(self, url: str, timeout: float = 5.0) -> tuple[int | None, str | None]:
        """The close code and reason the server saw on the socket of ``url``, once it closed."""
        path = url.split(str(self.port), 1)[1]
        with self._cond:
            if not self._cond.wait_for(lambda: path in self._closes, timeout):
                raise AssertionError(f"the server saw no close on {path} within {timeout} s")
            return self._closes[path]

    async def _serve(self) -> Server:
        return await serve(self._handle, "127.0.0.1", 0, process_request=self._gate)

    def _gate(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/forbidden":
            return connection.respond(HTTPStatus.FORBIDDEN, "no entry\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            async for raw in ws:
                await self._answer(ws, raw)
        finally:
            with self._cond:
                self._closes[ws.request.path if ws.request else "?"] = (ws.close_code, ws.close_reason)
                self._cond.notify_all()

    async def _answer(self, ws: ServerConnection, raw: str | bytes) -> None:
        if isinstance(raw, bytes) or raw == "ping":
            await ws.send(raw if isinstance(raw, bytes) else "pong")
            return
        message: Any = json.loads(raw)
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "chat":
            self._next_id += 1
            await ws.send(json.dumps({"type": "chat", "id": self._next_id, "user": message["user"],
                                      "text": message["text"]}))
        elif kind == "kick":
            # A deliberate pause, so that the close lands while the test's expect() is waiting.
            await asyncio.sleep(message.get("after", 0))
            await ws.close(4001, "kicked")
        elif kind == "whoami":
            headers: Headers = ws.request.headers if ws.request else Headers()
            await ws.send(json.dumps({"type": "whoami", "origin": headers.get("Origin"),
                                      "token": headers.get("X-Token")}))
        else:
            await ws.send(raw)


@pytest.fixture(scope="module")
def chat_server() -> Iterator[ForeignChatServer]:
    server = ForeignChatServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(chat_server: ForeignChatServer) -> Iterator[WsClient]:
    with WsClient(chat_server.url(), default_timeout=5) as ws:
        yield ws


def _chat(user: str, text: str) -> dict[str, str]:
    return {"type": "chat", "user": user, "text": text}


def test_connect_waits_for_nothing_app_specific(chat_server: ForeignChatServer) -> None:
    silent = WsClient(chat_server.url(), client_id="quiet").connect(timeout=2)
    try:
        assert silent.frames == [] and not silent.closed
    finally:
        silent.close()
    with pytest.raises(WaitTimeoutError, match="connection_established"):
        NovaClient(chat_server.url(), "nova", default_timeout=0.3).connect()


def test_expect_by_type_and_by_a_subset_of_the_whole_frame(client: WsClient) -> None:
    client.send(_chat("ann", "hi"))
    client.send(_chat("bob", "yo"))
    bob = client.expect("chat", match={"user": "bob"})
    assert bob == {"type": "chat", "id": bob["id"], "user": "bob", "text": "yo"}
    assert client.expect(match={"type": "chat", "text": "hi"})["user"] == "ann"
    client.send(_chat("cy", "third"))
    assert client.expect(match=lambda m: m.get("user") == "cy")["text"] == "third"


def test_a_nested_type_key_types_the_frames(chat_server: ForeignChatServer) -> None:
    with WsClient(chat_server.url(), type_key="meta.kind") as ws:
        ws.send({"meta": {"kind": "status"}, "online": 3})
        ws.send({"meta": {"kind": "status"}, "online": 4})
        assert ws.expect("status", match={"online": 4})["online"] == 4
        assert [f.type for f in ws.frames] == ["status", "status"]
        with pytest.raises(WaitTimeoutError, match="typed by 'meta.kind'"):
            ws.expect("chat", timeout=0.1)


def test_text_frames_match_exactly_by_regex_or_by_predicate(client: WsClient) -> None:
    for _ in range(4):
        client.send("ping")
    assert client.expect(text="pong") == "pong"
    assert client.expect(text=re.compile(r"^po")) == "pong"
    assert client.expect(text=lambda raw: raw == "pong") == "pong"
    with pytest.raises(AssertionError, match="pong"):
        client.expect_nothing(within=5)  # the fourth pong is there, not yet expected
    with pytest.raises(WaitTimeoutError, match="expected a frame of type 'pong' within 0.2 s"):
        client.expect("pong", timeout=0.2)
    assert [f.raw for f in client.frames] == ["pong"] * 4
    assert client.messages == []


def test_binary_frames_are_echoed_and_matched_by_predicate(client: WsClient) -> None:
    client.send(b"\x00\x01\x02")
    assert client.expect(text=lambda raw: raw == b"\x00\x01\x02") == b"\x00\x01\x02"
    frame = client.frames[-1]
    assert frame.is_binary and frame.message is None and not frame.is_json


def test_any_json_value_is_returned_parsed(client: WsClient) -> None:
    client.send([1, 2])
    assert client.expect() == [1, 2]
    assert client.messages == [[1, 2]]


def test_each_frame_is_expected_once_and_skipped_frames_wait_for_later(client: WsClient) -> None:
    client.send(_chat("ann", "one"))
    client.send(_chat("ann", "two"))
    client.send("ping")
    assert client.expect(text="pong") == "pong"
    assert client.expect("chat")["text"] == "one"
    assert client.expect("chat")["text"] == "two"
    with pytest.raises(WaitTimeoutError, match=r"Frames received \(3, 3 already returned by expect\(\)\)"):
        client.expect("chat", timeout=0.1)


def test_expect_nothing_sees_text_and_binary_frames(client: WsClient) -> None:
    client.send("ping")
    with pytest.raises(AssertionError, match="expected no frame within 5 s, got:\n  pong"):
        client.expect_nothing(within=5)
    client.expect_nothing("chat", within=0.1)
    client.expect(text="pong")
    client.expect_nothing(within=0.1)
    client.send(b"abc")
    with pytest.raises(AssertionError, match=r"<binary 3 bytes>"):
        client.expect_nothing(within=5)


def test_expect_nothing_fails_on_a_matching_frame_only(client: WsClient) -> None:
    client.send(_chat("ann", "hi"))
    with pytest.raises(AssertionError, match=r"expected no frame of type 'chat' matching \{'user': 'ann'\}"):
        client.expect_nothing("chat", match={"user": "ann"}, within=5)
    client.expect_nothing("chat", match={"user": "bob"}, within=0.1)


def test_the_client_closes_with_its_code_and_reason(chat_server: ForeignChatServer) -> None:
    url = chat_server.url()
    ws = WsClient(url).connect()
    assert ws.close(4000, "bye") == 4000
    assert (ws.close_code, ws.close_reason) == (4000, "bye")
    assert chat_server.close_seen(url) == (4000, "bye")
    assert ws.close() == 4000, "closing twice changes nothing"


def test_the_server_closes_with_its_code_and_reason(client: WsClient) -> None:
    client.send({"type": "kick"})
    assert client.wait_closed() == 4001
    assert client.close_reason == "kicked"
    with pytest.raises(ProtocolClientError, match=r"socket is closed \(code 4001, reason 'kicked'\)"):
        client.send(_chat("ann", "too late"))


def test_a_waiting_expect_fails_as_soon_as_the_server_closes(client: WsClient) -> None:
    client.send(_chat("ann", "before"))
    client.send({"type": "kick", "after": 0.3})
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError, match=r"socket closed before one arrived \(code 4001, reason 'kicked'\)"):
        client.expect("chat", match={"text": "never sent"}, timeout=30)
    assert time.monotonic() - started < 10, "expect waited for its deadline instead of the close"
    assert client.expect("chat")["text"] == "before", "frames received before the close stay expectable"


def test_a_timeout_lists_every_frame_that_arrived(client: WsClient) -> None:
    client.send(_chat("ann", "hello"))
    client.send("ping")
    client.send(b"xyz")
    client.expect("chat")
    client.expect(text="pong")
    client.expect(text=lambda raw: raw == b"xyz")
    with pytest.raises(WaitTimeoutError) as info:
        client.expect("typing", match={"user": "ann"}, timeout=0.1)
    message = str(info.value)
    assert "expected a frame of type 'typing' matching {'user': 'ann'} within 0.1 s" in message
    assert '"user": "ann", "text": "hello"' in message
    assert "\n  pong\n" in message and "<binary 3 bytes>" in message
    assert "match= is compared with the whole frame" in message


def test_headers_and_origin_reach_the_server(chat_server: ForeignChatServer) -> None:
    url = chat_server.url()
    with WsClient(url, origin="http://app.test", headers={"X-Token": "t1"}) as ws:
        ws.send({"type": "whoami"})
        assert ws.expect("whoami") == {"type": "whoami", "origin": "http://app.test", "token": "t1"}
    assert ws.closed and ws.close_code == 1000


def test_a_refused_handshake_names_the_url_and_the_status(chat_server: ForeignChatServer) -> None:
    url = chat_server.url("/forbidden")
    with pytest.raises(ProtocolClientError, match=r"handshake with ws://127\.0\.0\.1:\d+/forbidden .*403"):
        WsClient(url).connect(timeout=2)


def test_send_refuses_what_is_not_a_frame(client: WsClient) -> None:
    with pytest.raises(TypeError, match="JSON-serializable"):
        client.send({1, 2})
    with pytest.raises(ProtocolClientError, match="call connect"):
        WsClient("ws://127.0.0.1:9/unused").send("hi")


def test_the_client_module_does_not_import_the_reference_server() -> None:
    source = Path(__file__).parents[2] / "harness" / "client.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not {name for name in imported if name.split(".")[0] == "reference_server"}
