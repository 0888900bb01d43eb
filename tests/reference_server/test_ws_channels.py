"""WebSocket channels: validation, access control, publish/confirm, fan-out, replay.

Real uvicorn, real ``websockets`` clients; every frame is validated by the test client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from reference_server.protocol import CHANNEL_PATTERN
from tests._wsclient import (
    TIMEOUT,
    NovaTestClient,
    authenticated,
    module_server,
    new_channel,
    new_client_id,
)
from tests.conftest import LiveServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module; tests are isolated by their own client ids and channels."""
    yield from module_server(tmp_path_factory, "ws-channels")


async def _publish(
    client: NovaTestClient, channel: str, content: str, op: str | None = None
) -> dict[str, Any]:
    """Publish and return the delivery_confirmation (skipping the sender's own channel_message)."""
    await client.send("publish", {"channel": channel, "content": content}, id=op)
    while True:
        frame = await client.recv()
        if frame["type"] != "channel_message":
            assert frame["type"] == "delivery_confirmation", frame
            return frame


@pytest.mark.asyncio
async def test_subscribe_answers_subscribed_with_last_seq_and_echoes_id(
    server: LiveServer,
) -> None:
    ch = new_channel()
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        frame = await client.request("subscribe", {"channel": ch}, reply="subscribed")
        assert frame["data"] == {"channel": ch, "last_seq": 0}
        await _publish(client, ch, "one")
        again = await client.request("subscribe", {"channel": ch}, reply="subscribed")
        assert again["data"]["last_seq"] == 1


@pytest.mark.asyncio
async def test_two_clients_exchange_channel_messages(server: LiveServer) -> None:
    ch = new_channel()
    alice, bob = new_client_id("alice"), new_client_id("bob")
    async with (
        authenticated(server.ws_url(alice), alice) as a,
        authenticated(server.ws_url(bob), bob) as b,
    ):
        for client in (a, b):
            await client.request("subscribe", {"channel": ch}, reply="subscribed")
        await a.send("publish", {"channel": ch, "content": "hello bob"}, id="m-a")
        own = await a.expect("channel_message")
        confirmation = await a.expect("delivery_confirmation")
        received = await b.expect("channel_message")
        await b.send("publish", {"channel": ch, "content": "hi alice"}, id="m-b")
        reply = await a.expect("channel_message")

    assert confirmation["id"] == "m-a"
    assert confirmation["data"] == {"message_id": "m-a", "channel": ch, "seq": 1}
    for frame in (own, received):
        assert frame["data"]["seq"] == 1
        assert frame["data"]["sender"] == alice
        assert frame["data"]["content"] == "hello bob"
        assert frame["data"]["message_id"] == "m-a"
    assert own["client_id"] == alice and received["client_id"] == bob
    assert reply["data"]["seq"] == 2 and reply["data"]["sender"] == bob


@pytest.mark.asyncio
async def test_publish_without_id_is_confirmed_with_a_server_message_id(
    server: LiveServer,
) -> None:
    ch = new_channel()
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        confirmation = await _publish(client, ch, "no id")
    assert "id" not in confirmation
    assert confirmation["data"]["message_id"]
    assert confirmation["data"]["seq"] == 1


@pytest.mark.asyncio
async def test_republishing_the_same_id_is_confirmed_again_but_not_redelivered(
    server: LiveServer,
) -> None:
    ch = new_channel()
    pub, sub = new_client_id("pub"), new_client_id("sub")
    async with (
        authenticated(server.ws_url(pub), pub) as p,
        authenticated(server.ws_url(sub), sub) as s,
    ):
        await s.request("subscribe", {"channel": ch}, reply="subscribed")
        first = await _publish(p, ch, "once", op="dup-1")
        second = await _publish(p, ch, "once", op="dup-1")
        third = await _publish(p, ch, "twice", op="dup-2")
        got = [await s.expect("channel_message"), await s.expect("channel_message")]
    assert first["data"] == second["data"] == {"message_id": "dup-1", "channel": ch, "seq": 1}
    assert third["data"]["seq"] == 2
    assert [f["data"]["message_id"] for f in got] == ["dup-1", "dup-2"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("type_", "data"),
    [
        ("subscribe", {"channel": "Bad Channel"}),
        ("unsubscribe", {"channel": "no/slash"}),
        ("publish", {"channel": "UPPER", "content": "x"}),
        ("subscribe", {"channel": ":leading-colon"}),
    ],
)
async def test_invalid_channel_names_get_validation_error_with_details(
    server: LiveServer, type_: str, data: dict[str, Any]
) -> None:
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        await client.send(type_, data, id="op-v")
        error = await client.expect_error("validation_error")
        await client.request("ping", reply="pong")
    assert error["data"]["operation_id"] == "op-v"
    assert error["data"]["details"] == {"channel": data["channel"], "pattern": CHANNEL_PATTERN}
    assert CHANNEL_PATTERN in error["data"]["message"]


@pytest.mark.asyncio
async def test_valid_test_key_cannot_publish_to_announcements_but_development_can(
    server: LiveServer,
) -> None:
    tester, dev = new_client_id("tester"), new_client_id("dev")
    async with (
        authenticated(server.ws_url(tester), tester, "valid-test-key") as t,
        authenticated(server.ws_url(dev), dev, "development") as d,
    ):
        await t.request("subscribe", {"channel": "announcements"}, reply="subscribed")
        await t.send("publish", {"channel": "announcements", "content": "x"}, id="op-f")
        error = await t.expect_error("forbidden")
        confirmation = await _publish(d, "announcements", "from dev", op="op-ok")
        delivered = await t.expect("channel_message")
    assert error["data"]["operation_id"] == "op-f"
    assert "'admin'" in error["data"]["message"]
    assert error["data"]["details"]["required"] == "admin"
    assert confirmation["data"]["channel"] == "announcements"
    assert delivered["data"]["content"] == "from dev"


@pytest.mark.asyncio
async def test_admin_channels_need_admin_to_subscribe(server: LiveServer) -> None:
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        await client.send("subscribe", {"channel": "admin:ops"}, id="s")
        await client.expect_error("forbidden")
        assert server.app.state.hub.subscriber_count("admin:ops") == 0


@pytest.mark.asyncio
async def test_unsubscribe_stops_delivery_and_is_idempotent(server: LiveServer) -> None:
    ch = new_channel()
    pub, sub = new_client_id("pub"), new_client_id("sub")
    async with (
        authenticated(server.ws_url(pub), pub) as p,
        authenticated(server.ws_url(sub), sub) as s,
    ):
        await s.request("subscribe", {"channel": ch}, reply="subscribed")
        frame = await s.request("unsubscribe", {"channel": ch}, reply="unsubscribed")
        assert frame["data"] == {"channel": ch}
        await s.request("unsubscribe", {"channel": ch}, reply="unsubscribed")
        await _publish(p, ch, "nobody listens")
        # The publish was fanned out before its confirmation; a pong now comes first.
        await s.request("ping", reply="pong")


@pytest.mark.asyncio
async def test_since_seq_replays_the_backlog_before_subscribed(server: LiveServer) -> None:
    ch = new_channel()
    pub, sub = new_client_id("pub"), new_client_id("sub")
    async with authenticated(server.ws_url(pub), pub) as p:
        for i in range(5):
            await _publish(p, ch, f"m{i}")
        async with authenticated(server.ws_url(sub), sub) as s:
            await s.send("subscribe", {"channel": ch, "since_seq": 2}, id="r")
            replayed = [await s.expect("channel_message") for _ in range(3)]
            subscribed = await s.expect("subscribed")
            await _publish(p, ch, "live")
            live = await s.expect("channel_message")
    assert [f["data"]["seq"] for f in replayed] == [3, 4, 5]
    assert [f["data"]["content"] for f in replayed] == ["m2", "m3", "m4"]
    assert subscribed["data"]["last_seq"] == 5 and subscribed["id"] == "r"
    assert live["data"]["seq"] == 6


@pytest.mark.asyncio
async def test_since_seq_ahead_of_the_channel_reports_the_real_last_seq(
    server: LiveServer,
) -> None:
    ch = new_channel()
    cid = new_client_id()
    async with authenticated(server.ws_url(cid), cid) as client:
        await _publish(client, ch, "one")
        frame = await client.request(
            "subscribe", {"channel": ch, "since_seq": 100}, reply="subscribed"
        )
        assert frame["data"]["last_seq"] == 1
        await client.send("publish", {"channel": ch, "content": "two"}, id="two")
        live = await client.expect("channel_message")
    assert live["data"]["seq"] == 2


@pytest.mark.asyncio
async def test_replay_while_another_client_publishes_has_no_gap_and_no_duplicate(
    server: LiveServer,
) -> None:
    """Subscribe with since_seq in the middle of a concurrent stream of publishes."""
    ch = new_channel()
    total = 80
    pub, sub = new_client_id("pub"), new_client_id("sub")
    started = asyncio.Event()

    async def publisher(p: NovaTestClient) -> None:
        for i in range(1, total + 1):
            confirmation = await p.request(
                "publish", {"channel": ch, "content": str(i)}, reply="delivery_confirmation"
            )
            assert confirmation["data"]["seq"] == i
            if i == 10:  # seq 10 is stored; the rest is published while the subscriber replays
                started.set()

    async with (
        authenticated(server.ws_url(pub), pub) as p,
        authenticated(server.ws_url(sub), sub) as s,
    ):
        task = asyncio.create_task(publisher(p))
        await asyncio.wait_for(started.wait(), TIMEOUT)
        await s.send("subscribe", {"channel": ch, "since_seq": 3}, id="sub")
        seqs: list[int] = []
        last_seq: int | None = None
        while last_seq is None or not seqs or seqs[-1] < total:
            frame = await s.recv()
            if frame["type"] == "subscribed":
                last_seq = frame["data"]["last_seq"]
                assert seqs == [] or seqs[-1] == last_seq, (seqs, last_seq)
            else:
                assert frame["type"] == "channel_message", frame
                seq = frame["data"]["seq"]
                if last_seq is not None:
                    assert seq > last_seq
                seqs.append(seq)
        await asyncio.wait_for(task, TIMEOUT)
    assert last_seq is not None
    assert seqs == list(range(4, total + 1))
