"""Token buckets by name (`proxy.api.rate_limit`), on a clock the test moves; and the API
settings the limits come from."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.api.rate_limit import Limit, TokenBuckets
from proxy.runtime.config import ApiSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def buckets(per_second: float = 2.0, burst: int = 5, max_names: int = 100):
    clock = Clock()
    return TokenBuckets(Limit(per_second, burst), clock, max_names=max_names), clock


def test_a_burst_then_the_rate_then_retry_after():
    limiter, clock = buckets(per_second=2.0, burst=5)
    verdicts = [limiter.take("k") for _ in range(5)]
    assert all(v.allowed for v in verdicts)
    assert [v.remaining for v in verdicts] == [4, 3, 2, 1, 0]
    refused = limiter.take("k")
    assert (refused.allowed, refused.remaining, refused.retry_after, refused.limit) == (
        False,
        0,
        1,
        5,
    )
    clock.now += 0.5  # one token at 2 a second
    assert limiter.take("k").allowed
    assert not limiter.take("k").allowed
    clock.now += 10  # refilled, never beyond the burst
    assert [limiter.take("k").allowed for _ in range(6)] == [True] * 5 + [False]


def test_retry_after_is_whole_seconds_until_a_token():
    limiter, clock = buckets(per_second=0.1, burst=1)
    assert limiter.take("k").allowed
    assert limiter.take("k").retry_after == 10
    clock.now += 2.5
    assert limiter.take("k").retry_after == 8  # 7.5 s left, rounded up
    clock.now += 7.4
    assert limiter.take("k").retry_after == 1  # 0.1 s left: at least 1
    clock.now += 0.1
    assert limiter.take("k").allowed


def test_names_are_counted_apart_and_refusals_take_nothing():
    limiter, clock = buckets(per_second=1.0, burst=2)
    assert limiter.take("a").allowed and limiter.take("a").allowed
    for _ in range(100):
        assert not limiter.take("a").allowed
    assert limiter.take("b").allowed
    clock.now += 1
    assert limiter.take("a").allowed  # the refusals did not push the refill back


def test_a_request_may_take_several_tokens_and_a_refusal_takes_none():
    limiter, clock = buckets(per_second=2.0, burst=5)
    assert limiter.take("k", 3).remaining == 2
    refused = limiter.take("k", 3)
    assert (refused.allowed, refused.remaining, refused.retry_after) == (False, 2, 1)
    assert limiter.take("k", 2).allowed  # the refusal left both tokens
    clock.now += 2.5  # five tokens at 2 a second: a full bucket again
    assert limiter.take("k", 5).allowed
    for count in (0, 6):
        with pytest.raises(ValueError):
            limiter.take("k", count)


def test_peek_takes_nothing():
    limiter, _ = buckets(burst=1)
    assert limiter.peek("k").allowed and limiter.peek("k").allowed
    assert len(limiter) == 0
    assert limiter.take("k").allowed
    assert not limiter.peek("k").allowed
    assert limiter.peek("k").retry_after >= 1


def test_a_clock_going_back_counts_as_no_time():
    limiter, clock = buckets(per_second=1.0, burst=1)
    assert limiter.take("k").allowed
    clock.now -= 3600
    assert not limiter.take("k").allowed
    clock.now += 3601
    assert limiter.take("k").allowed


def test_full_buckets_are_forgotten():
    limiter, clock = buckets(per_second=1.0, burst=3)
    for name in ("a", "b", "c"):
        limiter.take(name)
    assert len(limiter) == 3
    clock.now += 1  # each is full again
    limiter.take("d")
    assert len(limiter) == 1


def test_a_flood_of_names_keeps_memory_bounded():
    limiter, _ = buckets(per_second=0.001, burst=2, max_names=50)
    for n in range(10_000):
        limiter.take(f"guess-{n}")
        assert len(limiter) <= 50
    # The most recent ones are still counted.
    assert limiter.take("guess-9999").allowed
    assert not limiter.take("guess-9999").allowed


def test_limits_are_checked():
    for per_second, burst in ((0, 1), (-1, 1), (float("nan"), 1), (float("inf"), 1), (1, 0)):
        with pytest.raises(ValueError):
            Limit(per_second, burst)
    with pytest.raises(ValueError):
        TokenBuckets(Limit(1, 1), Clock(), max_names=0)


@given(
    steps=st.lists(
        st.tuples(st.floats(0, 5, allow_nan=False), st.sampled_from("abc")), max_size=200
    ),
    per_second=st.floats(0.01, 100),
    burst=st.integers(1, 20),
)
def test_never_more_than_the_burst_plus_the_refill(steps, per_second, burst):
    limiter, clock = buckets(per_second=per_second, burst=burst, max_names=10)
    start = clock.now
    allowed: dict[str, int] = {}
    for elapsed, name in steps:
        clock.now += elapsed
        verdict = limiter.take(name)
        assert 0 <= verdict.remaining < burst
        assert verdict.allowed or verdict.retry_after >= 1
        allowed[name] = allowed.get(name, 0) + verdict.allowed
    for count in allowed.values():
        assert count <= burst + (clock.now - start) * per_second + 1e-6


@pytest.mark.parametrize(
    "fields",
    [
        {"rate_limit_per_second": 0},
        {"rate_limit_per_second": float("nan")},
        {"rate_limit_burst": 0},
        {"failed_auth_per_second": -1.0},
        {"failed_auth_burst": 2_000_000},
        {"forwarded_for_hops": -1},
        {"forwarded_for_hops": 6},
        {"access_token_seconds": 59},
        {"access_token_seconds": 86_401},
    ],
)
def test_the_api_settings_of_the_limits_are_checked(fields):
    with pytest.raises(ValueError):
        ApiSettings(**fields)
