"""Publishing: commit to storage first, then fan out.  Shared by WebSocket and REST."""

from __future__ import annotations

from typing import Any

from .hub import Hub
from .protocol import now_iso
from .storage import Storage, StoredMessage, Thread

__all__ = ["channel_message_frame", "missing_thread", "publish", "thread_created_frame"]

THREAD_CHANNEL_PREFIX = "thread:"


def channel_message_frame(msg: StoredMessage, *, to_client: str = "server") -> dict[str, Any]:
    """The ``channel_message`` envelope for a stored message."""
    return {
        "type": "channel_message",
        "data": {
            "channel": msg.channel,
            "seq": msg.seq,
            "message_id": msg.message_id,
            "sender": msg.sender,
            "content": msg.content,
            "sent_at": msg.sent_at,
        },
        "timestamp": now_iso(),
        "client_id": to_client,
    }


async def missing_thread(storage: Storage, channel: str) -> str | None:
    """For a ``thread:{id}`` channel whose thread does not exist, the message saying so; else None.

    A thread's channel exists with its thread: messages cannot be stored for, nor
    subscriptions made to, a thread nobody created.
    """
    if not channel.startswith(THREAD_CHANNEL_PREFIX):
        return None
    thread_id = channel[len(THREAD_CHANNEL_PREFIX):]
    if await storage.thread_exists(thread_id):
        return None
    return (
        f"no chat thread {thread_id!r}: the channel {channel!r} exists only with its thread; "
        "create the thread first (POST /api/chat/threads) and use the channel it returns"
    )


def thread_created_frame(thread: Thread) -> dict[str, Any]:
    """The ``thread_created`` envelope announcing a new chat thread to every client."""
    return {
        "type": "thread_created",
        "data": thread.to_dict(),
        "timestamp": now_iso(),
        "client_id": "server",
    }


async def publish(
    storage: Storage,
    hub: Hub,
    channel: str,
    *,
    sender: str,
    content: str,
    message_id: str | None = None,
) -> tuple[StoredMessage, bool]:
    """Store a message and, when it is new, deliver it to every subscriber of ``channel``.

    Returns the stored message and whether it was new; a repeated
    ``message_id`` on the same channel is acknowledged again but not re-delivered.
    The broadcast happens in the commit's own step of the event loop, before any
    later commit's and before this coroutine resumes, so subscribers receive
    messages in seq order, and a subscriber that reads the stored backlog finds
    each committed message there or gets it live: never both, never neither.
    """

    def deliver(result: tuple[StoredMessage, bool]) -> None:
        msg, created = result
        if created and hub.subscriber_count(channel):
            hub.broadcast(channel, channel_message_frame(msg))

    return await storage.append_message(
        channel, sender=sender, content=content, message_id=message_id, on_commit=deliver
    )
