"""Server-depth faults through the fault proxy, for an app in any language.

:class:`ProxyFaultControl` is the :class:`~harness.faults.ports.ServerFaultPort`
of a :class:`~harness.proxy.FaultProxy` that has a ``ws_path``: the same
methods and answers as :class:`harness.FaultControl` (the HTTP client of a
``/__harness`` API), applied on the wire by the proxy, so the app needs no
harness code::

    proxy = FaultProxy(("127.0.0.1", 8000), ws_path="/ws/{client_id}").start()
    faults = ProxyFaultControl(proxy)
    faults.reject_handshakes("client-1", 503, count=1)   # the next upgrade gets a 503
    faults.close_socket("client-1", 4000, "bye")          # a real close handshake

Every call runs on the proxy loop (the proxy's ``_call``: it waits only
until the loop has run it, at most ``control_timeout`` seconds).  Rules are
the harness's pure :class:`~harness.faults.controller.FaultController`
(``proxy.controller``); commands act on the client's newest live WebSocket
through the proxy and raise :class:`~harness.FaultControlError` with
``status=409`` when it has none, ``422`` for a bad value.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from ..errors import ConfigurationError, FaultControlError

if TYPE_CHECKING:
    from .proxy import FaultProxy, _Connection

__all__ = ["ProxyFaultControl"]

T = TypeVar("T")

_MAX_REASON = 123
"""Bytes of UTF-8 a close frame's reason can carry (125 minus the 2-byte code)."""


def _unprocessable(message: str) -> NoReturn:
    raise FaultControlError(message, status=422)


class ProxyFaultControl:
    """Server-depth faults applied by a :class:`~harness.proxy.FaultProxy` (a ``ServerFaultPort``).

    Clients are keyed by the client id the proxy reads from each WebSocket
    upgrade (``FaultProxy(ws_path=...)``: the ``{client_id}`` placeholder of
    the path or query, else the ``nova_ws_client_id`` cookie); ``"*"`` is
    every client.  Answers are the JSON-ready dicts the reference server's
    ``/__harness`` API gives.  What each fault does on the wire, and where it
    is unrealistic, is in docs/proxy.md.
    """

    #: Faults are applied by the fault proxy between the page and the app.
    where = "proxy"

    def __init__(self, proxy: FaultProxy) -> None:
        if proxy.ws_path is None:
            raise ConfigurationError(
                "ProxyFaultControl needs a proxy that knows which client each WebSocket belongs "
                "to, and this one has no ws_path: make it with FaultProxy(..., "
                "ws_path='/ws/{client_id}') (the app's WebSocket path pattern; without the "
                "placeholder, clients are told apart by the nova_ws_client_id cookie)"
            )
        self.proxy = proxy

    # ------------------------------------------------------------ plumbing

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return self.proxy._call(fn, *args)

    @staticmethod
    def _key(client_id: str) -> str:
        if not isinstance(client_id, str) or not client_id:
            _unprocessable(f"client_id must be a non-empty string (or '*'), got {client_id!r}")
        return client_id

    def _rules(self, client_id: str) -> dict[str, Any]:
        return {"client_id": client_id, "rules": self.proxy.controller.rules_for(client_id)}

    def _targets(self, client_id: str) -> list[_Connection]:
        """On the loop: the sockets a command acts on; 409 when there is none."""
        targets = self.proxy._live_websockets(client_id)
        if targets:
            return targets
        everyone = client_id == "*"
        held = self.proxy.controller.held(None if everyone else client_id)
        if held:
            hint = f"; {held} handshake(s) of it are being held: release them first"
        else:
            hint = (
                "; connect it first, or check the client id (the proxy reads it from ws_path "
                f"{self.proxy.ws_path!r} or the nova_ws_client_id cookie; load the page "
                f"through the proxy, {self.proxy.url})"
            )
        who = "no client has" if everyone else f"client {client_id!r} has"
        raise FaultControlError(
            f"{who} no open WebSocket connection through the fault proxy{hint}", status=409
        )

    # ------------------------------------------------------------ rules

    def reject_handshakes(
        self, client_id: str, status: int = 503, count: int | None = None, body: str = ""
    ) -> dict[str, Any]:
        """Answer the next ``count`` upgrades (all when None) with HTTP ``status`` and ``body``.

        The proxy answers them itself (``Connection: close``, plain-text body:
        ``body``, or one saying a harness fault rule rejected it); the app
        never sees them.
        """
        key = self._key(client_id)

        def on_loop() -> dict[str, Any]:
            try:
                self.proxy.controller.reject_handshakes(key, status, count, body)
            except ValueError as exc:
                _unprocessable(str(exc))
            return self._rules(key)

        return self._run(on_loop)

    def hold_handshakes(self, client_id: str, timeout_ms: int | None = None) -> dict[str, Any]:
        """Hold upgrades (the browser stays CONNECTING) until released (or ``timeout_ms`` each)."""
        key = self._key(client_id)

        def on_loop() -> dict[str, Any]:
            try:
                self.proxy.controller.hold_handshakes(key, timeout_ms)
            except ValueError as exc:
                _unprocessable(str(exc))
            return self._rules(key)

        return self._run(on_loop)

    def release_handshakes(self, client_id: str) -> dict[str, Any]:
        """Remove the hold rule and let held upgrades go on (a reject rule still rejects them)."""
        key = self._key(client_id)

        def on_loop() -> dict[str, Any]:
            released = self.proxy.controller.release_handshakes(key)
            return {**self._rules(key), "released": released}

        return self._run(on_loop)

    def remove_rule(self, client_id: str, kind: str) -> dict[str, Any]:
        """Remove one kind of rule (``reject``, ``hold``, ``delay``, ``drop``); the others stay.

        Answers the client's remaining rules and ``removed`` (whether there
        was such a rule).  Removing ``hold`` releases the held upgrades.
        """
        key = self._key(client_id)

        def on_loop() -> dict[str, Any]:
            try:
                removed = self.proxy.controller.remove_rule(key, kind)
            except ValueError as exc:
                _unprocessable(str(exc))
            return {**self._rules(key), "removed": removed}

        return self._run(on_loop)

    def delay(self, client_id: str, ms: int, types: list[str] | None = None) -> NoReturn:
        """Not offered at the proxy: raises :class:`~harness.errors.ConfigurationError`."""
        self._message_depth_only("delay")

    def drop(self, client_id: str, types: list[str] | None = None, count: int | None = None) -> NoReturn:
        """Not offered at the proxy: raises :class:`~harness.errors.ConfigurationError`."""
        self._message_depth_only("drop")

    @staticmethod
    def _message_depth_only(what: str) -> NoReturn:
        raise ConfigurationError(
            f"{what} by message type is not a fault the proxy offers: it does not decode the app's "
            "frames into typed messages (they may be compressed or in any format). Use the message "
            f"depth instead, ws_faults.delay/drop (here: ws_faults.{what}(...)), which acts on the "
            "page's frames; or a network toxic (faults.latency) to delay bytes"
        )

    # ------------------------------------------------------------ commands on the live socket

    def close_socket(self, client_id: str, code: int = 1011, reason: str = "") -> dict[str, Any]:
        """Close the client's live socket with a close handshake carrying ``code`` and ``reason``.

        The client gets an unmasked close frame (so the browser sees a clean
        close with that code and reason), the server a masked one with the
        same code, each at a frame boundary; nothing more is forwarded, and
        each TCP side is closed once its peer answered (or after the proxy's
        ``close_timeout``).  Returns once both frames are on their way.
        """
        from ..faults.controller import close_code_problem

        key = self._key(client_id)
        problem = close_code_problem(code) if isinstance(code, int) else f"code must be an int, got {code!r}"
        if problem is not None:
            _unprocessable(problem)
        if not isinstance(reason, str):
            _unprocessable(f"reason must be a string, got {reason!r}")
        if len(reason.encode("utf-8")) > _MAX_REASON:
            _unprocessable(
                f"reason is {len(reason.encode('utf-8'))} bytes of UTF-8, longer than the "
                f"{_MAX_REASON} a close frame can carry; shorten it"
            )

        def on_loop() -> int:
            targets = self._targets(key)
            for conn in targets:
                conn.close_with(code, reason, self.proxy.close_timeout)
            return len(targets)

        closed = self._run(on_loop)
        return {"client_id": client_id, "closed": closed, "code": code, "reason": reason}

    def abort(self, client_id: str) -> dict[str, Any]:
        """Reset the client's TCP connection (RST both ways, no close frame: the browser sees 1006)."""
        key = self._key(client_id)

        def on_loop() -> int:
            targets = self._targets(key)
            for conn in targets:
                conn.close(reset=True, reason="abort (a harness server-depth fault)")
            return len(targets)

        aborted = self._run(on_loop)
        return {"client_id": client_id, "aborted": aborted, "fallback_1011": 0}

    def push(self, client_id: str, message: Any, *, validate: bool = True) -> dict[str, Any]:
        """Send ``message``, JSON-encoded, as one text frame to the client.

        ``validate`` is accepted for the port's sake and ignored: the proxy
        knows no app's message models (validate frames with the app profile's
        schema at the message depth instead).
        """
        try:
            text = json.dumps(message)
        except (TypeError, ValueError) as exc:
            _unprocessable(f"message cannot be encoded as JSON: {exc}; pass JSON data or use push_raw")
        return self.push_raw(client_id, text)

    def push_raw(self, client_id: str, text: str) -> dict[str, Any]:
        """Send ``text`` as one unmasked, uncompressed text frame, between two of the server's messages."""
        key = self._key(client_id)
        if not isinstance(text, str):
            _unprocessable(f"text must be a string, got {type(text).__name__}")

        def on_loop() -> int:
            targets = self._targets(key)
            for conn in targets:
                conn.push_text(text)
            return len(targets)

        pushed = self._run(on_loop)
        return {"client_id": client_id, "pushed": pushed}

    # ------------------------------------------------------------ state

    def clear(self, client_id: str | None = None) -> dict[str, Any]:
        """Lift every rule of ``client_id`` (every client when None) and release its held upgrades."""
        key = None if client_id is None else self._key(client_id)

        def on_loop() -> dict[str, Any]:
            controller = self.proxy.controller
            controller.clear(key)
            return controller.snapshot() if key is None else self._rules(key)

        return self._run(on_loop)

    def state(self) -> dict[str, Any]:
        """Every rule (keyed by client id, ``*`` for all) and the held upgrades per client."""
        return self._run(self.proxy.controller.snapshot)

    def clients(self) -> list[dict[str, Any]]:
        """Every live WebSocket through the proxy that belongs to a client."""

        def on_loop() -> list[dict[str, Any]]:
            return [
                {"client_id": c.client_id, "connection_id": c.id, "path": c.path}
                for c in self.proxy._live_websockets("*")
            ]

        return self._run(on_loop)

    def client_info(self, client_id: str) -> dict[str, Any]:
        """Whether the client has a live socket through the proxy, its held upgrades and rules.

        ``"*"``: whether any client has one, and every held upgrade.
        """
        key = self._key(client_id)

        def on_loop() -> dict[str, Any]:
            controller = self.proxy.controller
            return {
                "client_id": key,
                "connected": bool(self.proxy._live_websockets(key)),
                "held_handshakes": controller.held(None if key == "*" else key),
                "rules": controller.rules_for(key),
                "connections": [
                    {"connection_id": info.id, "path": info.path, "upgraded": info.upgraded,
                     "held": info.held, "closed": info.closed}
                    for info in self.proxy._client_connections(key)
                ],
            }

        return self._run(on_loop)

    def __repr__(self) -> str:
        return f"<ProxyFaultControl {self.proxy!r} ws_path={self.proxy.ws_path!r}>"
