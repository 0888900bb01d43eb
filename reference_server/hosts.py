"""Host header validation against DNS rebinding: an ASGI middleware for HTTP and WebSocket.

A page on ``http://rebind.evil:8000`` whose name an attacker re-points at 127.0.0.1 is,
to the browser, its own origin: it can call the REST API and open a WebSocket whose
``Origin`` equals ``http://`` + its ``Host``, which the endpoint's own-origin check lets
through.  The ``Host`` header is the one thing such a request cannot hide, so
:class:`HostGuard` answers only to the names in ``settings.allowed_hosts``
(:data:`DEFAULT_ALLOWED_HOSTS`: the loopback names, any port) plus the address the
server is bound to; ``"*"`` turns the check off.

Patterns: a host name or IP literal (``localhost``, ``127.0.0.1``, ``::1`` or ``[::1]``),
``*.example.com`` for every subdomain of ``example.com``, or ``*``.  Comparison ignores
case, the port and a trailing dot.  A request with another ``Host``, or with none, is
refused before any route runs: HTTP with ``400`` and a JSON ``{"detail": ...}`` naming
the setting, a WebSocket handshake with an HTTP ``400`` denial (the ASGI
``websocket.http.response`` extension; a plain refusal, which uvicorn sends as 403,
where the server lacks it).

Starlette's ``TrustedHostMiddleware`` checks WebSocket scopes too, but answers
"Invalid host header" without saying which setting to change, redirects to a ``www.``
name when one is allowed, and assumes the denial extension; hence this small guard.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "DEFAULT_ALLOWED_HOSTS",
    "HostGuard",
    "HostPolicy",
    "host_name",
]

#: Names the server answers to unless ``settings.allowed_hosts`` says otherwise.
DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")

#: Bind addresses that name no single interface, so they add no allowed host.
_WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})

log = logging.getLogger("reference_server.hosts")


def host_name(header: str | None) -> str | None:
    """The host name of a ``Host`` header value, normalised; None when it has none.

    Lowercased, without the port, without brackets around an IPv6 literal and without
    a trailing dot: ``"[::1]:8000"`` -> ``"::1"``, ``"LocalHost.:80"`` -> ``"localhost"``.
    A bare IPv6 literal (``"::1"``) is accepted as it is.
    """
    if header is None:
        return None
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
    elif value.count(":") == 1:
        name, port = value.split(":")
        if not port.isdigit():
            return None
    else:
        name = value
    name = name.rstrip(".")
    return name or None


def _pattern(entry: str) -> str:
    raw = entry.strip().lower()
    if raw == "*":
        return raw
    if raw.startswith("*."):
        suffix = host_name(raw[2:])
        if suffix is None or "*" in suffix:
            raise ValueError(_bad_entry(entry))
        return f"*.{suffix}"
    has_port = (raw.startswith("[") and not raw.endswith("]")) or raw.count(":") == 1
    name = host_name(raw)
    if has_port or name is None or "*" in name:
        raise ValueError(_bad_entry(entry))
    return name


def _bad_entry(entry: str) -> str:
    return (
        f"allowed_hosts entry {entry!r} is not a host pattern: write a host name or IP "
        "literal without a port (any port is allowed), '*.example.com' for its subdomains, "
        "or '*' for any host (NOVA_ALLOWED_HOSTS)"
    )


@dataclass(frozen=True)
class HostPolicy:
    """Which ``Host`` names a server answers to (pure; see the module docstring)."""

    patterns: tuple[str, ...]

    @classmethod
    def build(cls, allowed: Iterable[str], *, bind_host: str | None = None) -> HostPolicy:
        """The policy for ``allowed`` plus the bind address; ValueError names a bad entry."""
        patterns = [_pattern(entry) for entry in allowed]
        if bind_host is not None and bind_host.strip().lower() not in _WILDCARD_BINDS:
            bound = host_name(bind_host)
            if bound is not None:
                patterns.append(bound)
        return cls(tuple(dict.fromkeys(patterns)))

    @property
    def allow_any(self) -> bool:
        return "*" in self.patterns

    def allows(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header value may reach the app."""
        if self.allow_any:
            return True
        name = host_name(header)
        if name is None:
            return False
        for pattern in self.patterns:
            if name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])):
                return True
        return False

    def refusal(self, header: str | None) -> str:
        """Why a request with this ``Host`` is refused, and the fix."""
        shown = "no Host header" if header is None else f"Host {header[:100]!r}"
        return (
            f"{shown} is not allowed: this server answers only to {list(self.patterns)} "
            "(a guard against DNS rebinding); add the name you reach it by to "
            "settings.allowed_hosts (NOVA_ALLOWED_HOSTS), or '*' to allow any host"
        )


class HostGuard:
    """ASGI middleware refusing HTTP requests and WebSocket handshakes whose ``Host`` the policy rejects.

    Lifespan and other scopes pass untouched; so does everything when the policy
    allows any host.
    """

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or self.policy.allow_any:
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("host")
        if self.policy.allows(header):
            await self.app(scope, receive, send)
            return
        message = self.policy.refusal(header)
        log.warning("refused %s %s: %s", kind, scope.get("path", ""), message)
        response: Response
        if kind == "http":
            response = JSONResponse({"detail": message}, status_code=400)
        elif "websocket.http.response" in scope.get("extensions", {}):
            response = PlainTextResponse(message, status_code=400)
        else:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
            return
        await response(scope, receive, send)
