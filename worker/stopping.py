"""Awaiting work unless a stop is requested first: a start that may wait indefinitely (the start
checks, the consumer's first assignment behind a stalled rebalance) must not hold a SIGTERM back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["race_stop"]

T = TypeVar("T")


async def race_stop(work: Awaitable[T], stop: asyncio.Event) -> asyncio.Future[T]:
    """Await ``work`` until it is done or ``stop`` is set, whichever comes first; ``work`` is
    cancelled (and awaited) when the stop came first. Returns ``work`` as a future: cancelled, or
    done with its result or exception (not raised here)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return task
