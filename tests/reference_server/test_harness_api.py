"""The /__harness control API and every server-side fault rule, end to end.

Depth: server (the reference server's fault controller, applied by its
WebSocket endpoint).  Real uvicorn, real ``websockets`` clients, httpx for
the control API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from reference_server.protocol import now_iso
from tests._wsclient import (
    TIMEOUT,
    HarnessAPI,
    NovaTestClient,
    ServerFactory,
    authenticated,
    module_server,
    new_client_id,
    nova_client,
)
from tests.conftest import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One test-mode server for this module: tests use their own client ids, and
    ``harness`` clears every fault rule after each test (start once, reset per test)."""
    yield from module_server(tmp_path_factory, "harness-api")


@pytest.fixture
def harness(server: LiveServer) -> Iterator[HarnessAPI]:
    """The server's /__harness API, token included; clears every rule afterwards."""
    yield HarnessAPI(server)
    response = httpx.delete(
        f"{server.http_url}/__harness/faults", headers=server.harness_headers, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT
) -> None:
    """Poll ``condition`` until true, failing after ``timeout`` with ``what`` was expected."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        await asyncio.sleep(0.01)


async def held_count(harness: HarnessAPI, client_id: str) -> int:
    """How many handshakes of ``client_id`` the server holds now."""
    return int((await ok(await harness.get(f"/__harness/clients/{client_id}")))["held_handshakes"])


async def wait_held(harness: HarnessAPI, client_id: str, count: int = 1) -> None:
    """Wait until the server holds ``count`` handshakes of ``client_id``."""

    async def held() -> bool:
        return await held_count(harness, client_id) == count

    await wait_until(held, f"{count} handshake(s) of {client_id} are held")


async def _open(url: str) -> ClientConnection:
    """Open a raw connection (a coroutine, so it can run as a task while held)."""
    return await connect(url, proxy=None, open_timeout=TIMEOUT)


async def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, (
        f"{response.request.method} {response.request.url}: {response.text}"
    )
    return response.json()


# ----------------------------------------------------------------- guard


@pytest.mark.asyncio
async def test_harness_is_404_exactly_like_an_unknown_path_when_test_mode_is_off(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(test_mode=False)
    async with httpx.AsyncClient(base_url=server.http_url, headers=server.harness_headers) as http:
        unknown = await http.get("/no-such-path")
        assert unknown.status_code == 404
        for method, url, body in [
            ("GET", "/__harness/faults", None),
            ("DELETE", "/__harness/faults", None),
            ("GET", "/__harness/clients/x", None),
            ("POST", "/__harness/clients/x/close", b"{not json"),
            ("PUT", "/__harness/clients/x/close", None),
            ("POST", "/__harness/clients/x/reject", b'{"status": 503}'),
            ("GET", "/__harness/", None),
        ]:
            response = await http.request(method, url, content=body)
            assert response.status_code == 404, (method, url, response.text)
            assert response.content == unknown.content
            assert response.headers["content-type"] == unknown.headers["content-type"]
        openapi = (await http.get("/openapi.json")).json()
    assert not [p for p in openapi["paths"] if p.startswith("/__harness")]


@pytest.mark.asyncio
async def test_harness_needs_the_token(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        missing = await http.get("/__harness/faults")
    wrong = await HarnessAPI(server, token="guess").get("/__harness/faults")
    right = await HarnessAPI(server).get("/__harness/faults")
    assert missing.status_code == 401 and "X-Harness-Token" in missing.json()["detail"]
    assert wrong.status_code == 403
    assert right.status_code == 200


@pytest.mark.asyncio
async def test_unknown_harness_urls_are_404_with_a_hint(harness: HarnessAPI) -> None:
    response = await harness.post("/__harness/clients/x/explode")
    assert response.status_code == 404
    assert "no harness endpoint POST /__harness/clients/x/explode" in response.json()["detail"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("url", "body", "fragment"),
    [
        ("/__harness/clients/a/reject", {"status": 200}, "greater than or equal to 400"),
        ("/__harness/clients/a/reject", {"status": 503, "count": 0}, "greater than or equal to 1"),
        ("/__harness/clients/a/reject", {"status": 503, "colour": "red"}, "Extra inputs"),
        ("/__harness/clients/a/drop", {"types": ["pongg"]}, "server message types"),
        ("/__harness/clients/a/delay", {"ms": -1}, "greater than or equal to 0"),
        ("/__harness/clients/bad%20id/hold", {}, "neither a valid client id"),
    ],
)
async def test_rule_bodies_are_validated(
    harness: HarnessAPI, url: str, body: dict[str, Any], fragment: str
) -> None:
    response = await harness.post(url, json=body)
    assert response.status_code == 422, response.text
    assert fragment in response.text


# ----------------------------------------------------------------- handshake rules


@pytest.mark.asyncio
async def test_reject_503_twice_then_accept(
    server: LiveServer, harness: HarnessAPI, caplog: pytest.LogCaptureFixture
) -> None:
    cid = new_client_id()
    rules = await ok(
        await harness.post(
            f"/__harness/clients/{cid}/reject", json={"status": 503, "count": 2, "body": "busy"}
        )
    )
    assert rules["rules"]["reject"] == {"status": 503, "remaining": 2, "body": "busy"}
    for _ in range(2):
        with pytest.raises(InvalidStatus) as info:
            async with nova_client(server.ws_url(cid), cid):
                pass
        assert info.value.response.status_code == 503
        assert info.value.response.body == b"busy"
    async with authenticated(server.ws_url(cid), cid) as client:
        await client.request("ping", reply="pong")
    assert (await ok(await harness.get("/__harness/faults")))["rules"] == {}
    # A rejection is a complete handshake: the server logs no error for it.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.asyncio
async def test_star_rules_apply_to_every_client(server: LiveServer, harness: HarnessAPI) -> None:
    await ok(await harness.post("/__harness/clients/*/reject", json={"status": 403}))
    for cid in (new_client_id(), new_client_id()):
        with pytest.raises(InvalidStatus) as info:
            async with nova_client(server.ws_url(cid), cid):
                pass
        assert info.value.response.status_code == 403
    await ok(await harness.delete("/__harness/clients/*/faults"))
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid):
        pass


@pytest.mark.asyncio
async def test_hold_keeps_the_handshake_pending_until_released(
    server: LiveServer, harness: HarnessAPI
) -> None:
    cid = new_client_id()
    await ok(await harness.post(f"/__harness/clients/{cid}/hold", json={}))
    opening = asyncio.create_task(_open(server.ws_url(cid)))
    await wait_held(harness, cid)
    assert not opening.done()
    info = await ok(await harness.get(f"/__harness/clients/{cid}"))
    assert info["connected"] is False
    released = await ok(await harness.post(f"/__harness/clients/{cid}/release"))
    assert released["released"] == 1 and released["rules"]["hold"] is None
    ws = await asyncio.wait_for(opening, TIMEOUT)
    async with ws:
        client = NovaTestClient(ws, cid)
        await client.expect("connection_established")
        await client.authenticate()
        await client.request("ping", reply="pong")
    assert (await ok(await harness.get("/__harness/faults")))["held_handshakes"] == {}


@pytest.mark.asyncio
async def test_a_reject_rule_set_while_a_handshake_is_held_rejects_it_on_release(
    server: LiveServer, harness: HarnessAPI
) -> None:
    cid = new_client_id()
    await ok(await harness.post(f"/__harness/clients/{cid}/hold"))
    opening = asyncio.create_task(_open(server.ws_url(cid)))
    await wait_held(harness, cid)
    await ok(
        await harness.post(f"/__harness/clients/{cid}/reject", json={"status": 503, "count": 1, "body": "later"})
    )
    assert (await ok(await harness.post(f"/__harness/clients/{cid}/release")))["released"] == 1
    with pytest.raises(InvalidStatus) as info:
        await asyncio.wait_for(opening, TIMEOUT)
    assert info.value.response.status_code == 503 and info.value.response.body == b"later"
    assert (await ok(await harness.get(f"/__harness/clients/{cid}")))["rules"]["reject"] is None
    async with authenticated(server.ws_url(cid), cid) as client:  # the rule was used up
        await client.request("ping", reply="pong")


@pytest.mark.asyncio
async def test_removing_a_reject_rule_keeps_a_held_handshake_held(
    server: LiveServer, harness: HarnessAPI
) -> None:
    cid = new_client_id()
    await ok(await harness.post(f"/__harness/clients/{cid}/hold"))
    await ok(await harness.post(f"/__harness/clients/{cid}/drop", json={"types": ["pong"], "count": 1}))
    opening = asyncio.create_task(_open(server.ws_url(cid)))
    await wait_held(harness, cid)
    await ok(await harness.post(f"/__harness/clients/{cid}/reject", json={"status": 503}))
    removed = await ok(await harness.delete(f"/__harness/clients/{cid}/faults/reject"))
    assert removed["removed"] is True and removed["rules"]["reject"] is None
    assert removed["rules"]["hold"] is not None and removed["rules"]["drop"] is not None
    assert (await ok(await harness.delete(f"/__harness/clients/{cid}/faults/reject")))["removed"] is False
    assert await held_count(harness, cid) == 1 and not opening.done()
    released = await ok(await harness.delete(f"/__harness/clients/{cid}/faults/hold"))
    assert released["removed"] is True and released["rules"]["drop"] is not None
    ws = await asyncio.wait_for(opening, TIMEOUT)
    async with ws:
        client = NovaTestClient(ws, cid)
        await client.expect("connection_established")
        await client.authenticate()
        await client.send("ping", id="dropped")
        await client.request("ping", reply="pong")  # the drop rule took the first pong only
    bad = await harness.delete(f"/__harness/clients/{cid}/faults/mute")
    assert bad.status_code == 422 and "reject, hold, delay, drop" in bad.text


@pytest.mark.asyncio
async def test_a_client_that_leaves_while_held_is_forgotten(
    server: LiveServer, harness: HarnessAPI, caplog: pytest.LogCaptureFixture
) -> None:
    cid = new_client_id()
    await ok(await harness.post(f"/__harness/clients/{cid}/hold"))
    opening = asyncio.create_task(_open(server.ws_url(cid)))
    await wait_held(harness, cid)
    opening.cancel()  # the client gives up: its TCP connection closes
    await wait_held(harness, cid, 0)
    assert (await ok(await harness.post(f"/__harness/clients/{cid}/release")))["released"] == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.asyncio
async def test_hold_with_timeout_proceeds_on_its_own(
    server: LiveServer, harness: HarnessAPI
) -> None:
    cid = new_client_id()
    await ok(await harness.post(f"/__harness/clients/{cid}/hold", json={"timeout_ms": 200}))
    started = time.monotonic()
    async with nova_client(server.ws_url(cid), cid):
        pass
    assert time.monotonic() - started >= 0.2


@pytest.mark.asyncio
async def test_clear_all_releases_held_handshakes_and_removes_rules(
    server: LiveServer, harness: HarnessAPI
) -> None:
    cid = new_client_id()
    await ok(await harness.post("/__harness/clients/*/hold"))
    await ok(await harness.post("/__harness/clients/other/drop", json={"types": ["pong"]}))
    opening = asyncio.create_task(_open(server.ws_url(cid)))
    await wait_held(harness, cid)  # held by the "*" rule
    cleared = await ok(await harness.delete("/__harness/faults"))
    assert cleared == {"rules": {}, "held_handshakes": {}}
    async with await asyncio.wait_for(opening, TIMEOUT) as ws:
        await NovaTestClient(ws, cid).expect("connection_established")


@pytest.mark.asyncio
async def test_clearing_one_client_removes_its_rules_only(
    server: LiveServer, harness: HarnessAPI
) -> None:
    cid, other = new_client_id(), new_client_id()
    await ok(await harness.post(f"/__harness/clients/{cid}/reject", json={"status": 500}))
    await ok(await harness.post(f"/__harness/clients/{other}/reject", json={"status": 500}))
    cleared = await ok(await harness.delete(f"/__harness/clients/{cid}/faults"))
    assert cleared["rules"]["reject"] is None
    async with nova_client(server.ws_url(cid), cid):
        pass
    assert list((await ok(await harness.get("/__harness/faults")))["rules"]) == [other]


# ----------------------------------------------------------------- outbound rules


@pytest.mark.asyncio
async def test_delay_holds_back_replies_of_the_given_types(
    server: LiveServer, harness: HarnessAPI
) -> None:
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        await ok(
            await harness.post(
                f"/__harness/clients/{cid}/delay", json={"ms": 300, "types": ["pong"]}
            )
        )
        started = time.monotonic()
        await client.request("ping", reply="pong")
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        await client.request("subscribe", {"channel": "general"}, reply="subscribed")
        assert time.monotonic() - started < 0.3
        await ok(await harness.post(f"/__harness/clients/{cid}/delay", json={"ms": 0}))
        assert (await ok(await harness.get(f"/__harness/clients/{cid}")))["rules"]["delay"] is None


@pytest.mark.asyncio
async def test_authenticated_connection_outlives_the_auth_timeout(
    server_factory: ServerFactory,
) -> None:
    """A pong delayed past the auth deadline still arrives: authentication disarmed the 4002 timer."""
    server = server_factory(auth_timeout_ms=300)
    cid = new_client_id()
    http = HarnessAPI(server)
    async with authenticated(server.ws_url(cid), cid) as client:
        await ok(
            await http.post(f"/__harness/clients/{cid}/delay", json={"ms": 500, "types": ["pong"]})
        )
        await client.request("ping", reply="pong")
        assert client.ws.close_code is None


@pytest.mark.asyncio
async def test_drop_discards_frames_of_the_given_types(
    server: LiveServer, harness: HarnessAPI
) -> None:
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        await ok(
            await harness.post(
                f"/__harness/clients/{cid}/drop", json={"types": ["pong"], "count": 1}
            )
        )
        await client.send("ping", id="lost")
        await client.send("ping", id="kept")
        pong = await client.expect("pong")
        assert pong["id"] == "kept"
        info = await ok(await harness.get(f"/__harness/clients/{cid}"))
    assert info["rules"]["drop"] is None  # used up


@pytest.mark.asyncio
async def test_a_subscriber_that_cannot_keep_up_is_closed_as_slow_consumer(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(outbound_queue_size=3)
    pub, slow = new_client_id("pub"), new_client_id("slow")
    http = HarnessAPI(server)
    async with (
        authenticated(server.ws_url(pub), pub) as p,
        authenticated(server.ws_url(slow), slow) as s,
    ):
        await s.request("subscribe", {"channel": "general"}, reply="subscribed")
        await ok(await http.post(f"/__harness/clients/{slow}/delay", json={"ms": 5000}))
        for i in range(6):  # the publisher is never slowed down
            await p.request(
                "publish", {"channel": "general", "content": str(i)}, reply="delivery_confirmation"
            )
        code, reason = await s.closed()
    assert (code, reason) == (1008, "slow consumer")


# ----------------------------------------------------------------- commands


@pytest.mark.asyncio
async def test_close_with_code_and_reason(server: LiveServer, harness: HarnessAPI) -> None:
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        result = await ok(
            await harness.post(
                f"/__harness/clients/{cid}/close", json={"code": 4000, "reason": "bye"}
            )
        )
        assert result["closed"] == 1
        assert await client.closed() == (4000, "bye")


@pytest.mark.asyncio
async def test_close_of_an_unauthenticated_connection(
    server: LiveServer, harness: HarnessAPI
) -> None:
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid) as client:
        await ok(await harness.post(f"/__harness/clients/{cid}/close", json={"code": 1011}))
        assert (await client.closed())[0] == 1011


@pytest.mark.asyncio
async def test_close_every_client_with_star(server: LiveServer, harness: HarnessAPI) -> None:
    a, b = new_client_id(), new_client_id()
    async with authenticated(server.ws_url(a), a) as ca, nova_client(server.ws_url(b), b) as cb:
        result = await ok(
            await harness.post(
                "/__harness/clients/*/close", json={"code": 1012, "reason": "restart"}
            )
        )
        assert result["closed"] >= 2  # and any connection an earlier test left behind
        assert await ca.closed() == (1012, "restart")
        assert await cb.closed() == (1012, "restart")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("code", "reason"), [(1006, ""), (1005, ""), (2000, ""), (4000, "x" * 124)]
)
async def test_close_refuses_codes_and_reasons_that_cannot_be_sent(
    server: LiveServer, harness: HarnessAPI, code: int, reason: str
) -> None:
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid):
        response = await harness.post(
            f"/__harness/clients/{cid}/close", json={"code": code, "reason": reason}
        )
    assert response.status_code == 422, response.text


@pytest.mark.asyncio
@pytest.mark.parametrize("action", ["close", "abort", "push"])
async def test_commands_on_a_client_that_is_not_connected_answer_409(
    harness: HarnessAPI, action: str
) -> None:
    body = {"message": {"type": "pong", "data": {}, "timestamp": now_iso(), "client_id": "ghost"}}
    response = await harness.post(
        f"/__harness/clients/ghost/{action}", json=body if action == "push" else {}
    )
    assert response.status_code == 409
    assert "'ghost' has no open WebSocket connection" in response.json()["detail"]


@pytest.mark.asyncio
async def test_abort_drops_tcp_without_a_close_frame(
    server: LiveServer, harness: HarnessAPI
) -> None:
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        result = await ok(await harness.post(f"/__harness/clients/{cid}/abort"))
        assert result == {"client_id": cid, "aborted": 1, "fallback_1011": 0}
        code, _ = await client.closed()
        assert code == 1006
        assert not client.close_frame_received


@pytest.mark.asyncio
async def test_push_sends_a_validated_message(server: LiveServer, harness: HarnessAPI) -> None:
    cid = new_client_id()
    message = {
        "type": "error",
        "data": {
            "code": "internal_error",
            "message": "injected",
            "operation_id": None,
            "details": None,
        },
        "timestamp": now_iso(),
        "client_id": cid,
    }
    async with authenticated(server.ws_url(cid), cid) as client:
        # Pushed frames bypass the rules: drop everything, the push still arrives.
        await ok(await harness.post(f"/__harness/clients/{cid}/drop", json={}))
        await ok(await harness.post(f"/__harness/clients/{cid}/push", json={"message": message}))
        received = await client.expect("error")
    assert received == message


@pytest.mark.asyncio
async def test_push_refuses_an_invalid_message_unless_validation_is_off(
    server: LiveServer, harness: HarnessAPI
) -> None:
    cid = new_client_id()
    bogus = {"type": "teleport", "data": {"to": "mars"}}
    async with authenticated(server.ws_url(cid), cid) as client:
        refused = await harness.post(f"/__harness/clients/{cid}/push", json={"message": bogus})
        assert refused.status_code == 422
        assert "validate" in refused.json()["detail"]["message"]
        await ok(
            await harness.post(
                f"/__harness/clients/{cid}/push", json={"message": bogus, "validate": False}
            )
        )
        await ok(await harness.post(f"/__harness/clients/{cid}/push", json={"raw": "not json {"}))
        assert await client.ws.recv() == '{"type":"teleport","data":{"to":"mars"}}'
        assert await client.ws.recv() == "not json {"


@pytest.mark.asyncio
async def test_push_needs_exactly_one_of_message_and_raw(
    server: LiveServer, harness: HarnessAPI
) -> None:
    cid = new_client_id()
    async with nova_client(server.ws_url(cid), cid):
        for body in ({}, {"message": {"type": "pong"}, "raw": "x"}):
            response = await harness.post(f"/__harness/clients/{cid}/push", json=body)
            assert response.status_code == 422 and "exactly one" in response.text


# ----------------------------------------------------------------- state


@pytest.mark.asyncio
async def test_client_info_reports_connection_authentication_and_subscriptions(
    server: LiveServer, harness: HarnessAPI
) -> None:
    cid = new_client_id()
    info = await ok(await harness.get(f"/__harness/clients/{cid}"))
    assert info["connected"] is False and info["connections"] == []
    async with nova_client(server.ws_url(cid), cid) as client:
        info = await ok(await harness.get(f"/__harness/clients/{cid}"))
        assert (info["connected"], info["authenticated"]) == (True, False)
        await client.authenticate()
        await client.request("subscribe", {"channel": "general"}, reply="subscribed")
        await client.request("subscribe", {"channel": "news"}, reply="subscribed")
        info = await ok(await harness.get(f"/__harness/clients/{cid}"))
        assert (info["connected"], info["authenticated"]) == (True, True)
        assert info["subscriptions"] == ["general", "news"]
        [conn] = info["connections"]
        assert conn["metadata"]["permissions"] == ["read", "write"]
        listed = await ok(await harness.get("/__harness/clients"))
        assert [c["client_id"] for c in listed if c["client_id"] == cid] == [cid]

    async def gone() -> bool:
        return not (await ok(await harness.get(f"/__harness/clients/{cid}")))["connected"]

    await wait_until(gone, "the server noticed the client closed")
