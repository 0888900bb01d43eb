"""A message-depth stall across a reconnect: frames held from a socket die with it.

Depth: message (a :class:`~harness.FrameJournal` routes the page's sockets, as
``ws_helper`` does, and a :class:`~harness.faults.messages.Stall` holds every
frame the page sends, as ``ws_faults.stall(direction="to_server")`` does) and
server (the /__harness API closes or aborts the page's socket).  Time:
Playwright's clock, paused after load.

A stuck server loop or a full send queue never moves frames to another
connection: when the stall ends, frames held from a socket that has closed
are lost, and only the page's own recovery (it resends an unconfirmed publish
after re-authenticating) decides what reaches the server on the new socket.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from harness import FrameJournal
from harness.faults.messages import Stall
from harness.journal import Frame
from tests.browser.conftest import TIMEOUT_S, ClientPage, unique_id

#: Test instrumentation: the page's socket close events, as the page's code sees them.
_RECORD_CLOSES = """
(() => {
  const closes = [];
  Object.defineProperty(window, '__novaTestCloses', { value: closes });
  const Base = window.WebSocket;
  window.WebSocket = class extends Base {
    constructor(...args) {
      super(...args);
      this.addEventListener('close', (e) => closes.push({ code: e.code, wasClean: e.wasClean }));
    }
  };
})();
"""


def _journal(client_page: ClientPage) -> FrameJournal:
    """Route every socket of the page through a journal (before the page loads)."""
    page = client_page.page
    journal = FrameJournal(
        # How the journal's condition waits let Playwright dispatch routed frames (as ws_helper does).
        pump=lambda seconds: page.wait_for_timeout(max(1, int(seconds * 1000))),
        default_timeout=TIMEOUT_S,
    )
    journal.attach(page, re.compile(r"^wss?://"))
    page.add_init_script(_RECORD_CLOSES)  # after the route: it wraps Playwright's socket
    return journal


def _mentions(frame: Frame, message_id: str) -> bool:
    return isinstance(frame.raw, str) and message_id in frame.raw


@pytest.mark.parametrize(
    ("fault", "close"),
    [("close", {"code": 1011, "wasClean": True}), ("abort", {"code": 1006, "wasClean": False})],
)
def test_frames_held_from_a_closed_socket_are_not_sent_on_its_replacement(
    client_page: ClientPage, fault: str, close: dict[str, Any]
) -> None:
    journal = _journal(client_page)
    client_page.open(virtual_time=True, jitter="none")
    client_page.authenticate()
    channel = unique_id("stall")
    stall = Stall(direction="to_server")
    undo = journal.add_rule(stall)

    # Held: the server never hears this publish on the socket it was sent on.
    client_page.publish("held on the first socket", channel)
    held = journal.expect(
        "publish", direction="sent", match={"content": "held on the first socket"}
    )
    assert held.connection == 0 and held.message is not None
    message_id = held.message["id"]
    item = client_page.message_items(channel)
    expect(item).to_have_attribute("data-state", "pending")

    # The server ends that socket; the page reconnects on a new one, whose frames are held too.
    if fault == "abort":
        client_page.faults.abort()
    else:
        client_page.faults.close_socket(1011, "restarting")
    expect(client_page.by("connection-status")).to_have_text("disconnected")
    assert client_page.page.evaluate("() => window.__novaTestCloses") == [close], (
        "the close reaches the page as the server made it"
    )
    client_page.advance_to_reconnect()
    journal.wait_for(
        lambda f: f.connection == 1 and f.direction == "sent" and f.type == "connect",
        "the page's connect on its new socket (held)",
    )
    assert client_page.state()["authStatus"] == "authenticating"

    undo()

    # The new socket got its own held connect; the old socket's publish was discarded.
    expect(client_page.by("auth-status")).to_have_text("Authenticated")
    assert (stall.released, stall.discarded) == (1, 1)
    assert "1 discarded (their socket had closed)" in stall.describe()
    # The page resends its unconfirmed publish itself once authenticated again (same
    # message id): that copy is the only one the server gets on the new socket.
    confirmed = journal.wait_for(
        lambda f: f.connection == 1
        and f.type == "delivery_confirmation"
        and f.message is not None
        and f.message["data"].get("message_id") == message_id,
        "the confirmation of the page's own resend",
    )
    expect(item).to_have_attribute("data-state", "delivered")
    on_new = [f for f in journal.frames if f.connection == 1 and _mentions(f, message_id)]
    answers = [f for f in on_new if f.direction == "received"]
    assert answers == [confirmed], (
        "the server answered the held copy of the publish on the new socket:\n" + journal.describe()
    )
    resends = [f for f in on_new if f.direction == "sent"]
    assert len(resends) == 1 and resends[0].index < confirmed.index

    # A frame sent after the undo goes through the new socket normally.
    client_page.publish("after the stall", channel)
    after = journal.expect("publish", direction="sent", match={"content": "after the stall"})
    assert after.connection == 1 and after.message is not None
    journal.wait_for(
        lambda f: f.connection == 1
        and f.type == "delivery_confirmation"
        and f.message is not None
        and f.message["data"].get("message_id") == after.message["id"],
        "the confirmation of the publish sent after the stall",
    )
    expect(item.and_(client_page.page.locator('[data-state="delivered"]'))).to_have_count(2)
    assert stall.applied == 2  # the held publish and connect: nothing after the undo
    journal.check()
