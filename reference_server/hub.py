"""The connection registry and channel fan-out.

The hub knows which peer holds which client id and which peers subscribe to
which channel.  It never awaits: :meth:`Hub.broadcast` enqueues on each
subscriber's outbound queue synchronously, so messages reach every
subscriber in the order they were committed (storage commits in seq order
and :func:`~reference_server.messaging.publish` broadcasts from each commit's
own callback, in commit order).

Replay without gap or duplicate: :meth:`Hub.subscribe` starts buffering live
messages for the new subscription *before* the caller reads the stored
backlog; :meth:`Subscription.go_live` then returns the buffered messages the
backlog did not already contain and switches to direct delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Hub", "Peer", "Subscription"]


class Peer(Protocol):
    """One live connection, as the hub sees it."""

    client_id: str

    def enqueue(self, message: dict[str, Any]) -> None:
        """Queue a server-to-client frame; never blocks."""

    async def close(self, code: int, reason: str = "") -> None:
        """Close the socket with ``code`` (idempotent)."""


@dataclass
class Subscription:
    peer: Peer
    channel: str
    live: bool = False
    buffer: list[dict[str, Any]] = field(default_factory=list)

    def deliver(self, message: dict[str, Any]) -> None:
        if self.live:
            self.peer.enqueue(message)
        else:
            self.buffer.append(message)

    def go_live(self, after_seq: int) -> list[dict[str, Any]]:
        """Switch to live delivery; return buffered messages with ``seq > after_seq``."""
        pending = [m for m in self.buffer if int(m["data"]["seq"]) > after_seq]
        self.buffer.clear()
        self.live = True
        return pending


class Hub:
    def __init__(self) -> None:
        self._peers: dict[str, Peer] = {}
        self._subs: dict[str, dict[int, Subscription]] = {}
        self._tracked: dict[int, Peer] = {}

    # ------------------------------------------------------------ peers

    def register(self, peer: Peer) -> Peer | None:
        """Make ``peer`` the holder of its client id; return the peer it replaces, if any."""
        previous = self._peers.get(peer.client_id)
        if previous is not None and previous is not peer:
            self.drop_subscriptions(previous)
        self._peers[peer.client_id] = peer
        return previous if previous is not peer else None

    def unregister(self, peer: Peer) -> None:
        """Forget ``peer`` and its subscriptions (a newer holder of the id is kept)."""
        self.drop_subscriptions(peer)
        if self._peers.get(peer.client_id) is peer:
            del self._peers[peer.client_id]

    def track(self, peer: Peer) -> None:
        """Remember an open connection, registered or not (yet), so ``close_all`` reaches it."""
        self._tracked[id(peer)] = peer

    def untrack(self, peer: Peer) -> None:
        self._tracked.pop(id(peer), None)

    def get(self, client_id: str) -> Peer | None:
        return self._peers.get(client_id)

    def peers(self) -> list[Peer]:
        return list(self._peers.values())

    # ------------------------------------------------------------ channels

    def subscribe(self, peer: Peer, channel: str) -> Subscription:
        """Start (or restart) a buffering subscription; call ``go_live`` after the replay."""
        sub = Subscription(peer, channel)
        self._subs.setdefault(channel, {})[id(peer)] = sub
        return sub

    def unsubscribe(self, peer: Peer, channel: str) -> bool:
        subs = self._subs.get(channel)
        if not subs or id(peer) not in subs:
            return False
        del subs[id(peer)]
        if not subs:
            del self._subs[channel]
        return True

    def is_subscribed(self, peer: Peer, channel: str) -> bool:
        return id(peer) in self._subs.get(channel, {})

    def subscriptions(self, peer: Peer) -> list[str]:
        return sorted(ch for ch, subs in self._subs.items() if id(peer) in subs)

    def drop_subscriptions(self, peer: Peer) -> None:
        for channel in list(self._subs):
            self.unsubscribe(peer, channel)

    def subscriber_count(self, channel: str) -> int:
        return len(self._subs.get(channel, {}))

    def channels(self) -> Iterable[str]:
        return list(self._subs)

    async def close_all(self, code: int, reason: str = "") -> None:
        """Close every live connection, registered or tracked, with ``code`` (shutdown: 1001)."""
        peers = {id(p): p for p in [*self._tracked.values(), *self.peers()]}
        await asyncio.gather(*(p.close(code, reason) for p in peers.values()), return_exceptions=True)

    def announce(self, message: dict[str, Any], *, permission: str | None = None) -> int:
        """Deliver ``message`` to every authenticated peer (holding ``permission``, if given).

        Returns how many got it.  A peer without a ``permissions`` attribute holds none.
        """
        peers = [
            peer
            for peer in self._peers.values()
            if permission is None or permission in getattr(peer, "permissions", ())
        ]
        for peer in peers:
            peer.enqueue(message)
        return len(peers)

    def broadcast(self, channel: str, message: dict[str, Any]) -> int:
        """Deliver a ``channel_message`` to every subscriber; return how many got it."""
        subs = list(self._subs.get(channel, {}).values())
        for sub in subs:
            sub.deliver(message)
        return len(subs)
