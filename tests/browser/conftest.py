"""Fixtures for the reference client's browser tests (plain pytest-playwright + a live server).

``client_page`` wraps pytest-playwright's ``page`` in :class:`ClientPage`: it
loads the reference client from a ``live_server`` with a unique client id,
records every WebSocket frame the page sends and receives, and at teardown
fails the test if the page sent a frame that does not validate against the
protocol models (extra fields are forbidden there).

Waits use Playwright's ``expect`` / ``wait_for_function`` with one scalable
timeout (``NOVA_TEST_TIMEOUT_SCALE``), never sleeps.  Tests that need
virtual time open the page with ``virtual_time=True``: Playwright's clock is
installed before the page loads and paused once it has, so timers only fire
when the test advances the clock (``client_page.advance(ms)``).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Locator, Page, WebSocket, expect
from websockets.sync.client import ClientConnection, connect

from reference_server.protocol import ProtocolError, parse_client_message
from tests.conftest import LiveServer, start_server

#: One unit for every wait in these tests; scale it on slow machines.
TIMEOUT_S = 10.0 * float(os.environ.get("NOVA_TEST_TIMEOUT_SCALE", "1"))
TIMEOUT_MS = TIMEOUT_S * 1000

VALID_KEY = "valid-test-key"

expect.set_options(timeout=TIMEOUT_MS)


def unique_id(prefix: str) -> str:
    """A client id (or channel name, for a lowercase prefix) unique to this test."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


#: Test instrumentation (not product code): record what the page passes to WebSocket.send,
#: so tests can wait for a frame inside the page with wait_for_function.
_RECORD_SENT = """
(() => {
  const sent = [];
  Object.defineProperty(window, '__novaTestSent', { value: sent });
  const original = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    sent.push(typeof data === 'string' ? data : '[binary frame]');
    return original.call(this, data);
  };
})();
"""

_MATCHING_SENT = """
([type, data]) => window.__novaTestSent
  .map((raw) => { try { return JSON.parse(raw); } catch { return null; } })
  .filter((m) => m && m.type === type
    && Object.entries(data).every(([k, v]) => JSON.stringify(m.data?.[k]) === JSON.stringify(v)))
"""


@dataclass
class ClientPage:
    """One browser page running the reference client against ``server``."""

    page: Page
    server: LiveServer
    client_id: str
    received: list[str] = field(default_factory=list)
    sockets: list[WebSocket] = field(default_factory=list)
    _faults: ServerFaults | None = None

    def __post_init__(self) -> None:
        self.page.add_init_script(_RECORD_SENT)
        self.page.on("websocket", self._on_websocket)

    def _on_websocket(self, ws: WebSocket) -> None:
        self.sockets.append(ws)
        ws.on("framereceived", lambda payload: self.received.append(_text(payload)))

    @property
    def sent(self) -> list[str]:
        """Every frame the page sent so far (raw text), in order."""
        result: list[str] = self.page.evaluate("() => window.__novaTestSent ?? []")
        return result

    # ------------------------------------------------------------ loading

    def url(self, base: str | None = None, **query: Any) -> str:
        params = {"client_id": self.client_id, **{k: v for k, v in query.items() if v is not None}}
        return f"{base or self.server.http_url}/?{urlencode(params)}"

    def open(self, *, virtual_time: bool = False, base: str | None = None, **query: Any) -> ClientPage:
        """Load the page (query parameters as keyword arguments) and wait until its store runs."""
        if virtual_time:
            self.page.clock.install()
        self.page.goto(self.url(base, **query))
        self.page.wait_for_function("() => document.documentElement.dataset.ready === 'true'")
        if virtual_time:
            # pause_at takes seconds (a number in ms would jump ~50,000 years ahead) and
            # must lie ahead of the page's clock: the next whole second plus one.
            self.page.clock.pause_at(self.page.evaluate("() => Math.ceil(Date.now() / 1000) + 1"))
        return self

    # ------------------------------------------------------------ reading the page

    def by(self, test_id: str) -> Locator:
        return self.page.get_by_test_id(test_id)

    def state(self) -> dict[str, Any]:
        """A copy of the store (``window.__novaWs.getState()``, test mode only)."""
        result: dict[str, Any] = self.page.evaluate("() => window.__novaWs.getState()")
        return result

    def wait_for_state(self, predicate: str, what: str) -> None:
        """Wait until ``predicate`` (JS, given the state ``s``) is true; fail naming ``what``."""
        try:
            self.page.wait_for_function(
                f"() => {{ const s = window.__novaWs.getState(); return Boolean({predicate}); }}",
                timeout=TIMEOUT_MS,
            )
        except Exception as exc:
            brief = {k: self.state().get(k) for k in ("status", "authStatus", "reconnectAttempts", "lastError")}
            raise AssertionError(f"expected {what} within {TIMEOUT_S:.0f} s; the store has {brief}") from exc

    def frames_sent(self, type: str) -> list[dict[str, Any]]:
        """Frames of ``type`` the page sent, parsed."""
        return [m for m in (_json(raw) for raw in self.sent) if m and m.get("type") == type]

    def frames_received(self, type: str) -> list[dict[str, Any]]:
        return [m for m in (_json(raw) for raw in self.received) if m and m.get("type") == type]

    def wait_for_sent(self, type: str, count: int = 1, **data: Any) -> list[dict[str, Any]]:
        """Wait until the page sent ``count`` frames of ``type`` whose data has ``data``; return them."""
        try:
            self.page.wait_for_function(
                f"(args) => ({_MATCHING_SENT})(args).length >= {int(count)}",
                arg=[type, data],
                polling=50,
                timeout=TIMEOUT_MS,
            )
        except Exception as exc:
            raise AssertionError(
                f"expected {count} {type!r} frame(s) with data {data} sent by the page within "
                f"{TIMEOUT_S:.0f} s; it sent: {[_json(r) for r in self.sent][-10:]}"
            ) from exc
        found: list[dict[str, Any]] = self.page.evaluate(f"(args) => ({_MATCHING_SENT})(args)", [type, data])
        return found

    # ------------------------------------------------------------ acting like a user

    def authenticate(self, key: str = VALID_KEY, *, expect_text: str | None = "Authenticated") -> None:
        self.by("api-key-input").fill(key)
        self.by("authenticate-button").click()
        if expect_text is not None:
            expect(self.by("auth-status")).to_have_text(expect_text)

    def subscribe(self, channel: str) -> None:
        self.by("channel-input").fill(channel)
        self.by("subscribe-button").click()

    def expect_subscribed(self, channel: str) -> None:
        expect(self.by("channel-list").locator(f'[data-channel="{channel}"]')).to_have_attribute(
            "data-state", "subscribed"
        )

    def publish(self, content: str, channel: str | None = None) -> None:
        if channel is not None:
            self.by("publish-channel").fill(channel)
        self.by("message-input").fill(content)
        self.by("publish-button").click()

    def message_items(self, channel: str | None = None) -> Locator:
        items = self.by("message-log").get_by_test_id("message-item")
        return items.and_(self.page.locator(f'[data-channel="{channel}"]')) if channel else items

    # ------------------------------------------------------------ time and faults

    def advance(self, ms: int) -> None:
        """Advance the page's virtual clock by ``ms``, firing every timer due on the way."""
        self.page.clock.run_for(ms)

    def advance_to_reconnect(self) -> int:
        """Run the clock to the scheduled reconnect; return its delay."""
        info = self.page.evaluate(
            "() => { const s = window.__novaWs.getState(); return {at: s.nextReconnectAt, delay: s.nextReconnectDelay, now: Date.now()}; }"
        )
        assert info["at"] is not None, f"no reconnect scheduled; state {self.state()['status']}"
        self.page.clock.run_for(max(0, int(info["at"]) - int(info["now"])))
        return int(info["delay"])

    @property
    def faults(self) -> ServerFaults:
        """Server-depth faults for this page's client id (the /__harness API)."""
        if self._faults is None:
            self._faults = ServerFaults(self.server, self.client_id)
        return self._faults

    def dispatch(self, event: str, detail: Any) -> None:
        """Dispatch a test-hook window event (``websocket-message`` / ``websocket-status``)."""
        self.page.evaluate(
            "([name, detail]) => window.dispatchEvent(new CustomEvent(name, {detail}))", [event, detail]
        )

    # ------------------------------------------------------------ checks

    def invalid_sent_frames(self) -> list[str]:
        problems = []
        for raw in self.sent:
            try:
                parse_client_message(raw)
            except ProtocolError as exc:
                problems.append(f"{exc.message}: {raw[:300]}")
        return problems

    def close(self) -> None:
        if self._faults is not None:
            self._faults.close()


class ServerFaults:
    """The reference server's ``/__harness`` control API for one client id (test mode only).

    URLs as documented in reference_server/harness_api.py; any error answer fails the test
    with the server's explanation.
    """

    def __init__(self, server: LiveServer, client_id: str) -> None:
        self.client_id = client_id
        self._http = httpx.Client(
            base_url=f"{server.http_url}/__harness/clients/{client_id}",
            headers=server.harness_headers,
            timeout=TIMEOUT_S,
        )

    def _post(self, action: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.post(f"/{action}", json=body or {})
        assert response.status_code == 200, f"POST /__harness/.../{action}: {response.status_code} {response.text}"
        return response.json()

    def close_socket(self, code: int, reason: str = "") -> None:
        """Close the client's live socket with ``code`` (a real server-side close)."""
        self._post("close", {"code": code, "reason": reason})

    def abort(self) -> None:
        """Drop the TCP connection without a close frame (the page sees 1006)."""
        self._post("abort")

    def drop(self, types: list[str] | None = None, count: int | None = None) -> None:
        """Discard server-to-client frames of ``types`` (all when None): a half-open link."""
        self._post("drop", {"types": types, "count": count})

    def reject(self, status: int = 503, count: int | None = None) -> None:
        """Refuse the next ``count`` handshakes (all when None) with HTTP ``status``."""
        self._post("reject", {"status": status, "count": count})

    def clear(self) -> None:
        """Lift every rule for this client."""
        response = self._http.delete("/faults")
        assert response.status_code == 200, response.text

    def close(self) -> None:
        self._http.close()


def _text(payload: str | bytes) -> str:
    return payload if isinstance(payload, str) else payload.decode("utf-8", "replace")


def _json(raw: str) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@pytest.fixture(scope="session")
def browser_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One reference server (test mode) for every browser test of this worker.

    Tests are isolated by unique client ids and channel names (``unique_id``);
    server-side faults are cleared per client at teardown.
    """
    server = start_server(tmp_path_factory.mktemp("browser-server") / "nova.db")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client_page(page: Page, browser_server: LiveServer) -> Iterator[ClientPage]:
    """The reference client in ``page`` against ``browser_server``, not yet loaded (call ``open``).

    Fails the test at teardown if the page sent any frame the protocol models reject.
    """
    client = ClientPage(page, browser_server, unique_id("page"))
    try:
        yield client
    finally:
        if client._faults is not None:
            client._faults.clear()
        client.close()
    problems = client.invalid_sent_frames()
    assert not problems, "the page sent frames that violate the protocol:\n" + "\n".join(problems)


class OtherClient:
    """A second Nova client over python-websockets: synchronous, every wait with a deadline.

    Frames that arrive while it waits for something else are kept, so
    :meth:`expect` also finds messages that arrived earlier.
    """

    def __init__(self, url: str, client_id: str) -> None:
        self.client_id = client_id
        self.frames: list[dict[str, Any]] = []
        self._seen = 0
        self._conn: ClientConnection = connect(url, open_timeout=TIMEOUT_S).__enter__()
        self._wait(lambda m: m["type"] == "connection_established", "connection_established")
        self._request("connect", {"api_key": VALID_KEY, "metadata": {"type": "test"}}, "auth_success")

    def _send(self, type: str, data: dict[str, Any]) -> str:
        op = uuid.uuid4().hex
        frame = {"type": type, "data": data, "timestamp": _now_iso(), "client_id": self.client_id, "id": op}
        self._conn.send(json.dumps(frame))
        return op

    def _wait(self, predicate: Any, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        index = 0
        while True:
            for frame in self.frames[index:]:
                if predicate(frame):
                    return frame
            index = len(self.frames)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.client_id}: expected {what} within {TIMEOUT_S:.0f} s; "
                    f"received {[f.get('type') for f in self.frames]}"
                )
            try:
                raw = self._conn.recv(timeout=remaining)
            except TimeoutError:
                continue
            self.frames.append(json.loads(raw))

    def _request(self, type: str, data: dict[str, Any], reply: str) -> dict[str, Any]:
        op = self._send(type, data)
        answer = self._wait(lambda m: m.get("id") == op and m["type"] in (reply, "error"), f"{reply} for {type}")
        assert answer["type"] == reply, f"{type} was refused: {answer['data']}"
        return dict(answer["data"])

    def subscribe(self, channel: str) -> dict[str, Any]:
        return self._request("subscribe", {"channel": channel}, "subscribed")

    def publish(self, channel: str, content: str) -> dict[str, Any]:
        """Publish and wait for the delivery confirmation ({message_id, channel, seq})."""
        return self._request("publish", {"channel": channel, "content": content}, "delivery_confirmation")

    def expect(self, type: str, **data: Any) -> dict[str, Any]:
        """The first frame of ``type`` whose data contains ``data`` (arrived or arriving)."""
        return self._wait(
            lambda m: m["type"] == type and all(m["data"].get(k) == v for k, v in data.items()),
            f"a {type!r} frame with {data}",
        )

    def close(self) -> None:
        self._conn.close()


def _now_iso() -> str:
    from reference_server.protocol import now_iso

    return now_iso()


@pytest.fixture
def other_client(browser_server: LiveServer) -> Iterator[OtherClient]:
    """A second, authenticated Nova client (python-websockets) on ``browser_server``."""
    client_id = unique_id("other")
    client = OtherClient(browser_server.ws_url(client_id), client_id)
    try:
        yield client
    finally:
        client.close()
