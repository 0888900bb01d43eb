"""``WebSocketTestHelper``: drive a browser WebSocket app and assert on its UI and frames.

The method names are a public contract (the seed project's helper plus the
harness's additions).  By default the helper is *real*: connection states
are produced by the server (through the reference server's fault control)
and by the page's own reconnect logic, in virtual time.  In *synthetic* mode
the same calls dispatch the seed's window events (``websocket-status``,
``websocket-message``) instead, for apps without a cooperating server.

What is app-specific comes from the app profile (:mod:`harness.app`):
a page with the Nova hook (``window.__novaWs``) is read through it; any
other page is read from its socket log (:mod:`harness.browser.sockets`).
Either way the connection changes only through a server-depth shim (the
reference server's ``/__harness``, :class:`harness.asgi.FaultMiddleware`, or
the fault proxy), so every state the page shows is one it reached by itself
(:mod:`harness.browser.status`).

Frames travel through a Playwright route (the journal), and Playwright
delivers a routed frame only while the test thread is inside a Playwright
call.  Every wait of this helper pumps, so a frame is never stuck; a test
that blocks on something else (a ``ws_client`` wait, a thread) should first
wait here for what the page must have sent.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..app import AppProfile, load_profile
from ..app.requests import CLIENT_ID_COOKIE
from ..config import Mode, WsConfig
from ..errors import ConfigurationError, HarnessError, WaitTimeoutError
from ..faults import Faults
from ..frames.log import Frame
from ..matching import Match, TextMatch
from ..serving import ServerUnderTest
from .route import FrameJournal
from .sockets import SOCKET_LOG_SCRIPT, SocketInfo
from .status import HookStatus, SocketStatus, StatusDriver

__all__ = ["ConnectionStatus", "WebSocketTestHelper", "new_client_id"]

ConnectionStatus = Literal["disconnected", "connecting", "connected", "error"]
_STATUSES: tuple[str, ...] = ("disconnected", "connecting", "connected", "error")

#: Polling interval of in-page waits (ms).  Not requestAnimationFrame: the paused
#: virtual clock holds animation frames too.
_POLL_MS = 10
#: Polling interval of the wait for a loaded page's hook and socket: short, since
#: every test waits on it once and it lasts tens of milliseconds.
_READY_POLL_MS = 5
#: The least time an action (click, fill) on an element that is there may take.
_ACTION_FLOOR_MS = 30_000


def new_client_id(prefix: str = "t") -> str:
    """A unique client id valid for the Nova protocol (``[A-Za-z0-9_-]{1,64}``)."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


def _pw_expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _word(text: str) -> re.Pattern[str]:
    """``text`` as a whole word: ``connected`` must not match ``disconnected``."""
    return re.compile(rf"(?<![\w-]){re.escape(text)}(?![\w-])", re.IGNORECASE)


def _number_text(prefix: str, n: int, suffix: str = "") -> re.Pattern[str]:
    """``prefix``, exactly ``n``, ``suffix``: ``attempts: 1`` must not match ``attempts: 10``."""
    return re.compile(rf"{re.escape(prefix)}{n}(?!\d){re.escape(suffix)}", re.IGNORECASE)


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
        profile: AppProfile | None = None,
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
        self.profile: AppProfile = (
            profile if profile is not None else load_profile(config, http_url=server.http_url)
        )
        self.journal = FrameJournal(
            validate=True,
            validator=self.profile.validator,
            pump=self._pump,
            default_timeout=config.timeout,
            type_key=self.profile.type_key,
            match_in=self.profile.match_in,
        )
        self.fail_on_invalid_frames = validate_frames
        self._status_driver: StatusDriver = (
            HookStatus(self) if self.profile.page_hook else SocketStatus(self)
        )
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
        # After the clock, so the log sees its timers; after the route, so it wraps its WebSocket.
        context.add_init_script(SOCKET_LOG_SCRIPT)

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
            self._faults = Faults.of(self)
        return self._faults

    @property
    def sockets(self) -> list[SocketInfo]:
        """Every WebSocket the page created so far, oldest first (:class:`~harness.browser.sockets.SocketInfo`).

        Index, URL, state, open and close times (page clock, epoch ms), close
        code and reason, and whether it closed cleanly; read from the page's
        socket log, whatever the app.
        """
        from .sockets import read_sockets

        found = read_sockets(self._page)
        if found is None:
            raise HarnessError(
                "the page has no socket log: load it through the helper (initialize or reload) first"
            )
        return found

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
        self._started_at = time.time()
        if self.mode == "synthetic" and not self.profile.page_hook:
            raise ConfigurationError(
                f"synthetic mode dispatches the seed's window events (websocket-status, websocket-message), "
                f"which only an app with its own listeners for them reacts to; the {self.profile.name!r} "
                "profile's app has none. Use real mode (the default: faults through FaultMiddleware or the "
                "fault proxy), or a profile of your own with page_hook=True."
            )
        self.journal.attach(self._page, re.compile(r"^wss?://"))
        if not self._context_prepared:
            # Before any script of the page: the jitter's first draw is already seeded.
            self._page.add_init_script(_seed_script(self.seed))
            if self.virtual_time:
                # pause_at installs the clock too: paused from the first script on.
                _pause_clock(self._page.clock, datetime.now(UTC))
            self._page.add_init_script(SOCKET_LOG_SCRIPT)
        if self.config.keyed_by_cookie:
            # The app's socket URL names no client: the shims find the test's socket by this cookie.
            self._page.context.add_cookies(
                [{"name": CLIENT_ID_COOKIE, "value": self._client_id, "url": self._server.page_http_url}]
            )
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
        self._page.goto(self._page_url(), wait_until="domcontentloaded", timeout=self._timeout_ms(None))
        if self.profile.page_hook:
            self._wait_hook_ready()
        elif self.mode == "real" and self.config.wait_for_socket:
            self._wait_first_socket()

    def _wait_hook_ready(self) -> None:
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
                arg=[int(self.seed), self.mode == "real" and self.config.wait_for_socket],
                timeout=self._timeout_ms(None),
                polling=_READY_POLL_MS,
            )
        except Exception as exc:  # playwright TimeoutError
            hooked = _safe(lambda: self._page.evaluate("() => Boolean(window.__novaWs)"))
            if hooked is not True:
                raise WaitTimeoutError(
                    "expected the page to expose window.__novaWs (the reference client's test "
                    f"hook) within {self._timeout_s(None):.1f} s; is {self._page_url()} the Nova "
                    "client, served with test mode on? For another app, use ws_profile = generic "
                    "(the default with --ws-app or --ws-base-url)."
                ) from exc
            raise WaitTimeoutError(
                f"expected the page to open its WebSocket after loading within "
                f"{self._timeout_s(None):.1f} s. Page state: "
                f"{_safe(lambda: json.dumps(self._brief_state()))}\n"
                f"Last frames:\n{self.journal.describe(limit=10)}"
            ) from exc

    def _wait_first_socket(self) -> None:
        try:
            self._page.wait_for_function(
                "() => { const l = window.__novaWsSockets; return Boolean(l && l.read().some(s => s.state === 'open')); }",
                timeout=self._timeout_ms(None),
                polling=_READY_POLL_MS,
            )
        except Exception as exc:  # playwright TimeoutError
            sockets = _safe(lambda: [s.describe() for s in self.sockets])
            raise WaitTimeoutError(
                f"expected the page {self._page_url()} to open a WebSocket within "
                f"{self._timeout_s(None):.1f} s of loading; its sockets: {sockets}. If the page opens "
                "its socket later (on a click), set ws_wait_for_socket = false and wait with "
                "ws_helper.wait_for_socket_open() after the click."
            ) from exc

    def wait_for_socket_open(self, index: int | None = None, timeout: float | None = None) -> SocketInfo:
        """Wait until the page's newest socket (or socket ``index``) is open; return it."""
        return self._wait_socket_state(index, "open", timeout)

    def wait_for_socket_closed(self, index: int | None = None, timeout: float | None = None) -> SocketInfo:
        """Wait until the page's newest socket (or socket ``index``) has closed; return it (code, clean)."""
        return self._wait_socket_state(index, "closed", timeout)

    def _wait_socket_state(self, index: int | None, state: str, timeout: float | None) -> SocketInfo:
        pick = "s[s.length - 1]" if index is None else f"s[{int(index)}]"
        which = "its newest socket" if index is None else f"its socket #{int(index)}"
        try:
            self._page.wait_for_function(
                f"() => {{ const l = window.__novaWsSockets; if (!l) return false; const s = l.read();"
                f" const n = {pick}; return Boolean(n && n.state === {json.dumps(state)}); }}",
                timeout=self._timeout_ms(timeout),
                polling=_POLL_MS,
            )
        except Exception as exc:  # playwright TimeoutError
            sockets = _safe(lambda: [s.describe() for s in self.sockets])
            raise WaitTimeoutError(
                f"expected the page's {which} to be {state} within {self._timeout_s(timeout):.1f} s; "
                f"its sockets: {sockets}\nLast frames:\n{self.journal.describe(limit=10)}"
            ) from exc
        found = self.sockets
        return found[-1] if index is None else found[int(index)]

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

    def server_errors(self) -> list[logging.LogRecord]:
        """ERROR records the server logged about this page's client since it was loaded.

        A record is this test's when it names the client id, or when it is an
        unhandled exception of the app (a worker runs one test at a time).
        In-process servers only (see ``ServerUnderTest.error_records``).
        """
        since = getattr(self, "_started_at", 0.0)
        found = []
        for record in self._server.error_records(since):
            text = _record_text(record)
            if self._client_id in text or _UNHANDLED in text:
                found.append(record)
        return found

    def check_server_errors(self) -> None:
        """Raise AssertionError listing the server's ERROR records about this test (see :meth:`server_errors`).

        The ``ws_helper`` fixture calls it at teardown unless the test is
        marked ``ws_allow_server_errors``.
        """
        records = self.server_errors()
        if not records:
            return
        lines = [f"the server under test logged {len(records)} error(s) for client {self._client_id!r}:"]
        for record in records[:10]:
            lines.append(f"  {record.levelname} {record.name}: {_record_text(record)[:1500]}")
        lines.append(
            "Fix the server, or mark the test with @pytest.mark.ws_allow_server_errors if it "
            "provokes them on purpose."
        )
        raise AssertionError("\n".join(lines))

    def check_frames(self) -> None:
        """Raise AssertionError listing every frame that violated the protocol.

        Under ``ws_allow_invalid_frames`` (``validate_frames=False``) violations
        are still recorded (``journal.violations()``) but do not fail.
        """
        self.journal.check(violations=self.fail_on_invalid_frames)

    # ------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """A copy of the page's store (``window.__novaWs.getState()``); pages without the hook: their sockets."""
        if isinstance(self._status_driver, HookStatus):
            return self._status_driver.state()
        return self._status_driver.brief()

    def wait_for_state(self, predicate: str, what: str, timeout: float | None = None) -> None:
        """Wait until the JavaScript expression ``predicate`` over the store ``s`` is true.

        Example: ``wait_for_state("s.offlineQueue.length === 0", "the queue to drain")``.
        On a page without the Nova hook, ``s`` is the array of its sockets
        (see :attr:`sockets`; fields ``url``, ``state``, ``code``, ``wasClean``...).
        """
        driver = self._status_driver
        if isinstance(driver, HookStatus):
            driver.wait(predicate, what, timeout)
        else:
            assert isinstance(driver, SocketStatus)
            driver.wait_socket(predicate, what, timeout)

    # ------------------------------------------------------------ seed helper API

    def simulate_error(self, message: str) -> None:
        """Make the page show ``message`` as an error.

        Real mode with an open socket: the server (or the shim in front of it)
        pushes a genuine error frame (the profile's: Nova ``error``
        ``internal_error``, else ``ws_error_frame``) and this returns once the
        page received it.  Synthetic mode (Nova pages only): the seed's
        ``websocket-message`` window event carries the same frame.
        """
        text = self.profile.error_frame(message, self._client_id)
        if self.mode == "real" and self._server.faults is not None and self._status() == "connected":
            before = len(self.journal.frames)
            self._server.faults.push_raw(self._client_id, text)
            self.journal.wait_for(
                lambda f: (
                    f.index >= before
                    and f.direction == "received"
                    and self.profile.is_error_frame(f.message, message)
                ),
                f"the pushed error frame {message!r} to reach the page",
            )
            return
        if not self.profile.page_hook:
            if self.mode == "real" and self._status() != "connected":
                raise HarnessError(
                    f"simulate_error({message!r}) pushes an error frame on the page's open socket, and it "
                    f"has none (sockets: {[s.describe() for s in self.sockets[-3:]]}); connect it first "
                    "(set_connection_status('connected'))"
                )
            self._require_faults("simulate_error")
        self.dispatch_message(json.loads(text))

    def set_connection_status(self, status: ConnectionStatus, *, error: str | None = None) -> None:
        """Put the connection in ``status``; return once the page has reacted.

        Real mode (default), at server depth (the reference server, or
        :class:`harness.asgi.FaultMiddleware` / the fault proxy for other apps):

        ``"error"``
            the server fails the live connection (close 1011 with ``error`` as
            the reason) and rejects further handshakes with HTTP 503; a
            handshake the server was holding fails.  The page then shows
            ``disconnected`` with a reconnect scheduled (its reaction to a
            failed connection), or ``error`` if it gave up for good: this
            returns once it has reacted.
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
            the server closes the live socket cleanly (1000), or fails a held
            handshake, and holds further handshakes.

        On a page without the Nova hook, "reacted" is read from its sockets
        (:attr:`sockets`): open is ``connected``, a handshake under way
        ``connecting``, closed ``disconnected``; check the page's own status
        text with :meth:`wait_for_connection_status`.

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
        self._status_driver.set_status(status, error)

    def authenticate(self, api_key: str | None = None) -> None:
        """Type ``api_key`` (default: the configured key) and click Authenticate, as a user would."""
        key = self.config.api_key if api_key is None else api_key
        self._fill("api_key_input", key)
        self._click("authenticate_button")

    def wait_for_reconnect_info(self, expected_attempts: int, timeout: float | None = None) -> None:
        """Wait until the reconnect info shows ``ws_reconnect_info_format`` with ``n`` = exactly N.

        The default format is ``Reconnection attempts: {n}``; ``attempts: 1``
        never matches ``attempts: 10``.  Case-insensitive.
        """
        fmt = self.config.reconnect_info_format
        before, _, after = fmt.partition("{n}")
        self._expect_text(
            self._test_id("reconnect_info", "wait_for_reconnect_info"),
            _number_text(before, int(expected_attempts), after),
            timeout,
            shown_as=fmt.replace("{n}", str(expected_attempts)),
        )

    def wait_for_error_details(self, text: str, timeout: float | None = None) -> None:
        """Wait until the error details contain ``text``."""
        self._expect_text(self._test_id("error_details", "wait_for_error_details"), text, timeout)

    def wait_for_auth_status(self, text: str, timeout: float | None = None) -> None:
        """Wait until the auth status contains ``text`` (e.g. ``Authenticated``)."""
        self._expect_text(self._test_id("auth_status", "wait_for_auth_status"), text, timeout)

    def wait_for_connection_status(self, status: str, timeout: float | None = None) -> None:
        """Wait until the connection status shows the word ``status`` (``connected`` is not ``disconnected``).

        Case-insensitive: ``Connected`` shows ``connected``.
        """
        self._expect_text(
            self._test_id("connection_status", "wait_for_connection_status"),
            _word(status),
            timeout,
            shown_as=status,
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
        """Advance the virtual clock to the page's next reconnect.

        Nova pages: waits (real time, up to ``timeout``) for the reconnect to
        be scheduled, runs the clock to it and returns the delay the page drew
        (``nextReconnectDelay``).  Other pages: waits for the newest socket to
        close, then steps the clock timer by timer until the page creates its
        next socket (bounded: an hour of virtual time, 2000 timers), and returns
        the milliseconds advanced; it fails, listing the sockets, when no timer
        is left and no socket came.
        """
        self._require_virtual_time("advance_to_next_reconnect")
        return self._status_driver.advance_to_next_reconnect(timeout)

    # ------------------------------------------------------------ UI actions

    def subscribe(self, channel: str) -> None:
        """Subscribe to ``channel`` through the UI."""
        self._fill("channel_input", channel)
        self._click("subscribe_button")

    def publish(self, channel: str, content: str) -> None:
        """Publish ``content`` on ``channel`` through the UI.

        Types ``channel`` into the channel input (the reference UI's publish
        form follows it; skipped when the app has none: its test id is
        empty), then the message, then clicks Publish.
        """
        self._fill("channel_input", channel)
        self._fill("message_input", content)
        self._click("publish_button")

    # ------------------------------------------------------------ frames

    def expect_frame(
        self,
        type: str | None = None,
        *,
        direction: str = "received",
        match: Match | None = None,
        text: TextMatch | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Wait for a frame (history included) of ``type`` matching ``match`` and ``text``; return it.

        Returns the parsed JSON object, or the raw text (or bytes) of a frame
        that is not one.  ``match``: a dict compared as a subset (of ``data``
        for Nova, of the whole frame otherwise) or a predicate; ``text``: the
        exact text, a compiled regex, or a predicate on the raw payload.
        Each frame satisfies one ``expect_frame`` only, so two calls for the
        same type return two different frames.
        """
        frame = self.journal.expect(type, direction=direction, match=match, text=text, timeout=timeout)
        return frame.message if frame.message is not None else frame.raw

    def expect_no_frame(
        self,
        type: str | None = None,
        *,
        direction: str = "received",
        match: Match | None = None,
        text: TextMatch | None = None,
        within: float = 0.5,
    ) -> None:
        """Assert no not-yet-expected frame matching shows up within ``within`` s.

        With no ``type``, ``match`` or ``text``, any frame fails it, JSON or not.
        """
        self.journal.expect_none(type, direction=direction, match=match, text=text, within=within)

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
        return self._status_driver.status()

    def _test_id(self, name: str, what: str) -> str:
        value: str = getattr(self.config.test_ids, name)
        if not value:
            raise ConfigurationError(
                f"{what} reads the element with test id {name!r}, which this app does not have "
                f"(ws_test_ids {name} is empty); set it to the element's "
                f"{self.config.test_id_attribute}, or check the page another way"
            )
        return value

    def _locator(self, test_id: str) -> Any:
        attribute = self.config.test_id_attribute
        if attribute == "data-testid":
            return self._page.get_by_test_id(test_id)
        return self._page.locator(f"[{attribute}={json.dumps(test_id)}]")

    def _fill(self, name: str, value: str) -> None:
        """Fill the element with test id ``name``; skipped when the app has none (empty id)."""
        locator = self._action_target(name)
        if locator is not None:
            locator.fill(value, timeout=self._action_timeout_ms())

    def _click(self, name: str) -> None:
        """Click the element with test id ``name``; skipped when the app has none (empty id)."""
        locator = self._action_target(name)
        if locator is not None:
            locator.click(timeout=self._action_timeout_ms())

    def _action_target(self, name: str) -> Any:
        """The element with test id ``name``, once it is there (within ``ws_timeout``); None without one."""
        test_id = getattr(self.config.test_ids, name)
        if not test_id:
            return None
        locator = self._locator(test_id)
        try:
            locator.wait_for(state="attached", timeout=self._timeout_ms(None))
        except Exception as exc:  # playwright TimeoutError
            raise WaitTimeoutError(
                f"expected an element [{self.config.test_id_attribute}={test_id!r}] ({name}) on the page "
                f"within {self._timeout_s(None):.1f} s; there is none. Set ws_test_ids {name}= to the "
                "app's own test id, or leave it empty if the app has no such element."
            ) from exc
        return locator

    def _action_timeout_ms(self) -> float:
        # The element is there: what remains is the page handling the event, which a busy page
        # (a 512 KiB frame being built) may take longer than a wait's timeout to do.
        return max(self._timeout_ms(None), _ACTION_FLOOR_MS)

    def _require_faults(self, what: str) -> Any:
        if self._server.faults is None:
            raise ConfigurationError(
                f"{what} in real mode needs a server-depth fault shim between the page and the app, and "
                "this server has none. Any of: the reference server; --ws-app (wrapped in "
                "harness.asgi.FaultMiddleware automatically); an app already running that mounts "
                "FaultMiddleware, with --ws-harness-token; or the fault proxy in front of a running "
                "app (--ws-base-url with ws_proxy on, the default, over http)"
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
        locator = self._locator(test_id)
        if _already_contains(locator, text):
            return
        try:
            _pw_expect()(locator).to_contain_text(text, timeout=self._timeout_ms(timeout))
        except AssertionError as exc:
            shown = _safe(lambda: locator.inner_text(timeout=500))
            wanted = shown_as or (text if isinstance(text, str) else text.pattern)
            raise WaitTimeoutError(
                f"expected [{self.config.test_id_attribute}={test_id!r}] to contain {wanted!r} within "
                f"{self._timeout_s(timeout):.1f} s; it shows {shown!r}.\n"
                f"Page state: {_safe(lambda: json.dumps(self._brief_state()))}\n"
                f"Last frames:\n{self.journal.describe(limit=10)}"
            ) from exc

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
        return self._status_driver.brief()

    def _pump(self, seconds: float) -> None:
        # Lets Playwright dispatch events (routed frames) while the test thread waits.
        self._page.wait_for_timeout(max(1, int(seconds * 1000)))


#: Matches no URL (an empty negative lookahead always fails).
_NO_URL = re.compile(r"(?!)")


def _pass_through(route: Any) -> None:
    route.connect_to_server()


def _normalize_ws(text: str) -> str:
    return " ".join(text.split())


#: The message uvicorn logs an application's unhandled exception with.
_UNHANDLED = "Exception in ASGI application"


def _record_text(record: logging.LogRecord) -> str:
    """A record's message with its traceback, as the log file shows it."""
    text = record.getMessage()
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        text += "\n" + record.exc_text
    return text


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
