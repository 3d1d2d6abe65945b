"""The resolver (worker.resolve): DescribeTaskDefinition and DescribeTasks against the local ECS
endpoint over a socket, through a real aiobotocore client, answering a real ``Coalescer`` whose
resolved records go into an ``OffsetBook`` (the resolver's ``release`` callback)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_asyncio

from devkit.ecs_endpoint import Faults, LocalEcsEndpoint
from schemas.events import ContainerStatus, TaskEvent
from tests.ecs_tasks import EcsTasks
from tests.knowledge_rig import Rig, S, ev, shown
from worker.coalesce import Applied
from worker.config import Settings
from worker.ecs_clients import EcsClients
from worker.metrics import Metrics
from worker.resolve import DESCRIBE_TASKS_LIMIT, Resolver
from worker.routing import Route, Routes
from worker.submit import request_params
from worker.work import Submission

CLUSTER = "prod"
APP: list[dict[str, Any]] = [{"name": "app"}]
APP_SIDECAR: list[dict[str, Any]] = [{"name": "app"}, {"name": "sidecar", "essential": False}]
MISSING_IGNORED = "ecs_task_missing"


@pytest_asyncio.fixture(loop_scope="function")
async def clients(endpoint: LocalEcsEndpoint) -> AsyncIterator[EcsClients]:
    """The worker's own ECS clients of ``endpoint`` (``worker.ecs_clients``), botocore's retries
    off: the resolver retries, within its deadline."""
    settings = Settings(region="us-east-1", ecs_endpoint_url=endpoint.url)
    async with EcsClients(settings, Routes(region="us-east-1", home_account=None, account_roles={})) as ecs:
        yield ecs


@pytest_asyncio.fixture(loop_scope="function")
async def client(clients: EcsClients) -> Any:
    """The client of us-east-1 among ``clients``, for the tests' own calls."""
    return await clients.client_for(Route("", "us-east-1"))


class Resolving:
    """A running ``Resolver`` and the coalescer it answers (``rig.co``), on the monotonic clock
    the resolver stamps its answers with. ``dispatcher_wakes`` counts the resolver's calls of its
    ``wake`` callback (the dispatcher's)."""

    def __init__(self, client: EcsClients, *, deadline_ms: int, **options: Any) -> None:
        self.rig = Rig(base_ns=time.monotonic_ns(), **options)
        self.metrics = Metrics()
        self.dispatcher_wakes = 0
        self.resolver = Resolver(
            client,
            self.rig.co,
            metrics=self.metrics,
            batch_ms=10,
            rate_per_s=100.0,
            deadline_ms=deadline_ms,
            release=self.rig.release,
            wake=self._wake_dispatcher,
        )

    def _wake_dispatcher(self) -> None:
        self.dispatcher_wakes += 1

    def now(self) -> float:
        return (time.monotonic_ns() - self.rig.base_ns) / S

    def feed(self, event: TaskEvent) -> Applied:
        """Read ``event`` as the next record, now."""
        applied, _ = self.rig.feed(event, at=self.now())
        return applied

    async def until(self, condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
        """Take what is due (as the dispatcher would, acknowledged at once) until ``condition``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.rig.tick(self.now())
            if condition():
                return
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.01)

    def fallbacks(self, operation: str, code: str) -> float | None:
        return self.metrics.registry.get_sample_value(
            "ecs_state_worker_knowledge_fallbacks_total", {"operation": operation, "code": code}
        )

    def fallbacks_total(self) -> float:
        family = next(f for f in self.metrics.registry.collect() if f.name.endswith("knowledge_fallbacks"))
        return sum(s.value for s in family.samples if s.name.endswith("_total"))


@asynccontextmanager
async def resolving(
    client: EcsClients, *, deadline_ms: int = 2_000, **options: Any
) -> AsyncIterator[Resolving]:
    """A ``Resolving`` whose resolver runs for the block, cancelled after it."""
    running = Resolving(client, deadline_ms=deadline_ms, **options)
    task = asyncio.create_task(running.resolver.run())
    try:
        yield running
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def change(
    task: str,
    name: str,
    status: ContainerStatus,
    *,
    definition: str | None,
    exit_code: int | None = None,
) -> TaskEvent:
    return ev(name, status, exit_code=exit_code, arn=definition, task=task, cluster=CLUSTER)


def operation(endpoint: LocalEcsEndpoint, name: str) -> dict[str, Any]:
    """The endpoint's counts of one operation: calls, accepted, dropped, errors."""
    counts: dict[str, Any] = endpoint.state()["operations"][name]
    return counts


def never_run_task(n: int) -> str:
    return f"arn:aws:ecs:us-east-1:000000000000:task/{CLUSTER}/{n:032x}"


async def test_task_first_seen_at_its_exit_gets_its_definition_then_its_view_without_another_wake(
    endpoint: LocalEcsEndpoint, client: Any, clients: EcsClients
) -> None:
    """After a rebalance the first event of a task is app's exit, and its definition is not
    cached. One wake (after the record is admitted) is enough: the resolver fetches the
    definition, which shows the history missed, then, with no further record or wake, the
    DescribeTasks that the definition's task wants. ECS's view (the previous owner's RUNNING)
    completes the task, and once the sidecar's stop is seen it is reported STOPPED."""
    ecs = EcsTasks(client)
    definition = await ecs.register("web", APP_SIDECAR)
    [task] = await ecs.run(CLUSTER, definition)
    running = [{"containerName": n, "status": "RUNNING"} for n in ("app", "sidecar")]
    await client.submit_task_state_change(
        cluster=CLUSTER, task=task.arn, status="RUNNING", containers=running
    )  # the previous owner's report

    async with resolving(clients, settle_ns=5 * S, stop_linger_ns=5 * S) as r:
        assert r.feed(change(task.arn, "app", "STOPPED", definition=definition, exit_code=1)) is Applied.HELD
        r.resolver.wake()  # what the consume loop does after admitting the record
        await r.until(lambda: r.dispatcher_wakes == 2, "both answers")  # one wake after each answer
        assert operation(endpoint, "DescribeTaskDefinition")["accepted"] == 1
        assert operation(endpoint, "DescribeTasks")["accepted"] == 1
        assert r.rig.co.definitions.known(definition, time.monotonic_ns())
        assert r.rig.sent == []
        assert r.rig.committable() == 0

        r.feed(change(task.arn, "sidecar", "STOPPED", definition=definition, exit_code=0))
        await r.until(lambda: bool(r.rig.sent), "the task's report")
        assert r.rig.statuses() == ["STOPPED app=STOPPED(1),sidecar=STOPPED(0)"]
        assert r.rig.committable() == r.rig.offset == 2
        await client.submit_task_state_change(**request_params(r.rig.sent[0][1].request))

    assert operation(endpoint, "DescribeTasks")["calls"] == 1
    assert operation(endpoint, "DescribeTaskDefinition")["calls"] == 1
    assert r.fallbacks_total() == 0
    state = endpoint.state()
    assert state["tasks"][task.arn]["status"] == "STOPPED"
    assert {name: flag["count"] for name, flag in state["flags"].items()} == dict.fromkeys(state["flags"], 0)


@pytest.mark.parametrize(
    ("faults", "code"),
    [
        pytest.param(Faults(describe_error_rate=1.0), "ServerException", id="failing"),
        pytest.param(Faults(describe_deny_rate=1.0), "AccessDeniedException", id="denied"),
    ],
)
async def test_describe_that_cannot_be_had_answers_none_and_the_task_falls_back(
    endpoint: LocalEcsEndpoint, client: Any, clients: EcsClients, faults: Faults, code: str
) -> None:
    """The describe calls fail past their deadline (500s) or are denied (the role lacks
    ecs:Describe*). Every failure is answered, with None: the definition, then ECS's view, so no
    task waits for ever. The task first seen at app's exit falls back to the containers seen and,
    once quiet for the settle time, is reported STOPPED; its record stays claimed until then.
    Each fallback is counted by operation and cause."""
    ecs = EcsTasks(client)
    definition = await ecs.register("web", APP_SIDECAR)
    [task] = await ecs.run(CLUSTER, definition)
    endpoint.set_faults(faults)

    async with resolving(clients, deadline_ms=200, settle_ns=S, stop_linger_ns=S // 10) as r:

        def reported() -> bool:
            assert r.rig.sent or r.rig.committable() == 0, "record released before the report"
            return bool(r.rig.sent)

        r.feed(change(task.arn, "app", "STOPPED", definition=definition, exit_code=1))
        r.resolver.wake()
        await r.until(lambda: r.fallbacks("DescribeTasks", code) == 1, "the DescribeTasks fallback")
        assert not reported()  # quiet for less than the settle time (1 s)
        await r.until(reported, "the settled report")
        assert r.rig.statuses() == ["STOPPED app=STOPPED(1)"]
        assert r.rig.committable() == r.rig.offset == 1
        assert list(r.rig.co.keys()) == []
        assert not r.rig.co.wants_pending()

    assert r.fallbacks("DescribeTaskDefinition", code) == 1
    assert r.fallbacks("DescribeTasks", code) == 1
    for name in ("DescribeTaskDefinition", "DescribeTasks"):
        counts = operation(endpoint, name)
        assert counts["accepted"] == 0
        assert counts["errors"] == {code: counts["calls"]}


async def test_describe_of_more_than_a_hundred_tasks_is_split_by_ecs_limit(
    endpoint: LocalEcsEndpoint, client: Any, clients: EcsClients
) -> None:
    """130 tasks of one cluster and one revision are first seen RUNNING (their starts missed):
    one DescribeTaskDefinition serves them all, and their views are asked in DescribeTasks calls
    of at most 100 tasks (ECS rejects more): two calls, none rejected. Each task, PENDING for ECS,
    is then reported RUNNING."""
    ecs = EcsTasks(client)
    definition = await ecs.register("web", APP)
    tasks = [t for _ in range(13) for t in await ecs.run(CLUSTER, definition, count=10)]
    assert len(tasks) == 130

    async with resolving(clients) as r:
        for task in tasks:
            r.feed(change(task.arn, "app", "RUNNING", definition=definition))
        r.resolver.wake()
        await r.until(lambda: len(r.rig.sent) == len(tasks), "every task's report")

    assert DESCRIBE_TASKS_LIMIT == 100
    assert operation(endpoint, "DescribeTaskDefinition")["calls"] == 1
    assert operation(endpoint, "DescribeTasks") == {"calls": 2, "accepted": 2, "dropped": 0, "errors": {}}
    assert r.fallbacks_total() == 0
    assert {s.key[1] for _, s in r.rig.sent} == {t.arn for t in tasks}
    assert set(r.rig.statuses()) == {"RUNNING app=RUNNING(None)"}
    assert r.rig.committable() == r.rig.offset == 130


async def test_tasks_ecs_does_not_know_are_retired_without_a_call(
    endpoint: LocalEcsEndpoint, client: Any, clients: EcsClients
) -> None:
    """Three tasks without a definition label are first seen RUNNING; two were never started
    through ECS (another account's, or stopped longer ago than ECS keeps tasks). One DescribeTasks
    asks for the three: ECS answers MISSING for those two, which retire without a
    SubmitTaskStateChange, their records resolved and their late events ignored; the known task
    is reported RUNNING."""
    ecs = EcsTasks(client)
    definition = await ecs.register("web", APP)
    [known] = await ecs.run(CLUSTER, definition)
    unknown = [never_run_task(1), never_run_task(2)]

    async with resolving(clients) as r:
        for arn in [known.arn, *unknown]:
            r.feed(change(arn, "app", "RUNNING", definition=None))
        r.resolver.wake()
        await r.until(lambda: all(r.rig.co.is_retired((CLUSTER, a)) for a in unknown), "retired")
        await r.until(lambda: bool(r.rig.sent), "the known task's report")
        for arn in unknown:
            assert r.feed(change(arn, "app", "STOPPED", definition=None, exit_code=0)) is Applied.RETIRED
        r.rig.tick(r.now() + 60)

    submitted: list[Submission] = [s for _, s in r.rig.sent]
    assert [(s.key[1], shown(s)) for s in submitted] == [(known.arn, "RUNNING app=RUNNING(None)")]
    assert r.rig.committable() == r.rig.offset == 5
    assert operation(endpoint, "DescribeTasks") == {"calls": 1, "accepted": 1, "dropped": 0, "errors": {}}
    assert operation(endpoint, "DescribeTaskDefinition")["calls"] == 0
    assert (
        r.metrics.registry.get_sample_value("ecs_state_worker_ignored_total", {"reason": MISSING_IGNORED})
        == 2
    )
    assert r.fallbacks_total() == 0
