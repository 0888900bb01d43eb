"""Stand-ins for Playwright's ``WebSocketRoute`` ends: a :class:`FrameJournal` without a browser.

They have what :meth:`harness.FrameJournal._on_socket` uses (``url``,
``connect_to_server``, ``send``, ``on_message``, ``on_close``, ``close``) and
no Playwright internals, so the journal watches their closes through the
public ``on_close`` handlers.  The test plays both peers: :meth:`FakeEnd.emit`
is a frame arriving at that end (the page sending on the page side, the
server sending on the server side), :meth:`FakeEnd.closed_by_peer` a close.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class FakeEnd:
    """One end of a routed socket: records what the journal sends it and the close it forwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: list[str | bytes] = []
        self.closed_with: tuple[int | None, str | None] | None = None
        self.fail_sends = False
        self._on_message: Callable[[str | bytes], Any] | None = None
        self._on_close: Callable[[int | None, str | None], Any] | None = None

    # ------------------------------------------------------------ the route API the journal uses

    def send(self, payload: str | bytes) -> None:
        if self.fail_sends:
            raise RuntimeError("WebSocket is already in CLOSING or CLOSED state")
        self.sent.append(payload)

    def on_message(self, handler: Callable[[str | bytes], Any]) -> None:
        self._on_message = handler

    def on_close(self, handler: Callable[[int | None, str | None], Any]) -> None:
        self._on_close = handler

    def close(self, *, code: int | None = None, reason: str | None = None) -> None:
        self.closed_with = (code, reason)

    # ------------------------------------------------------------ what the test makes happen

    def emit(self, payload: str | bytes) -> None:
        """A frame arrives at this end from its peer (the journal forwards it to the other end)."""
        assert self._on_message is not None, "the journal did not listen for messages on this end"
        self._on_message(payload)

    def closed_by_peer(self, code: int | None = 1000, reason: str | None = "") -> None:
        """This end's peer closed the connection."""
        assert self._on_close is not None, "the journal did not listen for closes on this end"
        self._on_close(code, reason)


class FakeRoute(FakeEnd):
    """The page side of a routed socket; :meth:`connect_to_server` gives its server side."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.server = FakeEnd(url)
        self.connected = False

    def connect_to_server(self) -> FakeEnd:
        assert not self.connected, "connect_to_server called twice"
        self.connected = True
        return self.server
