"""Test mode's server-depth faults, taken from the harness through an entry point.

The fault rules (reject, hold, delay, drop) are the harness's: its pure
``FaultController`` decides them and its ``FaultMiddleware`` applies the
handshake ones (reject with an HTTP status, hold) in front of this app, the
same middleware that serves any other ASGI app.  This package never imports
the harness: in test mode :func:`install_faults` loads the installer the
harness registers under the ``nova_ws.test_mode`` entry point group (name
``faults``), which mounts the middleware on the app and returns the rules.
The endpoint (:mod:`reference_server.ws`) then applies the frame rules to its
own writer, and :mod:`reference_server.harness_api` sets rules and runs the
live-socket commands (close, abort, push) that need the server's connections.

Outside test mode nothing is loaded and the app has no fault rules at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any, Protocol

__all__ = [
    "TEST_MODE_GROUP",
    "AppFaults",
    "FaultRules",
    "FaultShimUnavailable",
    "OutboundDecision",
    "install_faults",
]

#: The entry point group (and, within it, the name ``faults``) the harness registers its installer under.
TEST_MODE_GROUP = "nova_ws.test_mode"


class FaultShimUnavailable(RuntimeError):
    """Test mode was asked for but the harness's fault installer cannot be loaded."""


class OutboundDecision(Protocol):
    """What happens to one server-to-client frame."""

    @property
    def deliver(self) -> bool: ...

    @property
    def delay_ms(self) -> int: ...


class FaultRules(Protocol):
    """The part of the harness's ``FaultController`` this server uses."""

    @property
    def active(self) -> bool: ...

    def outbound(self, client_id: str, message_type: str) -> OutboundDecision: ...

    def reject_handshakes(
        self, client_id: str, status: int, count: int | None = None, body: str = ""
    ) -> None: ...

    def hold_handshakes(self, client_id: str, timeout_ms: int | None = None) -> None: ...

    def release_handshakes(self, client_id: str) -> int: ...

    def delay_replies(self, client_id: str, ms: int, types: Iterable[str] | None = None) -> None: ...

    def drop_messages(
        self, client_id: str, types: Iterable[str] | None = None, count: int | None = None
    ) -> None: ...

    def remove_rule(self, client_id: str, kind: str) -> bool: ...

    def clear(self, client_id: str | None = None) -> None: ...

    def held(self, client_id: str | None = None) -> int: ...

    def rules_for(self, client_id: str) -> dict[str, Any]: ...

    def snapshot(self) -> dict[str, Any]: ...


class AppFaults(Protocol):
    """What the harness's installer returns: the rules and the control API's vocabulary."""

    @property
    def rules(self) -> FaultRules: ...

    @property
    def rule_kinds(self) -> tuple[str, ...]:
        """The rule kinds a key can have, as the control API names them."""
        ...

    def close_code_problem(self, code: int) -> str | None:
        """Why ``code`` cannot be sent in a close frame, or None when it can."""
        ...


def install_faults(app: Any, *, ws_path: str) -> AppFaults:
    """Mount the harness's fault middleware on ``app`` (WebSockets at ``ws_path``) and return its rules.

    Raises :class:`FaultShimUnavailable`, naming the fix, when the installer is
    not registered (the package's metadata is stale or the harness is missing)
    or fails to load.
    """
    found = [ep for ep in entry_points(group=TEST_MODE_GROUP) if ep.name == "faults"]
    if not found:
        raise FaultShimUnavailable(
            f"test mode needs the harness's fault middleware, registered as the 'faults' entry "
            f"point of the {TEST_MODE_GROUP!r} group, and none is installed: reinstall the package "
            "(pip install -e '.[dev]' in a checkout, pip install --force-reinstall nova-ws otherwise) "
            "so its entry points are registered, or run without --test-mode"
        )
    entry = found[0]
    try:
        installer: Callable[..., AppFaults] = entry.load()
    except Exception as exc:
        raise FaultShimUnavailable(
            f"test mode's fault installer {entry.value!r} ({TEST_MODE_GROUP} entry point 'faults') "
            f"failed to load: {exc!r}; reinstall the package (pip install -e '.[dev]')"
        ) from exc
    return installer(app, ws_path=ws_path)
