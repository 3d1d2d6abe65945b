"""The process's ECS call rate: a token bucket that slows down on throttling and recovers.

ECS throttles the agent's state-change calls per account and region (about 200 burst, 120 per
second refill), shared by every replica, so each process gets a configured share. On a throttling
answer the rate halves (down to a floor); each second without throttling it climbs back by a tenth
of the configured rate: additive increase, multiplicative decrease. The bucket is pure (the caller
passes the time); ``AsyncRateLimiter`` adds the waiting.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["AdaptiveTokenBucket", "AsyncRateLimiter"]


class AdaptiveTokenBucket:
    def __init__(self, *, rate: float, burst: int, now: float, floor_fraction: float = 0.05) -> None:
        self.max_rate = rate
        self.rate = rate
        self.burst = burst
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

    def on_throttled(self) -> None:
        self.bucket.on_throttled(time.monotonic())

    def on_success(self) -> None:
        self.bucket.on_success(time.monotonic())
