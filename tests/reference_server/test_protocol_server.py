"""The message corpus against a live server over a real WebSocket.

Spec: every invalid client case in ``fixtures/messages/invalid`` is answered
with ``error`` {code: invalid_message} whose message names the problem, before
or after authentication, and the connection keeps working; no valid client
case is ever answered with ``invalid_message`` (server and models agree).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._corpus import Case, load_corpus
from tests._wsclient import NovaTestClient, authenticated, new_client_id, nova_client
from tests.conftest import LiveServer, start_server

INVALID_CLIENT = [c for c in load_corpus("invalid") if c.direction == "client"]
VALID_CLIENT = [c for c in load_corpus("valid") if c.direction == "client"]


@pytest.fixture(scope="module")
def corpus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module; each case uses its own client id and connection."""
    server = start_server(tmp_path_factory.mktemp("corpus") / "nova.db")
    try:
        yield server
    finally:
        server.stop()


async def _still_works(client: NovaTestClient) -> None:
    await client.request("ping", {}, reply="pong")


async def _expect_invalid(client: NovaTestClient, case: Case) -> None:
    await client.send_raw(case.text)
    frame = await client.expect_error("invalid_message")
    assert case.mentions is not None and case.mentions in frame["data"]["message"], (
        f"{case.id}: expected the error to mention {case.mentions!r}, got {frame['data']}"
    )
    await _still_works(client)


@pytest.mark.asyncio
@pytest.mark.parametrize("case", INVALID_CLIENT, ids=lambda c: c.id)
async def test_invalid_frame_is_answered_and_the_connection_survives(
    corpus_server: LiveServer, case: Case
) -> None:
    client_id = new_client_id("corpus")
    async with authenticated(corpus_server.ws_url(client_id), client_id) as client:
        await _expect_invalid(client, case)


@pytest.mark.asyncio
async def test_invalid_frames_before_authentication_are_invalid_message(
    corpus_server: LiveServer,
) -> None:
    """Shape is checked first: a malformed frame is invalid_message even unauthenticated."""
    client_id = new_client_id("corpus")
    async with nova_client(corpus_server.ws_url(client_id), client_id) as client:
        for case in INVALID_CLIENT[:10]:
            await client.send_raw(case.text)
            await client.expect_error("invalid_message")
        await client.authenticate()
        await _still_works(client)


@pytest.mark.asyncio
async def test_binary_frame_is_invalid_message(corpus_server: LiveServer) -> None:
    client_id = new_client_id("corpus")
    async with authenticated(corpus_server.ws_url(client_id), client_id) as client:
        await client.send_raw(b'{"type": "ping"}')
        frame = await client.expect_error("invalid_message")
        assert "binary frames" in frame["data"]["message"]
        await _still_works(client)


@pytest.mark.asyncio
async def test_every_invalid_case_on_one_connection(corpus_server: LiveServer) -> None:
    """Bad input never accumulates into a closed connection (well under the rate limit)."""
    client_id = new_client_id("corpus")
    async with authenticated(corpus_server.ws_url(client_id), client_id) as client:
        for case in INVALID_CLIENT:
            await _expect_invalid(client, case)


@pytest.mark.asyncio
@pytest.mark.parametrize("case", VALID_CLIENT, ids=lambda c: c.id)
async def test_valid_frame_is_never_invalid_message(corpus_server: LiveServer, case: Case) -> None:
    client_id = new_client_id("corpus")
    async with authenticated(corpus_server.ws_url(client_id), client_id, api_key="development") as client:
        await client.send_raw(case.text)
        marker = new_client_id("op")
        await client.send("ping", {}, id=marker)
        while True:
            frame = await client.recv()
            if frame["type"] == "pong" and frame.get("id") == marker:
                break
            if frame["type"] == "error":
                assert frame["data"]["code"] != "invalid_message", f"{case.id}: {frame['data']}"
