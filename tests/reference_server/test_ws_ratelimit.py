"""TokenBucket: the pure per-connection rate limit (time is passed in)."""

from __future__ import annotations

import pytest

from reference_server.ratelimit import TokenBucket, Verdict


def test_burst_is_admitted_then_refused_then_closed_after_max_strikes() -> None:
    bucket = TokenBucket(rate=1.0, burst=3, max_strikes=2)
    assert [bucket.take(0.0) for _ in range(3)] == [Verdict.ADMIT] * 3
    assert bucket.take(0.0) is Verdict.REFUSE
    assert bucket.take(0.0) is Verdict.CLOSE


def test_tokens_refill_at_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=1, max_strikes=100)
    assert bucket.take(0.0) is Verdict.ADMIT
    assert bucket.take(0.05) is Verdict.REFUSE
    assert bucket.take(0.1) is Verdict.ADMIT


def test_a_flood_that_never_lets_the_bucket_refill_is_closed() -> None:
    """Sending just above the rate admits some frames but strikes keep accumulating."""
    bucket = TokenBucket(rate=10.0, burst=2, max_strikes=5)
    verdicts = [bucket.take(i * 0.05) for i in range(40)]  # 20 frames/s against 10/s
    assert Verdict.ADMIT in verdicts[2:]
    assert Verdict.CLOSE in verdicts


def test_strikes_are_forgiven_once_the_bucket_is_full_again() -> None:
    bucket = TokenBucket(rate=1.0, burst=2, max_strikes=2)
    bucket.take(0.0)
    bucket.take(0.0)
    assert bucket.take(0.0) is Verdict.REFUSE
    assert bucket.take(10.0) is Verdict.ADMIT  # calm for 10 s: full again, strikes reset
    assert bucket.strikes == 0
    bucket.take(10.0)
    assert bucket.take(10.0) is Verdict.REFUSE


def test_time_going_backwards_does_not_add_tokens() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, max_strikes=10)
    assert bucket.take(5.0) is Verdict.ADMIT
    assert bucket.take(4.0) is Verdict.REFUSE


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 0.0, "burst": 1, "max_strikes": 1}, "rate"),
        ({"rate": 1.0, "burst": 0, "max_strikes": 1}, "burst"),
        ({"rate": 1.0, "burst": 1, "max_strikes": 0}, "max_strikes"),
    ],
)
def test_invalid_parameters_are_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TokenBucket(**kwargs)  # type: ignore[arg-type]
