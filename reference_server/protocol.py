"""The Nova protocol: pydantic models for every frame, the single source of truth.

Every frame, in both directions, is a JSON text frame with the envelope::

    {"type": str, "data": object, "timestamp": ISO-8601 str, "client_id": str, "id": str?}

``type`` selects the message model (a discriminated union), so one
``TypeAdapter`` validates a whole frame.  The server validates what clients
send with :data:`ClientMessage`; the harness frame journal validates every
frame with :data:`AnyMessage`; ``docs/protocol.md`` and the JSON Schema served
at ``GET /api/protocol/schema`` are generated from these models.

Domain rules that are not about shape (channel names, client ids, access
control) live in :mod:`reference_server.access`, so that a malformed frame
(``invalid_message``) and a well-formed frame asking for something invalid
(``validation_error``) stay distinguishable.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

__all__ = [
    "CHANNEL_PATTERN",
    "CLIENT_ID_PATTERN",
    "CLIENT_MESSAGE_TYPES",
    "MAX_JSON_DEPTH",
    "MAX_SEQ",
    "PROTOCOL_VERSION",
    "SERVER_MESSAGE_TYPES",
    "AnyMessage",
    "AuthSuccessData",
    "AuthSuccessMessage",
    "ChannelMessageData",
    "ChannelMessageMessage",
    "ClientErrorData",
    "ClientErrorMessage",
    "ClientMessage",
    "ClientMetadata",
    "CloseCode",
    "ConnectData",
    "ConnectMessage",
    "ConnectMetadata",
    "ConnectionEstablishedData",
    "ConnectionEstablishedMessage",
    "DeliveryConfirmationData",
    "DeliveryConfirmationMessage",
    "EmptyData",
    "ErrorCode",
    "ErrorData",
    "ErrorMessage",
    "PingMessage",
    "PongData",
    "PongMessage",
    "ProtocolError",
    "PublishData",
    "PublishMessage",
    "ServerMessage",
    "SubscribeData",
    "SubscribeMessage",
    "SubscribedData",
    "SubscribedMessage",
    "ThreadCreatedData",
    "ThreadCreatedMessage",
    "UnsubscribeData",
    "UnsubscribeMessage",
    "UnsubscribedData",
    "UnsubscribedMessage",
    "is_valid_channel",
    "is_valid_client_id",
    "json_schema",
    "make_message",
    "new_id",
    "now_iso",
    "operation_id",
    "parse_any_message",
    "parse_client_message",
    "parse_server_message",
]

PROTOCOL_VERSION = "1.0"

#: Client ids: 1 to 64 characters from ``A-Z a-z 0-9 _ -``.
CLIENT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

#: Channel names: a lowercase name of 1 to 64 characters from ``a-z 0-9 _ -``
#: starting with a letter or digit, optionally followed by ``:`` and a
#: sub-name of the same alphabet plus upper case (``general``, ``thread:7f3a``).
CHANNEL_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}(:[A-Za-z0-9_-]{1,64})?$"

#: The highest seq a client may name (``since_seq``): seqs are SQLite INTEGERs, signed 64-bit.
MAX_SEQ = 2**63 - 1

#: How deeply a frame's objects and arrays may nest (the envelope is level 1).
#: Deeper frames are ``invalid_message``; without a bound, nesting of about
#: a thousand levels would exhaust Python's recursion limit in the parser.
MAX_JSON_DEPTH = 64

_CLIENT_ID_RE = re.compile(CLIENT_ID_PATTERN)
_CHANNEL_RE = re.compile(CHANNEL_PATTERN)
#: The start of an ISO-8601 date-time (``2025-01-01T12:00``); the rest is pydantic's to check.
_TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


class CloseCode(IntEnum):
    """WebSocket close codes the Nova protocol uses, and what a client does after each."""

    NORMAL = 1000
    GOING_AWAY = 1001
    ABNORMAL = 1006
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    AUTH_FAILED = 4001
    AUTH_TIMEOUT = 4002
    REPLACED = 4003

    @property
    def reconnects(self) -> bool:
        """Whether a well-behaved client reconnects after this code."""
        return self not in _NO_RECONNECT


_NO_RECONNECT = frozenset(
    {CloseCode.AUTH_FAILED, CloseCode.AUTH_TIMEOUT, CloseCode.REPLACED, CloseCode.POLICY_VIOLATION}
)


class ErrorCode(StrEnum):
    """``code`` values of ``error`` frames."""

    AUTH_FAILED = "auth_failed"
    NOT_AUTHENTICATED = "not_authenticated"
    ALREADY_AUTHENTICATED = "already_authenticated"
    VALIDATION_ERROR = "validation_error"
    FORBIDDEN = "forbidden"
    INVALID_MESSAGE = "invalid_message"
    RATE_LIMITED = "rate_limited"
    NOT_SUBSCRIBED = "not_subscribed"
    INTERNAL_ERROR = "internal_error"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------- payloads


class ClientMetadata(_Data):
    """Who a client is, as the server records it after authentication."""

    type: Literal["browser", "test"]
    permissions: list[str] = Field(default_factory=list)
    created: datetime


class ConnectMetadata(_Data):
    """What a client says about itself in ``connect``; permissions come from its key."""

    type: Literal["browser", "test"] = "test"
    permissions: list[str] = Field(
        default_factory=list,
        description="Ignored by the server: permissions are granted by the API key.",
    )
    created: datetime | None = None


class ConnectData(_Data):
    api_key: str = Field(min_length=1, max_length=256)
    metadata: ConnectMetadata = Field(default_factory=ConnectMetadata)


class SubscribeData(_Data):
    channel: str = Field(max_length=200)
    since_seq: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEQ,
        description="Replay every stored message with a higher seq before `subscribed`.",
    )


class UnsubscribeData(_Data):
    channel: str = Field(max_length=200)


class PublishData(_Data):
    channel: str = Field(max_length=200)
    content: str


class EmptyData(_Data):
    """The payload of ``ping``: an empty object."""


class ClientErrorData(_Data):
    message: str = Field(max_length=10_000)
    context: dict[str, Any] = Field(default_factory=dict)


class ConnectionEstablishedData(_Data):
    client_id: str
    auth_timeout_ms: int
    protocol_version: str
    server_time: datetime


class AuthSuccessData(_Data):
    client_id: str
    metadata: ClientMetadata


class ErrorData(_Data):
    code: ErrorCode
    message: str
    operation_id: str | None = None
    details: Any = None


class DeliveryConfirmationData(_Data):
    message_id: str
    channel: str | None = None
    seq: int | None = None


class SubscribedData(_Data):
    channel: str
    last_seq: int = Field(ge=0)


class UnsubscribedData(_Data):
    channel: str


class ChannelMessageData(_Data):
    channel: str
    seq: int = Field(ge=1)
    message_id: str
    sender: str
    content: str
    sent_at: datetime


class ThreadCreatedData(_Data):
    id: str
    title: str
    created_by: str
    created_at: datetime
    channel: str


class PongData(_Data):
    server_time: datetime | None = None


# ----------------------------------------------------------------- envelopes


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timestamp: datetime
    client_id: str
    id: str | None = Field(
        default=None,
        description="Operation id chosen by the sender; replies about it carry it back.",
    )

    @field_validator("timestamp", mode="before")
    @classmethod
    def _iso_timestamp(cls, value: Any) -> Any:
        # pydantic alone would also take 1700000000, "1700000000" and "2025-01-01".
        if isinstance(value, datetime):
            return value
        if not isinstance(value, str) or not _TIMESTAMP_RE.match(value):
            raise ValueError(
                f"timestamp must be an ISO-8601 date-time string such as "
                f"'2025-01-01T12:00:00.000Z', got {value!r}"
            )
        return value


class ConnectMessage(_Envelope):
    type: Literal["connect"]
    data: ConnectData


class SubscribeMessage(_Envelope):
    type: Literal["subscribe"]
    data: SubscribeData


class UnsubscribeMessage(_Envelope):
    type: Literal["unsubscribe"]
    data: UnsubscribeData


class PublishMessage(_Envelope):
    type: Literal["publish"]
    data: PublishData


class PingMessage(_Envelope):
    type: Literal["ping"]
    data: EmptyData = Field(default_factory=EmptyData)


class ClientErrorMessage(_Envelope):
    type: Literal["client_error"]
    data: ClientErrorData


class ConnectionEstablishedMessage(_Envelope):
    type: Literal["connection_established"]
    data: ConnectionEstablishedData


class AuthSuccessMessage(_Envelope):
    type: Literal["auth_success"]
    data: AuthSuccessData


class ErrorMessage(_Envelope):
    type: Literal["error"]
    data: ErrorData


class DeliveryConfirmationMessage(_Envelope):
    type: Literal["delivery_confirmation"]
    data: DeliveryConfirmationData


class SubscribedMessage(_Envelope):
    type: Literal["subscribed"]
    data: SubscribedData


class UnsubscribedMessage(_Envelope):
    type: Literal["unsubscribed"]
    data: UnsubscribedData


class ChannelMessageMessage(_Envelope):
    type: Literal["channel_message"]
    data: ChannelMessageData


class ThreadCreatedMessage(_Envelope):
    type: Literal["thread_created"]
    data: ThreadCreatedData


class PongMessage(_Envelope):
    type: Literal["pong"]
    data: PongData = Field(default_factory=PongData)


_ClientUnion: TypeAlias = (
    ConnectMessage
    | SubscribeMessage
    | UnsubscribeMessage
    | PublishMessage
    | PingMessage
    | ClientErrorMessage
)
_ServerUnion: TypeAlias = (
    ConnectionEstablishedMessage
    | AuthSuccessMessage
    | ErrorMessage
    | DeliveryConfirmationMessage
    | SubscribedMessage
    | UnsubscribedMessage
    | ChannelMessageMessage
    | ThreadCreatedMessage
    | PongMessage
)

ClientMessage = Annotated[_ClientUnion, Field(discriminator="type")]
ServerMessage = Annotated[_ServerUnion, Field(discriminator="type")]
AnyMessage = Annotated[_ClientUnion | _ServerUnion, Field(discriminator="type")]

CLIENT_MESSAGE_TYPES: tuple[str, ...] = (
    "connect",
    "subscribe",
    "unsubscribe",
    "publish",
    "ping",
    "client_error",
)
SERVER_MESSAGE_TYPES: tuple[str, ...] = (
    "connection_established",
    "auth_success",
    "error",
    "delivery_confirmation",
    "subscribed",
    "unsubscribed",
    "channel_message",
    "thread_created",
    "pong",
)

_client_adapter: TypeAdapter[Any] = TypeAdapter(ClientMessage)
_server_adapter: TypeAdapter[Any] = TypeAdapter(ServerMessage)
_any_adapter: TypeAdapter[Any] = TypeAdapter(AnyMessage)


class ProtocolError(ValueError):
    """A frame that is not a valid Nova message.

    ``details`` is JSON-serialisable and is what the server sends back in the
    ``details`` of an ``invalid_message`` error.
    """

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class _NonStandardJSON(ValueError):
    def __init__(self, constant: str) -> None:
        super().__init__(constant)
        self.constant = constant


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (RFC 8259) and browsers do not.
    raise _NonStandardJSON(name)


#: One decoder for every frame (``json.loads`` with options builds a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _too_deep() -> ProtocolError:
    return ProtocolError(
        f"frame nests objects and arrays more than {MAX_JSON_DEPTH} levels deep; "
        "flatten the data (the envelope is level 1)",
        {"json_error": "nested too deeply", "max_depth": MAX_JSON_DEPTH},
    )


def _decode(raw: str) -> Any:
    """``raw`` as a JSON value, or :class:`ProtocolError` for every way it can fail.

    Beyond malformed JSON, that is nesting deep enough to exhaust the
    parser's recursion (:class:`RecursionError`) and an integer longer than
    Python converts (``sys.get_int_max_str_digits()``, :class:`ValueError`).
    """
    try:
        return _DECODER.decode(raw)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            f"frame is not valid JSON: {exc.msg} at position {exc.pos}",
            {"json_error": exc.msg, "position": exc.pos},
        ) from None
    except _NonStandardJSON as exc:
        raise ProtocolError(
            f"frame is not valid JSON: {exc.constant} is not a JSON value "
            "(JSON has no NaN or Infinity; send null or a string)",
            {"json_error": f"{exc.constant} is not a JSON value"},
        ) from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError:
        # The only other ValueError the decoder raises: int() refusing a literal
        # longer than the interpreter's digit limit.
        digits = sys.get_int_max_str_digits()
        raise ProtocolError(
            f"frame holds an integer of more than {digits} digits, more than this server "
            "reads; send big numbers as strings",
            {"json_error": "integer too long", "max_digits": digits},
        ) from None


def _nests_deeper_than(value: Any, limit: int) -> bool:
    """Whether objects/arrays in ``value`` nest more than ``limit`` levels (iterative: any depth)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _parse(adapter: TypeAdapter[Any], raw: str | bytes | dict[str, Any], direction: str) -> Any:
    if isinstance(raw, (bytes, bytearray)):
        raise ProtocolError(
            "binary frames are not part of the Nova protocol; send JSON text frames",
            {"frame": "binary", "length": len(raw)},
        )
    if isinstance(raw, str):
        obj = _decode(raw)
        # Nesting needs at least as many brackets as levels: most frames skip the walk.
        check_depth = raw.count("{") + raw.count("[") > MAX_JSON_DEPTH
        # Text frames are UTF-8, so a lone surrogate comes from a \uD8xx escape
        # (or from a Python caller's str).
        check_surrogates = "\\u" in raw or not raw.isascii()
    else:
        obj = raw
        check_depth = check_surrogates = True
    if check_depth and isinstance(obj, (dict, list)) and _nests_deeper_than(obj, MAX_JSON_DEPTH):
        raise _too_deep()
    if check_surrogates:
        where = _lone_surrogate(obj)
        if where is not None:
            raise ProtocolError(
                f"frame holds a lone UTF-16 surrogate at {where}: not valid Unicode text; "
                "escape characters outside the BMP as a surrogate pair",
                {"loc": [] if where == "<root>" else where.split(".")},
            )
    if not isinstance(obj, dict):
        raise ProtocolError(
            f"frame must be a JSON object (the envelope), got {type(obj).__name__}",
            {"got": type(obj).__name__},
        )
    known = CLIENT_MESSAGE_TYPES if direction == "client" else (
        SERVER_MESSAGE_TYPES if direction == "server" else CLIENT_MESSAGE_TYPES + SERVER_MESSAGE_TYPES
    )
    msg_type = obj.get("type")
    if msg_type not in known:
        raise ProtocolError(
            f"unknown message type {msg_type!r}; expected one of: {', '.join(known)}",
            {"type": msg_type, "expected": list(known)},
        )
    try:
        return adapter.validate_python(obj)
    except ValidationError as exc:
        errors = [
            {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        summary = "; ".join(f"{'.'.join(e['loc'][1:]) or '<root>'}: {e['msg']}" for e in errors)
        raise ProtocolError(f"invalid {msg_type!r} message: {summary}", errors) from None


def _lone_surrogate(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string holding a lone surrogate, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "<root>"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            found = _lone_surrogate(key, sub) or _lone_surrogate(item, sub)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _lone_surrogate(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


def operation_id(raw: str | bytes | dict[str, Any]) -> str | None:
    """Best effort: the envelope's ``id`` of a frame that may be invalid, or None.

    For answers about frames that were not handled (invalid, rate limited):
    None for binary frames, frames that are not JSON objects, and an ``id``
    that is missing or not a string.  Never raises.
    """
    if isinstance(raw, (bytes, bytearray)):
        return None
    if isinstance(raw, str):
        try:
            raw = _decode(raw)
        except ProtocolError:
            return None
    op = raw.get("id") if isinstance(raw, dict) else None
    return op if isinstance(op, str) else None


def parse_client_message(raw: str | bytes | dict[str, Any]) -> _ClientUnion:
    """Validate a client-to-server frame; raise :class:`ProtocolError` naming what is wrong."""
    result: _ClientUnion = _parse(_client_adapter, raw, "client")
    return result


def parse_server_message(raw: str | bytes | dict[str, Any]) -> _ServerUnion:
    """Validate a server-to-client frame; raise :class:`ProtocolError` naming what is wrong."""
    result: _ServerUnion = _parse(_server_adapter, raw, "server")
    return result


def parse_any_message(raw: str | bytes | dict[str, Any]) -> _ClientUnion | _ServerUnion:
    """Validate a frame of either direction."""
    result: _ClientUnion | _ServerUnion = _parse(_any_adapter, raw, "any")
    return result


_now_cache: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """The current UTC time as ISO-8601 with milliseconds and a ``Z``, as browsers write it."""
    global _now_cache
    ms = time.time_ns() // 1_000_000
    cached_ms, text = _now_cache  # one tuple: threads see a matching pair
    if ms != cached_ms:
        stamp = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
        text = stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        _now_cache = (ms, text)
    return text


def make_message(
    type: str, data: dict[str, Any] | None = None, *, client_id: str, id: str | None = None
) -> dict[str, Any]:
    """Build an envelope as a plain dict (validated: a wrong shape raises ProtocolError)."""
    envelope: dict[str, Any] = {
        "type": type,
        "data": data if data is not None else {},
        "timestamp": now_iso(),
        "client_id": client_id,
    }
    if id is not None:
        envelope["id"] = id
    parse_any_message(envelope)
    return envelope


def new_id() -> str:
    """A fresh random operation / message id."""
    return uuid.uuid4().hex


def is_valid_client_id(client_id: str) -> bool:
    return bool(_CLIENT_ID_RE.match(client_id))


def is_valid_channel(channel: str) -> bool:
    return bool(_CHANNEL_RE.match(channel))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the protocol: client, server and any-direction unions."""
    client = _client_adapter.json_schema(ref_template="#/$defs/{model}")
    server = _server_adapter.json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = {}
    defs.update(client.pop("$defs", {}))
    defs.update(server.pop("$defs", {}))
    defs["ClientMessage"] = client
    defs["ServerMessage"] = server
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:nova:protocol:" + PROTOCOL_VERSION,
        "title": f"Nova WebSocket protocol {PROTOCOL_VERSION}",
        "description": (
            "Every frame is a JSON text frame with the envelope "
            "{type, data, timestamp, client_id, id?}; `type` selects the message."
        ),
        "oneOf": [{"$ref": "#/$defs/ClientMessage"}, {"$ref": "#/$defs/ServerMessage"}],
        "$defs": defs,
    }
