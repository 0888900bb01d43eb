"""The narrow interfaces the fault facade and the helper need, and nothing more.

:class:`ServerFaultPort` is what a server-depth shim offers, keyed by client
id: :class:`harness.FaultControl` (HTTP to a ``/__harness`` API: the reference
server's, or :class:`harness.asgi.FaultMiddleware`'s) and
:class:`harness.proxy.control.ProxyFaultControl` (the WebSocket-aware fault
proxy, for apps in any language) both implement it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["ServerFaultPort", "clear_rules_except"]


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


def clear_rules_except(
    port: ServerFaultPort, client_id: str, rules: dict[str, Any], keep: tuple[str, ...]
) -> None:
    """Clear ``client_id``'s rules, then set again those of ``rules`` whose kind is in ``keep``.

    For a server without per-rule removal (an older ``/__harness`` answering
    404/405 to ``DELETE .../faults/{kind}``), which clears a client's rules all
    at once.  ``rules`` is the client's rules as ``client_info`` answered them,
    so a drop is put back with its remaining count, not its original one.
    Only HTTP control APIs lack per-rule removal, and they have drop and delay.
    """
    frames: Any = port
    port.clear(client_id)
    if "hold" in keep and rules.get("hold"):
        port.hold_handshakes(client_id, timeout_ms=rules["hold"].get("timeout_ms"))
    if "delay" in keep and rules.get("delay"):
        frames.delay(client_id, rules["delay"]["ms"], types=rules["delay"].get("types"))
    if "drop" in keep and rules.get("drop"):
        frames.drop(client_id, types=rules["drop"].get("types"), count=rules["drop"].get("remaining"))
