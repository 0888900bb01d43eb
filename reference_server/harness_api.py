"""The test-mode control API ``/__harness``: server-side faults and connection info.

URLs (JSON bodies; ``{client_id}`` is a client id, or ``*`` for every client)::

    GET    /__harness/faults                         every rule and the held handshakes
    DELETE /__harness/faults                         clear every rule, release every held handshake
    GET    /__harness/clients                        every open WebSocket connection
    GET    /__harness/clients/{client_id}            one client: connected, authenticated,
                                                     subscriptions, held handshakes, its rules
    DELETE /__harness/clients/{client_id}/faults     clear that key's rules, release its held handshakes
    DELETE /__harness/clients/{client_id}/faults/{kind}
                                                     remove that key's `kind` rule (reject, hold, delay
                                                     or drop) only -> {"removed": bool}; removing hold
                                                     releases its held handshakes

    rules (answer 200 with the key's rules; they apply to later handshakes / frames)
    POST   /__harness/clients/{client_id}/reject     {"status": 503, "count": 2, "body": "busy"}
                                                     next `count` handshakes (null: all) get HTTP `status`
    POST   /__harness/clients/{client_id}/hold       {"timeout_ms": null}
                                                     handshakes wait, browser stays CONNECTING
    POST   /__harness/clients/{client_id}/release    -> {"released": n}; released handshakes are
                                                     accepted, or rejected by an active reject rule
    POST   /__harness/clients/{client_id}/delay      {"ms": 500, "types": ["pong"]}
                                                     server-to-client frames (of `types`, null: all)
                                                     are sent `ms` later, in order; 0 removes the rule
    POST   /__harness/clients/{client_id}/drop       {"types": ["pong"], "count": 1}
                                                     discard frames of `types` (null: all),
                                                     `count` of them (null: all)

    commands on the live socket (409 when the client has no open connection)
    POST   /__harness/clients/{client_id}/close      {"code": 4000, "reason": "bye"}
                                                     close now (queued frames are discarded)
    POST   /__harness/clients/{client_id}/abort      drop TCP without a close frame (client sees 1006)
    POST   /__harness/clients/{client_id}/push       {"message": {...envelope...}, "validate": true}
                                                     or {"raw": "not json"}: send one text frame

Guarded twice: with ``settings.test_mode`` off, every ``/__harness`` URL (any
method, any body) answers ``404`` exactly as an unknown path does; in test
mode a request without the ``X-Harness-Token`` header gets ``401`` and one
with a wrong token ``403``.  Commands target the client's newest open
connection (``*``: every open connection).  Pushed messages are validated
against the server message models unless ``"validate": false``, are sent
exactly as given (not re-addressed) and bypass drop/delay rules.

The rules are the harness's pure ``FaultController``, loaded in test mode by
:mod:`reference_server.testmode`: the harness's ``FaultMiddleware`` in front of
the app decides handshakes (reject, hold) and the WebSocket endpoint
(:mod:`reference_server.ws`) applies the frame rules.  No route appears in the
OpenAPI document.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .hub import Hub
from .protocol import SERVER_MESSAGE_TYPES, ProtocolError, is_valid_client_id, parse_server_message
from .settings import Settings
from .testmode import AppFaults, FaultRules
from .ws import Connection, connection_registry

__all__ = [
    "TOKEN_HEADER",
    "CloseBody",
    "DelayBody",
    "DropBody",
    "HoldBody",
    "PushBody",
    "RejectBody",
    "router",
]

#: The header carrying ``settings.test_token``.
TOKEN_HEADER = "X-Harness-Token"

_NOT_FOUND = "Not Found"

#: The key of rules and commands that act on every client.
ANY_CLIENT = "*"


async def _guard(request: Request) -> None:
    """404 unless test mode; then 401 without the token header, 403 with a wrong token."""
    settings: Settings = request.app.state.settings
    if not settings.test_mode:
        raise HTTPException(status_code=404, detail=_NOT_FOUND)
    token = request.headers.get(TOKEN_HEADER)
    if token is None:
        raise HTTPException(
            status_code=401,
            detail=f"missing {TOKEN_HEADER} header: send the server's test token "
            "(settings.test_token / --test-token; printed at startup in test mode)",
        )
    if not hmac.compare_digest(token.encode("utf-8"), settings.test_token.encode("utf-8")):
        raise HTTPException(
            status_code=403,
            detail=f"wrong {TOKEN_HEADER}: it does not match this server's test token",
        )


router = APIRouter(prefix="/__harness", dependencies=[Depends(_guard)], include_in_schema=False)


# ----------------------------------------------------------------- bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RejectBody(_Body):
    status: int = Field(
        ge=400, le=599, description="HTTP status of the rejection, e.g. 403 or 503."
    )
    count: int | None = Field(default=None, ge=1, description="How many handshakes; null = all.")
    body: str = Field(default="", max_length=10_000, description="Plain-text response body.")


class HoldBody(_Body):
    timeout_ms: int | None = Field(
        default=None,
        ge=0,
        description="Let each held handshake proceed after this long; null = never.",
    )


class DelayBody(_Body):
    ms: int = Field(ge=0, le=600_000, description="Delay in milliseconds; 0 removes the rule.")
    types: list[str] | None = Field(default=None, description="Server message types; null = all.")


class DropBody(_Body):
    types: list[str] | None = Field(default=None, description="Server message types; null = all.")
    count: int | None = Field(default=None, ge=1, description="How many frames; null = all.")


class CloseBody(_Body):
    code: int = Field(default=1000, description="Close code: 1000-1003, 1007-1014 or 3000-4999.")
    reason: str = Field(default="", description="Close reason, at most 123 bytes of UTF-8.")


class PushBody(_Body):
    message: Any = Field(default=None, description="The frame to send, as JSON (a full envelope).")
    raw: str | None = Field(default=None, description="Text sent verbatim instead of `message`.")
    validate_message: bool = Field(
        default=True,
        alias="validate",
        description="Validate `message` against the server message models first.",
    )


_B = TypeVar("_B", bound=_Body)


async def _body(request: Request, model: type[_B]) -> _B:
    """Parse the JSON body after the guard ran (so a disabled API never reveals itself)."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise HTTPException(
            status_code=422,
            detail=[
                {"loc": ["body", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False, include_input=False)
            ],
        ) from None


def _check_types(types: list[str] | None) -> list[str] | None:
    if types is None:
        return None
    unknown = [t for t in types if t not in SERVER_MESSAGE_TYPES]
    if unknown or not types:
        raise HTTPException(
            status_code=422,
            detail=f"types must be a non-empty list of server message types "
            f"({', '.join(SERVER_MESSAGE_TYPES)}), or null for all; got unknown {unknown}",
        )
    return types


def _check_key(client_id: str) -> str:
    if client_id != ANY_CLIENT and not is_valid_client_id(client_id):
        raise HTTPException(
            status_code=422,
            detail=f"{client_id[:80]!r} is neither a valid client id (A-Z a-z 0-9 _ -, 1 to 64) nor '*'",
        )
    return client_id


# ----------------------------------------------------------------- state access


def _shim(request: Request) -> AppFaults:
    shim: AppFaults = request.app.state.fault_shim
    return shim


def _faults(request: Request) -> FaultRules:
    return _shim(request).rules


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def _targets(request: Request, client_id: str) -> list[Connection]:
    """The connections a command acts on; 409 when there is none."""
    registry = connection_registry(request.app.state)
    if client_id == ANY_CLIENT:
        targets = [c for c in registry.all() if not c.closing]
    else:
        current = registry.current(client_id)
        targets = [current] if current is not None else []
    if not targets:
        held = _faults(request).held(None if client_id == ANY_CLIENT else client_id)
        hint = (
            f"; {held} handshake(s) of it are being held: release them first"
            if held
            else "; connect it first, or check the client id"
        )
        who = "no client has" if client_id == ANY_CLIENT else f"client {client_id!r} has"
        raise HTTPException(status_code=409, detail=f"{who} no open WebSocket connection{hint}")
    return targets


def _rules(request: Request, client_id: str) -> dict[str, Any]:
    return {"client_id": client_id, "rules": _faults(request).rules_for(client_id)}


def _client_info(request: Request, client_id: str) -> dict[str, Any]:
    hub = _hub(request)
    conns = connection_registry(request.app.state).for_client(client_id)
    current = next((c for c in reversed(conns) if not c.closing), None)
    return {
        "client_id": client_id,
        "connected": current is not None,
        "authenticated": bool(current and current.authenticated),
        "subscriptions": hub.subscriptions(current) if current is not None else [],
        "connections": [c.info(hub) for c in conns],
        "held_handshakes": _faults(request).held(client_id),
        "rules": _faults(request).rules_for(client_id),
    }


# ----------------------------------------------------------------- routes: state


@router.get("/faults")
async def get_faults(request: Request) -> dict[str, Any]:
    """Every rule, keyed by client id (``*`` = all clients), and the held handshakes."""
    return _faults(request).snapshot()


@router.delete("/faults")
async def clear_all_faults(request: Request) -> dict[str, Any]:
    """Remove every rule and let every held handshake proceed."""
    _faults(request).clear()
    return _faults(request).snapshot()


@router.get("/clients")
async def list_clients(request: Request) -> list[dict[str, Any]]:
    """Every open connection, authenticated or not."""
    hub = _hub(request)
    return [c.info(hub) for c in connection_registry(request.app.state).all()]


@router.get("/clients/{client_id}")
async def get_client(request: Request, client_id: str) -> dict[str, Any]:
    """One client's connection state; ``connected: false`` when it has none (never 404)."""
    return _client_info(request, _check_key(client_id))


@router.delete("/clients/{client_id}/faults")
async def clear_client_faults(request: Request, client_id: str) -> dict[str, Any]:
    """Remove the rules keyed by ``client_id`` and release its held handshakes."""
    _faults(request).clear(_check_key(client_id))
    return _rules(request, client_id)


@router.delete("/clients/{client_id}/faults/{kind}")
async def remove_client_rule(request: Request, client_id: str, kind: str) -> dict[str, Any]:
    """Remove one kind of rule keyed by ``client_id``, leaving its other rules and holds as they are."""
    key = _check_key(client_id)
    kinds = _shim(request).rule_kinds
    if kind not in kinds:
        raise HTTPException(
            status_code=422,
            detail=f"unknown rule kind {kind[:40]!r}: use one of {', '.join(kinds)}",
        )
    removed = _faults(request).remove_rule(key, kind)
    return {**_rules(request, client_id), "removed": removed}


# ----------------------------------------------------------------- routes: rules


@router.post("/clients/{client_id}/reject")
async def reject_handshakes(request: Request, client_id: str) -> dict[str, Any]:
    body = await _body(request, RejectBody)
    _faults(request).reject_handshakes(_check_key(client_id), body.status, body.count, body.body)
    return _rules(request, client_id)


@router.post("/clients/{client_id}/hold")
async def hold_handshakes(request: Request, client_id: str) -> dict[str, Any]:
    body = await _body(request, HoldBody)
    _faults(request).hold_handshakes(_check_key(client_id), body.timeout_ms)
    return _rules(request, client_id)


@router.post("/clients/{client_id}/release")
async def release_handshakes(request: Request, client_id: str) -> dict[str, Any]:
    released = _faults(request).release_handshakes(_check_key(client_id))
    return {**_rules(request, client_id), "released": released}


@router.post("/clients/{client_id}/delay")
async def delay_replies(request: Request, client_id: str) -> dict[str, Any]:
    body = await _body(request, DelayBody)
    _faults(request).delay_replies(_check_key(client_id), body.ms, _check_types(body.types))
    return _rules(request, client_id)


@router.post("/clients/{client_id}/drop")
async def drop_messages(request: Request, client_id: str) -> dict[str, Any]:
    body = await _body(request, DropBody)
    _faults(request).drop_messages(_check_key(client_id), _check_types(body.types), body.count)
    return _rules(request, client_id)


# ----------------------------------------------------------------- routes: commands


@router.post("/clients/{client_id}/close")
async def close_connection(request: Request, client_id: str) -> dict[str, Any]:
    """Close now with ``code``/``reason``; answers once the close frame is sent."""
    body = await _body(request, CloseBody)
    problem = _shim(request).close_code_problem(body.code)
    if problem is not None:
        raise HTTPException(status_code=422, detail=problem)
    if len(body.reason.encode("utf-8")) > 123:
        raise HTTPException(
            status_code=422,
            detail="reason is longer than the 123 bytes a close frame can carry; shorten it",
        )
    targets = _targets(request, _check_key(client_id))
    await asyncio.gather(
        *(asyncio.shield(c.request_close(body.code, body.reason, urgent=True)) for c in targets)
    )
    return {
        "client_id": client_id,
        "closed": len(targets),
        "code": body.code,
        "reason": body.reason,
    }


@router.post("/clients/{client_id}/abort")
async def abort_connection(request: Request, client_id: str) -> dict[str, Any]:
    """Drop the TCP connection with no close frame (falls back to 1011 off uvicorn)."""
    targets = _targets(request, _check_key(client_id))
    aborted = [c.abort() for c in targets]
    return {"client_id": client_id, "aborted": len(targets), "fallback_1011": aborted.count(False)}


@router.post("/clients/{client_id}/push")
async def push_message(request: Request, client_id: str) -> dict[str, Any]:
    """Send one frame as given; validated against the server models unless ``validate: false``."""
    body = await _body(request, PushBody)
    if (body.raw is None) == (body.message is None):
        raise HTTPException(
            status_code=422, detail="give exactly one of `message` (JSON) or `raw` (verbatim text)"
        )
    if body.message is not None and body.validate_message:
        try:
            parse_server_message(body.message)
        except ProtocolError as exc:
            raise HTTPException(
                status_code=422,
                detail={
                    "message": f'{exc.message}; fix the frame or send it with "validate": false',
                    "details": exc.details,
                },
            ) from None
    payload: Any = body.raw if body.raw is not None else body.message
    targets = _targets(request, _check_key(client_id))
    full = [c.client_id for c in targets if not c.push(payload)]
    if full:
        raise HTTPException(status_code=409, detail=f"outbound queue full or closing for {full}")
    return {"client_id": client_id, "pushed": len(targets)}


@router.api_route(
    "/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
)
async def unknown_harness_url(request: Request, path: str) -> None:
    """Any other ``/__harness`` URL or method: 404 (the guard already hid a disabled API)."""
    raise HTTPException(
        status_code=404,
        detail=f"no harness endpoint {request.method} /__harness/{path}; "
        "see reference_server/harness_api.py (or docs) for the URL list",
    )
