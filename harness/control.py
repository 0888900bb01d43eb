"""Client of the reference server's test-mode fault control API (``/__harness``).

Thin: each method is one HTTP call; the decisions live in the server's pure
``FaultController``.  An error response raises :class:`FaultControlError`
with the server's explanation.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx

from .errors import FaultControlError

__all__ = ["FaultControl", "FaultControlError"]


class FaultControl:
    """Server-depth faults for one server, keyed by client id (a :class:`~harness.faults.ports.ServerFaultPort`)."""

    #: Faults are applied in the app's own process (the reference server, or FaultMiddleware).
    where = "server"

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        # TCP_NODELAY: httpx writes headers and body separately, and Nagle's algorithm
        # would hold the body for the server's delayed ACK (about 40 ms per call).
        transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self._http = httpx.Client(
            base_url=self.base_url, headers={"X-Harness-Token": token}, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        """Close the HTTP client (not a socket: see :meth:`close_socket`)."""
        self._http.close()

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        response = self._http.request(method, f"/__harness{path}", json=json)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise FaultControlError(
                f"{method} /__harness{path} answered {response.status_code}: {detail}"
                + (" (is the server in test mode?)" if response.status_code == 404 else ""),
                response.status_code,
            )
        return response.json() if response.content else None

    def _client(self, client_id: str) -> str:
        return f"/clients/{client_id}"

    # ------------------------------------------------------------ rules

    def reject_handshakes(self, client_id: str, status: int = 503, count: int | None = None) -> Any:
        """Answer the next ``count`` handshakes (all when None) with HTTP ``status``."""
        return self._call("POST", f"{self._client(client_id)}/reject", {"status": status, "count": count})

    def hold_handshakes(self, client_id: str, timeout_ms: int | None = None) -> Any:
        """Hold handshakes open (the browser stays CONNECTING) until released (or ``timeout_ms``)."""
        return self._call("POST", f"{self._client(client_id)}/hold", {"timeout_ms": timeout_ms})

    def release_handshakes(self, client_id: str) -> Any:
        """Remove the hold rule and let held handshakes proceed (a reject rule still rejects them)."""
        return self._call("POST", f"{self._client(client_id)}/release", {})

    def remove_rule(self, client_id: str, kind: str) -> Any:
        """Remove one kind of rule (``reject``, ``hold``, ``delay`` or ``drop``); the others stay.

        Answers the client's remaining rules and ``removed`` (whether there
        was such a rule).  Removing ``hold`` releases the held handshakes.
        """
        return self._call("DELETE", f"{self._client(client_id)}/faults/{kind}")

    def delay(self, client_id: str, ms: int, types: list[str] | None = None) -> Any:
        """Send server-to-client frames ``ms`` later, in order."""
        return self._call("POST", f"{self._client(client_id)}/delay", {"ms": ms, "types": types})

    def drop(self, client_id: str, types: list[str] | None = None, count: int | None = None) -> Any:
        """Discard server-to-client frames of ``types`` (all when None), ``count`` of them."""
        return self._call("POST", f"{self._client(client_id)}/drop", {"types": types, "count": count})

    # ------------------------------------------------------------ commands on the live socket

    def close_socket(self, client_id: str, code: int = 1011, reason: str = "") -> Any:
        """Close the client's live socket with ``code`` and ``reason``."""
        return self._call("POST", f"{self._client(client_id)}/close", {"code": code, "reason": reason})

    def abort(self, client_id: str) -> Any:
        """Drop the client's TCP connection without a close frame (the browser sees 1006)."""
        return self._call("POST", f"{self._client(client_id)}/abort", {})

    def push(self, client_id: str, message: dict[str, Any], *, validate: bool = True) -> Any:
        """Send ``message`` (a whole envelope) to the client as if the server had produced it."""
        return self._call("POST", f"{self._client(client_id)}/push", {"message": message, "validate": validate})

    def push_raw(self, client_id: str, text: str) -> Any:
        """Send one text frame exactly as given (for tests of the client's input handling)."""
        return self._call("POST", f"{self._client(client_id)}/push", {"raw": text})

    # ------------------------------------------------------------ state

    def clear(self, client_id: str | None = None) -> Any:
        """Lift every rule for ``client_id`` (every client when None)."""
        if client_id is None:
            return self._call("DELETE", "/faults")
        return self._call("DELETE", f"{self._client(client_id)}/faults")

    def state(self) -> Any:
        """Every active rule."""
        return self._call("GET", "/faults")

    def clients(self) -> Any:
        """Every open WebSocket connection."""
        return self._call("GET", "/clients")

    def client_info(self, client_id: str) -> Any:
        """Whether the client is connected and authenticated, and its subscriptions."""
        return self._call("GET", self._client(client_id))
