"""ws.Connection (the hub's Peer) against a fake socket: queueing, addressing, closing, abort.

No server and no port: the fake records what the writer task would put on the wire.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, cast

import pytest
from fastapi import WebSocket

from harness.faults.controller import FaultController
from reference_server.ws import TRANSPORT_OWNER_KEY, Connection, _close_reason

TIMEOUT = 5.0


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class FakeOwner:
    def __init__(self) -> None:
        self.transport = FakeTransport()
        self.writable = asyncio.Event()  # uvicorn's: set while the transport takes writes
        self.writable.set()


class FakeSocket:
    """Records frames and close calls; ``gate`` can stall sends like a client that stopped reading."""

    def __init__(self, *, owner: FakeOwner | None = None) -> None:
        self.scope: dict[str, Any] = {TRANSPORT_OWNER_KEY: owner} if owner else {}
        self.sent: list[Any] = []
        self.closes: list[tuple[int, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: BaseException | None = None

    async def send_text(self, text: str) -> None:
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.sent.append(json.loads(text) if text.startswith(("{", "[")) else text)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        if self.fail is not None:
            raise self.fail
        self.closes.append((code, reason or ""))


def make(
    sock: FakeSocket,
    client_id: str = "me",
    *,
    queue_size: int = 10,
    faults: FaultController | None = None,
) -> Connection:
    conn = Connection(cast(WebSocket, sock), client_id, queue_size=queue_size, faults=faults)
    conn.start()
    return conn


def frame(type_: str = "pong", **data: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "data": data,
        "timestamp": "2026-01-01T00:00:00.000Z",
        "client_id": "server",
    }


@pytest.mark.asyncio
async def test_enqueued_frames_are_readdressed_copies_in_order() -> None:
    a_sock, b_sock = FakeSocket(), FakeSocket()
    a, b = make(a_sock, "alice"), make(b_sock, "bob")
    shared = frame("channel_message", seq=1)
    for conn in (a, b):
        conn.enqueue(shared)
        conn.enqueue(frame("pong"))
    await asyncio.wait_for(asyncio.gather(a.close(1000), b.close(1000)), TIMEOUT)
    assert shared["client_id"] == "server"  # the shared dict is never mutated
    assert [(f["type"], f["client_id"]) for f in a_sock.sent] == [
        ("channel_message", "alice"),
        ("pong", "alice"),
    ]
    assert [f["client_id"] for f in b_sock.sent] == ["bob", "bob"]
    assert a_sock.closes == [(1000, "")]


@pytest.mark.asyncio
async def test_ordered_close_goes_after_queued_frames_and_is_idempotent() -> None:
    sock = FakeSocket()
    conn = make(sock)
    conn.enqueue(frame("error"))
    first = conn.request_close(4001, "authentication failed")
    assert conn.closing
    conn.enqueue(frame("pong"))  # ignored: closing
    await asyncio.wait_for(conn.close(4003, "other"), TIMEOUT)
    assert conn.request_close(1000) is first
    assert [f["type"] for f in sock.sent] == ["error"]
    assert sock.closes == [(4001, "authentication failed")]
    assert conn.close_code == 4001


@pytest.mark.asyncio
async def test_a_full_queue_closes_the_slow_consumer_at_once() -> None:
    sock = FakeSocket()
    sock.gate.clear()  # the client stopped reading: the writer is stuck on its first frame
    conn = make(sock, queue_size=2)
    for i in range(4):
        conn.enqueue(frame("channel_message", seq=i + 1))
        await asyncio.sleep(0)  # let the writer pick up the first frame
    assert conn.closing
    await asyncio.wait_for(conn.close(1000), TIMEOUT)  # waits for the slow-consumer close
    assert sock.closes == [(1008, "slow consumer")]
    assert sock.sent == []


@pytest.mark.asyncio
async def test_close_after_the_client_went_away_is_a_no_op() -> None:
    sock = FakeSocket()
    sock.fail = OSError("connection reset")
    conn = make(sock)
    conn.enqueue(frame())
    await asyncio.wait_for(conn.close(1001, "server shutting down"), TIMEOUT)
    await asyncio.wait_for(conn.close(1001, "again"), TIMEOUT)
    await asyncio.wait_for(conn.finish(), TIMEOUT)
    assert sock.closes == []
    assert conn.closing


@pytest.mark.asyncio
async def test_finish_does_not_wait_for_frames_nobody_will_read() -> None:
    """The client left while an ordered close waited behind a stalled frame."""
    sock = FakeSocket()
    sock.gate.clear()
    conn = make(sock)
    conn.enqueue(frame("pong"))
    await asyncio.sleep(0)  # the writer is stuck sending it
    conn.request_close(4002, "authentication timeout")
    sock.fail = OSError("gone")
    await asyncio.wait_for(conn.finish(), 1.0)  # well under CLOSE_DEADLINE_S
    assert sock.sent == [] and sock.closes == []


@pytest.mark.asyncio
async def test_send_waits_for_space_and_never_blocks_after_the_writer_died() -> None:
    sock = FakeSocket()
    sock.gate.clear()
    conn = make(sock, queue_size=1)
    await conn.send(frame("pong"))
    await asyncio.sleep(0)  # the writer holds the first frame; the queue is empty again
    await conn.send(frame("pong"))
    waiting = asyncio.create_task(conn.send(frame("pong")))
    await asyncio.sleep(0)
    assert not waiting.done()  # back-pressure: the queue is full
    sock.fail = OSError("gone")
    sock.gate.set()
    await asyncio.wait_for(waiting, TIMEOUT)
    await asyncio.wait_for(conn.send(frame("pong")), TIMEOUT)  # dead: returns at once


@pytest.mark.asyncio
async def test_a_reply_with_nothing_queued_is_written_before_send_returns() -> None:
    owner = FakeOwner()
    sock = FakeSocket(owner=owner)
    conn = make(sock)
    await conn.send(frame("pong"))
    assert [f["type"] for f in sock.sent] == ["pong"]  # no hop through the writer task


@pytest.mark.asyncio
async def test_a_reply_queues_behind_frames_already_queued_and_keeps_their_order() -> None:
    owner = FakeOwner()
    sock = FakeSocket(owner=owner)
    conn = make(sock)
    conn.enqueue(frame("channel_message", n=1))
    conn.enqueue(frame("channel_message", n=2))
    await conn.send(frame("pong"))
    await asyncio.wait_for(conn.close(1000), TIMEOUT)
    assert [(f["type"], f["data"].get("n")) for f in sock.sent] == [
        ("channel_message", 1),
        ("channel_message", 2),
        ("pong", None),
    ]


@pytest.mark.asyncio
async def test_a_reply_to_a_client_that_stopped_reading_is_queued_not_awaited() -> None:
    owner = FakeOwner()
    owner.writable.clear()  # uvicorn paused writing: the client's buffer is full
    sock = FakeSocket(owner=owner)
    sock.gate.clear()
    conn = make(sock)
    await asyncio.wait_for(conn.send(frame("pong")), TIMEOUT)  # returns: the frame waits in the queue
    assert sock.sent == [] and conn.queued + int(conn._send_lock.locked()) == 1
    sock.gate.set()
    owner.writable.set()
    await asyncio.wait_for(conn.close(1000), TIMEOUT)
    assert [f["type"] for f in sock.sent] == ["pong"]


@pytest.mark.asyncio
async def test_with_a_fault_rule_active_replies_go_through_the_writer_and_its_rules() -> None:
    faults = FaultController()
    faults.drop_messages("me", types=["pong"])
    sock = FakeSocket(owner=FakeOwner())
    conn = make(sock, faults=faults)
    await conn.send(frame("pong"))
    await conn.send(frame("subscribed", channel="x", last_seq=0))
    await asyncio.wait_for(conn.close(1000), TIMEOUT)
    assert [f["type"] for f in sock.sent] == ["subscribed"]


@pytest.mark.asyncio
async def test_fault_rules_drop_and_delay_but_pushes_bypass_them() -> None:
    faults = FaultController()
    faults.drop_messages("me", types=["pong"])
    sock = FakeSocket()
    conn = make(sock, faults=faults)
    conn.enqueue(frame("pong"))
    conn.enqueue(frame("subscribed", channel="x", last_seq=0))
    assert conn.push(frame("pong"))
    assert conn.push("raw text")
    await asyncio.wait_for(conn.close(1000), TIMEOUT)
    assert [f if isinstance(f, str) else (f["type"], f["client_id"]) for f in sock.sent] == [
        ("subscribed", "me"),
        ("pong", "server"),  # pushed frames are sent exactly as given
        "raw text",
    ]


@pytest.mark.asyncio
async def test_abort_drops_the_transport_without_a_close_frame() -> None:
    owner = FakeOwner()
    sock = FakeSocket(owner=owner)
    conn = make(sock)
    assert conn.abort() is True
    assert owner.transport.aborted
    assert conn.closing and conn.close_code == 1006
    await asyncio.wait_for(conn.finish(), TIMEOUT)
    assert sock.closes == []


@pytest.mark.asyncio
async def test_abort_without_a_transport_falls_back_to_1011_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="reference_server.ws")
    sock = FakeSocket()
    conn = make(sock)
    assert conn.abort() is False
    await asyncio.wait_for(conn.finish(), TIMEOUT)
    assert sock.closes == [(1011, "connection aborted")]
    assert any("does not expose its transport" in r.getMessage() for r in caplog.records)


def test_close_reasons_are_trimmed_to_123_bytes_without_breaking_characters() -> None:
    assert _close_reason("short") == "short"
    trimmed = _close_reason("é" * 100)
    assert len(trimmed.encode()) <= 123 and set(trimmed) == {"é"}
