"""FaultController: the pure decisions behind the server-side faults (no server, no port)."""

from __future__ import annotations

import pytest

from harness.faults.controller import (
    ANY_CLIENT,
    Accept,
    FaultController,
    Hold,
    OutboundDecision,
    Reject,
    close_code_problem,
)


def test_no_rules_accept_and_deliver_now() -> None:
    faults = FaultController()
    assert faults.on_handshake("a", now=0.0) == Accept()
    assert faults.outbound("a", "pong") == OutboundDecision(True, 0)
    assert faults.snapshot() == {"rules": {}, "held_handshakes": {}}


def test_reject_counts_down_then_accepts() -> None:
    faults = FaultController()
    faults.reject_handshakes("a", 503, count=2, body="busy")
    assert faults.on_handshake("a", 0) == Reject(503, "busy")
    assert faults.rules_for("a")["reject"] == {"status": 503, "remaining": 1, "body": "busy"}
    assert faults.on_handshake("a", 0) == Reject(503, "busy")
    assert faults.on_handshake("a", 0) == Accept()
    assert faults.snapshot()["rules"] == {}


def test_reject_without_count_rejects_every_handshake_of_that_client_only() -> None:
    faults = FaultController()
    faults.reject_handshakes("a", 403)
    for _ in range(5):
        assert faults.on_handshake("a", 0) == Reject(403)
    assert faults.on_handshake("b", 0) == Accept()


def test_any_client_rule_applies_to_everyone_and_a_clients_own_rule_wins() -> None:
    faults = FaultController()
    faults.reject_handshakes(ANY_CLIENT, 503, count=2)
    faults.reject_handshakes("vip", 429, count=1)
    assert faults.on_handshake("vip", 0) == Reject(429)
    assert faults.on_handshake("x", 0) == Reject(503)
    assert faults.on_handshake("vip", 0) == Reject(503)  # its own rule is used up
    assert faults.on_handshake("y", 0) == Accept()


@pytest.mark.parametrize("status", [200, 101, 399, 600])
def test_reject_needs_an_http_error_status(status: int) -> None:
    with pytest.raises(ValueError, match="400-599"):
        FaultController().reject_handshakes("a", status)


def test_counts_must_be_positive() -> None:
    faults = FaultController()
    with pytest.raises(ValueError, match="count must be >= 1"):
        faults.reject_handshakes("a", 503, count=0)
    with pytest.raises(ValueError, match="count must be >= 1"):
        faults.drop_messages("a", count=0)


def test_hold_until_released() -> None:
    faults = FaultController()
    faults.hold_handshakes("a")
    decision = faults.on_handshake("a", 10.0)
    assert isinstance(decision, Hold) and decision.deadline is None
    assert not faults.hold_over(decision.ticket, 1e9)
    assert faults.held("a") == 1 and faults.snapshot()["held_handshakes"] == {"a": 1}
    assert faults.release_handshakes("a") == 1
    assert faults.hold_over(decision.ticket, 10.0)
    assert faults.held() == 0
    faults.end_hold(decision.ticket)
    assert faults.on_handshake("a", 11.0) == Accept()


def test_hold_with_timeout_proceeds_at_its_deadline() -> None:
    faults = FaultController()
    faults.hold_handshakes("a", timeout_ms=500)
    decision = faults.on_handshake("a", 100.0)
    assert isinstance(decision, Hold) and decision.deadline == pytest.approx(100.5)
    assert not faults.hold_over(decision.ticket, 100.4)
    assert faults.hold_over(decision.ticket, 100.5)


def test_release_of_one_client_under_a_star_hold() -> None:
    faults = FaultController()
    faults.hold_handshakes(ANY_CLIENT)
    a = faults.on_handshake("a", 0)
    b = faults.on_handshake("b", 0)
    assert isinstance(a, Hold) and isinstance(b, Hold)
    assert faults.release_handshakes("a") == 1
    assert faults.hold_over(a.ticket, 0) and not faults.hold_over(b.ticket, 0)
    assert isinstance(faults.on_handshake("a", 0), Hold)  # the "*" rule still holds new ones
    assert faults.release_handshakes(ANY_CLIENT) == 2
    assert faults.hold_over(b.ticket, 0)
    assert faults.on_handshake("c", 0) == Accept()


def test_reject_is_decided_before_hold() -> None:
    faults = FaultController()
    faults.hold_handshakes("a")
    faults.reject_handshakes("a", 503, count=1)
    assert faults.on_handshake("a", 0) == Reject(503)
    assert isinstance(faults.on_handshake("a", 0), Hold)


def test_ended_or_unknown_holds_are_over() -> None:
    faults = FaultController()
    faults.hold_handshakes("a")
    decision = faults.on_handshake("a", 0)
    assert isinstance(decision, Hold)
    faults.end_hold(decision.ticket)
    assert faults.held("a") == 0
    assert faults.hold_over(decision.ticket, 0)
    assert faults.hold_over(12345, 0)


def test_drop_by_type_with_count() -> None:
    faults = FaultController()
    faults.drop_messages("a", types=["pong"], count=2)
    assert faults.outbound("a", "channel_message") == OutboundDecision(True, 0)
    assert faults.outbound("a", "pong") == OutboundDecision(False, 0)
    assert faults.rules_for("a")["drop"] == {"types": ["pong"], "remaining": 1, "dropped": 1}
    assert faults.outbound("a", "pong").deliver is False
    assert faults.outbound("a", "pong").deliver is True
    assert faults.outbound("b", "pong").deliver is True


def test_drop_everything_until_cleared() -> None:
    faults = FaultController()
    faults.drop_messages("a")
    assert not any(faults.outbound("a", t).deliver for t in ("pong", "error", "subscribed"))
    faults.clear("a")
    assert faults.outbound("a", "pong").deliver


def test_a_clients_own_drop_rule_replaces_the_star_rule() -> None:
    faults = FaultController()
    faults.drop_messages(ANY_CLIENT, types=["pong"])
    faults.drop_messages("a", types=["error"])
    assert faults.outbound("a", "pong").deliver
    assert not faults.outbound("a", "error").deliver
    assert not faults.outbound("b", "pong").deliver


def test_delay_by_type_and_removal_with_zero() -> None:
    faults = FaultController()
    faults.delay_replies("a", 250, types=["pong", "auth_success"])
    assert faults.outbound("a", "pong") == OutboundDecision(True, 250)
    assert faults.outbound("a", "error") == OutboundDecision(True, 0)
    faults.delay_replies(ANY_CLIENT, 100)
    assert faults.outbound("b", "error") == OutboundDecision(True, 100)
    assert faults.outbound("a", "error") == OutboundDecision(True, 0)  # a's own rule wins
    faults.delay_replies("a", 0)
    assert faults.outbound("a", "error") == OutboundDecision(True, 100)


def test_drop_beats_delay() -> None:
    faults = FaultController()
    faults.delay_replies("a", 100)
    faults.drop_messages("a", types=["pong"], count=1)
    assert faults.outbound("a", "pong") == OutboundDecision(False, 0)
    assert faults.outbound("a", "pong") == OutboundDecision(True, 100)


@pytest.mark.parametrize(("types", "error"), [([], ValueError), ("pong", TypeError)])
def test_types_must_be_a_non_empty_list(types: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="types"):
        FaultController().drop_messages("a", types=types)  # type: ignore[arg-type]


def test_negative_delay_and_hold_timeout_are_refused() -> None:
    faults = FaultController()
    with pytest.raises(ValueError, match="ms must be >= 0"):
        faults.delay_replies("a", -1)
    with pytest.raises(ValueError, match="timeout_ms"):
        faults.hold_handshakes("a", timeout_ms=-5)


def test_clear_one_key_all_and_star() -> None:
    faults = FaultController()
    faults.reject_handshakes("a", 503)
    faults.drop_messages("b")
    faults.delay_replies(ANY_CLIENT, 10)
    faults.clear("a")
    assert set(faults.snapshot()["rules"]) == {"b", ANY_CLIENT}
    faults.clear(ANY_CLIENT)
    assert set(faults.snapshot()["rules"]) == {"b"}
    faults.hold_handshakes("c")
    held = faults.on_handshake("c", 0)
    assert isinstance(held, Hold)
    faults.clear()
    assert faults.snapshot() == {"rules": {}, "held_handshakes": {}}
    assert faults.hold_over(held.ticket, 0)


def test_clear_one_client_releases_its_held_handshakes() -> None:
    faults = FaultController()
    faults.hold_handshakes("a")
    decision = faults.on_handshake("a", 0)
    assert isinstance(decision, Hold)
    faults.clear("a")
    assert faults.hold_over(decision.ticket, 0)


def test_listeners_are_called_after_every_change_and_can_be_removed() -> None:
    faults = FaultController()
    calls: list[int] = []
    remove = faults.add_listener(lambda: calls.append(1))
    faults.hold_handshakes("a")
    faults.release_handshakes("a")
    faults.clear()
    assert len(calls) == 3
    remove()
    remove()  # idempotent
    faults.clear()
    assert len(calls) == 3


def test_snapshot_is_json_ready() -> None:
    faults = FaultController()
    faults.reject_handshakes("a", 503, count=1)
    faults.hold_handshakes(ANY_CLIENT, timeout_ms=50)
    faults.delay_replies("b", 5, types=["pong"])
    faults.drop_messages("b", count=3)
    faults.on_handshake("z", 0)
    assert faults.snapshot() == {
        "rules": {
            "*": {"reject": None, "hold": {"timeout_ms": 50}, "delay": None, "drop": None},
            "a": {
                "reject": {"status": 503, "remaining": 1, "body": ""},
                "hold": None,
                "delay": None,
                "drop": None,
            },
            "b": {
                "reject": None,
                "hold": None,
                "delay": {"ms": 5, "types": ["pong"]},
                "drop": {"types": None, "remaining": 3, "dropped": 0},
            },
        },
        "held_handshakes": {"z": 1},
    }


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1011, 1014, 3000, 4001, 4999])
def test_sendable_close_codes(code: int) -> None:
    assert close_code_problem(code) is None


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (1006, "abort"),
        (1005, "reserved"),
        (1004, "3000-4999"),
        (999, "3000-4999"),
        (5000, "3000-4999"),
        (2000, "3000-4999"),
    ],
)
def test_unsendable_close_codes_say_why(code: int, hint: str) -> None:
    problem = close_code_problem(code)
    assert problem is not None and hint in problem


def test_a_held_handshake_meets_a_reject_rule_set_while_it_waited() -> None:
    faults = FaultController()
    faults.hold_handshakes("a")
    first, second = faults.on_handshake("a", 0), faults.on_handshake("a", 0)
    assert isinstance(first, Hold) and isinstance(second, Hold)
    faults.reject_handshakes("a", 503, count=1, body="busy")
    assert faults.release_handshakes("a") == 2
    assert faults.hold_over(first.ticket, 0) and faults.hold_over(second.ticket, 0)
    assert faults.after_hold("a") == Reject(503, "busy")  # counted: the rule is used up
    assert faults.after_hold("a") == Accept()
    assert faults.snapshot()["rules"] == {}


def test_a_held_handshake_is_accepted_without_reject_rules_and_star_rejects_apply() -> None:
    faults = FaultController()
    assert faults.after_hold("a") == Accept()
    faults.reject_handshakes(ANY_CLIENT, 429)
    assert faults.after_hold("a") == Reject(429)


def test_remove_rule_takes_one_kind_and_leaves_the_rest_and_the_holds() -> None:
    faults = FaultController()
    faults.hold_handshakes("a")
    held = faults.on_handshake("a", 0)
    assert isinstance(held, Hold)
    faults.reject_handshakes("a", 503, count=2)
    faults.drop_messages("a", types=["pong"])
    assert faults.remove_rule("a", "reject") is True
    assert faults.remove_rule("a", "reject") is False  # nothing left to remove
    assert not faults.hold_over(held.ticket, 0)  # still held
    assert faults.rules_for("a")["hold"] is not None and faults.rules_for("a")["drop"] is not None
    assert faults.remove_rule("a", "hold") is True
    assert faults.hold_over(held.ticket, 0) and faults.after_hold("a") == Accept()
    assert faults.remove_rule("a", "drop") is True
    assert faults.snapshot()["rules"] == {}
    with pytest.raises(ValueError, match="unknown rule kind 'mute'"):
        faults.remove_rule("a", "mute")
