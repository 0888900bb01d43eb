"""Python WebSocket clients for multi-party tests (the ``ws_client`` fixture).

:class:`WsClient` speaks to any app: it sends what it is given and matches
what arrives (JSON frames typed by a key, text and binary frames by their
payload).  :class:`NovaClient` is its subclass for the reference (Nova)
protocol: it waits for ``connection_established``, authenticates, subscribes
and publishes.

Both are synchronous, so they mix with pytest-playwright's sync API: a
background thread reads every frame into a history, and the assertions look
at history *and* the future (a frame that arrived before ``expect`` was
called is not missed).  Vocabulary in the spirit of Phoenix.ChannelTest and
Django Channels' ``WebsocketCommunicator``::

    with WsClient("ws://127.0.0.1:8000/chat") as bob:
        bob.send({"type": "chat", "user": "bob", "text": "hi"})
        bob.expect("chat", match={"user": "bob"})
        bob.send("ping")
        bob.expect(text="pong")
        bob.expect_nothing(within=0.2)

    alice = ws_client()                       # Nova: connected and authenticated
    alice.subscribe("general")
    confirmation = alice.publish("general", "hello")
    alice.expect("channel_message", match={"content": "hello"})
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
from datetime import UTC, datetime
from typing import Any, Self

from websockets.exceptions import ConnectionClosed, InvalidHandshake, ProtocolError
from websockets.sync.client import ClientConnection, connect

from .errors import ProtocolClientError, WaitTimeoutError
from .matching import Match, TextMatch, describe_frames, describe_match, payload_matches, type_of

__all__ = ["NovaClient", "ProtocolClientError", "ReceivedFrame", "WsClient"]

_MiB = 1024 * 1024


@dataclass(frozen=True)
class ReceivedFrame:
    """One frame a client received.

    ``raw`` is the payload as it arrived (``str`` for a text frame, ``bytes``
    for a binary one); ``message`` is the parsed JSON of a text frame, or
    None when the frame is binary or not JSON (``is_json`` tells a JSON
    ``null`` apart); ``type`` is the value at the client's ``type_key``, or
    None; ``at`` is a ``time.monotonic()`` reading.
    """

    raw: str | bytes
    message: Any = None
    is_json: bool = False
    type: str | None = None
    at: float = field(default_factory=time.monotonic)

    @property
    def is_binary(self) -> bool:
        return isinstance(self.raw, bytes)


def _parse(raw: str | bytes, type_key: str) -> ReceivedFrame:
    if isinstance(raw, bytes):
        return ReceivedFrame(raw)
    try:
        message = json.loads(raw)
    except json.JSONDecodeError:
        return ReceivedFrame(raw)
    return ReceivedFrame(raw, message, True, type_of(message, type_key))


class WsClient:
    """A WebSocket client for any app (python-websockets, sync API).

    ``connect()`` opens the socket and starts the reader; nothing app-specific
    is awaited.  JSON frames are typed by ``type_key`` (a dotted path such as
    ``meta.kind`` reaches into nested objects).  Every wait has a deadline
    (``timeout`` seconds, default ``default_timeout``) and fails with
    :class:`WaitTimeoutError` listing the frames received; a wait still
    pending when the socket closes fails at once, naming the close code.
    """

    #: The field of a frame a dict ``match`` is compared with; None: the whole frame.
    _match_in: str | None = None

    def __init__(
        self,
        url: str,
        *,
        client_id: str | None = None,
        default_timeout: float = 5.0,
        origin: str | None = None,
        max_size: int | None = 16 * _MiB,
        type_key: str = "type",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.client_id = client_id
        self.default_timeout = default_timeout
        self.type_key = type_key
        self._origin = origin
        self._max_size = max_size
        self._headers = dict(headers or {})
        self._conn: ClientConnection | None = None
        self._frames: list[ReceivedFrame] = []
        self._consumed: set[int] = set()
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._closed = threading.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None

    # ------------------------------------------------------------ lifecycle

    def connect(self, timeout: float | None = None) -> Self:
        """Open the socket (within ``timeout`` s) and start reading; return the client.

        Raises :class:`ProtocolClientError` when the server refuses or does
        not answer the handshake.
        """
        if self._conn is not None:
            raise ProtocolClientError(f"{self._label}: connect() was already called; make a new client to reconnect")
        timeout = self._timeout(timeout)
        headers = dict(self._headers)
        if self._origin:
            headers["Origin"] = self._origin
        try:
            # Entered as a context manager, as websockets asks; close() closes it.
            self._conn = connect(
                self.url,
                open_timeout=timeout,
                close_timeout=timeout,
                additional_headers=headers or None,
                max_size=self._max_size,
            ).__enter__()
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            raise ProtocolClientError(
                f"{self._label}: expected the WebSocket handshake with {self.url} to succeed within "
                f"{timeout:.1f} s; it failed: {type(exc).__name__}: {exc}. Check that the server is up "
                "at that URL and path, and that no fault (reject_handshakes, hold_handshakes) is active"
            ) from exc
        self._reader = threading.Thread(target=self._read, name=f"ws-client-{self.client_id or self.url}", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            for raw in conn:
                frame = _parse(raw, self.type_key)
                with self._cond:
                    self._frames.append(frame)
                    self._cond.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self._cond:
                if conn.close_code is not None:
                    self.close_code, self.close_reason = conn.close_code, conn.close_reason or ""
                elif self.close_code is None:
                    self.close_code, self.close_reason = 1006, ""
                self._closed.set()
                self._cond.notify_all()

    def close(self, code: int = 1000, reason: str = "", timeout: float | None = None) -> int | None:
        """Close with ``code`` and ``reason``, wait up to ``timeout`` s for the handshake; return the close code seen.

        The code returned (and kept in :attr:`close_code`) is the one the
        server sent back, 1006 when the socket ended without a close frame,
        None when the client never connected.  Closing twice is harmless.
        """
        if self._conn is not None and not self._closed.is_set():
            try:
                self._conn.close(code, reason)
            except ProtocolError as exc:
                raise ProtocolClientError(
                    f"{self._label}: close code {code} with reason {reason!r} cannot be sent ({exc}); "
                    "use 1000 or a code from 3000 to 4999, and a reason under 124 bytes"
                ) from exc
        if self._conn is not None:
            self._closed.wait(self._timeout(timeout))
        return self.close_code

    @property
    def closed(self) -> bool:
        """Whether the socket has closed (either side)."""
        return self._closed.is_set()

    def wait_closed(self, timeout: float | None = None) -> int:
        """Wait until the socket closes (the server closing it, typically); return the close code."""
        timeout = self._timeout(timeout)
        if not self._closed.wait(timeout):
            raise WaitTimeoutError(
                f"{self._label}: expected the socket to close within {timeout:.1f} s; it is still open. "
                f"{self._received()}\nFix: make the server close it, or call close() to close it from this side"
            )
        assert self.close_code is not None
        return self.close_code

    # ------------------------------------------------------------ sending

    def send(self, payload: Any) -> None:
        """Send one frame: ``str`` as a text frame as is, ``bytes`` as a binary frame, anything else as JSON text."""
        if self._conn is None:
            raise ProtocolClientError(f"{self._label} is not connected; call connect() first")
        frame: str | bytes
        if isinstance(payload, (str, bytes)):
            frame = payload
        elif isinstance(payload, (bytearray, memoryview)):
            frame = bytes(payload)
        else:
            try:
                frame = json.dumps(payload)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"{self._label}: send() takes str (a text frame), bytes (a binary frame) or a "
                    f"JSON-serializable value; {type(payload).__name__} is not one: {exc}"
                ) from exc
        try:
            self._conn.send(frame)
        except ConnectionClosed as exc:
            raise ProtocolClientError(
                f"{self._label}: cannot send, the socket is closed (code {self._conn.close_code}, "
                f"reason {self._conn.close_reason!r}). {self._received()}"
            ) from exc

    # ------------------------------------------------------------ history

    @property
    def frames(self) -> list[ReceivedFrame]:
        """Every frame received so far, oldest first (JSON, text and binary)."""
        with self._cond:
            return list(self._frames)

    @property
    def messages(self) -> list[Any]:
        """The parsed JSON of every JSON frame received so far, oldest first."""
        with self._cond:
            return [f.message for f in self._frames if f.is_json]

    # ------------------------------------------------------------ assertions

    def expect(
        self,
        type: str | None = None,
        *,
        match: Match | None = None,
        text: TextMatch | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Wait for the first not-yet-expected frame matching every criterion given; return it.

        ``type`` is the value at ``type_key``; ``match`` is a dict compared as
        a subset of the whole frame (nested dicts as subsets too) or a
        predicate on the parsed frame; ``text`` is the exact payload, a
        compiled regex searched in it, or a predicate on the raw payload
        (``str`` or ``bytes``), and is the way to match text (non-JSON) and
        binary frames.  ``type`` and ``match`` only match JSON objects.

        Returns the parsed JSON of a JSON frame, else the raw ``str``/``bytes``.
        Frames received before the call count, and are consumed one by one:
        two ``expect`` calls see two different frames, and a frame skipped by
        one is still there for the next.
        """
        what = " ".join(filter(None, ["a frame", describe_match(type, match, text)]))
        return self._result(self._wait(self._criteria(type, match, text), what, timeout, consume=True))

    def expect_nothing(
        self,
        type: str | None = None,
        *,
        match: Match | None = None,
        text: TextMatch | None = None,
        within: float = 0.5,
    ) -> None:
        """Assert that no not-yet-expected frame matching the criteria arrives within ``within`` s.

        A matching frame already received (and not returned by ``expect``)
        fails too.  With no criteria every frame counts, JSON or not.
        Raises AssertionError naming the frame.
        """
        pred = self._criteria(type, match, text)
        deadline = time.monotonic() + within
        with self._cond:
            while True:
                for index, frame in enumerate(self._frames):
                    if index not in self._consumed and pred(frame):
                        asked = describe_match(type, match, text)
                        raise AssertionError(
                            f"{self._label}: expected no frame {asked + ' ' if asked else ''}within {within} s, "
                            f"got:\n{describe_frames([frame.raw], width=500)}\n"
                            "Fix: expect() it first if it is expected, or narrow the criteria"
                        )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    # ------------------------------------------------------------ internals

    def _criteria(
        self, type: str | None, match: Match | None, text: TextMatch | None
    ) -> Callable[[ReceivedFrame], bool]:
        def pred(frame: ReceivedFrame) -> bool:
            return payload_matches(
                frame.raw, self._matchable(frame), type=type, match=match, text=text,
                type_key=self.type_key, match_in=self._match_in,
            )

        return pred

    def _matchable(self, frame: ReceivedFrame) -> Mapping[str, Any] | None:
        """What ``type`` and ``match`` see of a frame: its JSON object, or None."""
        return frame.message if isinstance(frame.message, Mapping) else None

    def _result(self, frame: ReceivedFrame) -> Any:
        """What ``expect`` returns for a frame."""
        return frame.message if frame.is_json else frame.raw

    def _wait(
        self, pred: Callable[[ReceivedFrame], bool], what: str, timeout: float | None, *, consume: bool
    ) -> ReceivedFrame:
        timeout = self._timeout(timeout)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, frame in enumerate(self._frames):
                    if consume and index in self._consumed:
                        continue
                    if pred(frame):
                        if consume:
                            self._consumed.add(index)
                        return frame
                if self._closed.is_set():
                    raise WaitTimeoutError(
                        f"{self._label}: expected {what}, but the socket closed before one arrived "
                        f"(code {self.close_code}, reason {self.close_reason!r}). {self._received()}\n"
                        f"Fix: {self._hint()}; if the close is the server's answer to what the test "
                        "sent, assert it with wait_closed() and close_code"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeoutError(
                        f"{self._label}: expected {what} within {timeout:.1f} s. {self._received()}\n"
                        f"Fix: {self._hint()}; if it is not listed, the server did not send it in time "
                        "(pass a longer timeout= if it is slow)"
                    )
                self._cond.wait(remaining)

    def _hint(self) -> str:
        scope = "the whole frame" if self._match_in is None else f"the frame's {self._match_in!r} field"
        return (
            f"if the frame is listed, check the criteria: frames are typed by {self.type_key!r} (type_key=), "
            f"a dict match= is compared with {scope}, text= with the raw payload (the only way to match "
            "text and binary frames), and a frame returned by an earlier expect() is not matched again"
        )

    def _received(self) -> str:
        """The received-frames listing of wait messages."""
        with self._cond:  # re-entrant: the waits call this holding it
            frames = list(self._frames)
            consumed = len(self._consumed)
        already = f", {consumed} already returned by expect()" if consumed else ""
        return f"Frames received ({len(frames)}{already}):\n{describe_frames([f.raw for f in frames])}"

    @property
    def _label(self) -> str:
        return f"client {self.client_id!r}" if self.client_id is not None else f"client of {self.url}"

    def _timeout(self, timeout: float | None) -> float:
        return self.default_timeout if timeout is None else timeout

    def __enter__(self) -> Self:
        """Connect (unless already connected) and return the client; ``__exit__`` closes it."""
        if self._conn is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open" if self._conn is not None else "not connected"
        name = self.client_id if self.client_id is not None else self.url
        return f"<{type(self).__name__} {name!r} {state} close_code={self.close_code}>"


def _now_iso() -> str:
    """The current UTC time as ISO-8601 with milliseconds and a ``Z``, as browsers write it."""
    ms = time.time_ns() // 1_000_000
    stamp = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class NovaClient(WsClient):
    """A Nova protocol client: a :class:`WsClient` that speaks the reference protocol.

    ``connect()`` opens the socket and waits for ``connection_established``;
    ``authenticate()`` sends ``connect`` and waits for ``auth_success``.
    ``expect``'s dict ``match`` is compared with the envelope's ``data``.
    Frames are seen as dicts (a frame that is not a JSON object as
    ``{"type": None, "raw": ...}``) in ``messages``, ``expect`` and ``match``
    predicates.  Every wait has a deadline (``timeout`` seconds, default
    ``default_timeout``) and fails with :class:`WaitTimeoutError` listing the
    frames seen.
    """

    _match_in = "data"

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        default_timeout: float = 5.0,
        origin: str | None = None,
        max_size: int | None = 16 * _MiB,
    ) -> None:
        super().__init__(
            url, client_id=client_id, default_timeout=default_timeout, origin=origin, max_size=max_size
        )
        self.client_id: str = client_id
        self.metadata: dict[str, Any] | None = None

    # ------------------------------------------------------------ lifecycle

    def connect(self, timeout: float | None = None) -> Self:
        """Open the socket and wait for ``connection_established``."""
        timeout = self._timeout(timeout)
        super().connect(timeout)
        self.expect("connection_established", timeout=timeout)
        return self

    def authenticate(self, api_key: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Send ``connect`` with ``api_key``; return ``auth_success``'s data or raise."""
        op = self.send("connect", {"api_key": api_key, "metadata": {"type": "test", "created": _now_iso()}})
        reply = self._reply(op, ("auth_success",), timeout)
        self.metadata = reply["data"]["metadata"]
        return dict(reply["data"])

    # ------------------------------------------------------------ operations

    # The Nova vocabulary predates WsClient: send() builds an envelope from a
    # type and its data, and WsClient's send(payload) is send_raw() here.
    def send(  # type: ignore[override]
        self, type: str, data: Mapping[str, Any] | None = None, *, id: str | None = None
    ) -> str:
        """Send one protocol message (an envelope of ``type`` and ``data``); return its operation id."""
        if not isinstance(type, str):
            raise TypeError(
                f"{self._label}: NovaClient.send(type, data) takes a message type, got "
                f"{type.__class__.__name__}; to send a frame as is, use send_raw()"
            )
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

    def send_raw(self, payload: Any) -> None:
        """Send a frame as is (for tests of invalid input): see :meth:`WsClient.send`."""
        super().send(payload)

    def subscribe(self, channel: str, *, since_seq: int | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Subscribe; return ``subscribed``'s data ({channel, last_seq})."""
        data: dict[str, Any] = {"channel": channel}
        if since_seq is not None:
            data["since_seq"] = since_seq
        op = self.send("subscribe", data)
        return dict(self._reply(op, ("subscribed",), timeout)["data"])

    def unsubscribe(self, channel: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Unsubscribe; return ``unsubscribed``'s data ({channel})."""
        op = self.send("unsubscribe", {"channel": channel})
        return dict(self._reply(op, ("unsubscribed",), timeout)["data"])

    def publish(
        self, channel: str, content: str, *, message_id: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Publish; return ``delivery_confirmation``'s data ({message_id, channel, seq})."""
        op = self.send("publish", {"channel": channel, "content": content}, id=message_id)
        return dict(self._reply(op, ("delivery_confirmation",), timeout)["data"])

    def ping(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Send ``ping``; return the ``pong`` message."""
        op = self.send("ping")
        return self._reply(op, ("pong",), timeout)

    def _reply(self, op: str, types: tuple[str, ...], timeout: float | None) -> dict[str, Any]:
        def is_reply(frame: ReceivedFrame) -> bool:
            m = self._as_dict(frame)
            if m.get("type") in types and m.get("id") == op:
                return True
            if m.get("type") == "delivery_confirmation" and "delivery_confirmation" in types:
                return bool((m.get("data") or {}).get("message_id") == op)
            data = m.get("data") or {}
            return m.get("type") == "error" and (m.get("id") == op or data.get("operation_id") == op)

        frame = self._wait(is_reply, f"a reply of type {'/'.join(types)} to operation {op}", timeout, consume=False)
        message = self._as_dict(frame)
        if message.get("type") == "error":
            data = message.get("data", {})
            raise ProtocolClientError(
                f"client {self.client_id!r}: operation {op} failed: "
                f"{data.get('code')}: {data.get('message')} (details: {data.get('details')})"
            )
        return message

    # ------------------------------------------------------------ assertions

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message received so far, oldest first (see the class docstring for non-objects)."""
        with self._cond:
            return [self._as_dict(f) for f in self._frames]

    def expect(
        self,
        type: str | None = None,
        match: Match | None = None,
        *,
        text: TextMatch | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Wait for the next not-yet-expected frame of ``type`` matching ``match``; return it.

        ``match`` is a dict compared against the message's ``data`` (nested
        dicts compare as subsets), or a predicate on the whole message;
        ``text`` matches the raw payload (see :meth:`WsClient.expect`).
        Frames are consumed one by one: two ``expect`` calls for the same type
        see two different frames, and a frame skipped by one ``expect`` is
        still there for the next.
        """
        result: dict[str, Any] = super().expect(type, match=match, text=text, timeout=timeout)
        return result

    def expect_nothing(
        self,
        type: str | None = None,
        *,
        within: float = 0.2,
        match: Match | None = None,
        text: TextMatch | None = None,
    ) -> None:
        """Assert that no new frame (of ``type`` matching ``match``) arrives within ``within`` s."""
        super().expect_nothing(type, match=match, text=text, within=within)

    def _as_dict(self, frame: ReceivedFrame) -> dict[str, Any]:
        if isinstance(frame.message, dict):
            return frame.message
        if frame.is_json:
            return {"type": None, "raw": frame.message}
        raw = frame.raw if isinstance(frame.raw, str) else frame.raw.decode("utf-8", "replace")
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            return {"type": None, "raw": raw}
        return parsed if isinstance(parsed, dict) else {"type": None, "raw": parsed}

    def _matchable(self, frame: ReceivedFrame) -> Mapping[str, Any]:
        return self._as_dict(frame)

    def _result(self, frame: ReceivedFrame) -> dict[str, Any]:
        return self._as_dict(frame)
