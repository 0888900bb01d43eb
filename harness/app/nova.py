"""The ``nova`` profile: the reference app (the only browser-side module importing ``reference_server``).

Frames are Nova envelopes (``{"type", "data", "timestamp", "client_id", "id"?}``)
validated against the protocol models of their direction, a dict ``match``
is compared with ``data``, and the page exposes ``window.__novaWs``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..client import NovaClient

__all__ = ["NovaProfile", "now_iso", "validate_directed"]


def validate_directed(raw: str | bytes, direction: Literal["sent", "received"]) -> object:
    """Validate ``raw`` against the Nova models of its direction.

    Frames the page sends must be client messages, frames it receives server
    messages: a ``pong`` sent by the page is as wrong as a ``connect`` it
    receives.  Raises ``ValueError`` (the protocol's ``ProtocolError``).
    """
    from reference_server.protocol import parse_client_message, parse_server_message

    return parse_client_message(raw) if direction == "sent" else parse_server_message(raw)


def now_iso() -> str:
    """The current UTC time as the Nova protocol writes it (ISO-8601, milliseconds, ``Z``)."""
    from reference_server.protocol import now_iso as protocol_now

    return protocol_now()


@dataclass
class NovaProfile:
    """The reference app's profile."""

    name: str = "nova"
    page_hook: bool = True
    type_key: str = "type"
    match_in: str | None = "data"

    @property
    def validator(self) -> Any:
        return validate_directed

    def error_frame(self, message: str, client_id: str) -> str:
        return json.dumps(self.error_message(message, client_id))

    def error_message(self, message: str, client_id: str) -> dict[str, Any]:
        """The Nova ``error`` envelope (``internal_error``) carrying ``message``."""
        return {
            "type": "error",
            "data": {"code": "internal_error", "message": message},
            "timestamp": now_iso(),
            "client_id": client_id,
        }

    def is_error_frame(self, frame: object, message: str) -> bool:
        return (
            isinstance(frame, dict)
            and frame.get("type") == "error"
            and (frame.get("data") or {}).get("message") == message
        )

    def client(self, url: str, client_id: str, *, timeout: float) -> NovaClient:
        from ..client import NovaClient

        return NovaClient(url, client_id, default_timeout=timeout)
