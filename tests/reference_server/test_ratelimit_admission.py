"""UnauthenticatedCap and ThrottledCount: the pure admission limit and its log throttle."""

from __future__ import annotations

import pytest

from reference_server.ratelimit import CapExceeded, ThrottledCount, UnauthenticatedCap


def test_each_address_gets_its_own_slots_up_to_the_cap() -> None:
    cap = UnauthenticatedCap(per_address=2, total=10)
    assert [cap.admit("10.0.0.1") for _ in range(3)] == [None, None, CapExceeded.PER_ADDRESS]
    assert cap.admit("10.0.0.2") is None
    assert (cap.count_for("10.0.0.1"), cap.count_for("10.0.0.2"), cap.count) == (2, 1, 3)


def test_the_total_cap_holds_over_every_address() -> None:
    cap = UnauthenticatedCap(per_address=5, total=2)
    assert cap.admit("a") is None
    assert cap.admit("b") is None
    assert cap.admit("c") is CapExceeded.TOTAL


def test_a_released_slot_can_be_taken_again() -> None:
    cap = UnauthenticatedCap(per_address=1, total=1)
    assert cap.admit("a") is None
    cap.release("a")
    assert (cap.count, cap.count_for("a")) == (0, 0)
    assert cap.admit("a") is None


def test_releasing_a_slot_never_taken_is_an_error() -> None:
    cap = UnauthenticatedCap(per_address=1, total=1)
    with pytest.raises(ValueError, match="without a slot"):
        cap.release("a")


@pytest.mark.parametrize("kwargs", [{"per_address": 0, "total": 1}, {"per_address": 1, "total": 0}])
def test_caps_below_one_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        UnauthenticatedCap(**kwargs)


def test_the_first_event_is_reported_at_once_and_the_rest_once_per_window() -> None:
    throttle = ThrottledCount()
    assert throttle.record("a") is True
    assert [throttle.record(key) for key in ("a", "a", "b")] == [False, False, False]
    assert throttle.close_window() == {"a": 2, "b": 1}
    assert throttle.window_open  # events came: the next window is open already
    assert throttle.record("a") is False
    assert throttle.close_window() == {"a": 1}
    assert throttle.close_window() == {}  # a quiet window closes it
    assert not throttle.window_open
    assert throttle.record("b") is True
