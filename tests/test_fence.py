"""The stall fence (``worker.fence``): after the process stood still for half the session timeout,
no ECS call starts until the group confirms this member, or a new assignment comes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec
import pytest
from aiobotocore.session import get_session
from aiokafka import AIOKafkaConsumer

from devkit.brokers import Broker
from devkit.ecs_endpoint import Faults
from tests.conftest import Topics
from tests.ecs_support import ecs_client, running_endpoint
from tests.support import group_committed, wait_for
from worker.config import Settings
from worker.ecs_clients import EcsClients
from worker.fence import StallFence
from worker.metrics import Metrics
from worker.offsets import OffsetBook
from worker.partitions import Partitions
from worker.ratelimit import RateBudgets
from worker.routing import Routes
from worker.submit import Submitter

S = 1_000_000_000


async def test_an_open_fence_lets_calls_through_at_once() -> None:
    fence = StallFence.for_session(10_000)
    assert fence.is_open
    async with asyncio.timeout(0.5):
        await fence.wait_open()


async def test_a_stalled_loop_closes_the_fence_until_the_group_confirms_the_member(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[int] = []
    answers = iter([False, False, True])
    asked: list[float] = []

    async def confirm() -> bool:
        asked.append(time.monotonic())
        return next(answers)

    fence = StallFence(stall_ns=S // 20, tick_s=0.005, on_close=lambda: closed.append(1))
    ticker = asyncio.create_task(fence.run(confirm))
    try:
        await asyncio.sleep(0.02)
        assert fence.is_open
        with caplog.at_level(logging.INFO, logger="worker.fence"):
            time.sleep(0.2)  # noqa: ASYNC251 - the whole event loop stands still, as under SIGSTOP
            waiter = asyncio.create_task(fence.wait_open())
            await asyncio.sleep(0)
            assert not fence.is_open  # the caller saw the stall before the ticker did
            assert not waiter.done()
            async with asyncio.timeout(2):
                await waiter
        assert len(asked) == 3  # refused twice, then confirmed
        assert asked[1] - asked[0] >= 0.04  # asked every ten ticks, not every tick
        assert closed == [1]
        assert fence.is_open
        text = caplog.text
        assert "did not run for 0.2 s" in text
        assert "the group confirmed this member after a stall of 0.2 s" in text
    finally:
        ticker.cancel()


async def test_a_new_assignment_reopens_the_fence_and_an_unanswered_confirm_keeps_it_closed() -> None:
    now = [0]
    fence = StallFence(stall_ns=5 * S, tick_s=0.005, clock=lambda: now[0])

    async def unanswered() -> bool:
        raise TimeoutError("the coordinator does not answer")

    ticker = asyncio.create_task(fence.run(unanswered))
    try:
        await asyncio.sleep(0.01)
        now[0] = 6 * S  # six seconds without a tick
        waiter = asyncio.create_task(fence.wait_open())
        await asyncio.sleep(0.05)
        assert not waiter.done()  # the brokers do not answer: still unknown, still closed
        fence.reopen()  # partitions assigned: a member of the current generation
        async with asyncio.timeout(1):
            await waiter
        assert fence.is_open
    finally:
        ticker.cancel()


async def test_a_slow_start_is_no_stall() -> None:
    now = [0]
    fence = StallFence(stall_ns=5 * S, tick_s=0.005, clock=lambda: now[0])
    now[0] = 60 * S  # the worker waited a minute for its brokers before its loops started

    async def never() -> bool:
        raise AssertionError("not asked")

    ticker = asyncio.create_task(fence.run(never))
    try:
        await asyncio.sleep(0.02)
        assert fence.is_open
    finally:
        ticker.cancel()


async def test_nothing_read_means_nothing_to_fence() -> None:
    partitions = Partitions(OffsetBook(), Metrics())
    assert await partitions.confirm_membership()


async def test_a_submission_queued_for_a_slot_through_a_stall_waits_for_the_fence() -> None:
    """A submission that passed the fence, then waited for one of the ``concurrency`` slots while
    the process stood still, must not call ECS when the slot frees up after the stall."""
    now = [0]
    fence = StallFence(stall_ns=5 * S, clock=lambda: now[0])
    settings = Settings(concurrency=1, max_attempts=1)
    session = get_session()
    session.set_credentials("test", "test")
    budgets = RateBudgets(rate_cap=1_000.0, burst_cap=1_000, quota_per_s=None, quota_burst=1)
    routes = Routes(region="us-east-1", home_account=None, account_roles={})
    params = {
        "cluster": "prod",
        "task": "arn:aws:ecs:us-east-1:000000000000:task/prod/0",
        "status": "RUNNING",
    }
    async with (
        running_endpoint(faults=Faults(latency_ms=300)) as endpoint,
        EcsClients(
            msgspec.structs.replace(settings, ecs_endpoint_url=endpoint.url), routes, session=session
        ) as clients,
        ecs_client(endpoint.url) as client,
    ):
        submitter = Submitter(clients, settings, metrics=Metrics(), budgets=budgets, fence=fence)
        limiter = budgets.for_route(None)

        async def call() -> None:
            with contextlib.suppress(Exception):  # the endpoint's verdict on the task is beside the point
                await submitter._call(client, limiter, params)

        first = asyncio.create_task(call())
        await asyncio.sleep(0.05)
        second = asyncio.create_task(call())  # past the open fence, waiting for the one slot
        await asyncio.sleep(0.05)
        now[0] = 10 * S  # the process stood still for ten seconds
        async with asyncio.timeout(2):
            await first
        await asyncio.sleep(0.6)  # twice a call's latency
        assert not second.done()  # no ECS call before the group confirms this member
        assert not fence.is_open
        fence.reopen()
        async with asyncio.timeout(2):
            await second


async def _member(broker: Broker, topics: Topics, partitions: Partitions) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=topics.group,
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=300,
    )
    consumer.subscribe([topics.input], listener=partitions)
    partitions._consumer = consumer  # the listener's seam (``attach`` also wants a drainer)
    await consumer.start()
    await wait_for(lambda: len(partitions.book.partitions()) == topics.partitions, 30, "the assignment")
    return consumer


@pytest.mark.timeout(60)
async def test_a_confirmation_never_moves_a_committed_offset_back(broker: Broker, topics: Topics) -> None:
    """After a stall the periodic commit and the fence's confirmation run together: the broker
    must end at the newest committable offset, not at the older one confirmed again."""
    partitions = Partitions(OffsetBook(), Metrics())
    consumer = await _member(broker, topics, partitions)
    try:
        for offset in range(10):
            partitions.book.track(topics.input, 0, offset, 0)
        await partitions.commit()
        assert partitions.book.committed() == {(topics.input, 0): 10}
        for offset in range(10, 20):
            partitions.book.track(topics.input, 0, offset, 0)
        commit = asyncio.create_task(partitions.commit())
        confirm = asyncio.create_task(partitions.confirm_membership())
        await asyncio.gather(commit, confirm)
        assert confirm.result() is True
        assert (await group_committed(broker.bootstrap, topics))[0] == 20
        assert partitions.book.committed() == {(topics.input, 0): 20}
    finally:
        await consumer.stop()


@pytest.mark.timeout(60)
async def test_a_dry_run_confirms_without_committing(broker: Broker, topics: Topics) -> None:
    partitions = Partitions(OffsetBook(), Metrics(), commits=False)
    consumer = await _member(broker, topics, partitions)
    try:
        for offset in range(5):
            partitions.book.track(topics.input, 1, offset, 0)
        assert await partitions.confirm_membership()
        assert (await group_committed(broker.bootstrap, topics))[1] == 0  # no commit, ever
    finally:
        await consumer.stop()


async def test_a_slow_confirmation_is_no_new_stall() -> None:
    """The confirmation commit may take up to its timeout (3 s), more than half the shortest
    session (6 s): the time spent awaiting it must not count as a stall once it says yes."""
    now = [0]
    closed: list[int] = []
    fence = StallFence(stall_ns=3 * S, tick_s=0.005, clock=lambda: now[0], on_close=lambda: closed.append(1))

    async def slow_yes() -> bool:
        now[0] += 4 * S  # the commit took four seconds to be answered
        return True

    ticker = asyncio.create_task(fence.run(slow_yes))
    try:
        await asyncio.sleep(0.02)
        now[0] += 10 * S
        await asyncio.sleep(0.1)
        assert fence.is_open
        assert closed == [1]
    finally:
        ticker.cancel()
