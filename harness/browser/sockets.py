"""The socket log: what the page did with its WebSockets, read without any hook of the app's.

An init script the helper adds to the page's context (after Playwright's own
WebSocket route and clock) wraps ``window.WebSocket`` in a subclass that
notes every socket the page creates (its URL, when it opened and closed in
the page's clock, its close code and reason, whether it closed cleanly), and
wraps ``setTimeout``/``setInterval`` to know when the page's next timer is
due, so the virtual clock can be stepped timer by timer to the page's next
reconnect.  ``instanceof WebSocket``, the ready-state constants and the
page's own handlers are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["SOCKET_LOG_SCRIPT", "SocketInfo", "SocketState", "read_sockets"]

SocketState = Literal["connecting", "open", "closing", "closed"]

#: Installs ``window.__novaWsSockets``: the page's sockets and its pending timers.
SOCKET_LOG_SCRIPT = r"""
(() => {
  if (window.__novaWsSockets) return;
  const Native = window.WebSocket;
  const sockets = [];
  const live = [];
  const states = ['connecting', 'open', 'closing', 'closed'];
  const read = () => sockets.map((s, i) => ({ ...s, state: s.state === 'closed' ? 'closed' : (states[live[i].readyState] || s.state) }));
  const timers = new Map();
  class Logged extends Native {
    constructor(...args) {
      super(...args);
      const entry = { index: sockets.length, url: String(this.url || args[0]), createdAt: Date.now(),
        openedAt: null, closedAt: null, code: null, reason: null, wasClean: null, state: 'connecting' };
      sockets.push(entry);
      this.addEventListener('open', () => { entry.openedAt = Date.now(); entry.state = 'open'; });
      this.addEventListener('close', (e) => {
        entry.closedAt = Date.now(); entry.code = e.code; entry.reason = e.reason;
        entry.wasClean = e.wasClean; entry.state = 'closed';
      });
      live.push(this);
    }
  }
  Object.defineProperty(Logged, 'name', { value: 'WebSocket' });
  window.WebSocket = Logged;
  const setT = window.setTimeout, clearT = window.clearTimeout;
  const setI = window.setInterval, clearI = window.clearInterval;
  window.setTimeout = function (fn, ms, ...rest) {
    const id = setT.call(window, function (...a) { timers.delete(id); return typeof fn === 'function' ? fn.apply(this, a) : undefined; }, ms, ...rest);
    timers.set(id, Date.now() + Math.max(0, Number(ms) || 0));
    return id;
  };
  window.clearTimeout = function (id) { timers.delete(id); return clearT.call(window, id); };
  window.setInterval = function (fn, ms, ...rest) {
    const period = Math.max(1, Number(ms) || 0);
    const id = setI.call(window, function (...a) { timers.set(id, Date.now() + period); return typeof fn === 'function' ? fn.apply(this, a) : undefined; }, ms, ...rest);
    timers.set(id, Date.now() + period);
    return id;
  };
  window.clearInterval = function (id) { timers.delete(id); return clearI.call(window, id); };
  const nextTimerAt = () => { let next = null; for (const due of timers.values()) if (next === null || due < next) next = due; return next; };
  Object.defineProperty(window, '__novaWsSockets', { value: Object.freeze({ sockets, read, nextTimerAt }) });
})();
"""

#: A page expression: a copy of the log's sockets (or null when the script is missing).
READ_SOCKETS = "() => window.__novaWsSockets ? window.__novaWsSockets.read() : null"

#: A page expression: the count of sockets, the next timer due (page clock ms) and the page's now.
READ_TIMERS = (
    "() => { const l = window.__novaWsSockets; if (!l) return null;"
    " const s = l.read(); return {count: s.length, next: l.nextTimerAt(), now: Date.now(),"
    " newest: s.length ? s[s.length - 1].state : null}; }"
)


@dataclass(frozen=True)
class SocketInfo:
    """One WebSocket the page created, oldest first (times in the page's clock, epoch ms)."""

    index: int
    url: str
    state: SocketState
    created_at: float
    opened_at: float | None
    closed_at: float | None
    code: int | None
    reason: str | None
    clean: bool | None

    @property
    def opened(self) -> bool:
        """Whether the handshake completed (a rejected handshake never opens)."""
        return self.opened_at is not None

    @classmethod
    def from_page(cls, entry: dict[str, Any]) -> SocketInfo:
        return cls(
            index=int(entry["index"]),
            url=str(entry["url"]),
            state=entry["state"],
            created_at=float(entry["createdAt"]),
            opened_at=entry.get("openedAt"),
            closed_at=entry.get("closedAt"),
            code=entry.get("code"),
            reason=entry.get("reason"),
            clean=entry.get("wasClean"),
        )

    def describe(self) -> str:
        if self.state == "closed":
            how = "clean" if self.clean else "unclean"
            opened = "opened, " if self.opened else "never opened, "
            return f"#{self.index} {self.url}: {opened}closed {self.code} {how}" + (
                f" {self.reason!r}" if self.reason else ""
            )
        return f"#{self.index} {self.url}: {self.state}"


def read_sockets(page: Any) -> list[SocketInfo] | None:
    """The page's sockets, oldest first; None when the socket log is not installed in the page."""
    entries = page.evaluate(READ_SOCKETS)
    if entries is None:
        return None
    return [SocketInfo.from_page(e) for e in entries]
