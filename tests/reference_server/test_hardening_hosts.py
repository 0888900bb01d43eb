"""Host validation against DNS rebinding (issue 12, defect 8).

A rebinding page is its own origin: ``Host: rebind.evil:P`` with ``Origin:
http://rebind.evil:P``.  The live tests send exactly that to a real server on
127.0.0.1, the way a browser would once the name resolves there (the socket is
connected to 127.0.0.1, the URL names the evil host).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message, Scope
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from harness.proxy import FaultProxy
from reference_server.app import create_app
from reference_server.hosts import DEFAULT_ALLOWED_HOSTS, HostGuard, HostPolicy, host_name
from reference_server.runner import NovaUvicornServer, ServerThread, bind_socket, uvicorn_config
from reference_server.settings import Settings
from reference_server.web import frontend_app
from tests._wsclient import TIMEOUT, ServerFactory, new_client_id, nova_client
from tests.conftest import LiveServer

EVIL = "rebind.evil"
KEY = {"X-API-Key": "development"}


# ------------------------------------------------------------------ pure


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("LocalHost.:80", "localhost"),
        ("localhost", "localhost"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("rebind.evil:1", "rebind.evil"),
        ("host:port", None),
        ("[::1", None),
        ("[::1]x", None),
        ("", None),
        (None, None),
    ],
)
def test_host_name_drops_port_brackets_case_and_trailing_dot(header: str | None, name: str | None) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    "header", ["127.0.0.1:8000", "localhost:5173", "[::1]:9", "::1", "LOCALHOST", "localhost."]
)
def test_the_default_policy_allows_loopback_names_on_any_port(header: str) -> None:
    assert HostPolicy.build(DEFAULT_ALLOWED_HOSTS).allows(header)


@pytest.mark.parametrize(
    "header", ["rebind.evil:8000", "127.0.0.1.evil:80", "localhost.evil", "x.localhost", "", None]
)
def test_the_default_policy_refuses_any_other_name_and_a_missing_host(header: str | None) -> None:
    assert not HostPolicy.build(DEFAULT_ALLOWED_HOSTS).allows(header)


def test_patterns_a_star_subdomains_and_the_bind_address() -> None:
    assert HostPolicy.build(["*"]).allows("anything:1")
    sub = HostPolicy.build(["*.nova.test"])
    assert sub.allows("a.nova.test:80") and sub.allows("b.a.nova.test")
    assert not sub.allows("nova.test") and not sub.allows("evilnova.test")
    bound = HostPolicy.build(["localhost"], bind_host="192.168.1.5")
    assert bound.allows("192.168.1.5:8000") and bound.allows("localhost")
    assert HostPolicy.build(["localhost"], bind_host="0.0.0.0").patterns == ("localhost",)
    assert HostPolicy.build([], bind_host="::1").allows("[::1]:80")


@pytest.mark.parametrize("entry", ["localhost:8000", "[::1]:80", "*foo", "*.", "a*b", ""])
def test_a_bad_entry_is_a_value_error_naming_the_setting(entry: str) -> None:
    with pytest.raises(ValueError, match="allowed_hosts entry .*NOVA_ALLOWED_HOSTS"):
        HostPolicy.build([entry])


async def test_a_websocket_refusal_without_the_denial_extension_closes_the_handshake() -> None:
    """Under an ASGI server without ``websocket.http.response`` the guard refuses with a close."""
    reached: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        reached.append(scope)

    async def run() -> list[Message]:
        sent: list[Message] = []
        events = iter([{"type": "websocket.connect"}])

        async def receive() -> Message:
            return next(events)

        async def send(message: Message) -> None:
            sent.append(message)

        scope: Scope = {"type": "websocket", "path": "/debug/x", "headers": [(b"host", b"rebind.evil")]}
        await HostGuard(app, HostPolicy.build(DEFAULT_ALLOWED_HOSTS))(scope, receive, send)
        return sent

    assert await run() == [{"type": "websocket.close", "code": 1008, "reason": ""}]
    assert reached == []


# ------------------------------------------------------------------ live server


def _evil_socket(server: LiveServer) -> socket.socket:
    """A TCP connection to the server: what a rebound name resolves to."""
    return socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)


async def test_a_rebinding_handshake_is_refused_with_400_naming_the_setting(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    host = f"{EVIL}:{server.port}"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            f"ws://{host}/debug/{new_client_id()}",
            sock=_evil_socket(server),
            origin=f"http://{host}",  # type: ignore[arg-type]
            open_timeout=TIMEOUT,
            proxy=None,
        ):
            pass
    response = refused.value.response
    assert response.status_code == 400
    assert b"settings.allowed_hosts (NOVA_ALLOWED_HOSTS)" in response.body
    assert EVIL.encode() in response.body


async def test_a_loopback_name_still_opens_a_socket(server_factory: ServerFactory) -> None:
    server = server_factory()
    cid = new_client_id()
    async with nova_client(f"ws://localhost:{server.port}/debug/{cid}", cid) as client:
        assert client.frames[0]["data"]["client_id"] == cid


def test_rest_and_the_page_refuse_a_foreign_host_and_answer_loopback(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    with httpx.Client(base_url=server.http_url, timeout=TIMEOUT) as http:
        for path in ("/api/channels", "/", "/health"):
            evil = http.get(path, headers={**KEY, "Host": f"{EVIL}:{server.port}"})
            assert evil.status_code == 400, (path, evil.text)
            assert "settings.allowed_hosts" in evil.json()["detail"]
        for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
            assert http.get("/api/channels", headers={**KEY, "Host": host}).status_code == 200
        evil_post = http.post(
            "/api/channels/general/messages",
            headers={**KEY, "Host": EVIL},
            json={"content": "from a rebinding page"},
        )
        assert evil_post.status_code == 400


@contextmanager
def _serving(settings: Settings) -> Iterator[int]:
    app = create_app(settings)
    sock = bind_socket("127.0.0.1", 0)
    server = NovaUvicornServer(
        uvicorn_config(app, max_message_bytes=settings.max_message_bytes, log_level="warning"),
        before_shutdown=lambda: app.state.hub.close_all(1001, "server shutting down"),
    )
    thread = ServerThread(server, sock)
    thread.start()
    try:
        yield thread.port
    finally:
        thread.stop()


@pytest.mark.parametrize(
    ("allowed", "admitted", "refused"),
    [
        (["*"], [EVIL, "localhost"], []),
        (["nova.test"], ["nova.test", "127.0.0.1"], ["localhost", EVIL]),
    ],
)
def test_allowed_hosts_is_configurable(
    tmp_path: Path, allowed: list[str], admitted: list[str], refused: list[str]
) -> None:
    """The bind address (127.0.0.1 here) is always admitted; the loopback names only by default."""
    settings = Settings(
        host="127.0.0.1", port=0, frontend_port=None, db=tmp_path / "nova.db", allowed_hosts=allowed
    )
    with _serving(settings) as port, httpx.Client(timeout=TIMEOUT) as http:
        url = f"http://127.0.0.1:{port}/health"
        for host in admitted:
            assert http.get(url, headers={"Host": f"{host}:{port}"}).status_code == 200, host
        for host in refused:
            assert http.get(url, headers={"Host": f"{host}:{port}"}).status_code == 400, host


def test_a_bad_allowed_hosts_entry_is_refused_with_the_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'localhost:8000' is not a host pattern"):
        Settings(db=tmp_path / "nova.db", allowed_hosts=["localhost:8000"])


async def test_the_frontend_page_refuses_a_foreign_host(tmp_path: Path) -> None:
    app = frontend_app(Settings(db=tmp_path / "nova.db"), api_port=8000)

    async def get(host: str) -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as http:
            return (await http.get("/")).status_code

    assert await get("127.0.0.1:5173") == 200
    assert await get(f"{EVIL}:5173") == 400


async def test_page_rest_and_socket_through_the_harness_fault_proxy(
    server_factory: ServerFactory,
) -> None:
    """The harness loads pages through its proxy: the browser sends ``Host: 127.0.0.1:<proxy>``."""
    server = server_factory()
    proxy = FaultProxy(upstream=("127.0.0.1", server.port), seed=1, ws_path="/debug/{client_id}").start()
    try:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=TIMEOUT) as http:
            assert (await http.get("/")).status_code == 200
            assert (await http.get("/api/channels", headers=KEY)).status_code == 200
        cid = new_client_id()
        async with nova_client(proxy.ws_url(f"/debug/{cid}"), cid, origin=proxy.url) as client:
            await client.authenticate()
    finally:
        proxy.stop()
