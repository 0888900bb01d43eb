"""The REST API of the reference server: health, protocol schema, chat threads, channels.

Contract (documented in docs/protocol.md and in the OpenAPI document):

* Authentication is the ``X-API-Key`` header, compared in constant time with
  every configured key.  No key or an unknown key: ``401``.  A key without the
  permission an operation needs: ``403``.  Permissions follow the same table as
  the WebSocket (:mod:`reference_server.access`): reading a channel needs its
  *subscribe* permission, posting to it its *publish* permission.
* Unknown thread ids: ``404``.  Invalid channel names, over-long titles or
  contents, and text that is not valid Unicode (lone surrogates): ``422``
  naming the rule that was broken.
* Every message posted here goes through :func:`reference_server.messaging.publish`:
  it is committed to storage *before* the ``201`` is sent (so it survives
  ``kill -9``) and is then delivered as ``channel_message`` to every WebSocket
  subscriber of the channel, in the same per-channel seq space as WebSocket
  publishes.  A repeated ``message_id`` on the same channel is idempotent: the
  stored message is returned with ``200`` instead of ``201`` and nothing is
  delivered again.
* A chat thread's messages live on the channel ``thread:{id}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .access import check_access, lookup_api_key
from .hub import Hub
from .messaging import missing_thread, publish, thread_created_frame
from .protocol import CHANNEL_PATTERN, CLIENT_ID_PATTERN, MAX_SEQ, PROTOCOL_VERSION, json_schema
from .settings import Settings
from .storage import ClientErrorRecord, Storage, StoredMessage, Thread

__all__ = [
    "API_KEY_HEADER",
    "MAX_CONTENT_CHARS",
    "MAX_LIMIT",
    "MAX_MESSAGE_ID_CHARS",
    "MAX_TITLE_CHARS",
    "REST_SENDER",
    "ChannelDetail",
    "ChannelSummary",
    "ClientErrorOut",
    "ErrorResponse",
    "HealthResponse",
    "MessageCreate",
    "MessageOut",
    "Principal",
    "ThreadCreate",
    "ThreadDetail",
    "ThreadOut",
    "ValidationErrorResponse",
    "ValidationProblem",
    "install",
    "router",
]

#: The request header carrying the API key.
API_KEY_HEADER = "X-API-Key"
#: ``sender`` of messages posted over REST (``created_by`` of threads created here).
REST_SENDER = "rest"
MAX_TITLE_CHARS = 200
MAX_CONTENT_CHARS = 65_536
MAX_MESSAGE_ID_CHARS = 128
#: Upper bound of every ``limit`` query parameter.
MAX_LIMIT = 1000

router = APIRouter()


class _AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped, so lone surrogates echoed from input still encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode(
            "ascii"
        )


async def request_validation_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 body (``{"detail": [errors]}``), rendered so that it cannot fail.

    The default handler echoes the offending input with ``ensure_ascii=False``;
    an input holding a lone surrogate (``"\\ud800"`` in a JSON body) then fails
    to encode and the client gets a 500 instead of the 422 it earned.
    """
    assert isinstance(exc, RequestValidationError)
    return _AsciiJSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={"detail": jsonable_encoder(exc.errors())},
    )


def install(app: FastAPI) -> None:
    """Install what the REST API needs beyond its router (the robust 422 handler)."""
    app.add_exception_handler(RequestValidationError, request_validation_handler)

_api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    scheme_name="ApiKey",
    description=(
        "An API key from the server's settings (`NOVA_API_KEYS`); its permissions decide "
        "what it may do. Defaults: `development` (read, write, admin), `valid-test-key` "
        "(read, write)."
    ),
)


# ------------------------------------------------------------------ models


def _check_unicode(value: str) -> str:
    """Reject lone surrogates (``"\\ud800"`` in JSON): they cannot be stored or sent as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"text must be valid Unicode: lone surrogate {value[exc.start]!r} at position "
            f"{exc.start}; encode characters outside the BMP as a surrogate pair or as UTF-8"
        ) from None
    return value


class ErrorResponse(BaseModel):
    """Body of every 401, 403 and 404 answer."""

    detail: str = Field(description="What was wrong and how to fix it.")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": "missing X-API-Key header"}]}
    )


class ValidationProblem(BaseModel):
    """One broken rule in a 422 answer (FastAPI's format)."""

    loc: list[str | int] = Field(description="Where: `body`, `path`, `query` or `header`, then the field.")
    msg: str = Field(description="The rule that was broken, e.g. `String should match pattern '...'`.")
    type: str = Field(description="Machine-readable kind, e.g. `string_pattern_mismatch`.")
    input: Any = Field(default=None, description="The offending value.")
    ctx: dict[str, Any] | None = Field(default=None, description="Parameters of the rule (pattern, limit).")


class ValidationErrorResponse(BaseModel):
    """Body of every 422 answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "detail": [
                        {
                            "loc": ["body", "title"],
                            "msg": "String should have at most 200 characters",
                            "type": "string_too_long",
                            "input": "…",
                            "ctx": {"max_length": 200},
                        }
                    ]
                }
            ]
        }
    )

    detail: list[ValidationProblem]


class HealthResponse(BaseModel):
    status: str = Field(description="Always `ok` when the server answers.", examples=["ok"])
    protocol_version: str = Field(examples=[PROTOCOL_VERSION])
    connections: int = Field(ge=0, description="Authenticated WebSocket connections.", examples=[3])


class ThreadCreate(BaseModel):
    """Request body of ``POST /api/chat/threads``."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"title": "Release planning"}]}
    )

    title: str = Field(
        min_length=1,
        max_length=MAX_TITLE_CHARS,
        description=f"1 to {MAX_TITLE_CHARS} characters, not only whitespace.",
    )

    @field_validator("title")
    @classmethod
    def _title_not_blank(cls, value: str) -> str:
        _check_unicode(value)
        if not value.strip():
            raise ValueError("title must not be blank (only whitespace)")
        return value


class ThreadOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "7f3a9c2e1b4d",
                    "title": "Release planning",
                    "created_by": REST_SENDER,
                    "created_at": "2025-01-01T12:00:00.000Z",
                    "channel": "thread:7f3a9c2e1b4d",
                }
            ]
        }
    )

    id: str
    title: str
    created_by: str
    created_at: str = Field(description="ISO-8601 UTC timestamp.")
    channel: str = Field(description="The channel carrying the thread's messages: `thread:{id}`.")

    @classmethod
    def of(cls, thread: Thread) -> ThreadOut:
        return cls(**thread.to_dict())


class MessageOut(BaseModel):
    """A stored channel message: the ``data`` of a ``channel_message`` frame."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "channel": "general",
                    "seq": 1,
                    "message_id": "m-1",
                    "sender": REST_SENDER,
                    "content": "hello",
                    "sent_at": "2025-01-01T12:00:00.000Z",
                }
            ]
        }
    )

    channel: str
    seq: int = Field(ge=1, description="Per-channel, strictly increasing and gap-free.")
    message_id: str
    sender: str = Field(description="The publishing client id, or `rest` for REST posts.")
    content: str
    sent_at: str = Field(description="ISO-8601 UTC time the message was stored.")

    @classmethod
    def of(cls, msg: StoredMessage) -> MessageOut:
        return cls(**msg.to_dict())


class ThreadDetail(ThreadOut):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "7f3a9c2e1b4d",
                    "title": "Release planning",
                    "created_by": REST_SENDER,
                    "created_at": "2025-01-01T12:00:00.000Z",
                    "channel": "thread:7f3a9c2e1b4d",
                    "last_seq": 1,
                    "messages": [
                        {
                            "channel": "thread:7f3a9c2e1b4d",
                            "seq": 1,
                            "message_id": "m-1",
                            "sender": REST_SENDER,
                            "content": "hello",
                            "sent_at": "2025-01-01T12:00:00.000Z",
                        }
                    ],
                }
            ]
        }
    )

    last_seq: int = Field(ge=0, description="Highest seq on the thread's channel (0: none yet).")
    messages: list[MessageOut] = Field(description="Messages with seq > since_seq, oldest first.")


class MessageCreate(BaseModel):
    """Request body of the message-posting endpoints."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"content": "hello", "message_id": "m-1"}]},
    )

    content: str = Field(
        max_length=MAX_CONTENT_CHARS,
        description=f"At most {MAX_CONTENT_CHARS} characters; may be empty.",
    )
    message_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_MESSAGE_ID_CHARS,
        description=(
            "Idempotency key chosen by the sender. Posting again with the same id on the "
            "same channel returns the stored message with 200 and delivers nothing. "
            "Omitted: the server picks a fresh id."
        ),
    )

    @field_validator("content", "message_id")
    @classmethod
    def _valid_unicode(cls, value: str | None) -> str | None:
        return None if value is None else _check_unicode(value)


class ChannelSummary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "general", "subscribers": 2, "last_seq": 41}]}
    )

    name: str
    subscribers: int = Field(ge=0, description="Live WebSocket subscriptions right now.")
    last_seq: int = Field(ge=0, description="Highest stored seq (0: no message yet).")


class ChannelDetail(ChannelSummary):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "general",
                    "subscribers": 2,
                    "last_seq": 41,
                    "messages": [
                        {
                            "channel": "general",
                            "seq": 41,
                            "message_id": "m-1",
                            "sender": "browser-1",
                            "content": "hello",
                            "sent_at": "2025-01-01T12:00:00.000Z",
                        }
                    ],
                }
            ]
        }
    )

    messages: list[MessageOut] = Field(description="The most recent messages, oldest first.")


class ClientErrorOut(BaseModel):
    """An error a client reported with a ``client_error`` frame."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "client_id": "browser-1",
                    "message": "TypeError: x is undefined",
                    "context": {"component": "ChannelList"},
                    "received_at": "2025-01-01T12:00:00.000Z",
                }
            ]
        }
    )

    id: int
    client_id: str
    message: str
    context: dict[str, Any]
    received_at: str

    @classmethod
    def of(cls, record: ClientErrorRecord) -> ClientErrorOut:
        data = record.to_dict()
        data["context"] = _json_safe(record.context)
        return cls(**data)


def _json_safe(value: Any) -> Any:
    """Replace floats JSON cannot carry (NaN, Infinity; Python's json accepts them) with None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# ------------------------------------------------------------------ auth


@dataclass(frozen=True)
class Principal:
    """The caller, as identified by its API key (the key itself is never kept)."""

    permissions: frozenset[str]


_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No `X-API-Key` header, or an unknown key."},
    403: {"model": ErrorResponse, "description": "The key lacks the permission this needs."},
}
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ValidationErrorResponse,
        "description": "Invalid input: `detail` lists every broken rule.",
    },
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No thread with this id."},
}
_NO_THREAD: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "A `thread:{id}` channel of a thread that does not exist."},
}


async def authenticate(
    request: Request, api_key: Annotated[str | None, Depends(_api_key_scheme)]
) -> Principal:
    """Resolve ``X-API-Key`` to a :class:`Principal`; 401 when missing or unknown."""
    if not api_key:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"missing {API_KEY_HEADER} header: send one of the server's API keys",
        )
    settings: Settings = request.app.state.settings
    permissions = lookup_api_key(settings.api_keys, api_key)
    if permissions is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"unknown API key in {API_KEY_HEADER}: use a key configured in NOVA_API_KEYS",
        )
    return Principal(permissions=frozenset(permissions))


Auth = Annotated[Principal, Depends(authenticate)]


def _require(principal: Principal, permission: str, what: str) -> None:
    if permission not in principal.permissions:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"{what} requires the {permission!r} permission; this key has "
            f"{sorted(principal.permissions)}",
        )


def _require_channel(principal: Principal, channel: str, action: str) -> None:
    problem = check_access(channel, action, principal.permissions)  # type: ignore[arg-type]
    if problem is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, problem)


async def _require_thread_of(request: Request, channel: str) -> None:
    missing = await missing_thread(_storage(request), channel)
    if missing is not None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, missing)


def _storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _thread_or_404(request: Request, thread_id: str) -> Thread:
    thread = await _storage(request).get_thread(thread_id)
    if thread is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no chat thread with id {thread_id!r}; list them with GET /api/chat/threads",
        )
    return thread


ThreadId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        description="A thread id as returned by `POST /api/chat/threads`.",
        examples=["7f3a9c2e1b4d"],
    ),
]
ChannelName = Annotated[
    str,
    Path(
        pattern=CHANNEL_PATTERN,
        description=(
            f"A channel name matching `{CHANNEL_PATTERN}`: lowercase letters, digits, `_` or `-`, "
            "at most 64 characters, optionally `:` and a sub-name (`general`, `thread:42`)."
        ),
        examples=["general"],
    ),
]
Limit = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_LIMIT,
        description="How many of the most recent messages (default: the server's "
        "`recent_messages_limit`, 50).",
    ),
]


# ------------------------------------------------------------------ public


@router.get(
    "/health",
    tags=["meta"],
    summary="Liveness and basic numbers",
    response_model=HealthResponse,
    response_description="The server is up.",
)
async def health(request: Request) -> HealthResponse:
    """Answers while the server runs; no authentication."""
    return HealthResponse(
        status="ok", protocol_version=PROTOCOL_VERSION, connections=len(_hub(request).peers())
    )


@router.get(
    "/api/protocol/schema",
    tags=["meta"],
    summary="JSON Schema of the WebSocket protocol",
    response_model=dict[str, Any],
    response_description="The JSON Schema document.",
)
async def protocol_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of every WebSocket frame, generated from the models.

    Also printed by `python -m reference_server schema`; no authentication.
    """
    return json_schema()


# ------------------------------------------------------------------ chat threads


@router.get(
    "/api/chat/threads",
    tags=["chat"],
    summary="List chat threads",
    response_model=list[ThreadOut],
    response_description="Every thread, oldest first.",
    responses=_AUTH_RESPONSES,
)
async def list_threads(request: Request, principal: Auth) -> list[ThreadOut]:
    """Every thread, oldest first. Needs `read`."""
    _require(principal, "read", "listing chat threads")
    return [ThreadOut.of(t) for t in await _storage(request).list_threads()]


@router.post(
    "/api/chat/threads",
    tags=["chat"],
    summary="Create a chat thread",
    status_code=status.HTTP_201_CREATED,
    response_model=ThreadOut,
    response_description="The new thread.",
    responses={**_AUTH_RESPONSES, **_INVALID},
)
async def create_thread(request: Request, body: ThreadCreate, principal: Auth) -> ThreadOut:
    """Create a thread; its messages go to channel `thread:{id}`. Needs `write`.

    Every authenticated WebSocket connection whose key may read threads is told with a
    `thread_created` message.
    """
    _require(principal, "write", "creating a chat thread")
    thread = await _storage(request).create_thread(body.title, created_by=REST_SENDER)
    _hub(request).announce(thread_created_frame(thread), permission="read")
    return ThreadOut.of(thread)


@router.get(
    "/api/chat/threads/{thread_id}",
    tags=["chat"],
    summary="Read a chat thread with its messages",
    response_model=ThreadDetail,
    response_description="The thread and the requested page of its messages.",
    responses={**_AUTH_RESPONSES, **_NOT_FOUND, **_INVALID},
)
async def get_thread(
    request: Request,
    thread_id: ThreadId,
    principal: Auth,
    since_seq: Annotated[
        int, Query(ge=0, le=MAX_SEQ, description="Only messages with a higher seq (for paging).")
    ] = 0,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="At most this many messages.")
    ] = MAX_LIMIT,
) -> ThreadDetail:
    """The thread and its messages with `seq > since_seq`, oldest first. Needs `read`.

    Page through a long thread by passing the last seq you saw as `since_seq`.
    """
    _require_channel(principal, f"thread:{thread_id}", "subscribe")
    thread = await _thread_or_404(request, thread_id)
    storage = _storage(request)
    messages = await storage.messages_since(thread.channel, since_seq, limit)
    last_seq = await storage.last_seq(thread.channel)
    return ThreadDetail(
        **thread.to_dict(), last_seq=last_seq, messages=[MessageOut.of(m) for m in messages]
    )


@router.post(
    "/api/chat/threads/{thread_id}/messages",
    tags=["chat"],
    summary="Post a message to a chat thread",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageOut,
    response_description="The message, committed to storage and delivered to subscribers.",
    responses={
        200: {"model": MessageOut, "description": "Repeated `message_id`: the stored message."},
        **_AUTH_RESPONSES,
        **_NOT_FOUND,
        **_INVALID,
    },
)
async def post_thread_message(
    request: Request, response: Response, thread_id: ThreadId, body: MessageCreate, principal: Auth
) -> MessageOut:
    """Store the message, then deliver it as `channel_message` on `thread:{id}`. Needs `write`.

    The `201` is sent only after the message is committed.
    """
    _require_channel(principal, f"thread:{thread_id}", "publish")
    thread = await _thread_or_404(request, thread_id)
    return await _publish(request, response, thread.channel, body)


# ------------------------------------------------------------------ channels


@router.get(
    "/api/channels",
    tags=["channels"],
    summary="List channels",
    response_model=list[ChannelSummary],
    response_description="Channels by name.",
    responses=_AUTH_RESPONSES,
)
async def list_channels(request: Request, principal: Auth) -> list[ChannelSummary]:
    """Channels that have a stored message or a live subscriber, by name. Needs `read`."""
    _require(principal, "read", "listing channels")
    hub = _hub(request)
    stored = {c.name: c.last_seq for c in await _storage(request).channels()}
    names = sorted(set(stored) | set(hub.channels()))
    return [
        ChannelSummary(name=n, subscribers=hub.subscriber_count(n), last_seq=stored.get(n, 0))
        for n in names
    ]


@router.get(
    "/api/channels/{name}",
    tags=["channels"],
    summary="Read a channel with its recent messages",
    response_model=ChannelDetail,
    response_description="The channel and its most recent messages.",
    responses={**_AUTH_RESPONSES, **_NO_THREAD, **_INVALID},
)
async def get_channel(
    request: Request, name: ChannelName, principal: Auth, limit: Limit = None
) -> ChannelDetail:
    """Subscriber count, last seq and the most recent messages, oldest first.

    Needs the channel's *subscribe* permission. Any valid name answers (channels
    exist implicitly), except `thread:{id}` of a thread that does not exist (404);
    a channel without messages has `last_seq` 0.
    """
    _require_channel(principal, name, "subscribe")
    await _require_thread_of(request, name)
    storage = _storage(request)
    count = limit if limit is not None else _settings(request).recent_messages_limit
    messages = await storage.recent_messages(name, count)
    return ChannelDetail(
        name=name,
        subscribers=_hub(request).subscriber_count(name),
        last_seq=await storage.last_seq(name),
        messages=[MessageOut.of(m) for m in messages],
    )


@router.post(
    "/api/channels/{name}/messages",
    tags=["channels"],
    summary="Publish a message to a channel",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageOut,
    response_description="The message, committed to storage and delivered to subscribers.",
    responses={
        200: {"model": MessageOut, "description": "Repeated `message_id`: the stored message."},
        **_AUTH_RESPONSES,
        **_NO_THREAD,
        **_INVALID,
    },
)
async def post_channel_message(
    request: Request, response: Response, name: ChannelName, body: MessageCreate, principal: Auth
) -> MessageOut:
    """Store the message, then deliver it as `channel_message` to every subscriber.

    Needs the channel's *publish* permission (`announcements` and `admin:*` need
    `admin`). Same seq space as WebSocket `publish`; `201` only after the commit.
    """
    _require_channel(principal, name, "publish")
    await _require_thread_of(request, name)
    return await _publish(request, response, name, body)


async def _publish(request: Request, response: Response, channel: str, body: MessageCreate) -> MessageOut:
    msg, created = await publish(
        _storage(request),
        _hub(request),
        channel,
        sender=REST_SENDER,
        content=body.content,
        message_id=body.message_id,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return MessageOut.of(msg)


# ------------------------------------------------------------------ client errors


@router.get(
    "/api/client-errors",
    tags=["diagnostics"],
    summary="Errors clients reported",
    response_model=list[ClientErrorOut],
    response_description="The reported errors, oldest first.",
    responses={**_AUTH_RESPONSES, **_INVALID},
)
async def client_errors(
    request: Request,
    principal: Auth,
    client_id: Annotated[
        str | None,
        Query(pattern=CLIENT_ID_PATTERN, description="Only errors this client reported."),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="At most this many (the most recent).")
    ] = 100,
) -> list[ClientErrorOut]:
    """What clients sent with `client_error` frames, oldest first. Needs `read`."""
    _require(principal, "read", "reading client errors")
    records = await _storage(request).client_errors(client_id, limit)
    return [ClientErrorOut.of(r) for r in records]
