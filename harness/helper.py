"""``WebSocketTestHelper``: drive a browser WebSocket app and assert on its UI and frames.

The method names are a public contract (the seed project's helper plus the
harness's additions).  By default the helper is *real*: connection states
are produced by the server (through the reference server's fault control)
and by the page's own reconnect logic, in virtual time.  In *synthetic* mode
the same calls dispatch the seed's window events (``websocket-status``,
``websocket-message``) instead, for apps without a cooperating server.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from collections.abc import Callable
from typing import Any, Literal

from .config import Mode, WsConfig
from .errors import ConfigurationError, HarnessError, WaitTimeoutError
from .journal import Frame, FrameJournal
from .matching import Match
from .server import ServerUnderTest

__all__ = ["WebSocketTestHelper", "ConnectionStatus", "new_client_id"]

ConnectionStatus = Literal["disconnected", "connecting", "connected", "error"]
_STATUSES: tuple[str, ...] = ("disconnected", "connecting", "connected", "error")


def new_client_id(prefix: str = "t") -> str:
    """A unique client id valid for the Nova protocol (``[A-Za-z0-9_-]{1,64}``)."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def _pw_expect() -> Any:
    from playwright.sync_api import expect

    return expect


class WebSocketTestHelper:
    """Drives one page of the app under test.

    Created by the ``ws_helper`` fixture, which calls :meth:`initialize`
    before the test and :meth:`cleanup` after it.  Every wait takes an
    optional ``timeout`` in seconds (default: the ``ws_timeout`` option) and
    fails with :class:`WaitTimeoutError` saying what was expected and what
    the page showed.
    """

    def __init__(
        self,
        page: Any,
        server: ServerUnderTest,
        config: WsConfig,
        *,
        client_id: str | None = None,
        mode: Mode | None = None,
        virtual_time: bool = True,
        seed: int | None = None,
        validate_frames: bool = True,
    ) -> None:
        self._page = page
        self._server = server
        self.config = config
        self._client_id = client_id or new_client_id()
        self.mode: Mode = mode or config.mode
        self.virtual_time = virtual_time
        self.seed = config.seed if seed is None else seed
        self.journal = FrameJournal(
            validate=validate_frames, pump=self._pump, default_timeout=config.timeout
        )
        self._initialized = False
        self._held = False
        self.random = random.Random(self.seed)

    # ------------------------------------------------------------ properties

    @property
    def page(self) -> Any:
        """The Playwright ``Page`` the helper drives."""
        return self._page

    @property
    def client_id(self) -> str:
        """This test's unique client id (the page was loaded with it)."""
        return self._client_id

    @property
    def frames(self) -> list[Frame]:
        """Every WebSocket frame the page sent or received so far (the journal)."""
        return self.journal.frames

    @property
    def server(self) -> ServerUnderTest:
        """The server under test (URLs, fault control, log)."""
        return self._server

    # ------------------------------------------------------------ lifecycle

    def initialize(self) -> WebSocketTestHelper:
        """Route the page's sockets through the journal, install the clock, load the page.

        Returns once the page's store exists and, in real mode, the socket is open.
        """
        if self._initialized:
            return self
        self.journal.attach(self._page, re.compile(r"^wss?://"))
        if self.virtual_time:
            # Paused from the first script on: no page timer fires unless the test advances time.
            start = datetime.now(UTC)
            self._page.clock.install(time=start)
            self._pause_clock(start)
        url = self._server.page_url(self._client_id)
        self._page.goto(url)
        self._wait_js(
            "() => Boolean(window.__novaWs && window.__novaWs.getState)",
            "the page to expose window.__novaWs (the reference client's test hook)",
            hint="is the page the Nova client, served with test mode on?",
        )
        self._page.evaluate(
            "(seed) => { if (typeof window.__novaWs.seed === 'function') window.__novaWs.seed(seed); }",
            int(self.seed),
        )
        self._initialized = True
        if self.mode == "real":
            self.wait_for_connection_status("connected")
        return self

    def _pause_clock(self, start: datetime) -> None:
        # The installed clock runs from `start` until paused, and pause_at refuses a time
        # already past; on a busy machine the first margin can be too short.
        for margin_s in (1, 10, 60):
            try:
                self._page.clock.pause_at(start + timedelta(seconds=margin_s))
                return
            except Exception as exc:  # playwright Error: "Cannot fast-forward to the past"
                if "past" not in str(exc):
                    raise
        raise HarnessError("could not pause the page clock: this machine is too slow to keep up")

    def cleanup(self) -> None:
        """Lift every server-side fault for this client and check the frame journal."""
        try:
            if self._server.faults is not None and self.mode == "real":
                self._server.faults.clear(self._client_id)
        finally:
            self._initialized = False

    def check_frames(self) -> None:
        """Raise AssertionError listing every frame that violated the protocol."""
        self.journal.check()

    # ------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """A copy of the page's store (``window.__novaWs.getState()``)."""
        result: dict[str, Any] = self._page.evaluate("() => window.__novaWs.getState()")
        return result

    # ------------------------------------------------------------ seed helper API

    def simulate_error(self, message: str) -> None:
        """Make the page show ``message`` as an error.

        Real mode with an open socket: the server pushes a genuine ``error``
        frame.  Otherwise (synthetic mode, or no socket): the seed's
        ``websocket-message`` window event carries the same ``error`` message.
        """
        frame = {
            "type": "error",
            "data": {"code": "internal_error", "message": message},
            "timestamp": _now_iso(),
            "client_id": self._client_id,
        }
        if self.mode == "real" and self._server.faults is not None and self._socket_open():
            self._server.faults.push(self._client_id, frame)
            self.journal.expect("error", match={"message": message})
        else:
            self.dispatch_message(frame)

    def set_connection_status(self, status: ConnectionStatus, *, error: str | None = None) -> None:
        """Put the connection in ``status``.

        Real mode (default): ``error`` makes the server fail the live
        connection (close 1011) and reject further handshakes (HTTP 503);
        ``connecting`` releases the page's next reconnect attempt (advancing
        the clock to it) while the server holds that handshake open, so the
        page is genuinely CONNECTING; ``connected`` lifts the faults and
        returns once the page has an open socket; ``disconnected`` closes
        cleanly (1000) and holds further attempts.  Synthetic mode: the
        seed's ``websocket-status`` window event.
        """
        if status not in _STATUSES:
            raise ConfigurationError(
                f"unknown connection status {status!r}; expected one of {', '.join(_STATUSES)}"
            )
        if self.mode == "synthetic":
            detail: dict[str, Any] = {"status": status}
            if error is not None:
                detail["error"] = error
            self._dispatch("websocket-status", detail)
            self.wait_for_connection_status(status)
            return
        faults = self._require_faults("set_connection_status")
        cid = self._client_id
        if status == "error":
            faults.reject_handshakes(cid, status=503)
            if self._held:
                faults.release_handshakes(cid)
                self._held = False
            if self._socket_open():
                faults.close_socket(cid, code=1011, reason=error or "simulated server error")
            self._wait_js(
                "() => { const s = window.__novaWs.getState(); return s.status !== 'connected' && s.status !== 'connecting'; }",
                "the page to leave connected/connecting after the server failed the connection",
            )
        elif status == "connecting":
            faults.clear(cid)
            faults.hold_handshakes(cid)
            self._held = True
            if not self._socket_open() and self._reconnect_pending():
                self.advance_to_next_reconnect()
            self.wait_for_connection_status("connecting")
        elif status == "connected":
            faults.clear(cid)
            if self._held:
                faults.release_handshakes(cid)
                self._held = False
            if not self._socket_open() and self._reconnect_pending():
                self.advance_to_next_reconnect()
            self.wait_for_connection_status("connected")
        else:  # disconnected
            faults.clear(cid)
            faults.hold_handshakes(cid)
            self._held = True
            if self._socket_open():
                faults.close_socket(cid, code=1000, reason=error or "closed by the test")
            self._wait_js(
                "() => window.__novaWs.getState().status !== 'connected'",
                "the page to notice the clean close",
            )

    def authenticate(self, api_key: str | None = None) -> None:
        """Type ``api_key`` into the key input and click Authenticate, as a user would."""
        key = self.config.api_key if api_key is None else api_key
        ids = self.config.test_ids
        self._page.get_by_test_id(ids.api_key_input).fill(key)
        self._page.get_by_test_id(ids.authenticate_button).click()

    def wait_for_reconnect_info(self, expected_attempts: int, timeout: float | None = None) -> None:
        """Wait until the reconnect info shows ``Reconnection attempts: N``."""
        self._expect_text(self.config.test_ids.reconnect_info, f"Reconnection attempts: {expected_attempts}", timeout)

    def wait_for_error_details(self, text: str, timeout: float | None = None) -> None:
        """Wait until the error details contain ``text``."""
        self._expect_text(self.config.test_ids.error_details, text, timeout)

    def wait_for_auth_status(self, text: str, timeout: float | None = None) -> None:
        """Wait until the auth status contains ``text`` (e.g. ``Authenticated``)."""
        self._expect_text(self.config.test_ids.auth_status, text, timeout)

    def wait_for_connection_status(self, status: str, timeout: float | None = None) -> None:
        """Wait until the connection status shows ``status``."""
        self._expect_text(self.config.test_ids.connection_status, status, timeout)

    # ------------------------------------------------------------ time

    def advance_clock(self, ms: float) -> None:
        """Advance the page's virtual clock by ``ms``, firing every timer due on the way."""
        self._require_virtual_time("advance_clock")
        self._page.clock.run_for(int(ms))

    def advance_to_next_reconnect(self) -> int:
        """Advance the virtual clock to the page's scheduled reconnect; return the delay skipped (ms)."""
        self._require_virtual_time("advance_to_next_reconnect")
        info = self._page.evaluate(
            "() => { const s = window.__novaWs.getState();"
            " const at = s.nextReconnectAt;"
            " return {at: at == null ? null : (typeof at === 'number' ? at : Date.parse(at)),"
            " delay: s.nextReconnectDelay, now: Date.now()}; }"
        )
        if info.get("at") is None:
            raise HarnessError(
                "advance_to_next_reconnect: the page has no reconnect scheduled "
                f"(status {self.state().get('status')!r}); close the connection first"
            )
        remaining = max(0, int(info["at"]) - int(info["now"]))
        self._page.clock.run_for(remaining)
        return int(info["delay"])

    # ------------------------------------------------------------ UI actions

    def subscribe(self, channel: str) -> None:
        """Subscribe to ``channel`` through the UI."""
        ids = self.config.test_ids
        self._page.get_by_test_id(ids.channel_input).fill(channel)
        self._page.get_by_test_id(ids.subscribe_button).click()

    def publish(self, channel: str, content: str) -> None:
        """Publish ``content`` on ``channel`` through the UI."""
        ids = self.config.test_ids
        channel_input = self._page.get_by_test_id(ids.channel_input)
        channel_input.fill(channel)
        self._page.get_by_test_id(ids.message_input).fill(content)
        self._page.get_by_test_id(ids.publish_button).click()

    # ------------------------------------------------------------ frames

    def expect_frame(
        self, type: str | None = None, *, direction: str = "received", match: Match | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Wait for a frame (history included) of ``type`` matching ``match``; return its message."""
        frame = self.journal.expect(type, direction=direction, match=match, timeout=timeout)
        assert frame.message is not None
        return frame.message

    def expect_no_frame(
        self, type: str | None = None, *, direction: str = "received", match: Match | None = None,
        within: float = 0.5,
    ) -> None:
        """Assert no not-yet-expected frame of ``type`` matching ``match`` shows up within ``within`` s."""
        self.journal.expect_none(type, direction=direction, match=match, within=within)

    # ------------------------------------------------------------ synthetic events

    def dispatch_message(self, message: dict[str, Any]) -> None:
        """Dispatch the seed's ``websocket-message`` window event carrying ``message``."""
        self._dispatch("websocket-message", message)

    def _dispatch(self, name: str, detail: dict[str, Any]) -> None:
        self._page.evaluate(
            "([name, detail]) => window.dispatchEvent(new CustomEvent(name, {detail}))", [name, detail]
        )

    # ------------------------------------------------------------ internals

    def _socket_open(self) -> bool:
        return bool(self._page.evaluate("() => window.__novaWs.getState().status === 'connected'"))

    def _reconnect_pending(self) -> bool:
        return bool(self._page.evaluate("() => window.__novaWs.getState().nextReconnectAt != null"))

    def _require_faults(self, what: str) -> Any:
        if self._server.faults is None:
            raise ConfigurationError(
                f"{what} in real mode needs a server with the /__harness fault control API "
                "(the reference server, or an app run with --ws-harness-token); "
                "use synthetic mode (@pytest.mark.ws_mode('synthetic') or --ws-mode=synthetic) otherwise"
            )
        return self._server.faults

    def _require_virtual_time(self, what: str) -> None:
        if not self.virtual_time:
            raise ConfigurationError(
                f"{what} needs virtual time, but this test is marked ws_real_time; remove the marker"
            )

    def _timeout_ms(self, timeout: float | None) -> float:
        return 1000 * (self.config.timeout if timeout is None else timeout)

    def _expect_text(self, test_id: str, text: str, timeout: float | None) -> None:
        locator = self._page.get_by_test_id(test_id)
        try:
            _pw_expect()(locator).to_contain_text(text, timeout=self._timeout_ms(timeout))
        except AssertionError as exc:
            shown = _safe(lambda: locator.inner_text(timeout=500))
            raise WaitTimeoutError(
                f"expected [data-testid={test_id!r}] to contain {text!r} within "
                f"{self._timeout_ms(timeout) / 1000:.1f} s; it shows {shown!r}.\n"
                f"Page state: {_safe(lambda: json.dumps(self._brief_state()))}\n"
                f"Last frames:\n{self.journal.describe(limit=10)}"
            ) from exc

    def _wait_js(self, predicate: str, what: str, timeout: float | None = None, hint: str = "") -> None:
        try:
            self._page.wait_for_function(predicate, timeout=self._timeout_ms(timeout), polling=50)
        except Exception as exc:  # playwright TimeoutError
            raise WaitTimeoutError(
                f"expected {what} within {self._timeout_ms(timeout) / 1000:.1f} s. "
                f"Page state: {_safe(lambda: json.dumps(self._brief_state()))}. {hint}"
            ) from exc

    def _brief_state(self) -> dict[str, Any]:
        state = self.state()
        keys = ("status", "authStatus", "reconnectAttempts", "nextReconnectDelay", "lastError")
        return {k: state.get(k) for k in keys}

    def _pump(self, seconds: float) -> None:
        self._page.wait_for_timeout(max(1, int(seconds * 1000)))


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - only for error messages
        return f"<unavailable: {exc.__class__.__name__}>"


def _now_iso() -> str:
    from reference_server.protocol import now_iso

    return now_iso()


