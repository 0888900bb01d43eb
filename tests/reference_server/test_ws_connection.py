"""WebSocket endpoint: handshake, Origin allowlist, two-step authentication, replacement, shutdown.

Real uvicorn on an ephemeral port, real ``websockets`` client; every frame
received is validated against the protocol models by the test client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime

import pytest
from websockets.exceptions import InvalidStatus

from reference_server.protocol import PROTOCOL_VERSION
from reference_server.ws import origin_allowed
from tests._wsclient import ServerFactory, authenticated, module_server, new_client_id, nova_client
from tests.conftest import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module; tests are isolated by their own client ids."""
    yield from module_server(tmp_path_factory, "ws-connection")


@pytest.mark.asyncio
async def test_connection_established_names_client_timeout_version_and_time(
    server: LiveServer,
) -> None:
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid, greet=False) as client:
        frame = await client.expect("connection_established")
    data = frame["data"]
    assert data["client_id"] == cid
    assert data["auth_timeout_ms"] == server.settings.auth_timeout_ms
    assert data["protocol_version"] == PROTOCOL_VERSION
    datetime.fromisoformat(data["server_time"])


@pytest.mark.asyncio
async def test_auth_success_carries_metadata_and_echoes_id(server: LiveServer) -> None:
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid) as client:
        await client.send(
            "connect", {"api_key": "development", "metadata": {"type": "browser"}}, id="op-1"
        )
        frame = await client.expect("auth_success")
    assert frame["id"] == "op-1"
    assert frame["data"]["client_id"] == cid
    meta = frame["data"]["metadata"]
    assert meta["type"] == "browser"
    assert meta["permissions"] == ["read", "write", "admin"]
    datetime.fromisoformat(meta["created"])


@pytest.mark.asyncio
async def test_metadata_type_defaults_to_test_and_permissions_come_from_the_key(
    server: LiveServer,
) -> None:
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid) as client:
        await client.send(
            "connect", {"api_key": "valid-test-key", "metadata": {"permissions": ["admin"]}}, id="a"
        )
        frame = await client.expect("auth_success")
    assert frame["data"]["metadata"]["type"] == "test"
    assert frame["data"]["metadata"]["permissions"] == ["read", "write"]


@pytest.mark.asyncio
async def test_wrong_key_gets_auth_failed_then_4001(server: LiveServer) -> None:
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid) as client:
        await client.send("connect", {"api_key": "nope", "metadata": {}}, id="op-bad")
        error = await client.expect_error("auth_failed")
        assert error["data"]["operation_id"] == "op-bad"
        assert "nope" not in error["data"]["message"]
        code, reason = await client.closed()
    assert code == 4001
    assert reason == "authentication failed"


@pytest.mark.asyncio
async def test_no_connect_within_the_auth_timeout_closes_4002(
    server_factory: ServerFactory,
) -> None:
    server: LiveServer = server_factory(auth_timeout_ms=300)
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid) as client:
        code, reason = await client.closed(timeout=3)
    assert code == 4002
    assert reason == "authentication timeout"


@pytest.mark.asyncio
async def test_messages_before_connect_get_not_authenticated_and_the_connection_stays(
    server: LiveServer,
) -> None:
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid) as client:
        for type_, data in [
            ("subscribe", {"channel": "general"}),
            ("publish", {"channel": "general", "content": "hi"}),
            ("ping", {}),
        ]:
            await client.send(type_, data, id=f"op-{type_}")
            error = await client.expect_error("not_authenticated")
            assert error["data"]["operation_id"] == f"op-{type_}"
            assert error["id"] == f"op-{type_}"
        await client.authenticate()
        await client.request("ping", reply="pong")


@pytest.mark.asyncio
async def test_second_connect_on_an_authenticated_connection_is_refused(
    server: LiveServer,
) -> None:
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        await client.send("connect", {"api_key": "development", "metadata": {}}, id="again")
        error = await client.expect_error("already_authenticated")
        assert error["data"]["operation_id"] == "again"
        # Permissions did not change: still forbidden to publish to announcements.
        await client.send("publish", {"channel": "announcements", "content": "x"}, id="p")
        await client.expect_error("forbidden")


@pytest.mark.asyncio
async def test_a_newer_authenticated_connection_replaces_the_older_with_4003(
    server: LiveServer,
) -> None:
    cid = new_client_id()
    url = server.ws_url(cid)
    async with authenticated(url, cid) as first:
        await first.request("subscribe", {"channel": "general"}, reply="subscribed")
        async with nova_client(url, cid) as second:
            # Not yet authenticated: the first connection is untouched.
            await first.request("ping", reply="pong")
            await second.authenticate()
            code, reason = await first.closed()
            assert (code, reason) == (4003, "replaced by a newer connection")
            await second.request("ping", reply="pong")
            assert server.app.state.hub.get(cid) is not None
            assert server.app.state.hub.subscriptions(server.app.state.hub.get(cid)) == []


@pytest.mark.parametrize("client_id", ["has space", "x" * 65, "dot.dot", "%C3%A9t%C3%A9"])
@pytest.mark.asyncio
async def test_invalid_client_id_is_accepted_then_closed_1008_naming_the_rule(
    server: LiveServer, client_id: str
) -> None:
    url = server.ws_url(client_id.replace(" ", "%20"))
    async with nova_client(url, client_id, greet=False) as client:
        raw = await client.ws.recv()
        assert '"validation_error"' in str(raw)
        code, reason = await client.closed()
    assert code == 1008
    assert reason is not None and "A-Za-z0-9_-" in reason


@pytest.mark.asyncio
async def test_foreign_origin_is_refused_with_403_before_accept(server: LiveServer) -> None:
    cid = new_client_id()
    with pytest.raises(InvalidStatus) as info:
        async with nova_client(server.ws_url(cid), cid, origin="http://evil.example"):
            pass
    assert info.value.response.status_code == 403
    assert b"allowed_origins" in info.value.response.body


@pytest.mark.parametrize(
    "origin",
    [None, "own-http", "own-https", "http://localhost:5173", "http://127.0.0.1:5173"],
)
@pytest.mark.asyncio
async def test_allowed_origins_pass(server: LiveServer, origin: str | None) -> None:
    own = f"127.0.0.1:{server.port}"
    if origin == "own-http":
        origin = f"http://{own}"
    elif origin == "own-https":
        origin = f"https://{own}"
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid, origin=origin) as client:
        await client.request("ping", reply="pong")


@pytest.mark.asyncio
async def test_configured_origin_passes_and_default_ones_are_replaced(
    server_factory: ServerFactory,
) -> None:
    server: LiveServer = server_factory(allowed_origins=["https://app.example.com"])
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid, origin="https://app.example.com"):
        pass
    with pytest.raises(InvalidStatus) as info:
        async with nova_client(server.ws_url(cid), cid, origin="http://localhost:5173"):
            pass
    assert info.value.response.status_code == 403


def test_origin_allowed_rules() -> None:
    allowed = ["http://localhost:5173/"]
    assert origin_allowed(None, "h:1", allowed)
    assert origin_allowed("http://H:1", "h:1", allowed)
    assert origin_allowed("https://h:1/", "h:1", allowed)
    assert origin_allowed("HTTP://localhost:5173", "h:1", allowed)
    assert not origin_allowed("http://h:2", "h:1", allowed)
    assert not origin_allowed("null", "h:1", allowed)
    assert not origin_allowed("http://h:1", None, [])


@pytest.mark.asyncio
async def test_server_shutdown_closes_open_sockets_with_1001(server_factory: ServerFactory) -> None:
    server: LiveServer = server_factory()
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        await client.request("subscribe", {"channel": "general"}, reply="subscribed")
        await asyncio.to_thread(server.stop)
        code, reason = await client.closed()
    assert code == 1001
    assert reason == "server shutting down"


@pytest.mark.asyncio
async def test_shutdown_closes_unauthenticated_sockets_with_1001_too(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid) as client:
        await asyncio.to_thread(server.stop)
        code, reason = await client.closed()
    assert (code, reason) == (1001, "server shutting down")
