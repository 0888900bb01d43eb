"""Publishing (reference_server/messaging.py) over real storage and a hub, without a server.

Spec: a publish is delivered to subscribers in the commit's own step, so a
message that was committed reaches every live subscriber even when the
publishing coroutine never resumes (cancelled after its write was queued), and
messages arrive in seq order; a repeated id is confirmed again, not re-delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from reference_server import messaging
from reference_server.hub import Hub
from reference_server.storage import Storage


class RecordingPeer:
    """A hub peer that keeps what it is sent."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.frames: list[dict[str, Any]] = []

    def enqueue(self, message: dict[str, Any]) -> None:
        self.frames.append(message)

    async def close(self, code: int, reason: str = "") -> None:
        del code, reason

    def seqs(self) -> list[int]:
        return [int(f["data"]["seq"]) for f in self.frames if f["type"] == "channel_message"]


@asynccontextmanager
async def opened(path: Path) -> AsyncIterator[Storage]:
    """An open :class:`Storage` on ``path``, closed afterwards."""
    store = Storage(path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def _live_subscriber(hub: Hub, channel: str) -> RecordingPeer:
    peer = RecordingPeer("subscriber")
    hub.register(peer)
    assert hub.subscribe(peer, channel).go_live(after_seq=0) == []
    return peer


@pytest.mark.asyncio
async def test_a_committed_message_reaches_subscribers_even_if_its_publisher_is_cancelled(tmp_path: Path) -> None:
    async with opened(tmp_path / "db.sqlite") as storage:
        hub = Hub()
        peer = _live_subscriber(hub, "general")
        first = asyncio.create_task(messaging.publish(storage, hub, "general", sender="a", content="one"))
        second = asyncio.create_task(messaging.publish(storage, hub, "general", sender="b", content="two"))
        await asyncio.sleep(0)  # both run up to their write, which joins the same group
        first.cancel()
        (stored, created) = await asyncio.wait_for(second, 5)
        assert (stored.seq, created) == (2, True)
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await storage.last_seq("general") == 2  # the cancelled publish was committed...
        assert peer.seqs() == [1, 2]  # ...so it was delivered: no gap for the subscriber


@pytest.mark.asyncio
async def test_concurrent_publishes_reach_a_subscriber_in_seq_order_and_a_repeat_is_not_resent(
    tmp_path: Path,
) -> None:
    async with opened(tmp_path / "db.sqlite") as storage:
        hub = Hub()
        peer = _live_subscriber(hub, "general")
        results = await asyncio.gather(
            *(
                messaging.publish(storage, hub, "general", sender="s", content=str(i), message_id=f"m{i}")
                for i in range(50)
            )
        )
        assert sorted(msg.seq for msg, _ in results) == list(range(1, 51))
        assert peer.seqs() == list(range(1, 51))
        again, created = await messaging.publish(storage, hub, "general", sender="s", content="0", message_id="m0")
        assert (again.seq, created) == (results[0][0].seq, False)
        assert peer.seqs() == list(range(1, 51))
