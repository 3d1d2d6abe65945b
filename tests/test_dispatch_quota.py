"""The dispatcher at a quota it overshoots, against the local ECS endpoint over sockets: the
worker's own stages (``Coalescer``, ``Dispatcher``, ``Submitter`` with its routed clients) with a
rate budget far above the endpoint's quota, so that ECS throttles. A throttled submission goes
back to its task unsent and is rebuilt with the task's newest state at its next turn: every task
converges, none fails, and a task reports at most its two statuses however often it was throttled
(calls per task fall under pressure instead of rising)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from devkit.ecs_endpoint import Faults, LocalEcsEndpoint
from schemas.events import ContainerChange, TaskEvent
from tests.dispatch_rig import Outcomes, dispatching
from tests.support import wait_for
from worker.coalesce import Coalescer
from worker.config import Settings
from worker.metrics import Metrics
from worker.offsets import OffsetBook
from worker.ratelimit import RateBudgets

TOPIC = "container-events"
TASKS = 24


@pytest_asyncio.fixture(loop_scope="function")
async def quota_endpoint() -> AsyncIterator[LocalEcsEndpoint]:
    server = LocalEcsEndpoint(seed=5, faults=Faults(quota_burst=4, quota_refill_per_s=20.0))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def event(task: int, status: str) -> TaskEvent:
    exit_code = 0 if status == "STOPPED" else None
    return TaskEvent(
        cluster="prod",
        task=f"arn:aws:ecs:us-east-1:000000000000:task/prod/{task:032x}",
        observedAt=time.time_ns(),
        containers=(ContainerChange(containerName="app", status=status, exitCode=exit_code),),  # type: ignore[arg-type]
    )


async def test_throttled_submissions_go_back_and_carry_the_newest_state(
    quota_endpoint: LocalEcsEndpoint,
) -> None:
    settings = Settings(
        ecs_endpoint_url=quota_endpoint.url, rate_limit_per_s=1_000.0, rate_limit_burst=1_000, linger_ms=0
    )
    coalescer = Coalescer(linger_ns=0, max_active_tasks=1_000, retired_cap=1_000, describe=False)
    book = OffsetBook()
    book.assign([(TOPIC, 0)])
    metrics, outcomes = Metrics(), Outcomes()
    budgets = RateBudgets(rate_cap=1_000.0, burst_cap=1_000, quota_per_s=None, quota_burst=1)
    async with dispatching(
        settings, coalescer, book, budgets, metrics=metrics, outcomes=outcomes
    ) as dispatcher:
        offset = 0
        for status in ("PENDING", "RUNNING", "STOPPED"):
            for task in range(TASKS):
                source = book.track(TOPIC, 0, offset, 1)
                assert source is not None
                _, resolved = coalescer.apply(event(task, status), source, time.monotonic_ns())
                for done in resolved:
                    book.release(done)
                offset += 1
            dispatcher.wake()
            await asyncio.sleep(0.05)
        await wait_for(
            lambda: book.unresolved() == 0 and not coalescer.in_flight(), 30, "every record resolved"
        )
    state = quota_endpoint.state()
    assert state["errors"].get("ThrottlingException", 0) > 0, "the quota was overshot"
    assert {task["status"] for task in state["tasks"].values()} == {"STOPPED"}
    assert len(state["tasks"]) == TASKS
    assert max(task["calls"] for task in state["tasks"].values()) <= 2
    # The quota's burst lets a few RUNNING through; every other task's RUNNING was throttled, went
    # back, and was rebuilt STOPPED: one call for its whole life.
    once = sum(1 for task in state["tasks"].values() if task["calls"] == 1)
    assert once >= TASKS // 2
    assert state["accepted"] == 2 * TASKS - once
    assert metrics.totals().get("submissions_failed", 0) == 0
    assert len(outcomes.records) == state["accepted"]
    assert book.to_commit() == {(TOPIC, 0): 3 * TASKS}


def region_event(region: str, task: int) -> TaskEvent:
    return TaskEvent(
        cluster="prod",
        task=f"arn:aws:ecs:{region}:000000000000:task/prod/{task:032x}",
        observedAt=time.time_ns(),
        containers=(ContainerChange(containerName="app", status="RUNNING"),),
    )


@pytest.mark.parametrize("pressure", ["budget", "throttling"])
async def test_one_route_out_of_quota_does_not_hold_back_another(pressure: str) -> None:
    """A Region whose budget is spent (the process's own bucket, or ECS throttling with the
    process's bucket far above the quota) while a backlog of its tasks waits: the tasks of another
    Region, queued after that backlog, are reported while it still waits."""
    quota = Faults(quota_burst=2, quota_refill_per_s=4.0) if pressure == "throttling" else Faults()
    rate = 1_000.0 if pressure == "throttling" else 4.0
    server = LocalEcsEndpoint(seed=6, faults=quota)
    await server.start()
    settings = Settings(ecs_endpoint_url=server.url, rate_limit_per_s=rate, rate_limit_burst=2, linger_ms=0)
    coalescer = Coalescer(linger_ns=0, max_active_tasks=1_000, retired_cap=1_000, describe=False)
    book = OffsetBook()
    book.assign([(TOPIC, 0)])
    budgets = RateBudgets(rate_cap=rate, burst_cap=2, quota_per_s=None, quota_burst=1)
    crowded, other = "000000000000/us-east-1", "000000000000/eu-west-1"
    try:
        async with dispatching(settings, coalescer, book, budgets) as dispatcher:
            events = [region_event("us-east-1", n) for n in range(40)]
            events += [region_event("eu-west-1", n) for n in range(3)]
            for offset, change in enumerate(events):
                source = book.track(TOPIC, 0, offset, 1)
                assert source is not None
                coalescer.apply(change, source, time.monotonic_ns())
            dispatcher.wake()

            def tasks(scope: str) -> dict[str, str]:
                return dict(server.state()["scopes"].get(scope, {}).get("tasks", {}))

            await wait_for(lambda: len(tasks(other)) == 3, 10, "the other Region's three tasks")
            assert set(tasks(other).values()) == {"RUNNING"}
            assert len(tasks(crowded)) < 20, "the crowded Region's backlog was still waiting"
    finally:
        await server.stop()
