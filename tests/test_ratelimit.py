"""The adaptive token bucket (worker.ratelimit): pure, the time is passed in (seconds)."""

from __future__ import annotations

import pytest

from worker.ratelimit import AdaptiveTokenBucket, RateBudgets


def bucket(rate: float = 10.0, burst: int = 3, floor_fraction: float = 0.05) -> AdaptiveTokenBucket:
    return AdaptiveTokenBucket(rate=rate, burst=burst, now=100.0, floor_fraction=floor_fraction)


def test_burst_then_waits_of_one_over_rate() -> None:
    b = bucket(rate=10.0, burst=3)
    assert [b.reserve(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    waits = [b.reserve(100.0) for _ in range(3)]
    assert waits == pytest.approx([0.1, 0.2, 0.3])


def test_tokens_refill_with_time_up_to_the_burst() -> None:
    b = bucket(rate=4.0, burst=3)
    for _ in range(3):
        b.reserve(100.0)
    assert b.reserve(100.25) == 0.0  # one token came back in 1/4 s
    assert b.reserve(100.25) == 0.25
    # A long idle time refills the burst only, never more.
    assert [b.reserve(1_000.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.reserve(1_000.0) == 0.25


def test_steady_rate() -> None:
    b = bucket(rate=10.0, burst=1)
    assert b.reserve(100.0) == 0.0
    for i in range(1, 20):
        assert b.reserve(100.0 + i * 0.1) == pytest.approx(0.0, abs=1e-9)


def test_throttle_halves_the_rate_at_most_once_per_second() -> None:
    b = bucket(rate=100.0, burst=10)
    b.on_throttled(100.0)
    assert b.rate == 50.0
    b.on_throttled(100.5)  # same burst of throttled answers: one signal
    b.on_throttled(100.99)
    assert b.rate == 50.0
    b.on_throttled(101.0)
    assert b.rate == 25.0
    assert b.throttles == 4
    assert b.max_rate == 100.0


def test_throttle_empties_the_bucket() -> None:
    b = bucket(rate=100.0, burst=10)
    b.on_throttled(100.0)
    assert b.reserve(100.0) == pytest.approx(1 / 50.0)  # next call waits at the new rate


def test_rate_never_falls_below_the_floor() -> None:
    b = bucket(rate=100.0, burst=10, floor_fraction=0.05)
    rates = []
    for second in range(10):
        b.on_throttled(100.0 + second)
        rates.append(b.rate)
    assert rates[:5] == [50.0, 25.0, 12.5, 6.25, 5.0]
    assert min(rates) == 5.0
    assert rates[-1] == 5.0


def test_additive_recovery_after_a_second_without_throttles() -> None:
    b = bucket(rate=100.0, burst=10)
    b.on_throttled(100.0)
    assert b.rate == 50.0
    b.on_success(100.5)  # too soon
    assert b.rate == 50.0
    b.on_success(101.0)
    assert b.rate == 60.0  # + a tenth of the configured rate
    b.on_success(101.5)
    assert b.rate == 60.0  # at most once per second
    for t in (102.0, 103.0, 104.0, 105.0):
        b.on_success(t)
    assert b.rate == 100.0
    b.on_success(200.0)
    assert b.rate == 100.0  # never above the configured rate


def test_success_at_full_rate_changes_nothing() -> None:
    b = bucket(rate=100.0, burst=2)
    b.on_success(105.0)
    assert b.rate == 100.0
    b.on_throttled(105.2)  # first throttle at full rate: halves at once
    assert b.rate == 50.0


def test_no_recovery_right_after_a_throttle() -> None:
    b = bucket(rate=100.0, burst=10)
    b.on_throttled(100.0)
    b.on_throttled(100.9)  # still throttled, within the second: no second halving
    assert b.rate == 50.0
    b.on_success(101.0)  # only 0.1 s without throttles
    assert b.rate == 50.0


def test_budgets_take_the_share_of_partitions_of_the_account_quota() -> None:
    budgets = RateBudgets(rate_cap=1_000.0, burst_cap=1_000, quota_per_s=120.0, quota_burst=200)
    assert budgets.limits() == (120.0, 200)
    route = budgets.for_route(("111122223333", "eu-west-1"))
    budgets.set_share(3, 12)
    assert budgets.limits() == (30.0, 50)
    assert (route.bucket.max_rate, route.bucket.burst) == (30.0, 50)
    # Another route gets its own bucket of the same size.
    other = budgets.for_route(("111122223333", "us-east-1"))
    assert other is not route
    assert (other.bucket.max_rate, other.bucket.burst) == (30.0, 50)
    # The process's own cap bounds the share.
    capped = RateBudgets(rate_cap=10.0, burst_cap=15, quota_per_s=120.0, quota_burst=200)
    capped.set_share(6, 12)
    assert capped.limits() == (10.0, 15)
    # No quota set: the process's rate, whatever its share.
    alone = RateBudgets(rate_cap=100.0, burst_cap=150, quota_per_s=None, quota_burst=200)
    alone.set_share(1, 12)
    assert alone.limits() == (100.0, 150)


def test_a_resize_keeps_a_throttled_bucket_slowed_down() -> None:
    b = bucket(rate=100.0, burst=10)
    b.on_throttled(100.0)
    assert b.rate == 50.0
    b.resize(40.0, 5, 100.5)
    assert (b.max_rate, b.rate, b.burst) == (40.0, 20.0, 5)


def test_a_refunded_token_is_there_for_the_next_call() -> None:
    b = bucket(rate=10.0, burst=1)
    assert b.reserve(100.0) == 0.0
    b.refund(100.0)
    assert b.reserve(100.0) == 0.0
    assert b.reserve(100.0) == pytest.approx(0.1)
