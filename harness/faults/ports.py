"""The narrow interfaces the fault facade and the helper need, and nothing more.

:class:`ServerFaultPort` is what a server-depth shim offers, keyed by client
id: :class:`harness.FaultControl` (HTTP to a ``/__harness`` API: the reference
server's, or :class:`harness.asgi.FaultMiddleware`'s) and
:class:`harness.proxy.control.ProxyFaultControl` (the WebSocket-aware fault
proxy, for apps in any language) both implement it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["ServerFaultPort"]


@runtime_checkable
class ServerFaultPort(Protocol):
    """Server-depth faults for one server, keyed by client id.

    Rules apply to later handshakes; commands act on the client's newest open
    socket and raise :class:`harness.FaultControlError` with ``status=409``
    when it has none.  ``client_info(client_id)`` answers at least
    ``{"connected": bool, "held_handshakes": int, "rules": {...}}``.
    """

    #: Where the faults are applied: ``"server"`` (in the app's process) or ``"proxy"``.
    where: str

    def reject_handshakes(self, client_id: str, status: int = 503, count: int | None = None) -> Any: ...

    def hold_handshakes(self, client_id: str, timeout_ms: int | None = None) -> Any: ...

    def release_handshakes(self, client_id: str) -> Any: ...

    def remove_rule(self, client_id: str, kind: str) -> Any: ...

    def close_socket(self, client_id: str, code: int = 1011, reason: str = "") -> Any: ...

    def abort(self, client_id: str) -> Any: ...

    def push(self, client_id: str, message: dict[str, Any], *, validate: bool = True) -> Any: ...

    def push_raw(self, client_id: str, text: str) -> Any: ...

    def clear(self, client_id: str | None = None) -> Any: ...

    def client_info(self, client_id: str) -> Any: ...
