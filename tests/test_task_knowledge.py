"""Knowing the whole task, end to end: tasks run through the local ECS endpoint (RegisterTaskDefinition,
RunTask), their Docker events through the real broker, the worker describing what it missed.

Each test ends with what an ECS user would see as wrong all at 0 (the endpoint's flags: STOPPED
while a container of the definition was running or never reported, updates after STOPPED, RUNNING
while a container was never reported), no status regression, and the final states right."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from devkit.brokers import Broker
from devkit.ecs_endpoint import Faults, LocalEcsEndpoint
from tests.conftest import Topics, worker_settings
from tests.ecs_tasks import DockerTask, ecs_tasks, send_records
from tests.support import flags, running, wait_for
from worker.pipeline import Worker

pytestmark = pytest.mark.timeout(120)

APP_SIDECARS: list[dict[str, Any]] = [
    {"name": "app"},
    {"name": "sidecar", "essential": False},
    {"name": "log", "essential": False},
]
NAMES = ("app", "log", "sidecar")


def assert_nothing_wrong(endpoint: LocalEcsEndpoint) -> None:
    state = endpoint.state()
    assert not any(flags(endpoint).values()), state["flags"]
    assert state["regressions"] == []


def task_state(endpoint: LocalEcsEndpoint, task: DockerTask) -> dict[str, Any]:
    state: dict[str, Any] = endpoint.state()["tasks"][task.arn]
    return state


def lifecycle_start(tasks: Sequence[DockerTask], base: int) -> list[tuple[str, bytes]]:
    return [
        (t.arn, t.event(name, action, 0.01 * i, base_ns=base))
        for i, t in enumerate(tasks)
        for name in NAMES
        for action in ("create", "start")
    ]


def stop_others(tasks: Sequence[DockerTask], at_s: float, base: int) -> list[tuple[str, bytes]]:
    """The agent stops the non-essential containers: a kill, then their exit."""
    return [
        (t.arn, t.event(name, action, at_s, exit_code=143, base_ns=base))
        for t in tasks
        for name in ("sidecar", "log")
        for action in ("kill", "die")
    ]


async def started(
    endpoint: LocalEcsEndpoint, containers: list[dict[str, Any]], count: int
) -> list[DockerTask]:
    async with ecs_tasks(endpoint.url) as ecs:
        arn = await ecs.register("web", containers)
        tasks: list[DockerTask] = []
        while len(tasks) < count:
            tasks += await ecs.run("prod", arn, count=min(10, count - len(tasks)))
        return tasks


async def test_a_rolling_restart_reports_no_task_stopped_before_its_last_container(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """The first owner reports 20 three-container tasks RUNNING and stops; the next reads only the
    exits: the essential container's first, the others' a second later. Each task: RUNNING, then
    STOPPED with every container, two calls, nothing repeated or contradicted."""
    tasks = await started(endpoint, APP_SIDECARS, 20)
    base = time.time_ns()
    settings = worker_settings(broker, endpoint, topics, linger_ms=100)
    async with running(Worker(settings)) as first:
        await send_records(broker.bootstrap, topics.input, lifecycle_start(tasks, base))
        await wait_for(
            lambda: all(task_state(endpoint, t)["status"] == "RUNNING" for t in tasks), 30, "RUNNING"
        )
        await wait_for(lambda: first.pending_work() == 0, 30, "resolved")
    async with running(Worker(settings)) as second:
        exits = [(t.arn, t.event("app", "die", 60, exit_code=1, base_ns=base)) for t in tasks]
        await send_records(broker.bootstrap, topics.input, exits)
        await asyncio.sleep(1.0)  # the agent stops the others afterwards
        await send_records(broker.bootstrap, topics.input, stop_others(tasks, 61, base))
        await wait_for(
            lambda: all(task_state(endpoint, t)["status"] == "STOPPED" for t in tasks), 30, "STOPPED"
        )
        await wait_for(lambda: second.pending_work() == 0, 30, "resolved")
        described = second.metrics.totals()
    assert_nothing_wrong(endpoint)
    for task in tasks:
        state = task_state(endpoint, task)
        assert state["containers"] == dict.fromkeys(NAMES, "STOPPED")
        assert state["history"] == ["RUNNING", "STOPPED"]
    calls = endpoint.state()["operations"]["DescribeTasks"]["calls"]
    # Batched: at most one call per partition (each partition's records may come in a fetch of its
    # own, farther apart than the batch window), never one per task.
    assert 1 <= calls <= topics.partitions, f"{calls} DescribeTasks calls for 20 tasks (batches of up to 100)"
    assert described.get("submissions_acknowledged") == 20


async def test_an_init_container_and_a_healthy_gated_sidecar(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """init (SUCCESS) exits before app is created; app waits for envoy HEALTHY. No call reports
    RUNNING before app runs, none STOPPED before app stops."""
    containers: list[dict[str, Any]] = [
        {"name": "init", "essential": False},
        {"name": "envoy", "healthCheck": {"command": ["CMD-SHELL", "true"]}},
        {
            "name": "app",
            "dependsOn": [
                {"containerName": "init", "condition": "SUCCESS"},
                {"containerName": "envoy", "condition": "HEALTHY"},
            ],
        },
    ]
    (task,) = await started(endpoint, containers, 1)
    base = time.time_ns()
    events = [
        ("init", "create", 0.0, None),
        ("envoy", "create", 0.0, None),
        ("init", "start", 0.1, None),
        ("envoy", "start", 0.1, None),
        ("init", "die", 1.0, 0),
        ("envoy", "health_status: healthy", 5.0, None),
    ]
    later = [("app", "create", 8.0, None), ("app", "start", 8.1, None)]
    async with running(Worker(worker_settings(broker, endpoint, topics, linger_ms=100))) as worker:
        await send_records(
            broker.bootstrap,
            topics.input,
            [(task.arn, task.event(c, a, t, exit_code=x, base_ns=base)) for c, a, t, x in events],
        )
        await asyncio.sleep(1.5)
        assert worker.pending_work() == 0  # nothing to do but wait: its records stay claimed
        assert task_state(endpoint, task)["history"] == []  # app does not exist yet: nothing to say
        await send_records(
            broker.bootstrap,
            topics.input,
            [(task.arn, task.event(c, a, t, base_ns=base)) for c, a, t, _ in later],
        )
        await wait_for(lambda: task_state(endpoint, task)["status"] == "RUNNING", 30, "RUNNING")
        finish = [
            (task.arn, task.event("app", "die", 20, exit_code=0, base_ns=base)),
            (task.arn, task.event("envoy", "kill", 20.5, base_ns=base)),
            (task.arn, task.event("envoy", "die", 21, exit_code=143, base_ns=base)),
        ]
        await send_records(broker.bootstrap, topics.input, finish)
        await wait_for(lambda: task_state(endpoint, task)["status"] == "STOPPED", 30, "STOPPED")
    assert_nothing_wrong(endpoint)
    state = task_state(endpoint, task)
    assert state["history"] == ["RUNNING", "STOPPED"]
    assert state["containers"] == {"init": "STOPPED", "envoy": "STOPPED", "app": "STOPPED"}


async def test_a_restart_policy_restart_is_not_reported_and_the_final_stop_is(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    policy = {"enabled": True, "ignoredExitCodes": [0], "restartAttemptPeriod": 60}
    (task,) = await started(endpoint, [{"name": "app", "restartPolicy": policy}], 1)
    base = time.time_ns() - 1_000 * 1_000_000_000  # observed 1000 s ago and on
    async with running(Worker(worker_settings(broker, endpoint, topics, linger_ms=100))) as worker:
        await send_records(
            broker.bootstrap,
            topics.input,
            [(task.arn, task.event("app", a, t, base_ns=base)) for a, t in (("create", 0), ("start", 1))],
        )
        await wait_for(lambda: task_state(endpoint, task)["status"] == "RUNNING", 30, "RUNNING")
        restart = [
            (task.arn, task.event("app", "die", 401, exit_code=1, base_ns=base)),  # ran 400 s
            (task.arn, task.event("app", "start", 402, base_ns=base)),
        ]
        await send_records(broker.bootstrap, topics.input, restart)
        await asyncio.sleep(1.0)
        await wait_for(lambda: worker.pending_work() == 0, 30, "resolved")
        assert task_state(endpoint, task)["calls"] == 1  # the restart: nothing reported
        final = [
            (task.arn, task.event("app", "kill", 900, base_ns=base)),
            (task.arn, task.event("app", "die", 901, exit_code=137, base_ns=base)),
        ]
        await send_records(broker.bootstrap, topics.input, final)
        await wait_for(lambda: task_state(endpoint, task)["status"] == "STOPPED", 30, "STOPPED")
    assert_nothing_wrong(endpoint)
    snapshot = endpoint.state()["tasks"][task.arn]
    assert snapshot["history"] == ["RUNNING", "STOPPED"]


async def test_ten_staggered_containers_cost_at_most_three_calls(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    names = [f"c{i}" for i in range(10)]
    (task,) = await started(endpoint, [{"name": n} for n in names], 1)
    base = time.time_ns()
    async with running(Worker(worker_settings(broker, endpoint, topics, linger_ms=200))):
        for i, name in enumerate(names):
            await send_records(
                broker.bootstrap,
                topics.input,
                [
                    (task.arn, task.event(name, a, i * 0.3 + d, base_ns=base))
                    for a, d in (("create", 0), ("start", 0.05))
                ],
            )
            await asyncio.sleep(0.3)
        await wait_for(lambda: task_state(endpoint, task)["status"] == "RUNNING", 30, "RUNNING")
        stops = [(task.arn, task.event(n, "die", 30, exit_code=0, base_ns=base)) for n in names]
        await send_records(broker.bootstrap, topics.input, stops)
        await wait_for(lambda: task_state(endpoint, task)["status"] == "STOPPED", 30, "STOPPED")
    assert_nothing_wrong(endpoint)
    assert task_state(endpoint, task)["calls"] <= 3


async def test_a_cold_start_in_the_middle_of_lifecycles(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """A worker deployed into a running fleet: its group starts after the tasks' starts (their
    records committed by nobody it knows). It reads only exits, asks ECS, and reports STOPPED
    once each task's last container stopped."""
    tasks = await started(endpoint, APP_SIDECARS, 6)
    base = time.time_ns()
    ends = await send_records(broker.bootstrap, topics.input, lifecycle_start(tasks, base))
    await commit_group_at(broker, topics, ends)
    async with running(Worker(worker_settings(broker, endpoint, topics, linger_ms=100))) as worker:
        exits = [(t.arn, t.event("app", "die", 60, exit_code=2, base_ns=base)) for t in tasks]
        await send_records(broker.bootstrap, topics.input, exits)
        await asyncio.sleep(0.8)
        await send_records(broker.bootstrap, topics.input, stop_others(tasks, 61, base))
        await wait_for(
            lambda: all(task_state(endpoint, t)["status"] == "STOPPED" for t in tasks), 30, "STOPPED"
        )
        await wait_for(lambda: worker.pending_work() == 0, 30, "resolved")
    assert_nothing_wrong(endpoint)
    for task in tasks:
        assert task_state(endpoint, task)["containers"] == dict.fromkeys(NAMES, "STOPPED")


async def test_describe_denied_falls_back_with_its_settle_time(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """The role lacks ecs:Describe*: the worker falls back to what it sees. A task first seen at
    its essential container's exit is not reported STOPPED from that partial view; once the task
    has been quiet for settle_ms it is, from the containers seen, and the fallback is counted."""
    tasks = await started(endpoint, APP_SIDECARS, 3)
    base = time.time_ns()
    ends = await send_records(broker.bootstrap, topics.input, lifecycle_start(tasks, base))
    await commit_group_at(broker, topics, ends)
    endpoint.set_faults(Faults(describe_deny_rate=1.0))
    settings = worker_settings(broker, endpoint, topics, linger_ms=100, settle_ms=2_500)
    async with running(Worker(settings)) as worker:
        exits = [(t.arn, t.event("app", "die", 60, exit_code=2, base_ns=base)) for t in tasks]
        await send_records(broker.bootstrap, topics.input, exits)
        await asyncio.sleep(1.5)
        assert all(task_state(endpoint, t)["calls"] == 0 for t in tasks), "STOPPED from a partial view"
        await send_records(broker.bootstrap, topics.input, stop_others(tasks, 61, base))
        await wait_for(
            lambda: all(task_state(endpoint, t)["status"] == "STOPPED" for t in tasks), 30, "STOPPED"
        )
        totals = worker.metrics
    assert_nothing_wrong(endpoint)
    fallbacks = totals.registry.get_sample_value(
        "ecs_state_worker_knowledge_fallbacks_total",
        {"operation": "DescribeTaskDefinition", "code": "AccessDeniedException"},
    )
    assert fallbacks == 1  # one revision: asked once
    for task in tasks:
        assert task_state(endpoint, task)["containers"] == dict.fromkeys(NAMES, "STOPPED")


async def commit_group_at(broker: Broker, topics: Topics, ends: dict[int, int]) -> None:
    """Commit the group's offsets at ``ends``, as a previous deployment would have left them."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=topics.group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topics.input, p) for p in ends])
        await consumer.commit({TopicPartition(topics.input, p): o for p, o in ends.items()})
    finally:
        await consumer.stop()
