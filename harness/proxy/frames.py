"""RFC 6455 frame headers, parsed incrementally from a byte stream (no I/O).

The proxy never decodes payloads: it only needs to know where each frame ends,
so that a fault can cut a stream *between* frames, and it reads the status
code of close frames for the event log.  :class:`FrameParser` accepts the
stream in arbitrary pieces (a header may straddle two reads) and reports each
frame once its last byte has been seen.

Frame header layout (RFC 6455 section 5.2)::

    byte 0: FIN RSV1 RSV2 RSV3 opcode(4)
    byte 1: MASK payload-length(7)       126 -> 16-bit length follows,
                                         127 -> 64-bit length follows
    [2 or 8 bytes extended length] [4 bytes masking key if MASK]
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "OPCODE_NAMES",
    "FrameHeader",
    "FrameInfo",
    "FrameParser",
    "Opcode",
    "close_payload",
    "encode_frame",
    "parse_frame_header",
    "unmask",
]

MAX_HEADER = 14
"""2 bytes + 8 extended length + 4 masking key."""


class Opcode:
    """Frame opcodes (RFC 6455 section 5.2)."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


OPCODE_NAMES = {0x0: "continuation", 0x1: "text", 0x2: "binary", 0x8: "close", 0x9: "ping", 0xA: "pong"}


class FrameHeader(NamedTuple):
    """One frame header: flags, opcode, payload length and masking key (``None`` if unmasked)."""

    fin: bool
    rsv: int
    opcode: int
    payload_length: int
    mask: bytes | None
    header_length: int

    @property
    def masked(self) -> bool:
        return self.mask is not None

    @property
    def frame_length(self) -> int:
        """Header plus payload, in bytes."""
        return self.header_length + self.payload_length

    @property
    def is_control(self) -> bool:
        return self.opcode >= 0x8


class FrameInfo(NamedTuple):
    """A whole frame seen in the stream: its header, where it starts and ends.

    ``start`` and ``end`` are absolute stream offsets (``end`` is one past the
    last byte).  ``payload`` is the unmasked payload of control frames (at most
    125 bytes by the RFC); data frame payloads are never kept.
    """

    header: FrameHeader
    start: int
    end: int
    payload: bytes | None = None

    @property
    def opcode(self) -> int:
        return self.header.opcode

    @property
    def close_code(self) -> int | None:
        """The status code of a close frame, ``None`` for other frames or an empty close."""
        if self.header.opcode != Opcode.CLOSE or not self.payload or len(self.payload) < 2:
            return None
        return int.from_bytes(self.payload[:2], "big")


def parse_frame_header(buf: bytes | bytearray | memoryview) -> FrameHeader | None:
    """Parse the frame header at the start of ``buf``; ``None`` if ``buf`` is too short.

    Raises ``ValueError`` for a 64-bit length with its most significant bit set
    (forbidden by the RFC), which also means the stream is not WebSocket frames.
    """
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    length = b1 & 0x7F
    pos = 2
    if length == 126:
        if len(buf) < 4:
            return None
        length = int.from_bytes(buf[2:4], "big")
        pos = 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length = int.from_bytes(buf[2:10], "big")
        if length >> 63:
            raise ValueError("64-bit frame length with the most significant bit set")
        pos = 10
    mask: bytes | None = None
    if b1 & 0x80:
        if len(buf) < pos + 4:
            return None
        mask = bytes(buf[pos : pos + 4])
        pos += 4
    return FrameHeader(
        fin=bool(b0 & 0x80),
        rsv=(b0 >> 4) & 0x7,
        opcode=b0 & 0x0F,
        payload_length=length,
        mask=mask,
        header_length=pos,
    )


def unmask(data: bytes, mask: bytes, start: int = 0) -> bytes:
    """XOR ``data`` with ``mask``; ``start`` is the payload index of ``data[0]``."""
    return bytes(b ^ mask[(start + i) % 4] for i, b in enumerate(data))


def encode_frame(opcode: int, payload: bytes, *, mask: bytes | None = None) -> bytes:
    """One whole frame (FIN set, RSV bits clear) carrying ``payload``.

    Unmasked as a server sends it, or masked with the 4-byte ``mask`` as a
    client must.  RSV1 clear means "not compressed", which is legal on a
    connection that negotiated permessage-deflate (RFC 7692 section 6).
    """
    if mask is not None and len(mask) != 4:
        raise ValueError(f"a masking key is 4 bytes, got {len(mask)}")
    if opcode >= 0x8 and len(payload) > 125:
        raise ValueError(f"a control frame carries at most 125 bytes, got {len(payload)}")
    b0 = 0x80 | opcode
    mask_bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        header = bytes((b0, mask_bit | n))
    elif n < 1 << 16:
        header = bytes((b0, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((b0, mask_bit | 127)) + n.to_bytes(8, "big")
    if mask is None:
        return header + payload
    return header + mask + unmask(payload, mask)


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame: the 2-byte status ``code``, then ``reason`` in UTF-8."""
    return code.to_bytes(2, "big") + reason.encode("utf-8")


class FrameParser:
    """Follows frame boundaries through one direction of a WebSocket stream.

    ``feed(data)`` returns the frames that *end* within ``data``.  Offsets are
    absolute: the parser starts at ``offset`` (the stream position of the
    first frame byte, i.e. just after the HTTP head) and advances by every byte
    fed.  State is a few integers and at most 14 buffered header bytes, so the
    cost per read is one header parse per frame, whatever the payload size.
    ``fragmented`` is true inside a fragmented message (the last data frame
    begun had FIN clear; control frames, which may come between fragments,
    leave it as it is), so a boundary can be told to be a message boundary.
    """

    __slots__ = ("_control", "_frame_start", "_header", "_header_buf", "_remaining", "fragmented",
                 "position")

    def __init__(self, offset: int = 0) -> None:
        self.position = offset
        self._header_buf = bytearray()
        self._header: FrameHeader | None = None
        self._frame_start = offset
        self._remaining = 0
        self._control: bytearray | None = None
        self.fragmented = False

    def copy(self) -> FrameParser:
        """An independent parser in the same state (to look ahead without consuming)."""
        clone = FrameParser(self.position)
        clone._header_buf = bytearray(self._header_buf)
        clone._header = self._header
        clone._frame_start = self._frame_start
        clone._remaining = self._remaining
        clone._control = None if self._control is None else bytearray(self._control)
        clone.fragmented = self.fragmented
        return clone

    @property
    def in_frame(self) -> bool:
        """True between the first byte of a frame and its last."""
        return self._header is not None or bool(self._header_buf)

    @property
    def frame_start(self) -> int:
        """Offset where the current (incomplete) frame began; ``position`` when between frames."""
        return self._frame_start if self.in_frame else self.position

    def feed(self, data: bytes) -> list[FrameInfo]:
        frames: list[FrameInfo] = []
        i, n = 0, len(data)
        base = self.position
        while i < n:
            header = self._header
            if header is None:
                if self._header_buf:
                    # A header split across reads: complete it from this one.
                    take = data[i : i + MAX_HEADER - len(self._header_buf)]
                    header = parse_frame_header(bytes(self._header_buf) + take)
                    if header is None:
                        self._header_buf += take
                        i += len(take)
                        continue
                    i += header.header_length - len(self._header_buf)
                    self._header_buf.clear()
                else:
                    self._frame_start = base + i
                    header = parse_frame_header(data[i : i + MAX_HEADER])
                    if header is None:
                        self._header_buf += data[i:]
                        break
                    i += header.header_length
                self._header = header
                self._remaining = header.payload_length
                if header.opcode >= 0x8:
                    self._control = bytearray()
                else:
                    self._control = None
                    self.fragmented = not header.fin
            take_n = min(self._remaining, n - i)
            control = self._control
            if control is not None and take_n and len(control) < 125:
                control += data[i : i + min(take_n, 125 - len(control))]
            i += take_n
            self._remaining -= take_n
            if self._remaining == 0:
                payload = None
                if control is not None:
                    raw = bytes(control)
                    payload = unmask(raw, header.mask) if header.mask else raw
                frames.append(FrameInfo(header, self._frame_start, base + i, payload))
                self._header = None
                self._control = None
        self.position = base + n
        return frames
