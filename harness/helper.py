"""``WebSocketTestHelper``: drive a browser WebSocket app and assert on its UI and frames.

The method names are a public contract (the seed project's helper plus the
harness's additions).  By default the helper is *real*: connection states
are produced by the server (through the reference server's fault control)
and by the page's own reconnect logic, in virtual time.  In *synthetic* mode
the same calls dispatch the seed's window events (``websocket-status``,
``websocket-message``) instead, for apps without a cooperating server.

Real mode reads the page's store through the reference client's test hook
(``window.__novaWs.getState()``: ``status``, ``nextReconnectAt`` in epoch ms,
``nextReconnectDelay``, ``autoReconnect``) and changes the connection only
through the server's ``/__harness`` fault control, so every state the page
shows is one it reached by itself.

Frames travel through a Playwright route (the journal), and Playwright
delivers a routed frame only while the test thread is inside a Playwright
call.  Every wait of this helper pumps, so a frame is never stuck; a test
that blocks on something else (a ``ws_client`` wait, a thread) should first
wait here for what the page must have sent.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .config import Mode, WsConfig
from .errors import ConfigurationError, HarnessError, WaitTimeoutError
from .faults import Faults
from .journal import Frame, FrameJournal
from .matching import Match
from .server import ServerUnderTest

__all__ = ["ConnectionStatus", "WebSocketTestHelper", "new_client_id"]

ConnectionStatus = Literal["disconnected", "connecting", "connected", "error"]
_STATUSES: tuple[str, ...] = ("disconnected", "connecting", "connected", "error")

#: The page's store, read through the reference client's test hook.
_STATE = "window.__novaWs.getState()"

#: Polling interval of in-page waits (ms).  Not requestAnimationFrame: the paused
#: virtual clock holds animation frames too.
_POLL_MS = 10
#: Polling interval of the wait for a loaded page's hook and socket: short, since
#: every test waits on it once and it lasts tens of milliseconds.
_READY_POLL_MS = 5


def new_client_id(prefix: str = "t") -> str:
    """A unique client id valid for the Nova protocol (``[A-Za-z0-9_-]{1,64}``)."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def _pw_expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _word(text: str) -> re.Pattern[str]:
    """``text`` as a whole word: ``connected`` must not match ``disconnected``."""
    return re.compile(rf"(?<![\w-]){re.escape(text)}(?![\w-])")


def _number_text(prefix: str, n: int) -> re.Pattern[str]:
    """``prefix`` followed by exactly ``n``: ``attempts: 1`` must not match ``attempts: 10``."""
    return re.compile(rf"{re.escape(prefix)}{n}(?!\d)")


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
        page_query: Mapping[str, Any] | None = None,
        context_prepared: bool = False,
    ) -> None:
        self._page = page
        self._server = server
        self.config = config
        self._client_id = client_id or new_client_id()
        self.mode: Mode = mode or config.mode
        self.virtual_time = virtual_time
        self.seed = config.seed if seed is None else seed
        self.page_query: dict[str, Any] = dict(page_query or {})
        # Frames are always validated, so a test can look at the violations; only
        # ``validate_frames`` (off under ws_allow_invalid_frames) makes them fail the test.
        self.journal = FrameJournal(validate=True, pump=self._pump, default_timeout=config.timeout)
        self.fail_on_invalid_frames = validate_frames
        self._faults: Faults | None = None
        self._initialized = False
        self._context_prepared = context_prepared
        self.random = random.Random(self.seed)

    @staticmethod
    def prepare_context(context: Any, *, seed: int, virtual_time: bool = True) -> None:
        """Seed the pages of ``context`` and, with ``virtual_time``, install its clock paused.

        The same set-up :meth:`initialize` does on its page, done once on the
        browser context before its first page exists, where it is cheaper (no
        page to update).  Pass ``context_prepared=True`` to the helpers of the
        context's pages so they skip it.  The ``ws_helper`` fixture does this.

        It also sets up Playwright's WebSocket interception on the context with
        a route that matches no URL: each page's own journal route (added by
        :meth:`initialize`) then finds it in place instead of setting it up
        on a live page.  Sockets of pages without a helper pass through as before.
        """
        context.route_web_socket(_NO_URL, _pass_through)
        context.add_init_script(_seed_script(seed))
        if virtual_time:
            _pause_clock(context.clock, datetime.now(UTC))

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

    @property
    def faults(self) -> Faults:
        """Faults at every depth for this page (:class:`harness.faults.Faults`); cleared at cleanup."""
        if self._faults is None:
            self._faults = Faults(self)
        return self._faults

    @property
    def connections(self) -> list[str]:
        """The URL of every socket the page opened so far, oldest first (from the journal)."""
        return self.journal.connections

    # ------------------------------------------------------------ lifecycle

    def initialize(self) -> WebSocketTestHelper:
        """Route the page's sockets through the journal, install the clock, load the page.

        The clock is installed and paused before the first script runs, so no
        page timer fires unless the test advances time; the page's randomness
        is seeded before it loads.  Returns once the page's store exists and,
        in real mode, its socket is open.
        """
        if self._initialized:
            return self
        self.journal.attach(self._page, re.compile(r"^wss?://"))
        if not self._context_prepared:
            # Before any script of the page: the jitter's first draw is already seeded.
            self._page.add_init_script(_seed_script(self.seed))
            if self.virtual_time:
                # pause_at installs the clock too: paused from the first script on.
                _pause_clock(self._page.clock, datetime.now(UTC))
        self._load()
        self._initialized = True
        return self

    def reload(self, **query: Any) -> None:
        """Load the page again with the same client id, adding ``query`` parameters.

        For settings the page reads from its URL, e.g. ``reload(jitter="none")``
        or ``reload(op_timeout=1000)`` with the reference client.  The virtual
        clock keeps its time (and stays paused) across the reload; the journal
        keeps every frame, the new socket gets the next connection index.
        ``None`` removes a parameter given earlier.
        """
        for key, value in query.items():
            if value is None:
                self.page_query.pop(key, None)
            else:
                self.page_query[key] = value
        self._load()

    def _page_url(self) -> str:
        url = self._server.page_url(self._client_id)
        if not self.page_query:
            return url
        parts = urlsplit(url)
        params = [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in self.page_query
        ]
        params += [(k, str(v)) for k, v in self.page_query.items()]
        return urlunsplit(parts._replace(query=urlencode(params)))

    def _load(self) -> None:
        self._page.goto(self._page_url(), wait_until="domcontentloaded")
        # One round trip: the hook is there, the page is seeded (apps that ignore
        # window.__NOVA_WS_SEED but offer seed() get seeded here) and, in real mode,
        # its socket is open.
        ready = (
            "([seed, real]) => { const h = window.__novaWs;"
            " if (!h || typeof h.getState !== 'function') return false;"
            " const s = h.getState();"
            " if (typeof h.seed === 'function' && s.backoff && !s.backoff.seeded) h.seed(seed);"
            " return !real || s.status === 'connected'; }"
        )
        try:
            self._page.wait_for_function(
                ready,
                arg=[int(self.seed), self.mode == "real"],
                timeout=self._timeout_ms(None),
                polling=_READY_POLL_MS,
            )
        except Exception as exc:  # playwright TimeoutError
            hooked = _safe(lambda: self._page.evaluate("() => Boolean(window.__novaWs)"))
            if hooked is not True:
                raise WaitTimeoutError(
                    "expected the page to expose window.__novaWs (the reference client's test "
                    f"hook) within {self._timeout_s(None):.1f} s; is {self._page_url()} the Nova "
                    "client, served with test mode on?"
                ) from exc
            raise WaitTimeoutError(
                f"expected the page to open its WebSocket after loading within "
                f"{self._timeout_s(None):.1f} s. Page state: "
                f"{_safe(lambda: json.dumps(self._brief_state()))}\n"
                f"Last frames:\n{self.journal.describe(limit=10)}"
            ) from exc

    def cleanup(self) -> None:
        """Undo every fault this page's test started, and drop the journal's interceptors.

        Every step runs even when an earlier one fails (the server may be gone);
        the first error is raised at the end.
        """
        errors: list[BaseException] = []
        steps: list[Callable[[], object]] = [self.journal.clear_interceptors]
        if self._faults is not None:
            steps.insert(0, self._faults.clear)
        if self._server.faults is not None and self.mode == "real":
            control = self._server.faults
            steps.append(lambda: control.clear(self._client_id))
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - run the other steps, then report
                errors.append(exc)
        self._initialized = False
        if errors:
            raise errors[0]

    def check_frames(self) -> None:
        """Raise AssertionError listing every frame that violated the protocol.

        Under ``ws_allow_invalid_frames`` (``validate_frames=False``) violations
        are still recorded (``journal.violations()``) but do not fail.
        """
        self.journal.check(violations=self.fail_on_invalid_frames)

    # ------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """A copy of the page's store (``window.__novaWs.getState()``)."""
        result: dict[str, Any] = self._page.evaluate(f"() => {_STATE}")
        return result

    def wait_for_state(self, predicate: str, what: str, timeout: float | None = None) -> None:
        """Wait until the JavaScript expression ``predicate`` over the store ``s`` is true.

        Example: ``wait_for_state("s.offlineQueue.length === 0", "the queue to drain")``.
        """
        self._wait_status_js(predicate, what, timeout)

    # ------------------------------------------------------------ seed helper API

    def simulate_error(self, message: str) -> None:
        """Make the page show ``message`` as an error.

        Real mode with an open socket: the server pushes a genuine ``error``
        frame (``internal_error``) and this returns once the page received it.
        Otherwise (synthetic mode, or no open socket): the seed's
        ``websocket-message`` window event carries the same ``error`` message.
        """
        frame = {
            "type": "error",
            "data": {"code": "internal_error", "message": message},
            "timestamp": _now_iso(),
            "client_id": self._client_id,
        }
        if (
            self.mode == "real"
            and self._server.faults is not None
            and self._status() == "connected"
        ):
            before = len(self.journal.frames)
            self._server.faults.push(self._client_id, frame)
            self.journal.wait_for(
                lambda f: (
                    f.index >= before
                    and f.direction == "received"
                    and f.type == "error"
                    and (f.message or {}).get("data", {}).get("message") == message
                ),
                f"the pushed error frame {message!r} to reach the page",
            )
        else:
            self.dispatch_message(frame)

    def set_connection_status(self, status: ConnectionStatus, *, error: str | None = None) -> None:
        """Put the connection in ``status``; return once the page has reacted.

        Real mode (default), at server depth:

        ``"error"``
            the server fails the live connection (close 1011 with ``error`` as
            the reason) and rejects further handshakes with HTTP 503; a
            handshake the server was holding stays unanswered until the page
            gives it up (its open timeout, reached by advancing the clock).
            The page then shows ``disconnected`` with a reconnect scheduled
            (its reaction to a failed connection), or ``error`` if it gave up
            for good: this returns once it has reacted.
        ``"connecting"``
            the server stops rejecting and holds handshakes open (rules on
            frames, ``drop``/``delay``, stay) and the clock advances to the
            page's next reconnect (an open socket is first closed with 1001),
            so the page is genuinely CONNECTING; returns once the server holds
            the handshake.
        ``"connected"``
            faults are lifted, a held handshake proceeds (or the clock advances
            to the next reconnect, or Reconnect is clicked when the page gave
            up); returns once the page has an open socket.
        ``"disconnected"``
            the server closes the live socket cleanly (1000), or leaves a held
            handshake unanswered as for ``"error"``, and holds further
            handshakes.

        Synthetic mode: the seed's ``websocket-status`` window event
        ``{status, error?}``; nothing happens on the socket.
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
        {
            "error": self._real_error,
            "connecting": self._real_connecting,
            "connected": self._real_connected,
            "disconnected": self._real_disconnected,
        }[status](error)

    def _real_error(self, reason: str | None) -> None:
        faults = self._require_faults("set_connection_status('error')")
        cid = self._client_id
        self._settle()
        faults.reject_handshakes(cid, status=503)
        self._release_held_into(faults)
        if self._status() == "connected":
            self._close_live(faults, 1011, reason or "simulated server error")
        self._wait_status_js(
            "s.status !== 'connected' && s.status !== 'connecting'",
            "the page to lose its connection after the server failed it",
        )

    def _real_connecting(self, reason: str | None) -> None:
        faults = self._require_faults("set_connection_status('connecting')")
        cid = self._client_id
        self._settle()
        if self._status() == "connecting" and self._held() > 0:
            return
        self._lift_handshake_rules(faults)
        faults.hold_handshakes(cid)
        if self._status() == "connected":
            self._close_live(faults, 1001, reason or "server going away (test)")
            self._wait_status_js("s.status !== 'connected'", "the page to notice the close")
        extra = 0.0 if self._status() == "connecting" else self._start_next_attempt()
        self.wait_for_connection_status("connecting", timeout=self._timeout_s(None) + extra)
        self._wait_until(
            lambda: self._held() > 0,
            "the server to hold the page's handshake",
            hint="the page shows connecting but its handshake never reached the server",
        )

    def _real_connected(self, reason: str | None) -> None:
        faults = self._require_faults("set_connection_status('connected')")
        self._settle()
        faults.clear(self._client_id)  # also lets a held handshake proceed
        extra = self._start_next_attempt() if self._status() in ("disconnected", "error") else 0.0
        self._wait_status_js(
            "s.status === 'connected'",
            "the page to open its WebSocket",
            timeout=self._timeout_s(None) + extra,
        )
        self.wait_for_connection_status("connected")

    def _real_disconnected(self, reason: str | None) -> None:
        faults = self._require_faults("set_connection_status('disconnected')")
        cid = self._client_id
        self._settle()
        # A held handshake is given up by the page (virtual time), or opens and is
        # closed cleanly below.
        self._release_held_into(faults)
        self._lift_handshake_rules(faults)
        faults.hold_handshakes(cid)
        if self._status() == "connected":
            self._close_live(faults, 1000, reason or "closed by the test")
        self._wait_status_js(
            "s.status !== 'connected' && s.status !== 'connecting'",
            "the page to notice the clean close",
        )

    def authenticate(self, api_key: str | None = None) -> None:
        """Type ``api_key`` (default: the configured key) and click Authenticate, as a user would."""
        key = self.config.api_key if api_key is None else api_key
        ids = self.config.test_ids
        self._page.get_by_test_id(ids.api_key_input).fill(key)
        self._page.get_by_test_id(ids.authenticate_button).click()

    def wait_for_reconnect_info(self, expected_attempts: int, timeout: float | None = None) -> None:
        """Wait until the reconnect info shows ``Reconnection attempts: N`` (exactly N)."""
        self._expect_text(
            self.config.test_ids.reconnect_info,
            _number_text("Reconnection attempts: ", expected_attempts),
            timeout,
            shown_as=f"Reconnection attempts: {expected_attempts}",
        )

    def wait_for_error_details(self, text: str, timeout: float | None = None) -> None:
        """Wait until the error details contain ``text``."""
        self._expect_text(self.config.test_ids.error_details, text, timeout)

    def wait_for_auth_status(self, text: str, timeout: float | None = None) -> None:
        """Wait until the auth status contains ``text`` (e.g. ``Authenticated``)."""
        self._expect_text(self.config.test_ids.auth_status, text, timeout)

    def wait_for_connection_status(self, status: str, timeout: float | None = None) -> None:
        """Wait until the connection status shows the word ``status`` (``connected`` is not ``disconnected``)."""
        self._expect_text(
            self.config.test_ids.connection_status, _word(status), timeout, shown_as=status
        )

    # ------------------------------------------------------------ time

    def advance_clock(self, ms: float) -> None:
        """Advance the page's virtual clock by ``ms``, firing every timer due on the way.

        The jump is instant, and frames still travel in real time: a reply to
        a frame sent by a timer during the jump cannot arrive before the jump
        ends.  So on an authenticated reference page, one jump longer than the
        heartbeat (a ping at 25 s, dead 10 s later) makes the page declare the
        link dead.  Advance to the ping, wait for the pong
        (``expect_frame("pong")``), then go on.  Pages in the same browser
        context share this clock.
        """
        self._require_virtual_time("advance_clock")
        self._page.clock.run_for(int(ms))

    def advance_to_next_reconnect(self, timeout: float | None = None) -> int:
        """Advance the virtual clock to the page's scheduled reconnect; return its delay (ms).

        Waits (real time, up to ``timeout``) for the reconnect to be scheduled
        first, so it can follow a close the page has not processed yet.  The
        delay returned is the one the page drew (``nextReconnectDelay``); the
        clock moves by what remains of it.
        """
        self._require_virtual_time("advance_to_next_reconnect")
        self._wait_status_js(
            "s.nextReconnectAt != null || (s.status !== 'connected' && s.status !== 'connecting' && !s.autoReconnect)",
            "the page to schedule a reconnect",
            timeout,
        )
        info = self._page.evaluate(
            f"() => {{ const s = {_STATE}; const at = s.nextReconnectAt;"
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
        self._page.clock.run_for(remaining)
        return int(info["delay"])

    # ------------------------------------------------------------ UI actions

    def subscribe(self, channel: str) -> None:
        """Subscribe to ``channel`` through the UI."""
        ids = self.config.test_ids
        self._page.get_by_test_id(ids.channel_input).fill(channel)
        self._page.get_by_test_id(ids.subscribe_button).click()

    def publish(self, channel: str, content: str) -> None:
        """Publish ``content`` on ``channel`` through the UI.

        Types ``channel`` into the channel input (the reference UI's publish
        form follows it), then the message, then clicks Publish.
        """
        ids = self.config.test_ids
        self._page.get_by_test_id(ids.channel_input).fill(channel)
        self._page.get_by_test_id(ids.message_input).fill(content)
        self._page.get_by_test_id(ids.publish_button).click()

    # ------------------------------------------------------------ frames

    def expect_frame(
        self,
        type: str | None = None,
        *,
        direction: str = "received",
        match: Match | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Wait for a frame (history included) of ``type`` matching ``match``; return its message.

        Each frame satisfies one ``expect_frame`` only, so two calls for the
        same type return two different frames.
        """
        frame = self.journal.expect(type, direction=direction, match=match, timeout=timeout)
        assert frame.message is not None
        return frame.message

    def expect_no_frame(
        self,
        type: str | None = None,
        *,
        direction: str = "received",
        match: Match | None = None,
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
            "([name, detail]) => window.dispatchEvent(new CustomEvent(name, {detail}))",
            [name, detail],
        )

    # ------------------------------------------------------------ internals

    def _status(self) -> str:
        return str(self._page.evaluate(f"() => {_STATE}.status"))

    def _held(self) -> int:
        info = self._require_faults("reading held handshakes").client_info(self._client_id)
        return int(info.get("held_handshakes") or 0)

    def _settle(self) -> None:
        """Let a handshake in flight finish (open, fail, or be held) before the rules change.

        Right after the clock released a reconnect, the page is CONNECTING
        while its handshake is still on its way; rules set now would race the
        server's verdict on it.
        """
        if self._status() != "connecting":
            return
        self._wait_until(
            lambda: self._status() != "connecting" or self._held() > 0,
            "the page's handshake in flight to open, fail or be held by the server",
        )

    def _lift_handshake_rules(self, faults: Any) -> None:
        """Remove this client's reject and hold rules; keep its drop and delay rules.

        The control API only clears a client's rules all at once, so the
        frame rules a test set are put back right after.
        """
        cid = self._client_id
        rules = faults.client_info(cid).get("rules") or {}
        faults.clear(cid)
        drop, delay = rules.get("drop"), rules.get("delay")
        if drop:
            faults.drop(cid, types=drop.get("types"), count=drop.get("remaining"))
        if delay:
            faults.delay(cid, ms=delay["ms"], types=delay.get("types"))

    def _release_held_into(self, faults: Any) -> None:
        """Make a handshake the server is holding fail; wait until the page has given it up.

        In virtual time the server keeps holding it and the page abandons it
        after its own open timeout (the clock advances by that timeout): a
        failed attempt, whatever the rules.  Otherwise the handshake is
        released into the rules now in force; the reference server accepts a
        released handshake (it does not judge it again), so the caller closes
        the socket that results.
        """
        if self._status() != "connecting":
            return
        open_timeout = int(
            self._page.evaluate("() => Number((window.__novaWs.settings || {}).openTimeoutMs) || 0")
        )
        if self.virtual_time and open_timeout > 0 and self._held() > 0:
            self._page.clock.run_for(open_timeout)
            self._wait_status_js(
                "s.status !== 'connecting'", "the page to give up the handshake the server holds"
            )
            # Until the server notices, lifting its rules would let the dead handshake proceed.
            self._wait_until(
                lambda: self._held() == 0, "the server to drop the handshake the page gave up"
            )
            return
        faults.release_handshakes(self._client_id)
        self._wait_status_js(
            "s.status !== 'connecting'", "the released handshake to complete or fail"
        )

    def _close_live(self, faults: Any, code: int, reason: str) -> None:
        from .control import FaultControlError

        try:
            faults.close_socket(self._client_id, code=code, reason=reason)
        except FaultControlError as exc:
            # 409: the socket went away meanwhile, which is what the caller wanted.
            if "409" not in str(exc):
                raise

    def _start_next_attempt(self) -> float:
        """Make the page try again: run the clock to its reconnect, or click Reconnect.

        Returns the seconds to allow on top of a wait for the attempt: with
        real timers, what remains of the page's backoff delay.
        """
        state = self.state()
        if state.get("nextReconnectAt") is None:
            self._page.get_by_test_id(self.config.test_ids.reconnect_button).click()
            return 0.0
        if self.virtual_time:
            self.advance_to_next_reconnect()
            return 0.0
        now = float(self._page.evaluate("() => Date.now()"))
        return max(0.0, (float(state["nextReconnectAt"]) - now) / 1000)

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

    def _timeout_s(self, timeout: float | None) -> float:
        return self.config.timeout if timeout is None else timeout

    def _timeout_ms(self, timeout: float | None) -> float:
        return 1000 * self._timeout_s(timeout)

    def _expect_text(
        self,
        test_id: str,
        text: str | re.Pattern[str],
        timeout: float | None,
        *,
        shown_as: str | None = None,
    ) -> None:
        locator = self._page.get_by_test_id(test_id)
        if _already_contains(locator, text):
            return
        try:
            _pw_expect()(locator).to_contain_text(text, timeout=self._timeout_ms(timeout))
        except AssertionError as exc:
            shown = _safe(lambda: locator.inner_text(timeout=500))
            wanted = shown_as or (text if isinstance(text, str) else text.pattern)
            raise WaitTimeoutError(
                f"expected [data-testid={test_id!r}] to contain {wanted!r} within "
                f"{self._timeout_s(timeout):.1f} s; it shows {shown!r}.\n"
                f"Page state: {_safe(lambda: json.dumps(self._brief_state()))}\n"
                f"Last frames:\n{self.journal.describe(limit=10)}"
            ) from exc

    def _wait_status_js(self, predicate: str, what: str, timeout: float | None = None) -> None:
        self._wait_js(
            f"() => {{ const s = {_STATE}; return Boolean({predicate}); }}", what, timeout
        )

    def _wait_js(
        self, predicate: str, what: str, timeout: float | None = None, hint: str = ""
    ) -> None:
        try:
            self._page.wait_for_function(
                predicate, timeout=self._timeout_ms(timeout), polling=_POLL_MS
            )
        except Exception as exc:  # playwright TimeoutError
            raise WaitTimeoutError(
                f"expected {what} within {self._timeout_s(timeout):.1f} s. "
                f"Page state: {_safe(lambda: json.dumps(self._brief_state()))}. {hint}\n"
                f"Last frames:\n{self.journal.describe(limit=10)}"
            ) from exc

    def _wait_until(
        self, condition: Callable[[], bool], what: str, timeout: float | None = None, hint: str = ""
    ) -> None:
        """Poll ``condition`` (e.g. an HTTP call) until true, pumping Playwright in between."""
        deadline = time.monotonic() + self._timeout_s(timeout)
        while not condition():
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(
                    f"expected {what} within {self._timeout_s(timeout):.1f} s. "
                    f"Page state: {_safe(lambda: json.dumps(self._brief_state()))}. {hint}"
                )
            self._pump(0.02)

    def _brief_state(self) -> dict[str, Any]:
        state = self.state()
        keys = (
            "status",
            "statusDetail",
            "authStatus",
            "reconnectAttempts",
            "nextReconnectDelay",
            "lastError",
        )
        return {k: state.get(k) for k in keys}

    def _pump(self, seconds: float) -> None:
        # Lets Playwright dispatch events (routed frames) while the test thread waits.
        self._page.wait_for_timeout(max(1, int(seconds * 1000)))


#: Matches no URL (an empty negative lookahead always fails).
_NO_URL = re.compile(r"(?!)")


def _pass_through(route: Any) -> None:
    route.connect_to_server()


def _normalize_ws(text: str) -> str:
    return " ".join(text.split())


def _already_contains(locator: Any, text: str | re.Pattern[str]) -> bool:
    """One round trip: whether the single element of ``locator`` already contains ``text``.

    Playwright's ``to_contain_text`` would say the same (text content, whitespace
    normalized) but settles over two animation frames first, about 30 ms even
    when it holds; anything but a clear match is left to it.
    """
    try:
        contents = locator.evaluate_all("els => els.map(e => e.textContent ?? '')")
    except Exception:  # noqa: BLE001 - the page is navigating: let expect wait
        return False
    if len(contents) != 1:
        return False
    shown = _normalize_ws(str(contents[0]))
    if isinstance(text, re.Pattern):
        return text.search(shown) is not None
    return _normalize_ws(text) in shown


def _seed_script(seed: int) -> str:
    return f"window.__NOVA_WS_SEED = {int(seed)};"


def _pause_clock(clock: Any, start: datetime) -> None:
    # The installed clock runs from `start` until paused, and pause_at refuses a time
    # already past; on a busy machine the first margin can be too short.
    for margin_s in (1, 10, 60):
        try:
            clock.pause_at(start + timedelta(seconds=margin_s))
            return
        except Exception as exc:  # playwright Error: "Cannot fast-forward to the past"
            if "past" not in str(exc):
                raise
    raise HarnessError("could not pause the page clock: this machine is too slow to keep up")


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - only for error messages
        return f"<unavailable: {exc.__class__.__name__}>"


def _now_iso() -> str:
    from reference_server.protocol import now_iso

    return now_iso()
