"""Retries that cost nothing until they are needed: the first attempt runs bare, and only when it
raises does tenacity take over, from where its own loop would have been.

Every ECS call and every outcome record goes through a retry policy, and nearly all of them
succeed at once. Entering tenacity's loop costs about 70 µs of CPU (its ``AsyncRetrying`` object,
the call state, and an ``inspect`` of each action, twice per attempt): as much as a tenth of a
submission. ``retry_after_first`` runs attempt 1 itself; on an exception it builds the policy
(``retrying()``) and resumes tenacity's own decisions (``AsyncRetrying.iter``: retry, wait, stop,
``before_sleep``) from a call state that holds that first outcome, its start time included, so the
waits, the stops (``stop_before_delay`` counts from before attempt 1) and the attempt numbers are
those of an ``async for attempt in retrying()`` loop around the same attempts.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, DoAttempt, DoSleep, RetryCallState

__all__ = ["retry_after_first"]

T = TypeVar("T")


async def retry_after_first(
    attempt: Callable[[int], Awaitable[T]], retrying: Callable[[], AsyncRetrying]
) -> T:
    """``await attempt(1)``; if it raises, the attempts ``retrying()`` allows after it
    (``attempt(2)``, ``attempt(3)``...). Returns the first result; raises what tenacity would
    (with ``reraise=True``: the last attempt's exception, else ``tenacity.RetryError``)."""
    started = time.monotonic()
    try:
        return await attempt(1)
    except BaseException:  # decided by the policy, as inside ``with attempt:``
        first = sys.exc_info()
    policy = retrying()
    policy.begin()
    state = RetryCallState(policy, fn=None, args=(), kwargs={})
    state.start_time = started
    state.set_exception(first)  # type: ignore[arg-type]  # sys.exc_info() inside except: never None
    del first  # no reference cycle through the traceback
    return await _resume(policy, state, attempt)


async def _resume(policy: AsyncRetrying, state: RetryCallState, attempt: Callable[[int], Awaitable[T]]) -> T:
    """tenacity's own loop (``AsyncRetrying.__call__``) from ``state``'s outcome on."""
    while True:
        do = await policy.iter(retry_state=state)
        if isinstance(do, DoAttempt):
            try:
                result = await attempt(state.attempt_number)
            except BaseException:
                state.set_exception(sys.exc_info())  # type: ignore[arg-type]
            else:
                state.set_result(result)
        elif isinstance(do, DoSleep):
            state.prepare_for_next_attempt()
            await policy.sleep(do)  # type: ignore[misc]
        else:
            return do  # type: ignore[no-any-return]
