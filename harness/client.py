"""A Python Nova protocol client for multi-party tests (the ``ws_client`` fixture).

Synchronous, so it mixes with pytest-playwright's sync API: a background
thread reads every frame into a history, and the assertions look at history
*and* the future (a frame that arrived before ``expect`` was called is not
missed).  Vocabulary in the spirit of Phoenix.ChannelTest and Django
Channels' ``WebsocketCommunicator``::

    alice = ws_client()                       # connected and authenticated
    alice.subscribe("general")
    confirmation = alice.publish("general", "hello")
    alice.expect("channel_message", match={"content": "hello"})
    alice.expect_nothing(within=0.2)
    alice.close()
    assert alice.close_code == 1000
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from .errors import HarnessError, WaitTimeoutError
from .matching import describe_frames, frame_matches

__all__ = ["NovaClient", "ProtocolClientError", "ReceivedFrame"]


class ProtocolClientError(HarnessError):
    """The server answered an operation with an ``error`` frame, or closed the socket."""


@dataclass(frozen=True)
class ReceivedFrame:
    """One frame the client received: the parsed message (or raw text) and when."""

    message: dict[str, Any]
    raw: str
    at: float = field(default_factory=time.monotonic)

    @property
    def type(self) -> str:
        return str(self.message.get("type"))


def _now_iso() -> str:
    from reference_server.protocol import now_iso

    return now_iso()


class NovaClient:
    """A Nova protocol client over a real WebSocket (python-websockets, sync API).

    ``connect()`` opens the socket and waits for ``connection_established``;
    ``authenticate()`` sends ``connect`` and waits for ``auth_success``.
    Every wait has a deadline (``timeout`` seconds, default ``default_timeout``)
    and fails with :class:`WaitTimeoutError` listing the frames seen.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        default_timeout: float = 5.0,
        origin: str | None = None,
        max_size: int | None = 16 * 1024 * 1024,
    ) -> None:
        self.url = url
        self.client_id = client_id
        self.default_timeout = default_timeout
        self._origin = origin
        self._max_size = max_size
        self._conn: ClientConnection | None = None
        self._frames: list[ReceivedFrame] = []
        self._consumed: set[int] = set()
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._closed = threading.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.metadata: dict[str, Any] | None = None

    # ------------------------------------------------------------ lifecycle

    def connect(self, timeout: float | None = None) -> NovaClient:
        """Open the socket and wait for ``connection_established``."""
        timeout = self._timeout(timeout)
        headers = {"Origin": self._origin} if self._origin else None
        # Entered as a context manager, as websockets asks; close() closes it.
        self._conn = connect(
            self.url, open_timeout=timeout, additional_headers=headers, max_size=self._max_size
        ).__enter__()
        self._reader = threading.Thread(target=self._read, name=f"nova-client-{self.client_id}", daemon=True)
        self._reader.start()
        self.expect("connection_established", timeout=timeout)
        return self

    def _read(self) -> None:
        assert self._conn is not None
        try:
            for raw in self._conn:
                text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
                try:
                    message = json.loads(text)
                    if not isinstance(message, dict):
                        message = {"type": None, "raw": message}
                except json.JSONDecodeError:
                    message = {"type": None, "raw": text}
                with self._cond:
                    self._frames.append(ReceivedFrame(message, text))
                    self._cond.notify_all()
        except ConnectionClosed:
            pass
        finally:
            conn = self._conn
            with self._cond:
                if conn is not None and conn.close_code is not None:
                    self.close_code, self.close_reason = conn.close_code, conn.close_reason or ""
                elif self.close_code is None:
                    self.close_code, self.close_reason = 1006, ""
                self._closed.set()
                self._cond.notify_all()

    def authenticate(self, api_key: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Send ``connect`` with ``api_key``; return ``auth_success``'s data or raise."""
        op = self.send("connect", {"api_key": api_key, "metadata": {"type": "test", "created": _now_iso()}})
        reply = self._reply(op, ("auth_success",), timeout)
        self.metadata = reply["data"]["metadata"]
        return dict(reply["data"])

    def close(self, code: int = 1000, reason: str = "", *, timeout: float | None = None) -> int | None:
        """Close with ``code`` and wait for the closing handshake; return the close code seen."""
        if self._conn is not None and not self._closed.is_set():
            try:
                self._conn.close(code, reason)
            except Exception:  # noqa: BLE001, S110 - already closing; the reader records the code
                pass
        self._closed.wait(self._timeout(timeout))
        return self.close_code

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait_closed(self, timeout: float | None = None) -> int:
        """Wait until the server closes the socket; return the close code."""
        timeout = self._timeout(timeout)
        if not self._closed.wait(timeout):
            raise WaitTimeoutError(
                f"client {self.client_id!r}: expected the socket to close within {timeout:.1f} s; "
                f"it is still open. Frames received:\n{describe_frames(self.messages)}"
            )
        assert self.close_code is not None
        return self.close_code

    # ------------------------------------------------------------ operations

    def send(self, type: str, data: Mapping[str, Any] | None = None, *, id: str | None = None) -> str:
        """Send one protocol message; return its operation id."""
        op = id or uuid.uuid4().hex
        frame = {
            "type": type,
            "data": dict(data or {}),
            "timestamp": _now_iso(),
            "client_id": self.client_id,
            "id": op,
        }
        self.send_raw(json.dumps(frame))
        return op

    def send_raw(self, payload: str | bytes) -> None:
        """Send a frame as is (for tests of invalid input)."""
        if self._conn is None:
            raise ProtocolClientError(f"client {self.client_id!r} is not connected; call connect() first")
        self._conn.send(payload)

    def subscribe(self, channel: str, *, since_seq: int | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Subscribe; return ``subscribed``'s data ({channel, last_seq})."""
        data: dict[str, Any] = {"channel": channel}
        if since_seq is not None:
            data["since_seq"] = since_seq
        op = self.send("subscribe", data)
        return dict(self._reply(op, ("subscribed",), timeout)["data"])

    def unsubscribe(self, channel: str, *, timeout: float | None = None) -> dict[str, Any]:
        op = self.send("unsubscribe", {"channel": channel})
        return dict(self._reply(op, ("unsubscribed",), timeout)["data"])

    def publish(
        self, channel: str, content: str, *, message_id: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Publish; return ``delivery_confirmation``'s data ({message_id, channel, seq})."""
        op = self.send("publish", {"channel": channel, "content": content}, id=message_id)
        return dict(self._reply(op, ("delivery_confirmation",), timeout)["data"])

    def ping(self, *, timeout: float | None = None) -> dict[str, Any]:
        op = self.send("ping")
        return self._reply(op, ("pong",), timeout)

    def _reply(self, op: str, types: tuple[str, ...], timeout: float | None) -> dict[str, Any]:
        def is_reply(m: dict[str, Any]) -> bool:
            if m.get("type") in types and m.get("id") == op:
                return True
            if m.get("type") == "delivery_confirmation" and "delivery_confirmation" in types:
                return bool(m.get("data", {}).get("message_id") == op)
            data = m.get("data") or {}
            return m.get("type") == "error" and (m.get("id") == op or data.get("operation_id") == op)

        frame = self._wait(is_reply, f"a reply of type {'/'.join(types)} to operation {op}", timeout, consume=False)
        if frame.message.get("type") == "error":
            data = frame.message.get("data", {})
            raise ProtocolClientError(
                f"client {self.client_id!r}: operation {op} failed: "
                f"{data.get('code')}: {data.get('message')} (details: {data.get('details')})"
            )
        return frame.message

    # ------------------------------------------------------------ assertions

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message received so far, oldest first."""
        with self._cond:
            return [f.message for f in self._frames]

    def expect(
        self, type: str | None = None, match: Mapping[str, Any] | Callable[[dict[str, Any]], bool] | None = None,
        *, timeout: float | None = None,
    ) -> dict[str, Any]:
        """Wait for the next not-yet-expected frame of ``type`` matching ``match``; return it.

        ``match`` is a dict compared against the message's ``data`` (nested
        dicts compare as subsets), or a predicate on the whole message.  Frames
        are consumed one by one: two ``expect`` calls for the same type see two
        different frames, and a frame skipped by one ``expect`` is still there for the next.
        """
        def pred(m: dict[str, Any]) -> bool:
            return frame_matches(m, type=type, match=match)

        what = f"a frame of type {type!r}" if type else "a frame"
        if match is not None:
            what += f" matching {match!r}"
        return self._wait(pred, what, timeout, consume=True).message

    def expect_nothing(
        self, type: str | None = None, *, within: float = 0.2,
        match: Mapping[str, Any] | Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Assert that no new frame (of ``type`` matching ``match``) arrives within ``within`` s."""
        deadline = time.monotonic() + within
        with self._cond:
            while True:
                for index, frame in enumerate(self._frames):
                    if index in self._consumed:
                        continue
                    if frame_matches(frame.message, type=type, match=match):
                        raise AssertionError(
                            f"client {self.client_id!r}: expected no {type or 'frame'} within {within} s, "
                            f"got {frame.raw[:500]}"
                        )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _wait(
        self, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float | None, *, consume: bool
    ) -> ReceivedFrame:
        timeout = self._timeout(timeout)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, frame in enumerate(self._frames):
                    if consume and index in self._consumed:
                        continue
                    if pred(frame.message):
                        if consume:
                            self._consumed.add(index)
                        return frame
                if self._closed.is_set():
                    raise WaitTimeoutError(
                        f"client {self.client_id!r}: expected {what}, but the socket closed "
                        f"(code {self.close_code}, reason {self.close_reason!r}). Frames received:\n"
                        f"{describe_frames([f.message for f in self._frames])}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeoutError(
                        f"client {self.client_id!r}: expected {what} within {timeout:.1f} s. "
                        f"Frames received:\n{describe_frames([f.message for f in self._frames])}"
                    )
                self._cond.wait(remaining)

    def _timeout(self, timeout: float | None) -> float:
        return self.default_timeout if timeout is None else timeout

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<NovaClient {self.client_id!r} {state} close_code={self.close_code}>"
