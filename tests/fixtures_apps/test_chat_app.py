"""The foreign chat app in fixtures/apps/chat: its frames, its schema, its process entry, its page.

The harness is proven against this app (e2e/any_app/); these tests pin the app
itself down, so a harness failure there is never the app's.  Server tests talk
to a fresh app (its own room, so counts and sequence numbers are exact) on
plain uvicorn over real WebSockets; the process test runs
``python -m fixtures.apps.chat``; the browser tests load the page with plain
pytest-playwright.
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema
import pytest
import uvicorn
from playwright.sync_api import Page, expect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from fixtures.apps.chat.__main__ import GRACEFUL_SHUTDOWN_S
from fixtures.apps.chat.app import MAX_LENGTHS, BadFrame, ChatRoom, create_app, parse_client_frame
from fixtures.apps.chat.app import app as module_app
from harness.config import WsConfig
from harness.server import ServerUnderTest, start_server
from reference_server.runner import ServerThread, bind_socket

REPO = Path(__file__).resolve().parents[2]
CHAT_DIR = REPO / "fixtures" / "apps" / "chat"

#: One unit for every wait here; scale it on slow machines.
TIMEOUT_S = 10.0 * float(os.environ.get("NOVA_TEST_TIMEOUT_SCALE", "1"))
TIMEOUT_MS = TIMEOUT_S * 1000
#: A new Python process imports FastAPI and uvicorn first: seconds on a loaded machine.
PROCESS_START_S = 3 * TIMEOUT_S


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((CHAT_DIR / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


RECEIVED = _validator("schema-received.json")
SENT = _validator("schema-sent.json")
BOTH = _validator("schema.json")


def _client_id() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


# ------------------------------------------------------------------ a fresh app on uvicorn


class Peer:
    """One WebSocket connection to the app; ``received`` keeps every frame, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[str | bytes] = []

    def send(self, frame: dict[str, Any] | str | bytes) -> None:
        self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    def recv_raw(self) -> str | bytes:
        """The next frame as sent; fails after :data:`TIMEOUT_S` naming what came before."""
        try:
            raw = self.ws.recv(timeout=TIMEOUT_S)
        except TimeoutError:
            pytest.fail(f"no frame within {TIMEOUT_S} s; received so far: {self.received}")
        self.received.append(raw)
        return raw

    def recv(self) -> dict[str, Any]:
        """The next frame, which must be a JSON text frame."""
        raw = self.recv_raw()
        assert isinstance(raw, str), f"expected a JSON text frame, got binary {raw!r}"
        frame: dict[str, Any] = json.loads(raw)
        return frame


class ChatServer:
    """A fresh chat app (its own room) served by plain uvicorn on 127.0.0.1:0."""

    def __init__(self) -> None:
        self.app = create_app()
        sock = bind_socket("127.0.0.1", 0)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self.thread = ServerThread(uvicorn.Server(config), sock, name="chat-app")
        self.thread.start(timeout=TIMEOUT_S)
        self.http_url = f"http://127.0.0.1:{self.thread.port}"
        self._sockets = ExitStack()

    def join(self, client_id: str | None = None) -> tuple[Peer, dict[str, Any]]:
        """Open a socket for ``client_id``; return it and its welcome frame."""
        url = f"ws://127.0.0.1:{self.thread.port}/ws/{client_id or _client_id()}"
        peer = Peer(self._sockets.enter_context(connect(url, open_timeout=TIMEOUT_S, close_timeout=TIMEOUT_S)))
        return peer, peer.recv()

    def stop(self) -> None:
        try:
            self._sockets.close()
        finally:
            self.thread.stop(timeout=TIMEOUT_S)


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    """A fresh chat app for one test; every socket it opened is closed at the end."""
    server = ChatServer()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ frames


def test_welcome_names_the_client_and_counts_open_sockets(chat: ChatServer) -> None:
    _, first = chat.join("alice-1")
    _, second = chat.join("bob-1")
    assert first == {"type": "welcome", "client": "alice-1", "users": 1}
    assert second == {"type": "welcome", "client": "bob-1", "users": 2}


def test_chat_goes_to_every_socket_the_senders_too_with_a_sequence_number(chat: ChatServer) -> None:
    alice, _ = chat.join()
    bob, _ = chat.join()
    alice.send({"type": "chat", "user": "alice", "text": "hi"})
    bob.send({"type": "chat", "user": "bob", "text": "hello"})
    expected = [
        {"type": "chat", "user": "alice", "text": "hi", "id": 1},
        {"type": "chat", "user": "bob", "text": "hello", "id": 2},
    ]
    assert [alice.recv(), alice.recv()] == expected
    assert [bob.recv(), bob.recv()] == expected


def test_typing_goes_to_the_others_only(chat: ChatServer) -> None:
    alice, _ = chat.join()
    bob, _ = chat.join()
    alice.send({"type": "typing", "user": "alice"})
    assert bob.recv() == {"type": "typing", "user": "alice"}
    alice.send("ping")
    assert alice.recv_raw() == "pong", "alice's next frame after her own typing must be her pong"


def test_the_text_frame_ping_is_answered_with_the_text_frame_pong(chat: ChatServer) -> None:
    peer, _ = chat.join()
    peer.send("ping")
    assert peer.recv_raw() == "pong"


MALFORMED: list[tuple[str | bytes, str]] = [
    ("hello", "not JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"text": "no type"}', "unknown type None"),
    ('{"type": "shout", "user": "a"}', "unknown type 'shout'"),
    ('{"type": "chat", "user": "a"}', "'chat' needs a non-empty string 'text'"),
    ('{"type": "chat", "user": "", "text": "x"}', "'chat' needs a non-empty string 'user'"),
    ('{"type": "chat", "user": "a", "text": 5}', "'chat' needs a non-empty string 'text'"),
    ('{"type": "chat", "user": "a", "text": "x", "id": 9}', "'chat' frames have no field(s) ['id']"),
    ('{"type": "typing", "user": "a", "text": "x"}', "'typing' frames have no field(s) ['text']"),
    (json.dumps({"type": "chat", "user": "a", "text": "x" * 4001}), "'text' is longer than 4000"),
    (json.dumps({"type": "typing", "user": "u" * 41}), "'user' is longer than 40"),
    ('{"type": "welcome", "client": "me", "users": 1}', "unknown type 'welcome'"),
    (b"\x00\x01", "binary frames are not supported"),
]


@pytest.mark.parametrize(("raw", "why"), MALFORMED, ids=[why for _, why in MALFORMED])
def test_a_malformed_frame_gets_an_error_and_the_socket_stays_open(
    chat: ChatServer, raw: str | bytes, why: str
) -> None:
    peer, _ = chat.join()
    peer.send(raw)
    error = peer.recv()
    assert error["type"] == "error"
    assert error["message"].startswith(f"bad frame: {why}"), error
    peer.send({"type": "chat", "user": "a", "text": "still here"})
    assert peer.recv()["text"] == "still here"


def test_every_frame_the_server_sends_validates_against_schema_received(chat: ChatServer) -> None:
    alice, _ = chat.join()
    bob, _ = chat.join()
    alice.send({"type": "chat", "user": "alice", "text": "x" * MAX_LENGTHS["text"]})
    bob.recv()
    alice.send({"type": "typing", "user": "a" * MAX_LENGTHS["user"]})
    bob.recv()
    for raw, _ in MALFORMED:
        alice.send(raw)
        alice.recv()
    alice.send("ping")
    alice.recv_raw()
    json_frames = [json.loads(raw) for peer in (alice, bob) for raw in peer.received if raw != "pong"]
    kinds = {frame["type"] for frame in json_frames}
    assert kinds == {"welcome", "chat", "typing", "error"}, "the scenario must cover every server frame"
    for frame in json_frames:
        RECEIVED.validate(frame)
        BOTH.validate(frame)


# ------------------------------------------------------------------ the schemas


VALID_SENT: list[dict[str, Any]] = [
    {"type": "chat", "user": "a", "text": "b"},
    {"type": "chat", "user": "u" * MAX_LENGTHS["user"], "text": "t" * MAX_LENGTHS["text"]},
    {"type": "typing", "user": "a"},
]


def _is_json(raw: str | bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return isinstance(raw, str)


@pytest.mark.parametrize(
    "raw", [json.dumps(frame) for frame in VALID_SENT] + [raw for raw, _ in MALFORMED if _is_json(raw)]
)
def test_the_server_accepts_exactly_what_schema_sent_accepts(raw: str) -> None:
    schema_accepts = SENT.is_valid(json.loads(raw))
    try:
        parse_client_frame(raw)
    except BadFrame:
        server_accepts = False
    else:
        server_accepts = True
    assert server_accepts == schema_accepts


def test_schema_json_is_the_two_directions_together() -> None:
    defs = {**SENT.schema["$defs"], **RECEIVED.schema["$defs"]}
    assert BOTH.schema["$defs"] == defs
    assert sorted(ref["$ref"] for ref in BOTH.schema["oneOf"]) == sorted(f"#/$defs/{name}" for name in defs)
    for definition in defs.values():
        assert definition["additionalProperties"] is False
    assert not RECEIVED.is_valid({"type": "chat", "user": "a", "text": "b"}), "a received chat has an id"
    assert not SENT.is_valid({"type": "welcome", "client": "c", "users": 1}), "the page never sends welcome"


# ------------------------------------------------------------------ HTTP


def test_health_and_a_page_without_test_hooks(chat: ChatServer) -> None:
    assert httpx.get(f"{chat.http_url}/health", timeout=TIMEOUT_S).json() == {"ok": True}
    page = httpx.get(f"{chat.http_url}/", timeout=TIMEOUT_S)
    assert page.headers["content-type"].startswith("text/html")
    for test_id in ("status", "retries", "error", "text", "send", "user", "messages", "connect"):
        assert f'data-testid="{test_id}"' in page.text
    assert "__nova" not in page.text and "window.__" not in page.text


# ------------------------------------------------------------------ python -m fixtures.apps.chat


def _read_line(proc: subprocess.Popen[str], deadline: float) -> str:
    """The process's first stdout line, or a failure with its stderr once ``deadline`` passes."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if selector.select(timeout=max(0.0, deadline - time.monotonic())):
            line = proc.stdout.readline()
            if line:
                return line
    proc.kill()
    _, stderr = proc.communicate(timeout=TIMEOUT_S)
    pytest.fail(
        f"no line on stdout within {PROCESS_START_S} s (exit status {proc.returncode}); stderr:\n{stderr}"
    )


@pytest.fixture
def chat_process() -> Iterator[subprocess.Popen[str]]:
    """``python -m fixtures.apps.chat --port 0`` from the repo root; killed if the test left it running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fixtures.apps.chat", "--port", "0", "--host", "127.0.0.1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT_S)


def test_main_prints_its_url_serves_and_exits_on_sigterm(chat_process: subprocess.Popen[str]) -> None:
    line = _read_line(chat_process, time.monotonic() + PROCESS_START_S)
    prefix = "listening on http://127.0.0.1:"
    assert line.startswith(prefix) and line.endswith("\n"), line
    port = int(line.removeprefix(prefix))
    assert port != 0
    url = line.split()[-1]
    assert httpx.get(f"{url}/health", timeout=TIMEOUT_S).json() == {"ok": True}
    with connect(f"ws://127.0.0.1:{port}/ws/{_client_id()}", open_timeout=TIMEOUT_S) as ws:
        assert json.loads(ws.recv(timeout=TIMEOUT_S))["type"] == "welcome"
        chat_process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT_S)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012, "service restart"
    returncode = chat_process.wait(timeout=GRACEFUL_SHUTDOWN_S + TIMEOUT_S)
    assert returncode == -signal.SIGTERM


def test_main_fails_with_a_message_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "fixtures.apps.chat", "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            check=False,
            text=True,
            timeout=PROCESS_START_S,
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


# ------------------------------------------------------------------ the page, in Chromium


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerUnderTest]:
    """``fixtures.apps.chat.app:app`` served in-process by the harness, without its fault proxy.

    These tests are of the page, so nothing stands between it and the app.
    """
    config = WsConfig(
        app="fixtures.apps.chat.app:app", ws_path="/ws/{client_id}", page_path="/?client={client_id}", proxy=False
    )
    server = start_server(config, tmp_path_factory.mktemp("chat"))
    try:
        yield server
    finally:
        server.stop()


def _server_closes(client_id: str, code: int) -> None:
    """Close ``client_id``'s socket from the server, with a close frame carrying ``code``."""
    room: ChatRoom = module_app.state.room
    assert room.loop is not None, "no socket has joined the room yet"
    closing = asyncio.run_coroutine_threadsafe(room.disconnect(client_id, code, "closed by the test"), room.loop)
    assert closing.result(timeout=TIMEOUT_S) == 1, f"{client_id} had no open socket"


def _open(page: Page, server: ServerUnderTest, client_id: str, query: str = "") -> None:
    """Load the page with Playwright's clock installed, so the test steps its timers."""
    page.clock.install()
    page.goto(server.page_url(client_id) + query)


def _pause_clock(page: Page) -> None:
    # pause_at takes seconds and must lie ahead of the page's clock: the next whole second plus one.
    page.clock.pause_at(page.evaluate("() => Math.ceil(Date.now() / 1000) + 1"))


def test_the_page_connects_chats_and_backs_off_after_a_server_close(
    page: Page, chat_server: ServerUnderTest
) -> None:
    client_id = _client_id()
    _open(page, chat_server, client_id)
    status, retries = page.get_by_test_id("status"), page.get_by_test_id("retries")
    expect(status).to_have_text("connected", timeout=TIMEOUT_MS)
    _pause_clock(page)

    page.get_by_test_id("user").fill("alice")
    page.get_by_test_id("text").fill("hello")
    page.get_by_test_id("send").click()
    expect(page.get_by_test_id("messages").locator("li")).to_have_text(["alice: hello"], timeout=TIMEOUT_MS)

    _server_closes(client_id, 1012)
    expect(status).to_have_text("disconnected", timeout=TIMEOUT_MS)
    expect(retries).to_have_text("Retries: 1", timeout=TIMEOUT_MS)
    page.clock.run_for(499)
    # The reconnect timer would have set "connecting" inside run_for, before it returned.
    assert status.text_content() == "disconnected", "reconnected before the first backoff (500 ms) elapsed"
    with page.expect_websocket(timeout=TIMEOUT_MS) as reconnect:
        page.clock.run_for(1)
    assert reconnect.value.url.endswith(f"/ws/{client_id}")
    expect(status).to_have_text("connected", timeout=TIMEOUT_MS)
    expect(retries).to_have_text("Retries: 0", timeout=TIMEOUT_MS)


def test_the_page_stays_away_after_close_code_4001(page: Page, chat_server: ServerUnderTest) -> None:
    client_id = _client_id()
    _open(page, chat_server, client_id)
    status = page.get_by_test_id("status")
    expect(status).to_have_text("connected", timeout=TIMEOUT_MS)
    _pause_clock(page)

    _server_closes(client_id, 4001)
    expect(page.get_by_test_id("error")).to_have_text("kicked", timeout=TIMEOUT_MS)
    expect(status).to_have_text("disconnected", timeout=TIMEOUT_MS)
    page.clock.run_for(60_000)
    assert status.text_content() == "disconnected"
    assert page.get_by_test_id("retries").text_content() == "Retries: 0"


def test_a_lazy_page_opens_its_socket_on_connect(page: Page, chat_server: ServerUnderTest) -> None:
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    _open(page, chat_server, _client_id(), "&lazy=1")
    page.wait_for_load_state("load")
    status = page.get_by_test_id("status")
    assert status.text_content() == "disconnected" and sockets == []
    page.get_by_test_id("connect").click()
    expect(status).to_have_text("connected", timeout=TIMEOUT_MS)
    assert len(sockets) == 1


def test_the_ws_flag_overrides_the_socket_url(page: Page, chat_server: ServerUnderTest) -> None:
    elsewhere = chat_server.ws_url(f"elsewhere-{_client_id()}")
    with page.expect_websocket(timeout=TIMEOUT_MS) as opened:
        _open(page, chat_server, _client_id(), f"&ws={quote(elsewhere, safe='')}")
    assert opened.value.url == elsewhere
    expect(page.get_by_test_id("status")).to_have_text("connected", timeout=TIMEOUT_MS)
