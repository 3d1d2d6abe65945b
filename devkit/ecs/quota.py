"""ECS's quota on the submit path, as a token bucket per account and Region.

ECS refuses a ``SubmitTaskStateChange`` beyond its caller's budget with 400
``ThrottlingException`` ("Rate exceeded"); the budget is per account and Region (about 200 calls
of burst, refilled at about 120 per second) and shared by every caller in that scope. Pure: the
caller passes the time (monotonic seconds).
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["QuotaBuckets"]


class QuotaBuckets:
    """One bucket per scope, full at first use. ``burst`` None: no quota (every call passes)."""

    def __init__(self, burst: int | None, refill_per_s: float) -> None:
        self.burst, self.refill_per_s = burst, refill_per_s
        self._buckets: dict[Hashable, list[float]] = {}
        self.refusals: dict[Hashable, int] = {}

    def take(self, scope: Hashable, now: float) -> bool:
        """Take one token of ``scope``'s bucket; False (a throttled call) when none is left."""
        if self.burst is None:
            return True
        bucket = self._buckets.get(scope)
        if bucket is None:
            bucket = self._buckets[scope] = [float(self.burst), now]
        tokens = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.refill_per_s)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            self.refusals[scope] = self.refusals.get(scope, 0) + 1
            return False
        bucket[0] = tokens - 1
        return True
