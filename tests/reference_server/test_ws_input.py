"""WebSocket endpoint: bad input, size limit, rate limit, ping, client errors, frame validity.

Real uvicorn, real ``websockets`` clients; every frame is validated by the test client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from reference_server.protocol import SERVER_MESSAGE_TYPES, now_iso
from tests._wsclient import (
    TIMEOUT,
    ServerFactory,
    authenticated,
    module_server,
    new_client_id,
    nova_client,
)
from tests.conftest import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module; tests are isolated by their own client ids."""
    yield from module_server(tmp_path_factory, "ws-input")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("payload", "in_message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (
            json.dumps({"type": "teleport", "data": {}, "timestamp": now_iso(), "client_id": "x"}),
            "unknown",
        ),
        (
            json.dumps({"type": "subscribe", "data": {}, "timestamp": now_iso(), "client_id": "x"}),
            "channel",
        ),
        (b"\x00\x01binary", "binary"),
    ],
    ids=["invalid-json", "not-an-object", "unknown-type", "schema-violation", "binary"],
)
async def test_bad_input_gets_invalid_message_and_the_connection_keeps_working(
    server: LiveServer, payload: str | bytes, in_message: str
) -> None:
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        await client.send_raw(payload)
        error = await client.expect_error("invalid_message")
        assert in_message in error["data"]["message"]
        assert error["data"]["details"] is not None
        await client.request("ping", reply="pong")


@pytest.mark.asyncio
async def test_invalid_message_echoes_the_operation_id_when_it_can(server: LiveServer) -> None:
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid) as client:
        bad = {
            "type": "publish",
            "data": {"channel": "general"},
            "timestamp": now_iso(),
            "client_id": cid,
            "id": "op-9",
        }
        await client.send_raw(json.dumps(bad))
        error = await client.expect_error("invalid_message")
    assert error["data"]["operation_id"] == "op-9"
    assert error["data"]["details"][0]["loc"] == ["publish", "data", "content"]


@pytest.mark.asyncio
async def test_frame_over_the_size_limit_closes_1009(server_factory: ServerFactory) -> None:
    server = server_factory(max_message_bytes=2048)
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        await client.request(
            "publish", {"channel": "general", "content": "x" * 1500}, reply="delivery_confirmation"
        )
        await client.send("publish", {"channel": "general", "content": "x" * 3000})
        code, _ = await client.closed()
    assert code == 1009


@pytest.mark.asyncio
async def test_rate_limit_answers_rate_limited_then_closes_1008(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(rate_limit_per_second=0.001, rate_limit_burst=4, rate_limit_strikes=3)
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid) as client:
        await client.authenticate()  # one token
        for _ in range(3):
            await client.request("ping", reply="pong")
        for strike in (1, 2):
            await client.send("ping", id=f"over-{strike}")
            error = await client.expect_error("rate_limited")
            assert error["data"]["details"] == {"strikes": strike, "max_strikes": 3}
            assert client.ws.close_code is None
        await client.send("ping", id="over-3")
        await client.expect_error("rate_limited")
        code, reason = await client.closed()
    assert (code, reason) == (1008, "rate limit exceeded")


@pytest.mark.asyncio
async def test_ping_answers_pong_with_the_same_id(server: LiveServer) -> None:
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        await client.send("ping", id="p-1")
        pong = await client.expect("pong")
    assert pong["id"] == "p-1"
    assert pong["data"]["server_time"]


@pytest.mark.asyncio
async def test_client_error_is_logged_and_stored(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reference_server.client_errors")
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        await client.send(
            "client_error", {"message": "render failed", "context": {"component": "x"}}
        )
        # Frames are handled in order: once the pong arrives, the error is stored.
        await client.request("ping", reply="pong")
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as http:
        response = await http.get(
            "/api/client-errors", params={"client_id": cid}, headers={"X-API-Key": "valid-test-key"}
        )
    assert response.status_code == 200, response.text
    [record] = response.json()
    assert record["message"] == "render failed"
    assert record["context"] == {"component": "x"}
    assert any(
        r.name == "reference_server.client_errors" and cid in r.getMessage() for r in caplog.records
    )


@pytest.mark.asyncio
async def test_every_server_message_type_is_a_valid_frame_addressed_to_its_recipient(
    server: LiveServer,
) -> None:
    """A tour through every server message type; the test client validates each frame."""
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid) as client:
        await client.send("ping", id="early")
        await client.expect_error("not_authenticated")
        await client.authenticate()
        await client.request("subscribe", {"channel": "general"}, reply="subscribed")
        await client.send("publish", {"channel": "general", "content": "x"}, id="m")
        await client.expect("channel_message")
        await client.expect("delivery_confirmation")
        await client.request("unsubscribe", {"channel": "general"}, reply="unsubscribed")
        await client.request("ping", reply="pong")
        async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as http:
            created = await http.post(
                "/api/chat/threads", json={"title": "tour"}, headers={"X-API-Key": "valid-test-key"}
            )
            assert created.status_code == 201, created.text
        await client.expect("thread_created")
    assert {f["type"] for f in client.frames} == set(SERVER_MESSAGE_TYPES)


@pytest.mark.asyncio
async def test_a_thread_created_over_rest_is_announced_to_authenticated_connections_only(
    server: LiveServer,
) -> None:
    """Thread lists update live: every authenticated connection gets ``thread_created``."""
    first, second, stranger = new_client_id(), new_client_id(), new_client_id()
    async with nova_client(server.ws_url(first), first) as a, nova_client(
        server.ws_url(second), second
    ) as b, nova_client(server.ws_url(stranger), stranger) as c:
        await a.authenticate()
        await b.authenticate()
        async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as http:
            response = await http.post(
                "/api/chat/threads", json={"title": "live"}, headers={"X-API-Key": "valid-test-key"}
            )
        thread = response.json()
        for client in (a, b):
            frame = await client.expect("thread_created")
            assert frame["data"] == thread
            assert frame["client_id"] == client.client_id
        # Not authenticated: its next frame answers this ping, no announcement queued ahead of it.
        await c.send("ping", id="after")
        await c.expect_error("not_authenticated")
        assert not [f for f in c.frames if f["type"] == "thread_created"]
