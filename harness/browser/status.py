"""Connection-status drivers: how the helper reads and changes the page's connection.

:class:`HookStatus` reads a page that exposes the Nova state hook
(``window.__novaWs.getState()``: ``status``, ``nextReconnectAt``,
``nextReconnectDelay``, ``autoReconnect``); :class:`SocketStatus` reads any
page from its socket log (:mod:`harness.browser.sockets`).  Both change the
connection only through a server-depth shim (:class:`~harness.faults.ports.ServerFaultPort`:
the reference server, :class:`harness.asgi.FaultMiddleware` or the fault
proxy), so every state the page shows is one it reached by itself.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..control import FaultControlError
from ..errors import HarnessError, WaitTimeoutError
from ..faults.ports import clear_rules_except
from .sockets import READ_TIMERS, SocketInfo, read_sockets

if TYPE_CHECKING:
    from ..faults.ports import ServerFaultPort
    from .helper import WebSocketTestHelper

__all__ = ["HookStatus", "SocketStatus", "StatusDriver"]

#: The page's store, read through the reference client's test hook.
STATE = "window.__novaWs.getState()"

#: Bounds of a search for the page's next reconnect, stepping its timers.
MAX_STEPS = 2000
MAX_ADVANCE_MS = 3_600_000


class StatusDriver:
    """What both drivers share: the helper, and the server-depth shim of its server."""

    def __init__(self, helper: WebSocketTestHelper) -> None:
        self._h = helper

    @property
    def _cid(self) -> str:
        return self._h.client_id

    def port(self, what: str) -> ServerFaultPort:
        port: ServerFaultPort = self._h._require_faults(what)
        return port

    def held(self) -> int:
        info = self.port("reading held handshakes").client_info(self._cid)
        return int((info or {}).get("held_handshakes") or 0)

    def close_live(self, port: ServerFaultPort, code: int, reason: str) -> None:
        try:
            port.close_socket(self._cid, code=code, reason=reason)
        except FaultControlError as exc:
            # 409: the socket went away meanwhile, which is what the caller wanted.
            if exc.status != 409 and "409" not in str(exc):
                raise

    def lift_handshake_rules(self, port: ServerFaultPort) -> None:
        """Remove this client's reject and hold rules, keep the others (drop, delay)."""
        for kind in ("reject", "hold"):
            try:
                port.remove_rule(self._cid, kind)
            except FaultControlError as exc:
                if exc.status not in (404, 405):
                    raise
                self._lift_by_clearing(port)
                return

    def _lift_by_clearing(self, port: ServerFaultPort) -> None:
        # A server without per-rule removal: clear everything, put the frame rules back.
        rules = (port.client_info(self._cid) or {}).get("rules") or {}
        clear_rules_except(port, self._cid, rules, keep=("delay", "drop"))

    # The interface the helper uses.
    def status(self) -> str:
        raise NotImplementedError

    def brief(self) -> dict[str, Any]:
        raise NotImplementedError

    def set_status(self, status: str, error: str | None) -> None:
        """Bring the connection to ``status`` at server depth (see ``set_connection_status``)."""
        {
            "error": self._error,
            "connecting": self._connecting,
            "connected": self._connected,
            "disconnected": self._disconnected,
        }[status](error)

    def _error(self, reason: str | None) -> None:
        raise NotImplementedError

    def _connecting(self, reason: str | None) -> None:
        raise NotImplementedError

    def _connected(self, reason: str | None) -> None:
        raise NotImplementedError

    def _disconnected(self, reason: str | None) -> None:
        raise NotImplementedError

    def advance_to_next_reconnect(self, timeout: float | None) -> int:
        raise NotImplementedError


class HookStatus(StatusDriver):
    """A page with the Nova state hook (the reference client)."""

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self._h.page.evaluate(f"() => {STATE}")
        return result

    def status(self) -> str:
        return str(self._h.page.evaluate(f"() => {STATE}.status"))

    def wait(self, predicate: str, what: str, timeout: float | None = None) -> None:
        self._h._wait_js(f"() => {{ const s = {STATE}; return Boolean({predicate}); }}", what, timeout)

    def brief(self) -> dict[str, Any]:
        state = self.state()
        keys = ("status", "statusDetail", "authStatus", "reconnectAttempts", "nextReconnectDelay", "lastError")
        return {k: state.get(k) for k in keys}

    def advance_to_next_reconnect(self, timeout: float | None) -> int:
        self.wait(
            "s.nextReconnectAt != null || (s.status !== 'connected' && s.status !== 'connecting' && !s.autoReconnect)",
            "the page to schedule a reconnect",
            timeout,
        )
        info = self._h.page.evaluate(
            f"() => {{ const s = {STATE}; const at = s.nextReconnectAt;"
            " return {at: at == null ? null : (typeof at === 'number' ? at : Date.parse(at)),"
            " delay: s.nextReconnectDelay, now: Date.now(), status: s.status}; }"
        )
        if info.get("at") is None:
            raise HarnessError(
                "advance_to_next_reconnect: the page has no reconnect scheduled and will not "
                f"reconnect by itself (status {info.get('status')!r}, automatic reconnection off); "
                "click Reconnect or authenticate to open a new connection"
            )
        remaining = max(0, int(info["at"]) - int(info["now"]))
        self._h.page.clock.run_for(remaining)
        return int(info["delay"])

    # ------------------------------------------------------------ real-mode statuses

    def _settle(self) -> None:
        """Let a handshake in flight finish (open, fail, or be held) before the rules change.

        Right after the clock released a reconnect, the page is CONNECTING
        while its handshake is still on its way; rules set now would race the
        server's verdict on it.
        """
        if self.status() != "connecting":
            return
        self._h._wait_until(
            lambda: self.status() != "connecting" or self.held() > 0,
            "the page's handshake in flight to open, fail or be held by the server",
        )

    def _release_held_into(self, port: ServerFaultPort) -> None:
        """Make a handshake the server is holding fail; wait until the page has given it up.

        In virtual time the server keeps holding it and the page abandons it
        after its own open timeout (the clock advances by that timeout): a
        failed attempt, whatever the rules.  Otherwise the handshake is
        released into the rules now in force.
        """
        if self.status() != "connecting":
            return
        open_timeout = int(
            self._h.page.evaluate("() => Number((window.__novaWs.settings || {}).openTimeoutMs) || 0")
        )
        if self._h.virtual_time and open_timeout > 0 and self.held() > 0:
            self._h.page.clock.run_for(open_timeout)
            self.wait("s.status !== 'connecting'", "the page to give up the handshake the server holds")
            # Until the server notices, lifting its rules would let the dead handshake proceed.
            self._h._wait_until(lambda: self.held() == 0, "the server to drop the handshake the page gave up")
            return
        port.release_handshakes(self._cid)
        self.wait("s.status !== 'connecting'", "the released handshake to complete or fail")

    def _start_next_attempt(self) -> float:
        """Make the page try again: run the clock to its reconnect, or click Reconnect.

        Returns the seconds to allow on top of a wait for the attempt: with
        real timers, what remains of the page's backoff delay.
        """
        state = self.state()
        if state.get("nextReconnectAt") is None:
            self._h._click("reconnect_button")
            return 0.0
        if self._h.virtual_time:
            self._h.advance_to_next_reconnect()
            return 0.0
        now = float(self._h.page.evaluate("() => Date.now()"))
        return max(0.0, (float(state["nextReconnectAt"]) - now) / 1000)

    def _error(self, reason: str | None) -> None:
        port = self.port("set_connection_status('error')")
        self._settle()
        port.reject_handshakes(self._cid, status=503)
        self._release_held_into(port)
        if self.status() == "connected":
            self.close_live(port, 1011, reason or "simulated server error")
        self.wait(
            "s.status !== 'connected' && s.status !== 'connecting'",
            "the page to lose its connection after the server failed it",
        )

    def _connecting(self, reason: str | None) -> None:
        port = self.port("set_connection_status('connecting')")
        self._settle()
        if self.status() == "connecting" and self.held() > 0:
            return
        self.lift_handshake_rules(port)
        port.hold_handshakes(self._cid)
        if self.status() == "connected":
            self.close_live(port, 1001, reason or "server going away (test)")
            self.wait("s.status !== 'connected'", "the page to notice the close")
        extra = 0.0 if self.status() == "connecting" else self._start_next_attempt()
        self._h.wait_for_connection_status("connecting", timeout=self._h._timeout_s(None) + extra)
        self._h._wait_until(
            lambda: self.held() > 0,
            "the server to hold the page's handshake",
            hint="the page shows connecting but its handshake never reached the server",
        )

    def _connected(self, reason: str | None) -> None:
        port = self.port("set_connection_status('connected')")
        self._settle()
        port.clear(self._cid)  # also lets a held handshake proceed
        extra = self._start_next_attempt() if self.status() in ("disconnected", "error") else 0.0
        self.wait("s.status === 'connected'", "the page to open its WebSocket", timeout=self._h._timeout_s(None) + extra)
        self._h.wait_for_connection_status("connected")

    def _disconnected(self, reason: str | None) -> None:
        port = self.port("set_connection_status('disconnected')")
        self._settle()
        # A held handshake is given up by the page (virtual time), or opens and is closed cleanly below.
        self._release_held_into(port)
        self.lift_handshake_rules(port)
        port.hold_handshakes(self._cid)
        if self.status() == "connected":
            self.close_live(port, 1000, reason or "closed by the test")
        self.wait(
            "s.status !== 'connected' && s.status !== 'connecting'",
            "the page to notice the clean close",
        )


class SocketStatus(StatusDriver):
    """Any page, read from its socket log: the newest socket's state is the connection's.

    ``connected`` is an open newest socket, ``connecting`` one whose handshake
    is under way, ``disconnected`` none or a closed one; ``error`` is a
    newest socket that closed uncleanly or never opened.
    """

    def sockets(self) -> list[SocketInfo]:
        found = read_sockets(self._h.page)
        if found is None:
            raise HarnessError(
                "the page has no socket log (window.__novaWsSockets): it was not loaded through "
                "ws_helper (initialize or reload), or an init script of the page replaced window.WebSocket"
            )
        return found

    def newest(self) -> SocketInfo | None:
        found = self.sockets()
        return found[-1] if found else None

    def status(self) -> str:
        newest = self.newest()
        if newest is None:
            return "disconnected"
        if newest.state == "open":
            return "connected"
        if newest.state == "connecting":
            return "connecting"
        if newest.state == "closed" and (not newest.opened or not newest.clean):
            return "error"
        return "disconnected"

    def brief(self) -> dict[str, Any]:
        found = read_sockets(self._h.page) or []
        return {"status": self.status() if found else "disconnected", "sockets": [s.describe() for s in found[-5:]]}

    def wait_status(self, wanted: tuple[str, ...], what: str, timeout: float | None = None) -> None:
        states = json.dumps(list(wanted))
        self._h._wait_js(
            "() => { const l = window.__novaWsSockets; if (!l) return false; const s = l.read();"
            " const n = s[s.length - 1]; let st = 'disconnected';"
            " if (n) st = n.state === 'open' ? 'connected' : n.state === 'connecting' ? 'connecting'"
            " : (n.state === 'closed' && (n.openedAt === null || !n.wasClean)) ? 'error' : 'disconnected';"
            f" return {states}.includes(st); }}",
            what,
            timeout,
        )

    def wait_socket(self, predicate: str, what: str, timeout: float | None = None) -> None:
        """Wait until ``predicate`` over the page's sockets ``s`` (a JS array) is true."""
        self._h._wait_js(
            f"() => {{ const l = window.__novaWsSockets; if (!l) return false; const s = l.read(); return Boolean({predicate}); }}",
            what,
            timeout,
        )

    def advance_to_next_reconnect(self, timeout: float | None) -> int:
        """Step the page's timers until it creates its next socket; return the ms advanced."""
        start = self._h.page.evaluate(READ_TIMERS)
        if start is None:
            self.sockets()  # raises the explanation
        count = int(start["count"])
        if start["newest"] in ("open", "closing"):
            self.wait_socket(
                "s.length > 0 && s[s.length - 1].state !== 'open' && s[s.length - 1].state !== 'closing'",
                "the page's socket to close before its reconnect (it is open; close it first, e.g. "
                "ws_faults.close() or set_connection_status('disconnected'))",
                timeout,
            )
        advanced = 0
        for _ in range(MAX_STEPS):
            info = self._h.page.evaluate(READ_TIMERS)
            if int(info["count"]) > count:
                return advanced
            if info["next"] is None:
                raise HarnessError(
                    f"advance_to_next_reconnect: after {advanced} ms the page has no timer pending and "
                    "opened no new socket: it does not reconnect by itself. Sockets: "
                    f"{[s.describe() for s in self.sockets()[-3:]]}. Open one through the UI (its "
                    "Connect button) or reload the page."
                )
            step = max(0, int(info["next"]) - int(info["now"]))
            if advanced + step > MAX_ADVANCE_MS:
                break
            self._h.page.clock.run_for(step)
            advanced += step
        raise WaitTimeoutError(
            f"advance_to_next_reconnect: the page opened no new socket within {advanced} ms of virtual "
            f"time (limit {MAX_ADVANCE_MS} ms, {MAX_STEPS} timers); sockets: "
            f"{[s.describe() for s in self.sockets()[-3:]]}"
        )

    # ------------------------------------------------------------ real-mode statuses

    def _settle(self) -> None:
        if self.status() != "connecting":
            return
        self._h._wait_until(
            lambda: self.status() != "connecting" or self.held() > 0,
            "the page's handshake in flight to open, fail or be held",
        )

    def _fail_held(self, port: ServerFaultPort) -> None:
        """A handshake being held fails (rejected on release), and the page sees it fail."""
        held = self.held()
        if not held or self.status() != "connecting":
            return
        port.reject_handshakes(self._cid, status=503, count=held)
        port.release_handshakes(self._cid)
        self.wait_status(("disconnected", "error"), "the held handshake to fail once released")

    def _next_attempt(self) -> None:
        if not self._h.virtual_time:
            return  # the page's own timers run in real time; the wait after this covers them
        try:
            self.advance_to_next_reconnect(None)
        except HarnessError as exc:
            raise HarnessError(
                f"the page did not reconnect by itself: {exc}"
            ) from None

    def _error(self, reason: str | None) -> None:
        port = self.port("set_connection_status('error')")
        self._settle()
        port.reject_handshakes(self._cid, status=503)
        if self.status() == "connecting" and self.held():
            port.release_handshakes(self._cid)
        if self.status() == "connected":
            self.close_live(port, 1011, reason or "simulated server error")
        self.wait_status(("disconnected", "error"), "the page's socket to close after the server failed it")

    def _connecting(self, reason: str | None) -> None:
        port = self.port("set_connection_status('connecting')")
        self._settle()
        if self.status() == "connecting" and self.held() > 0:
            return
        self.lift_handshake_rules(port)
        port.hold_handshakes(self._cid)
        if self.status() == "connected":
            self.close_live(port, 1001, reason or "server going away (test)")
            self.wait_status(("disconnected", "error", "connecting"), "the page to notice the close")
        if self.status() != "connecting":
            self._next_attempt()
        self.wait_status(("connecting",), "the page to open a new socket")
        self._h._wait_until(
            lambda: self.held() > 0,
            "the server-depth shim to hold the page's handshake",
            hint="the page's socket is connecting but its handshake never reached the shim "
            "(does its URL go through it? see ws_helper.sockets)",
        )

    def _connected(self, reason: str | None) -> None:
        port = self.port("set_connection_status('connected')")
        self._settle()
        port.clear(self._cid)  # also lets a held handshake proceed
        if self.status() in ("disconnected", "error"):
            self._next_attempt()
        self.wait_status(("connected",), "the page to open its WebSocket")

    def _disconnected(self, reason: str | None) -> None:
        port = self.port("set_connection_status('disconnected')")
        self._settle()
        self._fail_held(port)
        self.lift_handshake_rules(port)
        port.hold_handshakes(self._cid)
        if self.status() == "connected":
            self.close_live(port, 1000, reason or "closed by the test")
        self.wait_status(("disconnected", "error"), "the page to notice the clean close")
