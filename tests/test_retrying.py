"""``retry_after_first`` (worker.retrying) against tenacity's own loop: for the same scripted
attempts and policy, the same attempts are made, ``before_sleep`` sees the same attempt numbers,
waits and exceptions, and the same result or exception comes out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_fixed,
)

from worker.retrying import retry_after_first


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


Trace = list[tuple[str, int, object]]


def scripted(outcomes: list[object], trace: Trace) -> Callable[[int], Awaitable[str]]:
    """An attempt that takes its outcome from ``outcomes`` in turn: an exception is raised, a
    string returned; each call is noted in ``trace`` with its attempt number."""
    calls = iter(outcomes)

    async def attempt(number: int) -> str:
        outcome = next(calls)
        trace.append(("attempt", number, outcome if isinstance(outcome, str) else type(outcome).__name__))
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, str)
        return outcome

    return attempt


def policy(trace: Trace, **overrides: object) -> Callable[[], AsyncRetrying]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        sleep = state.next_action.sleep if state.next_action else None
        trace.append(("before_sleep", state.attempt_number, (type(exc).__name__, sleep)))

    def make() -> AsyncRetrying:
        options: dict[str, object] = {
            "stop": stop_after_attempt(4),
            "wait": wait_fixed(0.001),
            "retry": retry_if_exception_type(Flaky),
            "before_sleep": before_sleep,
            "reraise": True,
            **overrides,
        }
        return AsyncRetrying(**options)  # type: ignore[arg-type]

    return make


async def tenacity_loop(attempt: Callable[[int], Awaitable[str]], retrying: AsyncRetrying) -> str:
    """The loop ``retry_after_first`` replaces, as the worker wrote it before."""
    async for each in retrying:
        with each:
            result = await attempt(each.retry_state.attempt_number)
    return result


async def both(outcomes: list[object], **overrides: object) -> tuple[object, Trace, object, Trace]:
    """(result or exception, trace) of tenacity's loop, then of ``retry_after_first``."""
    ran: list[tuple[object, Trace]] = []
    for fast in (False, True):
        trace: Trace = []
        attempt, make = scripted(list(outcomes), trace), policy(trace, **overrides)
        try:
            got: object = await (retry_after_first(attempt, make) if fast else tenacity_loop(attempt, make()))
        except RetryError as exc:
            got = ("RetryError", exc.last_attempt.attempt_number, str(exc.last_attempt.exception()))
        except BaseException as exc:
            got = (type(exc).__name__, str(exc))
        ran.append((got, trace))
    return ran[0][0], ran[0][1], ran[1][0], ran[1][1]


async def test_a_first_success_is_one_attempt_and_no_policy() -> None:
    built: list[int] = []
    trace: Trace = []

    def make() -> AsyncRetrying:
        built.append(1)
        return policy(trace)()

    assert await retry_after_first(scripted(["ok"], trace), make) == "ok"
    assert trace == [("attempt", 1, "ok")]
    assert built == []  # the policy is built only after a failure


@pytest.mark.parametrize(
    "outcomes",
    [
        [Flaky("1"), "ok"],
        [Flaky("1"), Flaky("2"), Flaky("3"), "ok"],
        [Flaky("1"), Flaky("2"), Flaky("3"), Flaky("4")],  # retries run out: the last one raised
        [Fatal("1")],  # not retried
        [Flaky("1"), Fatal("2")],
    ],
    ids=["one-retry", "three-retries", "exhausted", "terminal-first", "terminal-later"],
)
async def test_same_attempts_sleeps_and_outcome_as_tenacity(outcomes: list[object]) -> None:
    expected, expected_trace, got, got_trace = await both(outcomes)
    assert got_trace == expected_trace
    assert got == expected
    numbers = [number for kind, number, _ in got_trace if kind == "attempt"]
    assert numbers == list(range(1, len(numbers) + 1))


async def test_without_reraise_the_same_retry_error() -> None:
    outcomes: list[object] = [Flaky("1"), Flaky("2")]
    expected, expected_trace, got, got_trace = await both(outcomes, stop=stop_after_attempt(2), reraise=False)
    assert got_trace == expected_trace
    assert got == expected
    assert expected == ("RetryError", 2, "2")


async def test_the_predicate_sees_each_attempts_exception() -> None:
    seen: list[str] = []

    def retryable(exc: BaseException) -> bool:
        seen.append(str(exc))
        return str(exc) != "2"

    _, expected_trace, got, got_trace = await both(
        [Flaky("1"), Flaky("2")], retry=retry_if_exception(retryable)
    )
    assert got_trace == expected_trace
    assert got == ("Flaky", "2")
    assert seen == ["1", "2", "1", "2"]  # tenacity's loop, then ours


async def test_the_deadline_counts_from_before_the_first_attempt() -> None:
    """``stop_before_delay``: a first attempt that took longer than the deadline allows no retry,
    as in tenacity's loop (its call state starts before attempt 1)."""
    trace: Trace = []

    async def slow_then_flaky(number: int) -> str:
        trace.append(("attempt", number, None))
        await asyncio.sleep(0.05)
        raise Flaky(str(number))

    make = policy(trace, stop=stop_before_delay(0.04))
    with pytest.raises(Flaky, match="1"):
        await retry_after_first(slow_then_flaky, make)
    assert trace == [("attempt", 1, None)]


async def test_a_cancelled_attempt_raises_its_cancellation_as_tenacity_does() -> None:
    expected, expected_trace, got, got_trace = await both([asyncio.CancelledError()])
    assert got_trace == expected_trace == [("attempt", 1, "CancelledError")]
    assert got == expected == ("CancelledError", "")
