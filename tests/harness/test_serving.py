"""Serving ``--ws-app`` apps: plain uvicorn, wrapped in FaultMiddleware, on the harness's runner.

Depth: server (the middleware ``start_server`` puts around the app).  The
app is tests/harness/_chat_app.py, started through :func:`harness.start_server`
as the plugin does; clients are python-websockets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import harness.server
import harness.serving
from harness import FaultControl, ServerStartError, ServerUnderTest, WsConfig, start_server
from harness.asgi import FaultMiddleware
from harness.serving import UvicornThread, bind_loopback, plain_uvicorn_config
from tests.harness import _chat_app
from tests.harness.conftest import TIMEOUT

CHAT = WsConfig(app="tests.harness._chat_app:app", ws_path="/chat/{client_id}")


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerUnderTest]:
    """The chat app started as ``--ws-app`` starts it, once for the module."""
    started = start_server(CHAT, tmp_path_factory.mktemp("serving"))
    try:
        yield started
    finally:
        started.stop()


def test_an_app_runs_on_plain_uvicorn_inside_a_fault_middleware(chat_server: ServerUnderTest) -> None:
    assert chat_server.kind == "app"
    assert isinstance(chat_server.middleware, FaultMiddleware)
    assert chat_server.middleware.app is _chat_app.app
    assert chat_server.middleware.ws_path == "/chat/{client_id}"
    assert isinstance(chat_server.faults, FaultControl) and chat_server.has_fault_control
    assert httpx.get(f"{chat_server.http_url}/hello", timeout=TIMEOUT).json() == {"hello": "world"}
    thread = chat_server._stop.__self__
    assert isinstance(thread, UvicornThread)
    assert type(thread.server).__mro__[1] is uvicorn.Server, "plain uvicorn, not Nova's server class"
    assert thread.server.config.ws_protocol_class is WebSocketsSansIOProtocol, "uvicorn's own protocol"


def test_the_servers_faults_reach_the_apps_sockets(chat_server: ServerUnderTest) -> None:
    assert chat_server.faults is not None
    url = chat_server.ws_url("serving-close")
    with connect(url, proxy=None, open_timeout=TIMEOUT) as ws:
        assert json.loads(ws.recv(TIMEOUT)) == {"type": "welcome", "user": "serving-close"}
        chat_server.faults.close_socket("serving-close", 4000, "bye")
        with pytest.raises(ConnectionClosed):
            ws.recv(TIMEOUT)
    assert (ws.close_code, ws.close_reason) == (4000, "bye")


def test_a_rejected_handshake_is_logged_without_an_error(chat_server: ServerUnderTest) -> None:
    assert chat_server.faults is not None
    chat_server.faults.reject_handshakes("serving-reject", 503, count=1)
    with pytest.raises(InvalidStatus) as refused:
        connect(chat_server.ws_url("serving-reject"), proxy=None, open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 503
    assert chat_server.log_lines("handshake of serving-reject rejected with 503")
    assert chat_server.log_lines(" ERROR ") == [], "uvicorn#3138: a denial must not log at ERROR"


def test_the_control_api_uses_a_random_token_or_the_one_given(tmp_path: Path) -> None:
    started = start_server(CHAT.replace(harness_token="given-token", proxy=False), tmp_path)
    try:
        answer = httpx.get(
            f"{started.http_url}/__harness/faults",
            headers={"X-Harness-Token": "given-token"},
            timeout=TIMEOUT,
        )
        assert answer.status_code == 200
        assert httpx.get(f"{started.http_url}/__harness/faults", timeout=TIMEOUT).status_code == 401
        assert started.log_path is not None
    finally:
        started.stop()
    assert "Application startup complete" in started.log_path.read_text()


def test_an_app_that_cannot_be_imported_is_a_start_error(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="cannot import module 'tests.harness.no_such_app'"):
        start_server(WsConfig(app="tests.harness.no_such_app:app"), tmp_path)


def test_an_app_whose_startup_fails_is_a_start_error_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError) as failed:
        start_server(WsConfig(app="tests.harness._chat_app:broken_app", proxy=False), tmp_path)
    message = str(failed.value)
    assert "failed to start" in message
    assert "database unreachable: connection refused" in message, "the log's last lines"


def test_the_runner_serves_on_an_ephemeral_loopback_port_until_stopped() -> None:
    sock = bind_loopback()
    host, port = sock.getsockname()
    assert host == "127.0.0.1" and port != 0
    thread = UvicornThread(plain_uvicorn_config(_chat_app.app), sock)
    thread.start(TIMEOUT)
    try:
        assert httpx.get(f"{thread.url}/hello", timeout=TIMEOUT).json() == {"hello": "world"}
    finally:
        thread.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/hello", timeout=TIMEOUT)


def test_harness_server_is_the_same_surface_as_harness_serving() -> None:
    assert harness.server.__all__ == harness.serving.__all__
    for name in harness.serving.__all__:
        assert getattr(harness.server, name) is getattr(harness.serving, name)


def test_the_reference_server_s_handshake_faults_go_through_fault_middleware(tmp_path: Path) -> None:
    """The reference server, as the harness serves it, has its handshakes decided by FaultMiddleware."""
    server = start_server(WsConfig(proxy=False), tmp_path)
    try:
        assert server.faults is not None
        server.faults.reject_handshakes("ref-client", 503, count=1)
        with pytest.raises(InvalidStatus) as refused:
            connect(server.ws_url("ref-client"), proxy=None, open_timeout=TIMEOUT)
        assert refused.value.response.status_code == 503
        with connect(server.ws_url("ref-client"), open_timeout=TIMEOUT) as ws:
            assert '"connection_established"' in str(ws.recv(timeout=TIMEOUT))
        assert any("harness.asgi" in line and "rejected with 503" in line for line in server.log_lines("ref-client"))
    finally:
        server.stop()
