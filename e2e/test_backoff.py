"""Reconnection backoff in virtual time: the formula, the seeded jitter, the reset.

Depth: server (``set_connection_status("error")`` fails the live socket and
makes the server reject every handshake with HTTP 503, so each attempt the
page makes really fails).  Time: virtual; seven attempts take milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator

from playwright.sync_api import expect

from harness import WebSocketTestHelper

BASE_MS, CAP_MS = 1000, 30_000


def ceiling(attempt: int) -> int:
    """The seed's formula: the delay before attempt ``attempt + 1``, before jitter."""
    return min(BASE_MS * (1 << attempt), CAP_MS)


def mulberry32(seed: int) -> Iterator[float]:
    """The reference client's seeded random source (store.js ``createRandom``), as an oracle."""
    state = seed & 0xFFFFFFFF
    while True:
        state = (state + 0x6D2B79F5) & 0xFFFFFFFF
        t = state
        t = ((t ^ (t >> 15)) * (t | 1)) & 0xFFFFFFFF
        t ^= (t + (((t ^ (t >> 7)) * (t | 61)) & 0xFFFFFFFF)) & 0xFFFFFFFF
        yield ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296


def js_round(x: float) -> int:
    """``Math.round``: halves go up."""
    return int(x + 0.5) if x >= 0 else -int(-x + 0.5)


def fail_every_attempt(ws_helper: WebSocketTestHelper) -> None:
    ws_helper.authenticate()
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.set_connection_status("error")
    ws_helper.wait_for_reconnect_info(1)


def test_delays_follow_the_formula_to_the_cap_and_reset_after_authentication(
    ws_helper: WebSocketTestHelper,
) -> None:
    """Without jitter (``?jitter=none``) the delays are exactly min(1000 * 2^n, 30000).

    Depth: server (every handshake rejected with HTTP 503 until the faults are lifted).
    """
    ws_helper.reload(jitter="none")
    fail_every_attempt(ws_helper)

    delays = [ws_helper.advance_to_next_reconnect() for _ in range(7)]

    assert delays == [1000, 2000, 4000, 8000, 16000, 30000, 30000]
    ws_helper.wait_for_reconnect_info(8)
    next_reconnect = ws_helper.page.get_by_test_id(ws_helper.config.test_ids.next_reconnect)
    expect(next_reconnect).to_contain_text("Next reconnect in 30000 ms")

    # The server comes back: the page reconnects, re-authenticates by itself, the counter resets.
    ws_helper.set_connection_status("connected")
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.wait_for_reconnect_info(0)
    expect(next_reconnect).to_have_text("No reconnect scheduled")

    # The next outage starts over from the base delay.
    ws_helper.set_connection_status("error")
    ws_helper.wait_for_reconnect_info(1)
    assert ws_helper.advance_to_next_reconnect() == 1000
    ws_helper.wait_for_reconnect_info(2)


def test_jittered_delays_are_replayed_from_the_seed(ws_helper: WebSocketTestHelper) -> None:
    """The configured jitter (full, seeded by the harness): every delay is recomputable.

    Depth: server (every handshake rejected with HTTP 503 until the faults are lifted).
    The oracle is the client's documented seeded source, reimplemented here.
    """
    backoff = ws_helper.state()["backoff"]
    assert backoff == {"baseMs": BASE_MS, "capMs": CAP_MS, "jitter": "full", "seeded": True}
    expect(ws_helper.page.get_by_test_id("reconnect-policy")).to_contain_text("jitter full, seeded")
    fail_every_attempt(ws_helper)

    delays = [ws_helper.advance_to_next_reconnect() for _ in range(6)]
    ws_helper.wait_for_state("s.nextReconnectDelay !== null", "the 7th attempt to be scheduled")
    delays.append(ws_helper.state()["nextReconnectDelay"])

    draws = mulberry32(ws_helper.seed)
    expected = [js_round(next(draws) * ceiling(n)) for n in range(7)]
    assert delays == expected
    assert all(0 <= d <= ceiling(n) for n, d in enumerate(delays))
    assert len(set(delays)) > 1, "full jitter drew the same delay every time"

    # After a successful authentication the counter, not the random sequence, starts over.
    ws_helper.set_connection_status("connected")
    ws_helper.wait_for_auth_status("Authenticated")
    ws_helper.wait_for_reconnect_info(0)
    ws_helper.set_connection_status("error")
    assert ws_helper.advance_to_next_reconnect() == js_round(next(draws) * ceiling(0))
