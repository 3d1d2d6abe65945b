"""The stall fence: no ECS call from a process that may have been dropped from the group while it
was not running.

A process that stops running for a while (a pod frozen by SIGSTOP or the cgroup freezer, CPU
throttled, a VM paused, a long garbage collection) misses its heartbeats; past the session timeout
the group gives its partitions to others, whose reports start from ECS's view. When it runs again,
its timers fire before its consumer has heard that it was dropped: a change it held, sent now,
lands after the new owners' reports and contradicts them (a RUNNING after their STOPPED, which
nobody corrects). Kafka fences such a *zombie*'s commits by the generation; the fence does the same
for its calls, as Confluent's Parallel Consumer fences work by epoch:

- a ticker notes the event loop's progress every ``tick_s``; a gap longer than ``stall_ns`` (half
  the session timeout: a member whose loop stood still that long may have missed enough
  heartbeats) **closes** the fence; a caller that runs before the ticker after a stall sees the
  gap itself and closes it too;
- closed, every ECS attempt waits (``wait_open``), and the fence asks the group whether this
  member is still in its generation (``confirm``: an offset commit, which the coordinator refuses
  from a member it dropped) every ten ticks until it is told yes: the fence **opens**;
- told no, the consumer rejoins and the partitions are lost (``worker.partitions``): their
  submissions, waiting here, are cancelled; a new assignment opens the fence (``reopen``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from worker.work import NS_PER_MS

__all__ = ["StallFence"]

log = logging.getLogger(__name__)

_CONFIRM_EVERY_TICKS = 10


class StallFence:
    """``stall_ns``: the longest loop stall taken as harmless (ns); ``tick_s``: the ticker's period
    (s). Open when made."""

    def __init__(
        self,
        stall_ns: int,
        tick_s: float = 0.1,
        clock: Callable[[], int] = time.monotonic_ns,
        on_close: Callable[[], object] = lambda: None,
    ) -> None:
        self._stall_ns = stall_ns
        self._on_close = on_close
        self._tick_s = tick_s
        self._clock = clock
        self._last_tick = clock()
        self._open = asyncio.Event()
        self._open.set()
        self._stalled_for = 0

    @classmethod
    def for_session(
        cls, session_timeout_ms: int, on_close: Callable[[], object] = lambda: None
    ) -> StallFence:
        """The fence of a member whose session times out after ``session_timeout_ms``; ``on_close``
        is called each time it closes."""
        return cls(session_timeout_ms * NS_PER_MS // 2, on_close=on_close)

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait_open(self) -> None:
        """Return at once while the fence is open and the loop has not just stalled; else wait
        until the group confirms this member (or the caller is cancelled: its partitions lost)."""
        self._check(self._clock())
        if not self._open.is_set():
            await self._open.wait()

    def reopen(self) -> None:
        """A new assignment: this member is in the group's current generation."""
        self._last_tick = self._clock()
        if not self._open.is_set():
            log.info("ECS calls resume: partitions assigned again after the stall")
            self._open.set()

    async def run(self, confirm: Callable[[], Awaitable[bool]]) -> None:
        """Tick until cancelled; while closed, ask ``confirm`` (True: still a member) now and then."""
        ticks = 0
        self._last_tick = self._clock()  # the time before the loops ran (a slow start) is no stall
        while True:
            await asyncio.sleep(self._tick_s)
            now = self._clock()
            self._check(now)
            self._last_tick = now
            if self._open.is_set():
                ticks = 0
                continue
            if ticks % _CONFIRM_EVERY_TICKS == 0 and await self._confirmed(confirm):
                log.info(
                    "ECS calls resume: the group confirmed this member after a stall of %.1f s",
                    self._stalled_for / 1e9,
                )
                self._open.set()
                self._last_tick = self._clock()  # the wait for the answer was no stall
            ticks += 1

    def _check(self, now: int) -> None:
        gap = now - self._last_tick
        if gap <= self._stall_ns or not self._open.is_set():
            return
        self._stalled_for = gap
        self._open.clear()
        self._on_close()
        log.warning(
            "this process did not run for %.1f s (frozen, throttled, paused): ECS calls wait until "
            "the group confirms it is still a member (it may have been dropped, and its partitions "
            "given to others)",
            gap / 1e9,
            extra={"stalled_s": round(gap / 1e9, 3)},
        )

    @staticmethod
    async def _confirmed(confirm: Callable[[], Awaitable[bool]]) -> bool:
        try:
            return await confirm()
        except Exception as error:  # the brokers do not answer: still unknown, asked again later
            log.info("membership not confirmed yet: %s", error, extra={"error_class": type(error).__name__})
            return False
