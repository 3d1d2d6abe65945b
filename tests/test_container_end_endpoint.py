"""A container's end in any order and ECS Exec's managed agent, end to end: tasks run through the
local ECS endpoint (RegisterTaskDefinition, RunTask), their Docker events through the real broker
to a worker, and what ECS then shows read back with DescribeTasks."""

from __future__ import annotations

import time
from typing import Any

import pytest

from devkit.broker import EmbeddedBroker
from devkit.ecs_endpoint import LocalEcsEndpoint
from tests.conftest import Topics, worker_settings
from tests.ecs_tasks import DockerTask, ecs_tasks, send_records
from tests.support import flags, running, wait_for
from worker.agent_rules import MANAGED_AGENT_STOPPED_REASON
from worker.decode import reasons
from worker.decode.event_builder import OOM_REASON
from worker.decode.exec_agent import EXEC_AGENT_CREATED, EXEC_AGENT_STARTED_REASON
from worker.decode.reasons import reason_code
from worker.intake import LATE_EVENT
from worker.pipeline import Worker

pytestmark = pytest.mark.timeout(120)

AGENT_COMMAND = "/ecs-execute-command-0d3f9a53-8c1e-4f0e-9d62-6a0d1b7e2f41/amazon-ssm-agent"


async def started(endpoint: LocalEcsEndpoint, count: int) -> list[DockerTask]:
    async with ecs_tasks(endpoint.url) as ecs:
        arn = await ecs.register("web", [{"name": "app"}])
        return await ecs.run("prod", arn, count=count)


async def described(endpoint: LocalEcsEndpoint, tasks: list[DockerTask]) -> dict[str, dict[str, Any]]:
    async with ecs_tasks(endpoint.url) as ecs:
        return await ecs.describe("prod", tasks)


def status(endpoint: LocalEcsEndpoint, task: DockerTask) -> str | None:
    value: str | None = endpoint.state()["tasks"][task.arn]["status"]
    return value


def ignored(worker: Worker, reason: str) -> float:
    labels = {"reason": reason_code(reason)}
    value = worker.metrics.registry.get_sample_value("ecs_state_worker_ignored_total", labels)
    return value or 0.0


async def test_a_container_end_reaches_ecs_whole_whatever_the_order_of_its_events(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """Four single-container tasks end, two with their events in other orders than Docker's (kill,
    oom, die, stop), one in Docker's, one after an oom inside it while it ran (which causes no
    call): each STOPPED carries the exit code and the OOM reason, in two calls (RUNNING, STOPPED),
    with nothing late."""
    ends: dict[str, list[tuple[str, float, int | None]]] = {
        "stop, then die, then oom": [("stop", 10.3, None), ("die", 10.2, 137), ("oom", 10.1, None)],
        "oom, stop, kill, die": [
            ("oom", 10.1, None),
            ("stop", 10.3, None),
            ("kill", 10.0, None),
            ("die", 10.2, 137),
        ],
        "Docker's order": [("kill", 10.0, None), ("die", 10.2, 2), ("stop", 10.3, None)],
        "an earlier oom inside": [("die", 10.2, 1), ("stop", 10.3, None)],
    }
    expected = {
        "stop, then die, then oom": (137, OOM_REASON),
        "oom, stop, kill, die": (137, OOM_REASON),
        "Docker's order": (2, None),
        "an earlier oom inside": (1, OOM_REASON),
    }
    tasks = dict(zip(ends, await started(endpoint, len(ends)), strict=True))
    base = time.time_ns()
    async with running(Worker(worker_settings(broker, endpoint, topics, linger_ms=100))) as worker:
        begin = [
            (t.arn, t.event("app", a, s, base_ns=base))
            for t in tasks.values()
            for a, s in (("create", 0), ("start", 0.1))
        ]
        await send_records(broker.bootstrap, topics.input, begin)
        await wait_for(lambda: all(status(endpoint, t) == "RUNNING" for t in tasks.values()), 30, "RUNNING")
        inside = tasks["an earlier oom inside"]
        await send_records(
            broker.bootstrap, topics.input, [(inside.arn, inside.event("app", "oom", 5, base_ns=base))]
        )
        await wait_for(lambda: worker.pending_work() == 0, 30, "the oom resolved")
        assert endpoint.state()["tasks"][inside.arn]["calls"] == 1  # no call for it
        records = [
            (task.arn, task.event("app", action, at, exit_code=code, base_ns=base))
            for name, task in tasks.items()
            for action, at, code in ends[name]
        ]
        await send_records(broker.bootstrap, topics.input, records)
        await wait_for(lambda: all(status(endpoint, t) == "STOPPED" for t in tasks.values()), 30, "STOPPED")
        await wait_for(lambda: worker.pending_work() == 0, 30, "resolved")
        assert ignored(worker, LATE_EVENT) == 0
    assert not any(flags(endpoint).values())
    assert endpoint.state()["regressions"] == []
    shown = await described(endpoint, list(tasks.values()))
    for name, task in tasks.items():
        assert endpoint.state()["tasks"][task.arn]["history"] == ["RUNNING", "STOPPED"], name
        (container,) = shown[task.arn]["containers"]
        assert (container["lastStatus"], container.get("exitCode"), container.get("reason")) == (
            "STOPPED",
            *expected[name],
        ), name


async def test_ecs_exec_managed_agent_runs_and_stops_with_its_container(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """The agent starts the SSM agent in the container (exec_create, exec_start of its binary); a
    user runs their own docker exec. ECS shows ExecuteCommandAgent RUNNING with the container, and
    STOPPED with it; the user's exec is ignored and counted, and costs no call."""
    (task,) = await started(endpoint, 1)
    base = time.time_ns()
    life = [
        ("create", 0.0),
        ("start", 0.1),
        (f"exec_create: {AGENT_COMMAND}", 0.2),
        (f"exec_start: {AGENT_COMMAND} ", 0.25),
    ]
    user = [("exec_create: /bin/sh -c ps", 3.0), ("exec_start: /bin/sh -c ps", 3.01), ("exec_die", 3.2)]
    async with running(Worker(worker_settings(broker, endpoint, topics, linger_ms=300))) as worker:
        await send_records(
            broker.bootstrap,
            topics.input,
            [(task.arn, task.event("app", a, s, base_ns=base)) for a, s in life],
        )
        await wait_for(lambda: status(endpoint, task) == "RUNNING", 30, "RUNNING")
        (shown,) = (await described(endpoint, [task])).values()
        (agent,) = shown["containers"][0]["managedAgents"]
        assert (agent["name"], agent["lastStatus"], agent["reason"]) == (
            "ExecuteCommandAgent",
            "RUNNING",
            EXEC_AGENT_STARTED_REASON,
        )
        assert "lastStartedAt" in agent
        await send_records(
            broker.bootstrap,
            topics.input,
            [(task.arn, task.event("app", a, s, base_ns=base)) for a, s in user],
        )
        await wait_for(lambda: worker.pending_work() == 0, 30, "the user's exec resolved")
        assert endpoint.state()["tasks"][task.arn]["calls"] == 1
        stop = [
            (task.arn, task.event("app", a, s, exit_code=0, base_ns=base))
            for a, s in (("die", 9.0), ("stop", 9.1))
        ]
        await send_records(broker.bootstrap, topics.input, stop)
        await wait_for(lambda: status(endpoint, task) == "STOPPED", 30, "STOPPED")
        assert ignored(worker, reasons.DOCKER_EXEC) == 3
        assert ignored(worker, EXEC_AGENT_CREATED) == 1
    assert not any(flags(endpoint).values())
    assert endpoint.state()["tasks"][task.arn]["history"] == ["RUNNING", "STOPPED"]
    (shown,) = (await described(endpoint, [task])).values()
    (agent,) = shown["containers"][0]["managedAgents"]
    assert (agent["lastStatus"], agent["reason"]) == ("STOPPED", MANAGED_AGENT_STOPPED_REASON)
