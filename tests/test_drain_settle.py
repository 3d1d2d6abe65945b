"""A drain holds the settle checks back (consumption is paused: a task is unread, not quiet), and
hands them back when it ends: the dispatcher's schedule loop is woken, so a held restart exit
whose restart never came is made final then, without waiting for another record. The worker's own
stages (``Coalescer``, ``Dispatcher``, ``Submitter``) against the local ECS endpoint over sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest_asyncio

from devkit.ecs_endpoint import Faults, LocalEcsEndpoint
from schemas.events import ContainerChange, TaskEvent
from tests.dispatch_rig import dispatching
from tests.knowledge_rig import definition
from tests.support import wait_for
from worker.coalesce import Coalescer
from worker.config import Settings
from worker.offsets import OffsetBook
from worker.ratelimit import RateBudgets

TOPIC = "container-events"
ARN = "arn:aws:ecs:us-east-1:000000000000:task-definition/web:1"
TASK = "arn:aws:ecs:us-east-1:000000000000:task/prod/0123456789abcdef0123456789abcdef"
OTHER = "arn:aws:ecs:us-east-1:000000000000:task/prod/fedcba9876543210fedcba9876543210"
SETTLE_S = 0.3
LATENCY_MS = 1_000


@pytest_asyncio.fixture(loop_scope="function")
async def endpoint() -> AsyncIterator[LocalEcsEndpoint]:
    server = LocalEcsEndpoint(seed=7, faults=Faults(latency_ms=LATENCY_MS))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def event(
    name: str, status: str, exit_code: int | None = None, *, ago_s: float = 0.0, task: str = TASK
) -> TaskEvent:
    return TaskEvent(
        cluster="prod",
        task=task,
        observedAt=time.time_ns() - int(ago_s * 1e9),
        containers=(ContainerChange(containerName=name, status=status, exitCode=exit_code),),  # type: ignore[arg-type]
        taskDefinitionArn=ARN,
    )


async def test_a_settle_check_held_back_by_a_drain_runs_when_it_ends(endpoint: LocalEcsEndpoint) -> None:
    settings = Settings(ecs_endpoint_url=endpoint.url, linger_ms=0, drain_timeout_ms=2_000)
    coalescer = Coalescer(
        linger_ns=0, max_active_tasks=10, retired_cap=10, describe=False, settle_ns=int(SETTLE_S * 1e9)
    )
    coalescer.definitions.put(
        ARN,
        definition([{"name": "app", "restartPolicy": {"enabled": True, "restartAttemptPeriod": 60}}], ARN),
    )
    book = OffsetBook()
    book.assign([(TOPIC, 0)])
    budgets = RateBudgets(rate_cap=100.0, burst_cap=100, quota_per_s=None, quota_burst=1)
    async with dispatching(settings, coalescer, book, budgets) as dispatcher:

        def read(offset: int, change: TaskEvent) -> None:
            source = book.track(TOPIC, 0, offset, 1)
            assert source is not None
            _, resolved = coalescer.apply(change, source, time.monotonic_ns())
            for done in resolved:
                book.release(done)
            dispatcher.wake()

        read(0, event("app", "PENDING", ago_s=100))
        read(1, event("app", "RUNNING", ago_s=100))
        await wait_for(lambda: book.to_commit().get((TOPIC, 0)) == 2, 5, "RUNNING reported")
        read(2, event("app", "STOPPED", 1))  # ran 100 s: a restart is expected, held
        read(3, event("app", "RUNNING", task=OTHER))  # its call keeps the drain going ~1 s
        await wait_for(lambda: bool(coalescer.in_flight()), 5, "the other task's call under way")
        draining = asyncio.create_task(dispatcher.drain({(TOPIC, 0)}))
        await asyncio.sleep(2 * SETTLE_S)  # past the settle time, the drain still on
        assert not draining.done()
        assert book.to_commit().get((TOPIC, 0)) == 2  # the held exit is not final: unread
        await draining
        # No restart came: the exit is final once the task is quiet past the drain, and the
        # drain's end hands the settle check back to the schedule loop (no record needed).
        await wait_for(lambda: book.to_commit().get((TOPIC, 0)) == 4, 5, "STOPPED reported")
    task = endpoint.state()["tasks"][TASK]
    assert (task["status"], task["containers"], task["calls"]) == ("STOPPED", {"app": "STOPPED"}, 2)
