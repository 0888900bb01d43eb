"""What a connection carries: an HTTP request, a WebSocket upgrade, frames (no I/O).

:class:`StreamTracker` watches both directions of one TCP connection and
turns each read into :class:`~harness.proxy.toxics.Chunk` items annotated with
the stream's structure, plus notes for the event log:

- upstream (client to server), the request head is held back until it is
  complete (it nearly always arrives in one read) so the connection is
  classified -- method, path, ``Upgrade: websocket`` -- *before* any toxic sees
  its first byte: a toxic that targets a path applies to the whole connection;
- downstream, the response head says whether the upgrade happened (101);
- after a 101, both directions are RFC 6455 frames and every frame end is a
  boundary (so a cut can fall between frames).

Anything that does not look like HTTP/1.x (the first bytes are not a request
line, the server speaks first, a head larger than ``max_head``) makes the
connection *opaque*: bytes pass through unannotated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import Literal, TypeAlias

from .frames import FrameInfo, FrameParser, Opcode
from .toxics import Chunk

__all__ = [
    "DOWNSTREAM",
    "UPSTREAM",
    "Direction",
    "FrameSeen",
    "FramingLost",
    "HttpRequest",
    "HttpResponse",
    "Note",
    "RequestSeen",
    "ResponseSeen",
    "StreamTracker",
    "error_response",
]

Direction: TypeAlias = Literal["upstream", "downstream"]
UPSTREAM: Direction = "upstream"
DOWNSTREAM: Direction = "downstream"

MAX_HEAD = 16 * 1024

_REQUEST_LINE = re.compile(rb"([A-Z]{1,20}) (\S{1,8192}) HTTP/(\d\.\d)")
_REQUEST_PREFIX = re.compile(
    rb"[A-Z]{0,20}(?: \S{0,8192}(?: (?:H(?:T(?:T(?:P(?:/(?:\d(?:\.\d?)?)?)?)?)?)?)?\r?)?)?"
)
_STATUS_LINE = re.compile(rb"HTTP/(\d\.\d) (\d{3})(?: (.*))?")


def _headers(lines: list[bytes]) -> tuple[tuple[str, str], ...]:
    out = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if sep:
            out.append((name.strip().decode("latin-1").lower(), value.strip().decode("latin-1")))
    return tuple(out)


def _header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    name = name.lower()
    for key, value in headers:
        if key == name:
            return value
    return None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """The request head a client sent (header names lower-cased)."""

    method: str
    path: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or ``None``."""
        return _header(self.headers, name)

    @property
    def websocket(self) -> bool:
        """A WebSocket opening handshake: ``GET`` with ``Upgrade: websocket``."""
        upgrade = self.header("upgrade") or ""
        return self.method == "GET" and "websocket" in upgrade.lower()

    @classmethod
    def parse(cls, head: bytes) -> HttpRequest | None:
        lines = head.split(b"\r\n")
        match = _REQUEST_LINE.fullmatch(lines[0])
        if not match:
            return None
        method, path, version = (g.decode("latin-1") for g in match.groups())
        return cls(method, path, version, _headers(lines[1:]))


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """The response head a server sent."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    @classmethod
    def parse(cls, head: bytes) -> HttpResponse | None:
        lines = head.split(b"\r\n")
        match = _STATUS_LINE.fullmatch(lines[0])
        if not match:
            return None
        reason = (match.group(3) or b"").decode("latin-1")
        return cls(int(match.group(2)), reason, _headers(lines[1:]))


def error_response(status: int, body: str) -> bytes:
    """A complete HTTP/1.1 answer refusing a request: ``status``, a plain-text ``body``, then close.

    What a server that rejects a WebSocket upgrade sends: the status line
    with its standard reason phrase, ``Content-Type``, ``Content-Length``
    and ``Connection: close`` (the connection ends after it).
    """
    payload = body.encode("utf-8")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + payload


@dataclass(frozen=True, slots=True)
class RequestSeen:
    """The connection is classified: ``request`` is ``None`` when it is not HTTP."""

    request: HttpRequest | None


@dataclass(frozen=True, slots=True)
class ResponseSeen:
    """The response head arrived; ``upgraded`` when it is a 101 to a WebSocket request."""

    response: HttpResponse
    upgraded: bool


@dataclass(frozen=True, slots=True)
class FrameSeen:
    """A control frame (close, ping, pong) went by in ``direction``."""

    direction: Direction
    frame: FrameInfo


@dataclass(frozen=True, slots=True)
class FramingLost:
    """A direction stopped parsing as WebSocket frames (a malformed header)."""

    direction: Direction
    offset: int
    reason: str


Note: TypeAlias = RequestSeen | ResponseSeen | FrameSeen | FramingLost

_HEAD, _WAIT, _FRAMES, _OPAQUE = "head", "wait", "frames", "opaque"


class StreamTracker:
    """Classifies one connection and annotates its bytes; see the module docstring.

    ``feed(direction, at, data)`` returns the chunks to pass on -- tagged with
    their direction, because a downstream read can release upstream bytes
    held while waiting for a request head that will never come -- and notes.
    """

    def __init__(self, max_head: int = MAX_HEAD) -> None:
        self.max_head = max_head
        self.request: HttpRequest | None = None
        self.response: HttpResponse | None = None
        self.classified = False
        self.upgraded = False
        self.offsets: dict[Direction, int] = {UPSTREAM: 0, DOWNSTREAM: 0}
        self.frames: dict[Direction, int] = {UPSTREAM: 0, DOWNSTREAM: 0}
        self._state: dict[Direction, str] = {UPSTREAM: _HEAD, DOWNSTREAM: _WAIT}
        self._held = bytearray()
        self._response_head = bytearray()
        self._parsers: dict[Direction, FrameParser] = {}

    @property
    def websocket(self) -> bool:
        """The client asked for a WebSocket upgrade and the server has not refused it."""
        if self.request is None or not self.request.websocket:
            return False
        return self.response is None or self.upgraded

    @property
    def opaque(self) -> bool:
        """Both directions pass unannotated (nothing more to learn)."""
        return self._state[UPSTREAM] == _OPAQUE and self._state[DOWNSTREAM] == _OPAQUE

    @property
    def held_bytes(self) -> int:
        return len(self._held)

    def framed(self, direction: Direction) -> bool:
        """Whether ``direction`` is followed frame by frame (after a 101, framing not lost)."""
        return self._state[direction] == _FRAMES

    def at_boundary(self, direction: Direction, *, message: bool = False) -> bool:
        """Whether the bytes of ``direction`` read so far end between two frames.

        With ``message``, between two messages: not inside a fragmented one
        either (a data frame may only be added there; a control frame fits
        between any two frames).  False when ``direction`` is not framed.
        """
        if self._state[direction] != _FRAMES:
            return False
        parser = self._parsers[direction]
        return not parser.in_frame and not (message and parser.fragmented)

    def next_boundary(self, direction: Direction, data: bytes, *, message: bool = False) -> int | None:
        """How many bytes of ``data``, the next read of ``direction``, come before the first boundary.

        ``0`` when the stream is at one already; ``None`` when no frame (with
        ``message``: no message) ends within ``data``, or ``direction`` is not
        framed.  Looks ahead on a copy of the parser: nothing is consumed.
        """
        if self._state[direction] != _FRAMES:
            return None
        if self.at_boundary(direction, message=message):
            return 0
        parser = self._parsers[direction]
        fragmented = parser.fragmented
        try:
            frames = parser.copy().feed(data)
        except ValueError:
            return None
        for frame in frames:
            if frame.opcode < Opcode.CLOSE:
                fragmented = not frame.header.fin
            if not (message and fragmented):
                return frame.end - parser.position
        return None

    def feed(
        self, direction: Direction, at: float, data: bytes
    ) -> tuple[list[tuple[Direction, Chunk]], list[Note]]:
        out: list[tuple[Direction, Chunk]] = []
        notes: list[Note] = []
        if direction == UPSTREAM:
            self._feed_upstream(at, data, out, notes)
        else:
            if self._state[UPSTREAM] == _HEAD:
                # A server that speaks first is not an HTTP server.
                self._go_opaque(at, out, notes)
            self._feed_downstream(at, data, out, notes)
        return out, notes

    # ------------------------------------------------------------ helpers

    def _chunk(self, direction: Direction, at: float, data: bytes, boundaries: tuple[int, ...] = (),
               framed: bool = False) -> Chunk:
        offset = self.offsets[direction]
        self.offsets[direction] = offset + len(data)
        return Chunk(at, data, offset, boundaries, framed)

    def _go_opaque(self, at: float, out: list[tuple[Direction, Chunk]], notes: list[Note]) -> None:
        self._state[UPSTREAM] = _OPAQUE
        self._state[DOWNSTREAM] = _OPAQUE
        self.classified = True
        notes.append(RequestSeen(None))
        if self._held:
            out.append((UPSTREAM, self._chunk(UPSTREAM, at, bytes(self._held))))
            self._held.clear()

    def _frames(self, direction: Direction, at: float, data: bytes,
                notes: list[Note]) -> Chunk:
        parser = self._parsers[direction]
        offset = self.offsets[direction]
        try:
            frames = parser.feed(data)
        except ValueError as exc:
            self._state[direction] = _OPAQUE
            notes.append(FramingLost(direction, offset, str(exc)))
            return self._chunk(direction, at, data)
        self.frames[direction] += len(frames)
        for frame in frames:
            if frame.opcode == Opcode.CLOSE:
                notes.append(FrameSeen(direction, frame))
        return self._chunk(direction, at, data, tuple(f.end for f in frames), True)

    def _feed_upstream(self, at: float, data: bytes, out: list[tuple[Direction, Chunk]],
                       notes: list[Note]) -> None:
        state = self._state[UPSTREAM]
        if state == _OPAQUE:
            out.append((UPSTREAM, self._chunk(UPSTREAM, at, data)))
        elif state == _FRAMES:
            out.append((UPSTREAM, self._frames(UPSTREAM, at, data, notes)))
        else:
            self._held += data
            end = self._held.find(b"\r\n\r\n")
            if end < 0:
                first_line = bytes(self._held[: self._held.find(b"\n") + 1 or len(self._held)])
                looks_http = (
                    _REQUEST_PREFIX.fullmatch(first_line)
                    if b"\n" not in first_line
                    else _REQUEST_LINE.fullmatch(first_line.rstrip(b"\r\n"))
                )
                if not looks_http or len(self._held) > self.max_head:
                    self._go_opaque(at, out, notes)
                return
            head_end = end + 4
            held = bytes(self._held)
            self._held.clear()
            request = HttpRequest.parse(held[:end])
            if request is None:
                self._held += held
                self._go_opaque(at, out, notes)
                return
            self.request = request
            self.classified = True
            notes.append(RequestSeen(request))
            self._state[DOWNSTREAM] = _HEAD
            head = self._chunk(UPSTREAM, at, held[:head_end], (head_end,), True)
            if request.websocket:
                self._state[UPSTREAM] = _FRAMES
                self._parsers[UPSTREAM] = FrameParser(head_end)
                rest = held[head_end:]
                if rest:
                    tail = self._frames(UPSTREAM, at, rest, notes)
                    head = Chunk.join([head, tail], at)
                out.append((UPSTREAM, head))
            else:
                self._state[UPSTREAM] = _OPAQUE
                out.append((UPSTREAM, head))
                if head_end < len(held):
                    out.append((UPSTREAM, self._chunk(UPSTREAM, at, held[head_end:])))

    def _feed_downstream(self, at: float, data: bytes, out: list[tuple[Direction, Chunk]],
                         notes: list[Note]) -> None:
        state = self._state[DOWNSTREAM]
        if state == _OPAQUE:
            out.append((DOWNSTREAM, self._chunk(DOWNSTREAM, at, data)))
            return
        if state == _FRAMES:
            out.append((DOWNSTREAM, self._frames(DOWNSTREAM, at, data, notes)))
            return
        # state == _HEAD: the response head, possibly spread over reads.
        before = len(self._response_head)
        self._response_head += data
        end = self._response_head.find(b"\r\n\r\n", max(0, before - 3))
        if end < 0:
            if len(self._response_head) > self.max_head:
                self._state[DOWNSTREAM] = _OPAQUE
                self._response_head.clear()
                out.append((DOWNSTREAM, self._chunk(DOWNSTREAM, at, data)))
            else:
                out.append((DOWNSTREAM, self._chunk(DOWNSTREAM, at, data, (), True)))
            return
        split = end + 4 - before
        head_end = self.offsets[DOWNSTREAM] + split
        response = HttpResponse.parse(bytes(self._response_head[:end]))
        self._response_head.clear()
        if response is None:
            self._state[DOWNSTREAM] = _OPAQUE
            out.append((DOWNSTREAM, self._chunk(DOWNSTREAM, at, data)))
            return
        self.response = response
        upgraded = response.status == 101 and self.request is not None and self.request.websocket
        self.upgraded = upgraded
        notes.append(ResponseSeen(response, upgraded))
        head = self._chunk(DOWNSTREAM, at, data[:split], (head_end,), True)
        rest = data[split:]
        if upgraded:
            self._state[DOWNSTREAM] = _FRAMES
            self._parsers[DOWNSTREAM] = FrameParser(head_end)
            if rest:
                head = Chunk.join([head, self._frames(DOWNSTREAM, at, rest, notes)], at)
            out.append((DOWNSTREAM, head))
            return
        # Not upgraded: whatever follows is an HTTP body or another protocol.
        self._state[DOWNSTREAM] = _OPAQUE
        self._state[UPSTREAM] = _OPAQUE
        out.append((DOWNSTREAM, head))
        if rest:
            out.append((DOWNSTREAM, self._chunk(DOWNSTREAM, at, rest)))
