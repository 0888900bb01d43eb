"""Server-depth faults for any in-process ASGI app: :class:`FaultMiddleware`.

The middleware applies the decisions of the pure
:class:`~harness.faults.controller.FaultController` to the WebSocket
connections of the app it wraps, and answers the harness's fault control API
(``/__harness``, the URLs and JSON answers :class:`harness.FaultControl` speaks)
itself, so an app needs no code of its own for ``ws_faults.close(code)``,
``abort()``, ``reject_handshakes()``, ``hold_handshakes()``, pushed frames
(``simulate_error``) or server-side drop and delay rules.

``--ws-app`` apps are wrapped automatically (see :mod:`harness.serving`).  To
mount it in a project's own test deployment, wrap the app where it is built::

    import os
    from harness.asgi import FaultMiddleware
    from myproject.main import app

    app = FaultMiddleware(app, ws_path="/chat/{client_id}", token=os.environ["HARNESS_TOKEN"])

and point the tests at it with ``--ws-base-url`` and ``--ws-harness-token``.
With ``token=None`` the control API is off and ``/__harness`` reaches the app
as any other path, so the same code can stay mounted in a production-like
deployment without exposing anything.  Put it outermost (outside other
middleware), so ``abort()`` can reach the server's transport.

**How a connection is keyed.**  A WebSocket request belongs to the client
whose id sits at the ``{client_id}`` placeholder of ``ws_path``, in its path
(``/chat/{client_id}``) or its query (``/ws?room=1&user={client_id}``); else
to the client named by the ``nova_ws_client_id`` cookie, which the harness
sets on the test's browser context (see :mod:`harness.app.requests`).
Requests with no client id, plain HTTP (except the control API) and lifespan
pass through untouched.  Rules and commands keyed ``*`` act on every client.

**What each fault does here**

- reject: the handshake is answered with the rule's HTTP status and body
  through the ASGI ``websocket.http.response`` extension (uvicorn offers it);
  under a server without it, with ``websocket.close`` before accepting, which
  the server turns into HTTP 403 whatever the rule's status (a warning is logged);
- hold: the app is not called until the hold is over (released, cleared or
  timed out), and a reject rule set meanwhile still rejects it then; a client
  that goes away while held is forgotten;
- close(code, reason): a genuine close frame through the server; the app's
  next ``receive()`` returns ``websocket.disconnect`` with that code, and
  what the app sends afterwards is dropped quietly;
- abort: the TCP connection is dropped without a close frame (the browser
  sees 1006).  This needs the server's transport, which uvicorn exposes as
  ``send.__self__.transport``; elsewhere ``abort`` answers 501 naming the
  fault proxy's ``reset()`` instead, never a silent fallback;
- push / push raw: one text frame sent as if the app had sent it, bypassing
  drop and delay rules.  ``push`` does not validate the frame (a foreign app
  has no models the harness knows): ``"validate"`` is accepted and ignored;
- drop / delay: decided per text frame the app sends, typed by
  :func:`harness.matching.type_of` with ``type_key`` (a frame that is not a
  JSON object with that key, and every binary frame, is untyped: only rules
  without ``types`` apply to it).  ``types`` are any strings.  A delayed frame
  leaves ``ms`` after the app sent it, and frames of one connection never
  overtake each other.

**What is unrealistic.**  Rejected and held handshakes were accepted at TCP
level and parsed by the app's own server, so the rejection comes from the
app's process, not from a load balancer in front of it.  A delayed or dropped
frame's ``send()`` returns at once (the app feels no backpressure while it is
delayed; delayed frames wait in memory).  A close's ``websocket.disconnect``
reaches the app before the client answered the close frame.  A pushed frame
is sent behind the app's back: the app does not know it was sent.

**The control API** (token in the ``X-Harness-Token`` header: 401 without
it, 403 with a wrong one; errors answer ``{"detail": message}``)::

    GET    /__harness/faults                         every rule and the held handshakes
    DELETE /__harness/faults                         clear every rule, release every held handshake
    GET    /__harness/clients                        every live WebSocket connection
    GET    /__harness/clients/{client_id}            connected, connections, held handshakes, rules
    DELETE /__harness/clients/{client_id}/faults     clear that key's rules, release its held handshakes
    DELETE /__harness/clients/{client_id}/faults/{kind}
                                                     remove that key's reject, hold, delay or drop rule
                                                     -> {"removed": bool}
    POST   /__harness/clients/{client_id}/reject     {"status": 503, "count": 2, "body": "busy"}
    POST   /__harness/clients/{client_id}/hold       {"timeout_ms": null}
    POST   /__harness/clients/{client_id}/release    -> {"released": n}
    POST   /__harness/clients/{client_id}/delay      {"ms": 500, "types": ["chat"]}
    POST   /__harness/clients/{client_id}/drop       {"types": ["chat"], "count": 1}
    POST   /__harness/clients/{client_id}/close      {"code": 4000, "reason": "bye"}   (409: no live socket)
    POST   /__harness/clients/{client_id}/abort      (409: no live socket; 501: no transport)
    POST   /__harness/clients/{client_id}/push       {"message": {...}} or {"raw": "text"} (409: no live socket)

A bad body answers 422 with a message; any other URL or method 404.

**In process**, ``middleware.controller`` is the :class:`FaultController`
itself and ``middleware.held(client_id)`` counts waiting handshakes.  The
controller is not thread-safe: when the server runs on another thread, set
rules through the control API (``FaultControl``); a held handshake is woken
safely from any thread, though.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from .app.requests import client_id_from_request
from .faults.controller import (
    ANY_CLIENT,
    RULE_KINDS,
    FaultController,
    Hold,
    Reject,
    close_code_problem,
)
from .matching import type_of

__all__ = ["CONTROL_PREFIX", "TOKEN_HEADER", "AppFaults", "FaultMiddleware", "install_test_mode"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where the control API lives (under the app's ``root_path``).
CONTROL_PREFIX = "/__harness"

#: The header carrying the middleware's token.
TOKEN_HEADER = "X-Harness-Token"

log = logging.getLogger("harness.asgi")

_TOKEN_HEADER_KEY = TOKEN_HEADER.lower().encode("latin-1")
_DENIAL_EXTENSION = "websocket.http.response"
_DEFAULT_REJECT_BODY = "handshake rejected by a harness fault rule"
# The controller types frames by str; a frame with no type must meet only rules without
# types, and no type name a test sets can contain NUL.
_UNTYPED = "\x00untyped"
_MAX_BODY_BYTES = 1024 * 1024
_MAX_DELAY_MS = 600_000


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class _HTTPError(Exception):
    """A control API answer other than 200."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _abort_unavailable(owner: object) -> str:
    try:
        version = f"uvicorn {metadata.version('uvicorn')} is installed"
    except metadata.PackageNotFoundError:
        version = "uvicorn is not installed"
    server = "no object" if owner is None else f"{type(owner).__module__}.{type(owner).__qualname__}"
    return (
        "abort needs the ASGI server's transport to drop the TCP connection without a close "
        f"frame, but the connection's send() belongs to {server}, which has no .transport "
        f"({version}; its protocol objects expose one when FaultMiddleware is the outermost "
        "middleware). Serve the app with uvicorn and mount FaultMiddleware outermost, or use "
        "the fault proxy's reset() (ws_faults.reset(), network depth) for a connection lost "
        "without a close frame"
    )


# ----------------------------------------------------------------- one live connection


class _Socket:
    """One WebSocket connection of a client: the app's receive/send, wrapped."""

    def __init__(
        self,
        owner: FaultMiddleware,
        client_id: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        replay: list[Message],
    ) -> None:
        self.owner = owner
        self.client_id = client_id
        self.path: str = scope.get("path", "")
        self.connected_at = ""
        self.live = False
        #: (code, reason) once the harness closed or aborted it: the app then only sees disconnect.
        self.ended: tuple[int, str] | None = None
        self._receive = receive
        self._send = send
        self._replay = deque(replay)
        self._queued: deque[tuple[float, Message]] = deque()
        self._writer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ the app's side

    def _disconnect(self) -> Message:
        assert self.ended is not None
        code, reason = self.ended
        return {"type": "websocket.disconnect", "code": code, "reason": reason}

    async def receive(self) -> Message:
        if self._replay:
            return self._replay.popleft()
        if self.ended is not None:
            return self._disconnect()
        message = await self._receive()
        if self.ended is not None:
            return self._disconnect()
        if message["type"] == "websocket.disconnect":
            self.owner._forget(self)
        return message

    async def send(self, message: Message) -> None:
        if self.ended is not None:
            return  # closed or aborted by the harness: the app's late frames go nowhere
        kind = message["type"]
        if kind == "websocket.send":
            if self._queued or self.owner.controller.active:
                await self._outbound(message)
                return
        elif kind == "websocket.accept":
            await self._send_now(message)
            self.connected_at = _now_iso()
            self.owner._register(self)
            return
        elif kind == "websocket.close":
            self.owner._forget(self)
            if self._queued:
                self._enqueue(message, 0)  # after the delayed frames, as the app sent it
                return
        await self._send_now(message)

    async def _send_now(self, message: Message) -> None:
        try:
            await self._send(message)
        except Exception:
            if self.ended is None:
                raise
            # The harness closed or aborted the socket while this send was under way.

    async def _outbound(self, message: Message) -> None:
        decision = self.owner.controller.outbound(self.client_id, self._type(message))
        if not decision.deliver:
            return
        if decision.delay_ms == 0 and not self._queued:
            await self._send_now(message)
            return
        self._enqueue(message, decision.delay_ms)

    def _type(self, message: Message) -> str:
        text = message.get("text")
        if text is None:
            return _UNTYPED
        try:
            parsed = json.loads(text)
        except ValueError:
            return _UNTYPED
        found = type_of(parsed, self.owner.type_key)
        return _UNTYPED if found is None else found

    def _enqueue(self, message: Message, delay_ms: int) -> None:
        loop = asyncio.get_running_loop()
        self._queued.append((loop.time() + delay_ms / 1000, message))
        if self._writer is None:
            self._writer = loop.create_task(
                self._write_queued(), name=f"harness-delay:{self.client_id}"
            )

    async def _write_queued(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queued:
                due, message = self._queued[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._queued.popleft()
                await self._send(message)
        except Exception as exc:  # noqa: BLE001 - the client is gone: nothing left to deliver to
            log.debug("delayed frames of %s not sent: %r", self.client_id, exc)
            self._queued.clear()
        finally:
            self._writer = None

    async def drain(self) -> None:
        """Wait until the delayed frames are sent (the app returned; the server would close)."""
        writer = self._writer
        if writer is not None:
            await asyncio.wait({writer})

    def discard_queued(self) -> None:
        self._queued.clear()
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None

    # ------------------------------------------------------------ the harness's commands

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame now (delayed frames are discarded)."""
        self.ended = (code, reason)
        self.discard_queued()
        self.owner._forget(self)
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception as exc:  # noqa: BLE001 - already gone: closed either way
            log.debug("close %d of %s not sent: %r", code, self.client_id, exc)

    def transport(self) -> Any:
        """The server's transport of this connection, or raise _HTTPError 501 saying why not."""
        owner = getattr(self._send, "__self__", None)
        transport = getattr(owner, "transport", None)
        if transport is None or not callable(getattr(transport, "abort", None)):
            raise _HTTPError(501, _abort_unavailable(owner))
        return transport

    def abort(self, transport: Any) -> None:
        """Drop the TCP connection with no close frame."""
        self.ended = (1006, "")
        self.discard_queued()
        self.owner._forget(self)
        transport.abort()

    async def push(self, text: str) -> bool:
        """Send one text frame now, bypassing rules; False when the socket is closing or gone."""
        if self.ended is not None:
            return False
        try:
            await self._send({"type": "websocket.send", "text": text})
        except Exception as exc:  # noqa: BLE001 - reported to the caller as 409
            log.debug("push to %s failed: %r", self.client_id, exc)
            return False
        return True

    def info(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "connected_at": self.connected_at,
            "path": self.path,
            "queued": len(self._queued),
        }


# ----------------------------------------------------------------- the middleware


class FaultMiddleware:
    """Pure ASGI middleware applying server-depth faults to any app (see the module docstring).

    ``ws_path`` is the WebSocket path pattern with ``{client_id}`` in its path
    or query (requests that do not match are keyed by the client id cookie);
    ``token`` turns the ``/__harness`` control API on (None: off, and the path
    goes to the app); ``type_key`` is the key (dotted path) that types the
    app's JSON frames for drop and delay rules; ``controller`` lets several
    shims share one set of rules (a new one by default).  With
    ``handshakes_only`` the middleware decides handshakes only (reject, hold)
    and hands accepted sockets to the app untouched: for an app that applies
    the frame rules and live-socket commands itself (the reference server).

    Raises ValueError for an empty or blank token.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        ws_path: str = "/debug/{client_id}",
        token: str | None = None,
        type_key: str = "type",
        controller: FaultController | None = None,
        handshakes_only: bool = False,
    ) -> None:
        if token is not None and not token.strip():
            raise ValueError(
                "FaultMiddleware token is empty: pass a secret (e.g. secrets.token_urlsafe(16)) "
                "to turn the /__harness control API on, or token=None to leave it off"
            )
        self.app = app
        self.ws_path = ws_path
        self.type_key = type_key
        self.controller = controller if controller is not None else FaultController()
        self.handshakes_only = handshakes_only
        self._token = token.encode("utf-8") if token is not None else None
        self._sockets: dict[str, list[_Socket]] = {}

    def held(self, client_id: str | None = None) -> int:
        """How many handshakes of ``client_id`` (of anyone when None) are being held now."""
        return self.controller.held(client_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            client_id = self._client_id(scope)
            if client_id is not None:
                await self._websocket(scope, receive, send, client_id)
                return
        elif kind == "http" and self._token is not None:
            rest = self._control_path(scope)
            if rest is not None:
                await self._control(scope, receive, send, rest)
                return
        await self.app(scope, receive, send)

    # ------------------------------------------------------------ WebSocket handshakes

    def _client_id(self, scope: Scope) -> str | None:
        query = scope.get("query_string", b"").decode("latin-1")
        cookies = [value for name, value in scope.get("headers", ()) if name == b"cookie"]
        cookie_header = b"; ".join(cookies).decode("latin-1") if cookies else None
        return client_id_from_request(self.ws_path, scope.get("path", ""), query, cookie_header)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, client_id: str) -> None:
        first = await receive()
        replay = [first]
        if first["type"] == "websocket.connect":
            decision: Any = self.controller.on_handshake(client_id, time.monotonic())
            if _is_hold(decision):
                log.info("handshake of %s held by a fault rule", client_id)
                try:
                    arrived = await self._wait_out_hold(decision, receive)
                finally:
                    self.controller.end_hold(decision.ticket)
                if arrived is not None:
                    if arrived["type"] == "websocket.disconnect":
                        log.info("held handshake of %s: the client went away", client_id)
                        return
                    replay.append(arrived)
                decision = self.controller.after_hold(client_id)
            if _is_reject(decision):
                log.info("handshake of %s rejected with %d by a fault rule", client_id, decision.status)
                await self._deny(scope, send, decision)
                return
        if self.handshakes_only:
            await self.app(scope, _replaying(replay, receive), send)
            return
        sock = _Socket(self, client_id, scope, receive, send, replay)
        try:
            await self.app(scope, sock.receive, sock.send)
        except BaseException:
            sock.discard_queued()
            raise
        else:
            await sock.drain()
        finally:
            self._forget(sock)

    async def _wait_out_hold(self, hold: Hold, receive: Receive) -> Message | None:
        """Wait until ``hold`` is over: None then, or the message that came first (client gone)."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        # Rules may change on another thread (the in-process handle): wake through the loop.
        def wake_up() -> None:
            loop.call_soon_threadsafe(wake.set)

        remove_listener = self.controller.add_listener(wake_up)
        arrived = asyncio.ensure_future(receive())
        try:
            while True:
                wake.clear()
                if self.controller.hold_over(hold.ticket, time.monotonic()):
                    break
                timeout = None if hold.deadline is None else max(0.0, hold.deadline - time.monotonic())
                woken = asyncio.ensure_future(wake.wait())
                done, _ = await asyncio.wait(
                    {woken, arrived}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                woken.cancel()
                if arrived in done:
                    return arrived.result()
        finally:
            remove_listener()
            if not arrived.done():
                arrived.cancel()
        return arrived.result() if arrived.done() and not arrived.cancelled() else None

    async def _deny(self, scope: Scope, send: Send, reject: Reject) -> None:
        if _DENIAL_EXTENSION in (scope.get("extensions") or {}):
            body = (reject.body or _DEFAULT_REJECT_BODY).encode("utf-8")
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": reject.status,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode("ascii")),
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
            return
        log.warning(
            "the ASGI server lacks the websocket.http.response extension: "
            "denying the handshake with 403 instead of %d",
            reject.status,
        )
        await send({"type": "websocket.close", "code": 1008})

    # ------------------------------------------------------------ live sockets

    def _register(self, sock: _Socket) -> None:
        if not sock.live:
            sock.live = True
            self._sockets.setdefault(sock.client_id, []).append(sock)

    def _forget(self, sock: _Socket) -> None:
        if not sock.live:
            return
        sock.live = False
        sockets = self._sockets.get(sock.client_id)
        if sockets is not None:
            if sock in sockets:
                sockets.remove(sock)
            if not sockets:
                del self._sockets[sock.client_id]

    def _targets(self, client_id: str) -> list[_Socket]:
        """The sockets a command acts on (newest of the client, every one for ``*``); else 409."""
        if client_id == ANY_CLIENT:
            targets = [s for sockets in self._sockets.values() for s in sockets]
        else:
            sockets = self._sockets.get(client_id)
            targets = [sockets[-1]] if sockets else []
        if targets:
            return targets
        held = self.controller.held(None if client_id == ANY_CLIENT else client_id)
        hint = (
            f"; {held} handshake(s) of it are being held: release them first"
            if held
            else "; connect it first, or check the client id (and ws_path)"
        )
        who = "no client has" if client_id == ANY_CLIENT else f"client {client_id!r} has"
        raise _HTTPError(409, f"{who} no open WebSocket connection{hint}")

    # ------------------------------------------------------------ the control API

    def _control_path(self, scope: Scope) -> str | None:
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            return path[len(CONTROL_PREFIX) :]
        return None

    async def _control(self, scope: Scope, receive: Receive, send: Send, rest: str) -> None:
        method: str = scope.get("method", "GET")
        try:
            self._authorize(scope)
            body = await _read_body(receive)
            status, answer = 200, await self._route(method, rest, body)
        except _HTTPError as exc:
            status, answer = exc.status, {"detail": exc.detail}
        payload = json.dumps(answer).encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode("ascii")),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _authorize(self, scope: Scope) -> None:
        assert self._token is not None
        given = next((v for k, v in scope.get("headers", ()) if k == _TOKEN_HEADER_KEY), None)
        if given is None:
            raise _HTTPError(
                401,
                f"missing {TOKEN_HEADER} header: send the token the FaultMiddleware was built "
                "with (ServerUnderTest.faults does; --ws-harness-token for an app already running)",
            )
        if not hmac.compare_digest(given, self._token):
            raise _HTTPError(
                403, f"wrong {TOKEN_HEADER}: it does not match this FaultMiddleware's token"
            )

    async def _route(self, method: str, rest: str, raw: bytes) -> Any:
        parts = [p for p in rest.split("/") if p]
        faults = self.controller
        match method, parts:
            case "GET", ["faults"]:
                return faults.snapshot()
            case "DELETE", ["faults"]:
                faults.clear()
                return faults.snapshot()
            case "GET", ["clients"]:
                return [s.info() for sockets in self._sockets.values() for s in sockets]
            case "GET", ["clients", client_id]:
                return self._client_info(client_id)
            case "DELETE", ["clients", client_id, "faults"]:
                faults.clear(client_id)
                return self._rules(client_id)
            case "DELETE", ["clients", client_id, "faults", kind]:
                if kind not in RULE_KINDS:
                    raise _HTTPError(
                        422, f"unknown rule kind {kind[:40]!r}: use one of {', '.join(RULE_KINDS)}"
                    )
                removed = faults.remove_rule(client_id, kind)
                return {**self._rules(client_id), "removed": removed}
            case "POST", ["clients", client_id, action] if action in _COMMANDS:
                return await _COMMANDS[action](self, client_id, raw)
        raise _HTTPError(
            404,
            f"no harness endpoint {method} {CONTROL_PREFIX}{rest}; "
            "see harness.asgi (or docs/faults.md) for the URL list",
        )

    def _rules(self, client_id: str) -> dict[str, Any]:
        return {"client_id": client_id, "rules": self.controller.rules_for(client_id)}

    def _client_info(self, client_id: str) -> dict[str, Any]:
        sockets = self._sockets.get(client_id, [])
        return {
            "client_id": client_id,
            "connected": bool(sockets),
            "connections": [s.info() for s in sockets],
            "held_handshakes": self.controller.held(client_id),
            "rules": self.controller.rules_for(client_id),
        }

    # ------------------------------------------------------------ commands (POST)

    async def _post_reject(self, client_id: str, raw: bytes) -> Any:
        body = _Body(raw, ("status", "count", "body"))
        status = body.integer("status")
        count = body.integer("count", default=None)
        text = body.text("body", default="", max_bytes=10_000)
        assert status is not None
        _apply(self.controller.reject_handshakes, client_id, status, count, text)
        return self._rules(client_id)

    async def _post_hold(self, client_id: str, raw: bytes) -> Any:
        body = _Body(raw, ("timeout_ms",))
        _apply(self.controller.hold_handshakes, client_id, body.integer("timeout_ms", default=None))
        return self._rules(client_id)

    async def _post_release(self, client_id: str, raw: bytes) -> Any:
        released = self.controller.release_handshakes(client_id)
        return {**self._rules(client_id), "released": released}

    async def _post_delay(self, client_id: str, raw: bytes) -> Any:
        body = _Body(raw, ("ms", "types"))
        ms = body.integer("ms")
        assert ms is not None
        if ms > _MAX_DELAY_MS:
            raise _HTTPError(422, f"ms must be at most {_MAX_DELAY_MS} (10 minutes), got {ms}")
        _apply(self.controller.delay_replies, client_id, ms, body.types())
        return self._rules(client_id)

    async def _post_drop(self, client_id: str, raw: bytes) -> Any:
        body = _Body(raw, ("types", "count"))
        types = body.types()
        _apply(self.controller.drop_messages, client_id, types, body.integer("count", default=None))
        return self._rules(client_id)

    async def _post_close(self, client_id: str, raw: bytes) -> Any:
        body = _Body(raw, ("code", "reason"))
        code = body.integer("code", default=1000)
        reason = body.text("reason", default="", max_bytes=123) or ""
        assert code is not None
        problem = close_code_problem(code)
        if problem is not None:
            raise _HTTPError(422, problem)
        targets = self._targets(client_id)
        await asyncio.gather(*(s.close(code, reason) for s in targets))
        return {"client_id": client_id, "closed": len(targets), "code": code, "reason": reason}

    async def _post_abort(self, client_id: str, raw: bytes) -> Any:
        targets = self._targets(client_id)
        transports = [s.transport() for s in targets]  # all or none: probe before acting
        for sock, transport in zip(targets, transports, strict=True):
            sock.abort(transport)
        # fallback_1011 keeps the reference server's answer shape: this shim never falls back.
        return {"client_id": client_id, "aborted": len(targets), "fallback_1011": 0}

    async def _post_push(self, client_id: str, raw: bytes) -> Any:
        body = _Body(raw, ("message", "raw", "validate"))
        message = body.value("message")
        text = body.text("raw", default=None)
        body.boolean("validate", default=True)  # accepted for FaultControl; nothing to validate against
        if (text is None) == (message is None):
            raise _HTTPError(
                422, "give exactly one of `message` (JSON) or `raw` (verbatim text)"
            )
        payload = text if text is not None else _dumps(message)
        targets = self._targets(client_id)
        sent = await asyncio.gather(*(s.push(payload) for s in targets))
        failed = [s.client_id for s, ok in zip(targets, sent, strict=True) if not ok]
        if failed:
            raise _HTTPError(409, f"the socket of {failed} is closing or gone: nothing was pushed")
        return {"client_id": client_id, "pushed": len(targets)}


_COMMANDS: dict[str, Callable[[FaultMiddleware, str, bytes], Awaitable[Any]]] = {
    "reject": FaultMiddleware._post_reject,
    "hold": FaultMiddleware._post_hold,
    "release": FaultMiddleware._post_release,
    "delay": FaultMiddleware._post_delay,
    "drop": FaultMiddleware._post_drop,
    "close": FaultMiddleware._post_close,
    "abort": FaultMiddleware._post_abort,
    "push": FaultMiddleware._post_push,
}


@dataclass(frozen=True)
class AppFaults:
    """What :func:`install_test_mode` gives an app: the rules, and the control API's vocabulary."""

    rules: FaultController
    rule_kinds: tuple[str, ...] = RULE_KINDS

    def close_code_problem(self, code: int) -> str | None:
        """Why ``code`` cannot be sent in a close frame (RFC 6455 section 7.4), or None."""
        return close_code_problem(code)


def install_test_mode(app: Any, *, ws_path: str) -> AppFaults:
    """Put server-depth faults on a Starlette or FastAPI ``app`` that keeps its own control API.

    Mounts :class:`FaultMiddleware` with ``handshakes_only=True`` (reject and
    hold are decided here, before the app sees the handshake) through
    ``app.add_middleware``, so it sits inside middleware added later, and
    returns the new :class:`FaultController` for the app to apply frame rules
    with and to set rules from its own ``/__harness`` routes.  This is how the
    reference server's test mode gets its faults (the ``faults`` entry point of
    the ``nova_ws.test_mode`` group), standalone or served by the harness.
    """
    controller = FaultController()
    app.add_middleware(FaultMiddleware, ws_path=ws_path, controller=controller, handshakes_only=True)
    return AppFaults(controller)


def _is_hold(decision: object) -> bool:
    # By shape, not class: a controller shared with the app (the reference server's own) has
    # decision classes of its own with the same fields.
    return hasattr(decision, "ticket") and hasattr(decision, "deadline")


def _is_reject(decision: object) -> bool:
    return hasattr(decision, "status") and hasattr(decision, "body")


def _replaying(first: list[Message], receive: Receive) -> Receive:
    """``receive``, answering with ``first`` (the messages the middleware read already) first."""
    pending = list(first)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _apply(setter: Callable[..., Any], *args: Any) -> None:
    """Set a rule; the controller's own ValueError/TypeError messages become 422 answers."""
    try:
        setter(*args)
    except (ValueError, TypeError) as exc:
        raise _HTTPError(422, str(exc)) from None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; the answer goes nowhere
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            raise _HTTPError(413, f"request body larger than {_MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


_MISSING: Any = object()


class _Body:
    """A JSON object body, read field by field; every problem is a 422 saying what was expected."""

    def __init__(self, raw: bytes, fields: tuple[str, ...]) -> None:
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise _HTTPError(422, f"the body is not JSON ({exc}); send a JSON object") from None
        if not isinstance(data, dict):
            raise _HTTPError(422, f"the body must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise _HTTPError(
                422, f"unknown field(s) {unknown}; this endpoint takes {', '.join(fields)}"
            )
        self._data: dict[str, Any] = data

    def value(self, name: str) -> Any:
        return self._data.get(name)

    def integer(self, name: str, *, default: Any = _MISSING) -> int | None:
        value = self._data.get(name, default)
        if value is _MISSING:
            raise _HTTPError(422, f"field {name!r} is required (an integer)")
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            allowed = "an integer or null" if default is None else "an integer"
            raise _HTTPError(422, f"field {name!r} must be {allowed}, got {value!r}")
        return value

    def text(self, name: str, *, default: str | None, max_bytes: int | None = None) -> str | None:
        value = self._data.get(name, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str):
            raise _HTTPError(422, f"field {name!r} must be a string, got {value!r}")
        if max_bytes is not None and len(value.encode("utf-8")) > max_bytes:
            raise _HTTPError(
                422, f"field {name!r} is longer than {max_bytes} bytes of UTF-8; shorten it"
            )
        return value

    def boolean(self, name: str, *, default: bool) -> bool:
        value = self._data.get(name, default)
        if not isinstance(value, bool):
            raise _HTTPError(422, f"field {name!r} must be true or false, got {value!r}")
        return value

    def types(self) -> list[str] | None:
        value = self._data.get("types")
        if value is None:
            return None
        if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
            raise _HTTPError(
                422,
                f"field 'types' must be a non-empty list of frame type names, or null for "
                f"every frame; got {value!r}",
            )
        return value
