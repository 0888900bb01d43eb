"""Generate ``docs/protocol.md`` from the protocol models, so the docs cannot drift.

Usage::

    python -m reference_server.docgen > docs/protocol.md    # print
    python -m reference_server.docgen --write                # write docs/protocol.md
    python -m reference_server.docgen --check                # exit 1 if it is stale

What comes from code: the envelope and every message's fields (the pydantic
models' JSON Schema), the close codes (:class:`~reference_server.protocol.CloseCode`
and its ``reconnects``), the error codes (:class:`~reference_server.protocol.ErrorCode`),
the client id and channel patterns, the access table
(:data:`~reference_server.access.ACCESS_RULES`), default limits
(:class:`~reference_server.settings.Settings` field defaults, never the
environment) and the REST operations (the OpenAPI document of
:data:`reference_server.rest.router`).  What is prose lives here as
templates, keyed by the thing it explains; :func:`render` raises when a
message type, close code or error code has no prose, so adding one to the
protocol without documenting it fails ``tests/test_docs_protocol.py``.

Every example frame is validated against the models while rendering.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from . import protocol, rest
from .access import ACCESS_RULES
from .protocol import (
    CHANNEL_PATTERN,
    CLIENT_ID_PATTERN,
    CLIENT_MESSAGE_TYPES,
    PROTOCOL_VERSION,
    SERVER_MESSAGE_TYPES,
    CloseCode,
    ErrorCode,
    parse_any_message,
)
from .settings import Settings

__all__ = [
    "DOCS_PATH",
    "EXAMPLE_TIMESTAMP",
    "QUICKSTART_OUTPUT",
    "QUICKSTART_SNIPPET",
    "main",
    "render",
]

#: Where the generated document lives in the repository.
DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
#: Every example uses this time, so the output is deterministic.
EXAMPLE_TIMESTAMP = "2025-01-01T12:00:00.000Z"
_CLIENT = "browser-1"

# ------------------------------------------------------------------ prose

_CLOSE_CODES: dict[CloseCode, str] = {
    CloseCode.NORMAL: "Normal closure (the client or the server is done).",
    CloseCode.GOING_AWAY: "The server is shutting down; every open socket gets it.",
    CloseCode.ABNORMAL: (
        "Never sent on the wire: what a browser reports when the TCP connection dropped "
        "without a close frame."
    ),
    CloseCode.INVALID_PAYLOAD: "A text frame that is not valid UTF-8.",
    CloseCode.POLICY_VIOLATION: (
        "Policy: invalid client id, sustained rate limit (`rate limit exceeded`) or a "
        "consumer too slow to drain its queue (`slow consumer`)."
    ),
    CloseCode.MESSAGE_TOO_BIG: "A frame over the size limit.",
    CloseCode.INTERNAL_ERROR: "The server failed unexpectedly.",
    CloseCode.TRY_AGAIN_LATER: (
        "Too many connections waiting to authenticate, from this address or in all; sent "
        "right after the accept. Retry with backoff."
    ),
    CloseCode.AUTH_FAILED: "`connect` carried an unknown API key (after an `auth_failed` error).",
    CloseCode.AUTH_TIMEOUT: "No `connect` within the authentication timeout.",
    CloseCode.REPLACED: "A newer connection authenticated with the same client id.",
}

_ERROR_CODES: dict[ErrorCode, str] = {
    ErrorCode.AUTH_FAILED: "`connect` with an unknown API key; the connection is then closed with 4001.",
    ErrorCode.NOT_AUTHENTICATED: "Any message but `connect` before authenticating; the connection stays open.",
    ErrorCode.ALREADY_AUTHENTICATED: (
        "A second `connect` on an authenticated connection; nothing changes (open a new "
        "connection to use another key)."
    ),
    ErrorCode.VALIDATION_ERROR: (
        "A well-formed message asking for something invalid, such as a channel name that "
        "breaks the pattern; `details` names the field and the rule."
    ),
    ErrorCode.FORBIDDEN: (
        "The key lacks the permission the channel needs (see Access control); `details` "
        "has `channel`, `action`, `required`."
    ),
    ErrorCode.INVALID_MESSAGE: (
        "The frame is not a valid message: invalid JSON, not an object, nested too deeply, an "
        "integer too long, unknown type, schema violation, binary frame. `details` locates the "
        "problem. The connection stays open."
    ),
    ErrorCode.RATE_LIMITED: (
        "Too many messages; this one was dropped (`operation_id` names it when it had an `id`). "
        "Keeping on closes the connection with 1008."
    ),
    ErrorCode.NOT_SUBSCRIBED: "An operation that needs a subscription the connection does not have.",
    ErrorCode.INTERNAL_ERROR: "The server failed to handle the message; it is logged server-side.",
}


def _frame(
    type_: str, data: dict[str, Any] | None, *, client_id: str = _CLIENT, id: str | None = None
) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": type_,
        "data": data if data is not None else {},
        "timestamp": EXAMPLE_TIMESTAMP,
        "client_id": client_id,
    }
    if id is not None:
        frame["id"] = id
    return frame


_MESSAGE = {
    "channel": "general",
    "seq": 42,
    "message_id": "msg-7",
    "sender": _CLIENT,
    "content": "hello",
    "sent_at": EXAMPLE_TIMESTAMP,
}

#: type -> (what it does, example frame)
_MESSAGES: dict[str, tuple[str, dict[str, Any]]] = {
    "connect": (
        (
            "Authenticate with an API key: the second step of the handshake, and the only "
            "message accepted before it succeeds. Answered by `auth_success`, or by `error` "
            "`auth_failed` and close 4001. `metadata` describes the client; its `permissions` "
            "are ignored (the key decides)."
        ),
        _frame(
            "connect",
            {
                "api_key": "valid-test-key",
                "metadata": {"type": "browser", "permissions": [], "created": EXAMPLE_TIMESTAMP},
            },
            id="op-1",
        ),
    ),
    "subscribe": (
        (
            "Receive a channel's messages. With `since_seq`, every stored message with a higher "
            "seq is replayed first (as `channel_message`), then `subscribed` is sent, then live "
            "messages follow: no gap and no duplicate across a reconnect. Needs the channel's "
            "subscribe permission."
        ),
        _frame("subscribe", {"channel": "general", "since_seq": 40}, id="op-2"),
    ),
    "unsubscribe": (
        "Stop receiving a channel. Idempotent: answered by `unsubscribed` even when not subscribed.",
        _frame("unsubscribe", {"channel": "general"}, id="op-3"),
    ),
    "publish": (
        (
            "Send a message to a channel. The `id` becomes the message id: the message is "
            "committed to storage, delivered to every subscriber (the sender too, if subscribed) "
            "as `channel_message`, then confirmed with `delivery_confirmation`. Publishing again "
            "with the same `id` on the same channel is confirmed again but neither stored nor "
            "delivered twice. Needs the channel's publish permission."
        ),
        _frame("publish", {"channel": "general", "content": "hello"}, id="msg-7"),
    ),
    "ping": (
        "Liveness check; answered by `pong` with the same `id`.",
        _frame("ping", {}, id="op-4"),
    ),
    "client_error": (
        (
            "Report an error the client hit (for example an exception in the UI). Logged and "
            "stored, listed by `GET /api/client-errors`; no reply."
        ),
        _frame(
            "client_error",
            {
                "message": "TypeError: cannot read properties of undefined",
                "context": {"component": "ChannelList"},
            },
        ),
    ),
    "connection_established": (
        (
            "First frame on every accepted connection, before authentication: the client has "
            "`auth_timeout_ms` to send `connect`."
        ),
        _frame(
            "connection_established",
            {
                "client_id": _CLIENT,
                "auth_timeout_ms": 10000,
                "protocol_version": PROTOCOL_VERSION,
                "server_time": EXAMPLE_TIMESTAMP,
            },
        ),
    ),
    "auth_success": (
        "Answer to a good `connect`: the permissions come from the API key.",
        _frame(
            "auth_success",
            {
                "client_id": _CLIENT,
                "metadata": {
                    "type": "browser",
                    "permissions": ["read", "write"],
                    "created": EXAMPLE_TIMESTAMP,
                },
            },
            id="op-1",
        ),
    ),
    "error": (
        (
            "Something the client sent could not be done; `code` says why (see Error codes), "
            "`operation_id` (and the envelope `id`) names the message it answers when known."
        ),
        _frame(
            "error",
            {
                "code": "forbidden",
                "message": "publish on 'announcements' requires the 'admin' permission; this key has ['read', 'write']",
                "operation_id": "msg-8",
                "details": {"channel": "announcements", "action": "publish", "required": "admin"},
            },
            id="msg-8",
        ),
    ),
    "delivery_confirmation": (
        (
            "The published message is stored (it survives a crash of the server) and was handed "
            "to every subscriber; `seq` is its place in the channel."
        ),
        _frame(
            "delivery_confirmation",
            {"message_id": "msg-7", "channel": "general", "seq": 42},
            id="msg-7",
        ),
    ),
    "subscribed": (
        (
            "The subscription is live. `last_seq` is the stream position: the last replayed seq, "
            "or the channel's last seq when nothing was replayed. Remember the highest seq seen "
            "and pass it as `since_seq` when resubscribing."
        ),
        _frame("subscribed", {"channel": "general", "last_seq": 42}, id="op-2"),
    ),
    "unsubscribed": (
        "The subscription is gone.",
        _frame("unsubscribed", {"channel": "general"}, id="op-3"),
    ),
    "channel_message": (
        (
            "A message on a subscribed channel, from a WebSocket `publish` or a REST post "
            "(`sender` is then `rest`). Per channel, `seq` is strictly increasing and gap-free."
        ),
        _frame("channel_message", dict(_MESSAGE)),
    ),
    "thread_created": (
        (
            "A chat thread was created (over REST, by anyone): sent to every authenticated "
            "connection whose key has the `read` permission, so thread lists update live. "
            "Its messages go to `channel`."
        ),
        _frame(
            "thread_created",
            {
                "id": "3f2a9c1b7e4d",
                "title": "Release planning",
                "created_by": "rest",
                "created_at": EXAMPLE_TIMESTAMP,
                "channel": "thread:3f2a9c1b7e4d",
            },
        ),
    ),
    "pong": ("Answer to `ping`.", _frame("pong", {"server_time": EXAMPLE_TIMESTAMP}, id="op-4")),
}

_FIELD_NOTES: dict[str, str] = {
    "connect.api_key": "One of the server's API keys (`NOVA_API_KEYS`).",
    "connect.metadata.type": "`browser` or `test`.",
    "connect.metadata.created": "When the client was created, ISO-8601.",
    "subscribe.channel": "A channel name (see Identifiers).",
    "unsubscribe.channel": "A channel name.",
    "publish.channel": "A channel name.",
    "publish.content": "Any text, may be empty; the whole frame must fit the size limit.",
    "client_error.message": "What went wrong.",
    "client_error.context": "Any JSON object: component, stack, URL...",
    "connection_established.auth_timeout_ms": "Time left to send `connect`.",
    "connection_established.protocol_version": "Version of this protocol.",
    "connection_established.server_time": "The server's clock, ISO-8601.",
    "auth_success.metadata.permissions": "Granted by the API key.",
    "auth_success.metadata.created": "When the server authenticated the connection.",
    "error.code": "One of the error codes below.",
    "error.message": "Human-readable: what was expected, what arrived, how to fix it.",
    "error.operation_id": "The `id` of the message this answers, when known.",
    "error.details": "Machine-readable specifics (any JSON).",
    "delivery_confirmation.message_id": "The published message's id (the `publish` frame's `id`).",
    "delivery_confirmation.channel": "Channel it was stored on.",
    "delivery_confirmation.seq": "Its seq on that channel.",
    "subscribed.last_seq": "Stream position (0: the channel has no message yet).",
    "channel_message.seq": "Per-channel sequence number, from 1, gap-free.",
    "channel_message.message_id": "Unique per channel; the publisher's `id` or a server-made one.",
    "channel_message.sender": "Publishing client id, or `rest`.",
    "channel_message.sent_at": "When the server stored it, ISO-8601 UTC.",
    "thread_created.id": "The thread's id (`GET /api/chat/threads/{id}`).",
    "thread_created.title": "Its title.",
    "thread_created.created_by": "Who created it (`rest` for the REST API).",
    "thread_created.created_at": "When, ISO-8601 UTC.",
    "thread_created.channel": "Channel of its messages: `thread:{id}`.",
    "pong.server_time": "The server's clock.",
}

_ENVELOPE_NOTES: dict[str, str] = {
    "type": "The message type; selects the shape of `data`.",
    "data": "The payload; an object, `{}` when the type has none.",
    "timestamp": "When the sender created the frame: an ISO-8601 date-time string, e.g. `2025-01-01T12:00:00.000Z` (numbers are rejected).",
    "client_id": "Who sent it (client to server) or who it is for (server to client).",
    "id": "Operation id chosen by the sender; the reply to that message carries it back in its own `id`.",
}

QUICKSTART_SNIPPET = """\
import asyncio
import json
from datetime import datetime, timezone

from websockets.asyncio.client import connect

URL = "ws://127.0.0.1:8000/debug/demo-client"


def frame(type, data=None, id=None):
    msg = {
        "type": type,
        "data": data or {},
        "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "client_id": "demo-client",
    }
    if id is not None:
        msg["id"] = id
    return json.dumps(msg)


async def main():
    async with connect(URL) as ws:
        print(json.loads(await ws.recv())["type"])
        await ws.send(frame("connect", {"api_key": "valid-test-key"}, id="op-1"))
        print(json.loads(await ws.recv())["type"])
        await ws.send(frame("subscribe", {"channel": "general"}, id="op-2"))
        print(json.loads(await ws.recv())["data"])
        await ws.send(frame("publish", {"channel": "general", "content": "hello"}, id="msg-1"))
        for _ in range(2):
            reply = json.loads(await ws.recv())
            print(reply["type"], reply["data"]["seq"])


asyncio.run(main())
"""

#: What the snippet prints against a fresh server (tests/test_docs_protocol.py runs it).
QUICKSTART_OUTPUT = """\
connection_established
auth_success
{'channel': 'general', 'last_seq': 0}
channel_message 1
delivery_confirmation 1
"""

# ------------------------------------------------------------------ rendering helpers


def _json_block(value: Any) -> str:
    return "```json\n" + json.dumps(value, indent=2, ensure_ascii=False) + "\n```"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _type_of(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    """A short human type for a JSON Schema node: `string`, `integer or null`, `"a" | "b"`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        target = defs.get(name, {})
        if "enum" in target:
            return " | ".join(f"`{json.dumps(v)}`" for v in target["enum"])
        return "object"
    if "anyOf" in schema:
        parts = [_type_of(s, defs) for s in schema["anyOf"]]
        return " or ".join(dict.fromkeys(parts))
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " | ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    kind = schema.get("type")
    if kind is None:
        return "any JSON"
    if kind == "array":
        return f"array of {_type_of(schema.get('items', {}), defs)}"
    if kind == "string" and schema.get("format") == "date-time":
        return "ISO-8601 date-time string"
    return str(kind)


def _chars(n: int) -> str:
    return f"{n} character" + ("" if n == 1 else "s")


def _size(n: int) -> str:
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n % factor == 0:
            return f"{n} bytes ({n // factor} {unit})"
    return f"{n} bytes"


def _constraints(schema: dict[str, Any]) -> list[str]:
    out: list[str] = []
    nodes = [schema] + [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    for node in nodes:
        if "minLength" in node:
            out.append(f"at least {_chars(node['minLength'])}")
        if "maxLength" in node:
            out.append(f"at most {_chars(node['maxLength'])}")
        if "minimum" in node:
            out.append(f">= {node['minimum']}")
        if "pattern" in node:
            out.append(f"matches `{node['pattern']}`")
    if "default" in schema and schema["default"] is not None:
        out.append(f"default `{json.dumps(schema['default'])}`")
    return out


def _field_rows(
    schema: dict[str, Any], defs: dict[str, Any], prefix: str, note_key: str
) -> list[list[str]]:
    rows: list[list[str]] = []
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        key = f"{note_key}.{path}"
        note = _FIELD_NOTES.get(key) or prop.get("description") or ""
        extra = _constraints(prop)
        if extra:
            note = (note + " " if note else "") + "(" + "; ".join(extra) + ")"
        rows.append([f"`{path}`", _type_of(prop, defs), "yes" if name in required else "no", note])
        ref = prop.get("$ref")
        if ref is not None:
            target = defs[ref.rsplit("/", 1)[-1]]
            if target.get("type") == "object" and "properties" in target:
                rows += _field_rows(target, defs, f"{path}.", note_key)
    return rows


def _message_models() -> dict[str, type[BaseModel]]:
    """type -> envelope model, found in the protocol module."""
    found: dict[str, type[BaseModel]] = {}
    for name in protocol.__all__:
        obj = getattr(protocol, name)
        if isinstance(obj, type) and issubclass(obj, BaseModel) and "type" in obj.model_fields:
            args: tuple[Any, ...] = getattr(obj.model_fields["type"].annotation, "__args__", ())
            if len(args) == 1 and isinstance(args[0], str):
                found[args[0]] = obj
    return found


def _missing(kind: str, documented: Iterable[Any], actual: Iterable[Any]) -> None:
    missing = [str(a) for a in actual if a not in set(documented)]
    if missing:
        raise LookupError(
            f"docgen has no prose for {kind} {', '.join(missing)}; add it to "
            "reference_server/docgen.py, then run `python -m reference_server.docgen --write`"
        )


# ------------------------------------------------------------------ sections


def _intro() -> str:
    defaults = Settings.model_fields
    max_bytes = defaults["max_message_bytes"].default
    return f"""\
# The Nova protocol (version {PROTOCOL_VERSION})

> Generated from the models by `python -m reference_server.docgen --write`; do not edit by
> hand (`tests/test_docs_protocol.py` fails when this file and the code disagree).
> Machine-readable: the JSON Schema at `GET /api/protocol/schema`
> (or `python -m reference_server schema`) and the OpenAPI document at `GET /openapi.json`.

Nova is the WebSocket protocol of the harness's reference server: two-step
authentication, channels with access control, delivery confirmations and chat threads.

## Endpoint and envelope

One WebSocket per client at **`ws://HOST:PORT/debug/{{client_id}}`** (default port 8000).
Every frame, in both directions, is a JSON **text** frame holding one envelope object;
binary frames are answered with `error` `invalid_message`. Frames are limited to
{_size(max_bytes)} (`NOVA_MAX_MESSAGE_BYTES`); a bigger one closes the connection
with 1009.
"""


def _envelope() -> str:
    schema = protocol.PingMessage.model_json_schema()
    props = schema["properties"]
    required = set(schema.get("required", []))
    rows = []
    for name in ("type", "data", "timestamp", "client_id", "id"):
        prop = props[name]
        kind = "string" if name == "type" else ("object" if name == "data" else _type_of(prop, {}))
        rows.append(
            [
                f"`{name}`",
                kind,
                "yes" if name in required or name == "data" else "no",
                _ENVELOPE_NOTES[name],
            ]
        )
    return (
        _table(["field", "type", "required", "meaning"], rows)
        + "\n\nUnknown fields are rejected at every level (`invalid_message`), so typos do not pass silently.\n"
    )


def _flow() -> str:
    timeout = Settings.model_fields["auth_timeout_ms"].default
    per_address = Settings.model_fields["max_unauthenticated_per_address"].default
    total = Settings.model_fields["max_unauthenticated_total"].default
    return f"""\
## Connecting and authenticating

1. **Open** `ws://HOST:PORT/debug/{{client_id}}`. Browsers must come from an allowed
   origin: the server's own or one in `NOVA_ALLOWED_ORIGINS`; any other `Origin` gets
   HTTP 403 before the upgrade. Clients that send no `Origin` (not browsers) pass.
2. The server **accepts without credentials** and sends `connection_established`.
   An invalid client id is accepted, told why (`error` `validation_error`) and closed
   with 1008, so a browser sees the code. When {per_address} connections from the same
   address (`NOVA_MAX_UNAUTHENTICATED_PER_ADDRESS`) or {total} in all
   (`NOVA_MAX_UNAUTHENTICATED_TOTAL`) are already waiting to authenticate, a new one is
   accepted and closed at once with **1013** (try again later).
3. The client **authenticates with a `connect` message** carrying its API key (never in
   the URL: query strings end up in logs). Keys are compared in constant time.
   - good key: `auth_success` with the key's permissions;
   - unknown key: `error` `auth_failed`, then close **4001**;
   - no `connect` within {timeout} ms (`NOVA_AUTH_TIMEOUT_MS`): close **4002**;
   - anything else first: `error` `not_authenticated`, the connection stays open.
4. A second connection that authenticates with the same client id **replaces** the first,
   which is closed with **4003**.
5. Then: `subscribe`, `publish`, `unsubscribe`, `ping`, `client_error`, in any order. Each
   connection's messages are handled one at a time, in order; a reply carries the `id` of
   the message it answers.

Default API keys: `development` (read, write, admin) and `valid-test-key` (read, write);
configure with `NOVA_API_KEYS='{{"key": ["read", "write"]}}'`.

### Quick start

With the server running (`python -m reference_server`), this client authenticates,
subscribes, publishes and gets its confirmation:

```python
{QUICKSTART_SNIPPET}```

Against a fresh database it prints:

```text
{QUICKSTART_OUTPUT}```

### A session, frame by frame

→ is client to server, ← server to client.
"""


def _session() -> str:
    steps = [
        ("←", _MESSAGES["connection_established"][1]),
        (
            "→",
            _frame(
                "connect", {"api_key": "valid-test-key", "metadata": {"type": "browser"}}, id="op-1"
            ),
        ),
        ("←", _MESSAGES["auth_success"][1]),
        ("→", _frame("subscribe", {"channel": "general", "since_seq": 41}, id="op-2")),
        (
            "←",
            _frame(
                "channel_message",
                {**_MESSAGE, "seq": 42, "sender": "browser-2", "message_id": "msg-6"},
            ),
        ),
        ("←", _frame("subscribed", {"channel": "general", "last_seq": 42}, id="op-2")),
        ("→", _frame("publish", {"channel": "general", "content": "hello"}, id="msg-7")),
        ("←", _frame("channel_message", {**_MESSAGE, "seq": 43})),
        (
            "←",
            _frame(
                "delivery_confirmation",
                {"message_id": "msg-7", "channel": "general", "seq": 43},
                id="msg-7",
            ),
        ),
    ]
    parts = []
    for arrow, frame in steps:
        parts.append(
            f"{arrow} `{frame['type']}`\n\n```json\n{json.dumps(frame, ensure_ascii=False)}\n```"
        )
    note = (
        "The replayed `channel_message` (seq 42, after `since_seq` 41) comes before "
        "`subscribed`; the sender, being subscribed, receives its own message before the "
        "confirmation.\n"
    )
    return "\n\n".join(parts) + "\n\n" + note


def _identifiers() -> str:
    return f"""\
## Identifiers

| what | pattern | in words |
|---|---|---|
| client id (URL) | `{CLIENT_ID_PATTERN}` | 1 to 64 of `A-Z a-z 0-9 _ -` |
| channel | `{CHANNEL_PATTERN}` | lowercase letters, digits, `_`, `-`, at most 64, starting with a letter or digit; optionally `:` and a sub-name of 1 to 64 of `A-Z a-z 0-9 _ -` (`general`, `thread:7f3a9c2e1b4d`, `admin:ops`) |

A channel name breaking the pattern is a well-formed message asking for something
invalid: `error` `validation_error` with `details` `{{"channel", "pattern"}}` (REST: 422).
Channels exist implicitly: any valid name can be subscribed to or published on.
"""


def _access() -> str:
    def label(match: str) -> str:
        if match == "*":
            return "any other channel"
        return f"`{match}`" if not match.endswith(":*") else f"`{match[:-1]}…`"

    rows = [[label(r.match), f"`{r.subscribe}`", f"`{r.publish}`"] for r in ACCESS_RULES]
    return (
        "## Access control\n\n"
        "Permissions come from the API key. The first matching row decides; the same table "
        "applies to WebSocket messages and REST calls (reading a channel over REST needs its "
        "subscribe permission, posting its publish permission).\n\n"
        + _table(["channel", "subscribe needs", "publish needs"], rows)
        + "\n\nWithout the permission: `error` `forbidden` (REST: 403).\n"
    )


def _delivery() -> str:
    return """\
## Delivery guarantees

- **Commit before acknowledgement.** A message is stored (SQLite, WAL) before its
  `delivery_confirmation` or REST `201` is sent; anything acknowledged survives a
  `kill -9` of the server.
- **Per-channel order.** `seq` starts at 1 and is strictly increasing and gap-free per
  channel. WebSocket publishes, REST posts and chat-thread posts share one seq space per
  channel. Subscribers receive messages in seq order.
- **Idempotent publishing.** The message id is the `publish` frame's `id` (REST:
  `message_id`). Repeating it on the same channel returns the stored message (REST: `200`
  instead of `201`) and delivers nothing again, so a client may retry after a reconnect.
- **Replay without gap or duplicate.** Resubscribe with `since_seq` set to the highest
  seq seen: the missed messages come first, then `subscribed`, then live messages.
"""


def _close_codes() -> str:
    _missing("close code", _CLOSE_CODES, CloseCode)
    rows = [
        [str(int(c)), f"`{c.name}`", "yes" if c.reconnects else "no", _CLOSE_CODES[c]]
        for c in CloseCode
    ]
    return (
        "## Close codes\n\n"
        "A well-behaved client reconnects (with backoff) after the codes marked yes, and stops "
        "after the others: retrying cannot fix a bad key, a missed authentication, a newer "
        "connection or a policy violation.\n\n"
        + _table(["code", "name", "reconnect", "meaning"], rows)
        + "\n"
    )


def _error_codes() -> str:
    _missing("error code", _ERROR_CODES, ErrorCode)
    rows = [[f"`{c.value}`", _ERROR_CODES[c]] for c in ErrorCode]
    return (
        "## Error codes\n\n`code` of `error` messages.\n\n" + _table(["code", "when"], rows) + "\n"
    )


#: Python's default ``sys.get_int_max_str_digits()``: fixed here, so the docs do not
#: depend on the interpreter's ``-X int_max_str_digits``.
_INT_DIGITS = 4300


def _limits() -> str:
    f = Settings.model_fields
    rows = [
        [
            "frame size",
            _size(f["max_message_bytes"].default),
            "`NOVA_MAX_MESSAGE_BYTES`",
            "close 1009",
        ],
        [
            "authentication time",
            f"{f['auth_timeout_ms'].default} ms",
            "`NOVA_AUTH_TIMEOUT_MS`",
            "close 4002",
        ],
        [
            "message rate",
            f"{f['rate_limit_per_second'].default:g}/s sustained, burst {f['rate_limit_burst'].default}",
            "`NOVA_RATE_LIMIT_PER_SECOND`, `NOVA_RATE_LIMIT_BURST`",
            f"`error` `rate_limited`; after {f['rate_limit_strikes'].default} refusals close 1008",
        ],
        [
            "outbound queue",
            f"{f['outbound_queue_size'].default} frames",
            "`NOVA_OUTBOUND_QUEUE_SIZE`",
            "a subscriber that falls this far behind is closed 1008",
        ],
        [
            "connections waiting to authenticate",
            (
                f"{f['max_unauthenticated_per_address'].default} per client address, "
                f"{f['max_unauthenticated_total'].default} in all"
            ),
            "`NOVA_MAX_UNAUTHENTICATED_PER_ADDRESS`, `NOVA_MAX_UNAUTHENTICATED_TOTAL`",
            "accepted, then closed 1013 at once; authenticated connections never count",
        ],
        [
            "JSON nesting",
            f"{protocol.MAX_JSON_DEPTH} levels (the envelope is level 1)",
            "fixed",
            "`error` `invalid_message`",
        ],
        [
            "integer literals",
            f"{_INT_DIGITS} digits; `since_seq` at most 2^63-1",
            "fixed",
            "`error` `invalid_message`",
        ],
    ]
    return "## Limits\n\n" + _table(["limit", "default", "setting", "when exceeded"], rows) + "\n"


def _messages() -> str:
    models = _message_models()
    _missing("message type", _MESSAGES, CLIENT_MESSAGE_TYPES + SERVER_MESSAGE_TYPES)
    out = ["## Messages\n"]
    for title, types in (
        ("Client to server", CLIENT_MESSAGE_TYPES),
        ("Server to client", SERVER_MESSAGE_TYPES),
    ):
        out.append(f"### {title}\n")
        out.append(", ".join(f"[`{t}`](#{t})" for t in types) + "\n")
        for type_ in types:
            prose, example = _MESSAGES[type_]
            parsed = parse_any_message(example)  # a wrong example fails the generation
            assert parsed.type == type_, f"example for {type_!r} is a {parsed.type!r}"
            schema = models[type_].model_json_schema()
            defs = schema.get("$defs", {})
            data_ref = schema["properties"]["data"]["$ref"].rsplit("/", 1)[-1]
            data_schema = defs[data_ref]
            rows = _field_rows(data_schema, defs, "", type_)
            out.append(f"#### `{type_}`\n\n{prose}\n")
            if rows:
                out.append(_table(["data field", "type", "required", "meaning"], rows) + "\n")
            else:
                out.append("`data` is an empty object (it may be omitted).\n")
            out.append(_json_block(example) + "\n")
    return "\n".join(out)


# ------------------------------------------------------------------ REST


def _openapi() -> dict[str, Any]:
    app = FastAPI(title="Nova reference server", version="1.0.0")
    app.include_router(rest.router)
    return app.openapi()


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _ordered(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> Any:
    """``value`` with object keys in the schema's field order (pydantic sorts examples)."""
    target = _resolve(doc, schema)
    if isinstance(value, list) and target.get("type") == "array":
        return [_ordered(doc, target.get("items", {}), v) for v in value]
    props = target.get("properties")
    if isinstance(value, dict) and props:
        order = [k for k in props if k in value] + [k for k in value if k not in props]
        return {k: _ordered(doc, props.get(k, {}), value[k]) for k in order}
    return value


def _example_of(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    """The first example of a (possibly referenced, possibly array) schema."""
    if schema.get("type") == "array":
        item = _example_of(doc, schema.get("items", {}))
        return None if item is None else [item]
    target = _resolve(doc, schema)
    if target.get("examples"):
        return _ordered(doc, target, target["examples"][0])
    props = target.get("properties")
    if props:
        example: dict[str, Any] = {}
        for name, prop in props.items():
            value = _example_of(doc, prop)
            if value is None and "examples" in prop:
                value = prop["examples"][0]
            if value is None:
                return None
            example[name] = value
        return example
    return target.get("examples", [None])[0]


def _rest_operation(doc: dict[str, Any], path: str, method: str, op: dict[str, Any]) -> str:
    lines = [
        f"### `{method.upper()} {path}`\n",
        f"{op.get('summary', '')}. {op.get('description', '')}\n",
    ]
    auth = "`X-API-Key` header" if op.get("security") else "none"
    lines.append(f"Authentication: {auth}.\n")
    params = op.get("parameters", [])
    if params:
        rows = []
        for p in params:
            schema = p.get("schema", {})
            constraints = _constraints(schema)
            for key, word in (("maximum", "<="),):
                if key in schema:
                    constraints.append(f"{word} {schema[key]}")
            note = schema.get("description") or p.get("description") or ""
            constraints = [
                c for c in constraints if not (c.startswith("matches `") and c[9:-1] in note)
            ]
            if constraints:
                note += (" " if note else "") + "(" + "; ".join(constraints) + ")"
            rows.append(
                [
                    f"`{p['name']}`",
                    p["in"],
                    _type_of(schema, {}),
                    "yes" if p.get("required") else "no",
                    note,
                ]
            )
        lines.append(_table(["parameter", "in", "type", "required", "meaning"], rows) + "\n")
    example_path = path
    for p in params:
        if p["in"] == "path":
            example_path = example_path.replace(
                "{" + p["name"] + "}", str(p["schema"]["examples"][0])
            )
    body_schema = (
        op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    )
    body = _example_of(doc, body_schema) if body_schema else None
    curl = ["curl"]
    if method != "get":
        curl.append(f"-X {method.upper()}")
    if op.get("security"):
        curl.append("-H 'X-API-Key: valid-test-key'")
    if body is not None:
        curl.append("-H 'Content-Type: application/json'")
        curl.append(f"-d '{json.dumps(body)}'")
    curl.append(f"http://127.0.0.1:8000{example_path}")
    lines.append("```sh\n" + " \\\n  ".join(curl) + "\n```\n")
    rows = []
    success: tuple[str, Any] | None = None
    for status, response in sorted(op["responses"].items()):
        rows.append([status, response.get("description", "")])
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if success is None and status.startswith("2") and schema is not None:
            example = _example_of(doc, schema)
            if example is not None:
                success = (status, example)
    if op.get("security"):
        rows.sort(key=lambda r: r[0])
    lines.append(_table(["status", "meaning"], rows) + "\n")
    primary = [s for s in op["responses"] if s.startswith("2")]
    if success is not None:
        status = min(primary, key=lambda s: (s != "201", s))
        lines.append(f"Response `{status}`:\n\n" + _json_block(success[1]) + "\n")
    return "\n".join(lines)


def _rest() -> str:
    doc = _openapi()
    out = [
        "## REST API\n",
        (
            "Authenticated by the `X-API-Key` header (401 without it or with an unknown key, 403 "
            "without the permission, same access table as the WebSocket). Errors are JSON: "
            '`{"detail": "..."}` for 401, 403 and 404; FastAPI\'s `{"detail": [{"loc", "msg", "type", ...}]}` '
            "for 422, naming the rule that was broken. The full OpenAPI document is served at "
            "`GET /openapi.json` (interactive: `/docs`).\n"
        ),
        (
            "A chat thread's messages are the channel `thread:{id}`: posting to a thread broadcasts a "
            "`channel_message` on that channel, and `GET /api/channels/thread:{id}` shows them too. "
            "The channel exists only with its thread: for an unknown id the REST API answers 404 "
            "and `subscribe` or `publish` answer `error` {code: `validation_error`, details: "
            "{channel, thread_id}}.\n"
        ),
    ]
    rows = [
        [f"`{m.upper()} {p}`", op.get("summary", "")]
        for p, ops in doc["paths"].items()
        for m, op in ops.items()
    ]
    out.append(_table(["operation", "what"], rows) + "\n")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            out.append(_rest_operation(doc, path, method, op))
    return "\n".join(out)


def _test_mode() -> str:
    return """\
## Test mode: the `/__harness` API

Started with `--test-mode` (`NOVA_TEST_MODE=1`), the server also serves a control API
under `/__harness/`, guarded by the `X-Harness-Token` header (`--test-token` /
`NOVA_TEST_TOKEN`; random unless given, printed at startup; an empty or blank token is
refused at start-up): reject or hold handshakes, close or abort a live socket, delay or
drop server-to-client frames, push an arbitrary frame, inspect connections. It is keyed
by client id. Without test mode every `/__harness` URL answers 404, exactly like an
unknown path. The URLs and bodies are listed in
`reference_server/harness_api.py`; the harness drives them for you.
"""


def render() -> str:
    """The whole of docs/protocol.md, deterministically (no clock, no environment)."""
    sections = [
        _intro(),
        _envelope(),
        _flow(),
        _session(),
        _identifiers(),
        _access(),
        _delivery(),
        _close_codes(),
        _error_codes(),
        _limits(),
        _messages(),
        _rest(),
        _test_mode(),
    ]
    return "\n".join(s.rstrip("\n") + "\n" for s in sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reference_server.docgen",
        description="Render docs/protocol.md from the protocol models (printed unless --write/--check).",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"write {DOCS_PATH.name} in docs/")
    group.add_argument("--check", action="store_true", help="exit 1 when docs/protocol.md is stale")
    parser.add_argument(
        "--path", type=Path, default=DOCS_PATH, help="the document (default: docs/protocol.md)"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        args.path.parent.mkdir(parents=True, exist_ok=True)
        args.path.write_text(text, encoding="utf-8")
        return 0
    if args.check:
        current = args.path.read_text(encoding="utf-8") if args.path.exists() else ""
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            str(args.path),
            "generated",
        )
        sys.stderr.writelines(list(diff)[:200])
        print(
            f"\n{args.path} is stale: regenerate it with `python -m reference_server.docgen --write`",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
