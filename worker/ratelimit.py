"""The process's ECS call rate: a token bucket per account and Region that slows down on
throttling and recovers.

ECS throttles the agent's state-change calls per account and Region (about 200 burst, 120 per
second refill), shared by every replica. ``RateBudgets`` keeps one bucket per (account, Region)
and gives each the process's share of the group's budget, without any coordination service: a
process owning ``p`` of the input topic's ``P`` partitions takes ``p / P`` of
``account_quota_per_s`` and of ``account_quota_burst`` (never more than ``rate_limit_per_s`` and
``rate_limit_burst``; with no quota set, those alone). The shares of all members add up to the
quota, since the group's assignment covers every partition once; a rebalance resizes the buckets.
On a throttling answer a bucket's rate halves (down to a floor, at most once a second); each
second without throttling it climbs back by a tenth of its share: additive increase,
multiplicative decrease. The bucket is pure (the caller passes the time); ``AsyncRateLimiter``
adds the waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable

__all__ = ["AdaptiveTokenBucket", "AsyncRateLimiter", "RateBudgets"]


class AdaptiveTokenBucket:
    def __init__(self, *, rate: float, burst: int, now: float, floor_fraction: float = 0.05) -> None:
        self.max_rate = rate
        self.rate = rate
        self.burst = burst
        self._floor_fraction = floor_fraction
        self._floor = rate * floor_fraction
        self._tokens = float(burst)
        self._stamp = now
        self._last_change = now
        self._last_throttle = float("-inf")
        self.throttles = 0

    def reserve(self, now: float) -> float:
        """Take one token; return how long to wait before using it (0 when one was there)."""
        self._refill(now)
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate

    def refund(self, now: float) -> None:
        """Give back a token reserved and not used (the task had nothing left to send)."""
        self._refill(now)
        self._tokens = min(float(self.burst), self._tokens + 1.0)

    def resize(self, rate: float, burst: int, now: float) -> None:
        """A new configured rate and burst (a rebalance changed the share): the current rate keeps
        its ratio to the configured one, so a throttled bucket stays slowed down."""
        self._refill(now)
        self.rate = max(rate * self._floor_fraction, self.rate * rate / self.max_rate)
        self.max_rate, self.burst = rate, burst
        self._floor = rate * self._floor_fraction
        self._tokens = min(self._tokens, float(burst))

    def on_throttled(self, now: float) -> None:
        self.throttles += 1
        self._last_throttle = now
        self._refill(now)
        # One halving per second at most: a burst of throttled answers is one signal.
        if now - self._last_change >= 1.0 or self.rate == self.max_rate:
            self.rate = max(self._floor, self.rate / 2)
            self._last_change = now
        self._tokens = min(self._tokens, 0.0)

    def on_success(self, now: float) -> None:
        quiet = now - self._last_change >= 1.0 and now - self._last_throttle >= 1.0
        if self.rate < self.max_rate and quiet:
            self._refill(now)
            self.rate = min(self.max_rate, self.rate + self.max_rate / 10)
            self._last_change = now

    def _refill(self, now: float) -> None:
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._stamp = now


class AsyncRateLimiter:
    def __init__(self, *, rate: float, burst: int) -> None:
        self.bucket = AdaptiveTokenBucket(rate=rate, burst=burst, now=time.monotonic())

    async def acquire(self) -> None:
        wait = self.bucket.reserve(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)

    def refund(self) -> None:
        self.bucket.refund(time.monotonic())

    def on_throttled(self) -> None:
        self.bucket.on_throttled(time.monotonic())

    def on_success(self) -> None:
        self.bucket.on_success(time.monotonic())


class RateBudgets:
    """One ``AsyncRateLimiter`` per route (account and Region), built when first used, each sized
    to this process's share of the group's budget (module docstring).

    ``rate_cap``/``burst_cap``: the process's own bounds (``rate_limit_per_s``,
    ``rate_limit_burst``); ``quota_per_s``/``quota_burst``: the group's budget per account and
    Region (``account_quota_per_s``, ``account_quota_burst``), None for none.
    """

    def __init__(
        self, *, rate_cap: float, burst_cap: int, quota_per_s: float | None, quota_burst: int
    ) -> None:
        self._rate_cap, self._burst_cap = rate_cap, burst_cap
        self._quota_per_s, self._quota_burst = quota_per_s, quota_burst
        self.share = 1.0
        self._limiters: dict[Hashable, AsyncRateLimiter] = {}

    def limits(self) -> tuple[float, int]:
        """(calls per second, burst) of one route at the current share."""
        if self._quota_per_s is None:
            return self._rate_cap, self._burst_cap
        rate = min(self._rate_cap, self._quota_per_s * self.share)
        burst = max(1, min(self._burst_cap, int(self._quota_burst * self.share)))
        return rate, burst

    def set_share(self, assigned: int, partitions: int) -> None:
        """This process owns ``assigned`` of the topic's ``partitions``: resize every bucket. A
        process with none keeps one partition's share, for what it still drains."""
        self.share = max(1, assigned) / max(1, partitions)
        rate, burst = self.limits()
        now = time.monotonic()
        for limiter in self._limiters.values():
            limiter.bucket.resize(rate, burst, now)

    def for_route(self, route: Hashable) -> AsyncRateLimiter:
        limiter = self._limiters.get(route)
        if limiter is None:
            rate, burst = self.limits()
            limiter = self._limiters[route] = AsyncRateLimiter(rate=rate, burst=burst)
        return limiter

    def rates(self) -> dict[Hashable, float]:
        """The current rate of each route's bucket."""
        return {route: limiter.bucket.rate for route, limiter in self._limiters.items()}
