"""The app profile: everything the harness needs to know about one app, as a small Protocol.

A profile says how frames are typed, matched and validated, which error
frame ``simulate_error`` pushes, which client a WebSocket request belongs
to, what ``ws_client`` speaks, and whether the page exposes a state hook the
helper can read (Nova's ``window.__novaWs``).  Without a hook the helper reads
the page's connection state from its sockets (see
:mod:`harness.browser.sockets`).  Two profiles ship: ``nova`` (the reference
app) and ``generic`` (any app, configured by settings); ``ws_profile =
module:attr`` names one of your own (an object with these attributes, or a
callable taking the :class:`~harness.WsConfig` and returning one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ..client import WsClient

__all__ = ["AppProfile", "FrameValidator"]

#: Raises ``ValueError`` saying what is wrong when a frame of that direction is invalid.
FrameValidator = Callable[[str | bytes, Literal["sent", "received"]], object]


@runtime_checkable
class AppProfile(Protocol):
    """What differs from one app under test to another."""

    #: The profile's name, shown in messages (``nova``, ``generic``, or yours).
    name: str
    #: Whether pages expose the Nova state hook (``window.__novaWs``); False reads state from sockets.
    page_hook: bool
    #: The key (dotted path allowed) whose value types a JSON frame.
    type_key: str
    #: The field a dict ``match`` is compared with (``"data"`` for Nova envelopes), or None for the whole frame.
    match_in: str | None

    @property
    def validator(self) -> FrameValidator | None:
        """The frame validator, or None when frames are not validated."""
        ...

    def error_frame(self, message: str, client_id: str) -> str:
        """The text of the server-to-client frame ``simulate_error(message)`` pushes."""
        ...

    def is_error_frame(self, frame: object, message: str) -> bool:
        """Whether the parsed received ``frame`` is the error frame carrying ``message``."""
        ...

    def client(self, url: str, client_id: str, *, timeout: float) -> WsClient:
        """A Python client of the app (``ws_client``), not connected yet."""
        ...
