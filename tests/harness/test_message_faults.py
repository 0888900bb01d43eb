"""Message-depth fault rules (pure) and network profiles (data)."""

from __future__ import annotations

import json

import pytest

from harness.errors import ConfigurationError
from harness.faults.messages import Delay, Drop, Duplicate, Emit, Stall
from harness.journal import Frame
from harness.profiles import PROFILES


def _frame(type_: str, direction: str = "received", index: int = 0, connection: int = 0) -> Frame:
    raw = json.dumps({"type": type_, "data": {}, "timestamp": "2026-01-01T00:00:00Z", "client_id": "c"})
    return Frame(index, connection, direction, raw, json.loads(raw), 0.0, "", "ws://x")  # type: ignore[arg-type]


def test_drop_applies_to_its_type_and_direction_only() -> None:
    rule = Drop(type="pong")
    assert rule.decide(_frame("pong")) == []
    assert rule.decide(_frame("subscribed")) is None
    assert rule.decide(_frame("pong", direction="sent")) is None


def test_count_limits_how_many_frames_a_rule_takes() -> None:
    rule = Drop(type="pong", count=2)
    assert [rule.decide(_frame("pong")) for _ in range(3)] == [[], [], None]
    assert rule.exhausted
    assert "2/2 applied" in rule.describe()


def test_delay_and_duplicate_emit_the_original_payload() -> None:
    frame = _frame("channel_message")
    assert Delay(ms=250).decide(frame) == [Emit(frame.raw, 250)]
    assert Duplicate(type="channel_message").decide(frame) == [Emit(frame.raw), Emit(frame.raw)]


def test_stall_holds_frames_and_releases_them_in_order() -> None:
    rule = Stall(direction="to_server")
    frames = [_frame(t, direction="sent", index=i) for i, t in enumerate(["ping", "publish", "subscribe"])]
    assert all(rule.decide(f) == [] for f in frames)
    assert [json.loads(raw)["type"] for raw in rule.release()] == ["ping", "publish", "subscribe"]
    assert rule.release() == []


def test_stall_remembers_the_connection_each_held_frame_came_from() -> None:
    rule = Stall(direction="to_server")
    frames = [
        _frame(t, direction="sent", index=i, connection=c)
        for i, (t, c) in enumerate([("publish", 0), ("connect", 1), ("ping", 0), ("subscribe", 1)])
    ]
    assert all(rule.decide(f) == [] for f in frames)
    assert rule.release_held() == [(f.connection, f.raw) for f in frames]
    assert rule.release_held() == [] and rule.release() == []


def test_stall_describes_what_became_of_its_held_frames() -> None:
    rule = Stall(direction="to_server")
    assert rule.describe() == "stall every frame to_server"
    rule.note_release(2, 1)
    assert rule.released == 2 and rule.discarded == 1
    assert rule.describe() == (
        "stall every frame to_server, 2 held frame(s) released, "
        "1 discarded (their socket had closed)"
    )


@pytest.mark.parametrize("make", [lambda: Drop(direction="sideways"), lambda: Drop(count=0), lambda: Delay(ms=-1)])
def test_bad_rule_arguments_are_clear_errors(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((ConfigurationError, ValueError)):
        make()


def test_every_profile_names_its_source_and_is_plausible() -> None:
    assert {"3g", "satellite", "flaky-wifi"} <= set(PROFILES)
    for profile in PROFILES.values():
        assert len(profile.source) > 30
        assert profile.latency_ms >= 0 and profile.jitter_ms >= 0
        assert profile.down_kbps > 0 and profile.up_kbps > 0
