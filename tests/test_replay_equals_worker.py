"""``replay`` shows what the worker would do: the same records, through the worker (the real broker
and the local ECS endpoint) and through ``replay``, give the same requests, task by task."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import msgspec

from devkit.brokers import Broker
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.topics import read_all
from schemas.ecs import SubmitTaskStateChangeRequest
from schemas.records import Outcome
from tests.conftest import Topics, worker_settings
from tests.ecs_tasks import DockerTask, ecs_tasks, send_records
from tests.support import running, wait_for
from worker.pipeline import Worker
from worker.replay import replay
from worker.task_definition import TaskDefinition, definition_from_botocore

CONTAINERS: list[dict[str, Any]] = [
    {"name": "init", "essential": False},
    {"name": "app", "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
    {"name": "sidecar", "essential": False},
]
# (seconds after the start, container, action, exit code): steps a second apart, far from the
# linger (200 ms), so that wall-clock and event-clock coalescing cut the same requests.
SCHEDULE = [
    (0, "init", "create", None),
    (0, "sidecar", "create", None),
    (0, "init", "start", None),
    (0, "sidecar", "start", None),
    (1, "init", "die", 0),
    (1, "app", "create", None),
    (2, "app", "start", None),
    (3, "app", "die", 1),
    (3.5, "sidecar", "kill", None),
    (3.5, "sidecar", "die", 143),
]


async def launch(endpoint: LocalEcsEndpoint, count: int) -> tuple[list[DockerTask], TaskDefinition]:
    async with ecs_tasks(endpoint.url) as ecs:
        arn = await ecs.register("replayed", CONTAINERS)
        tasks = await ecs.run("prod", arn, count=count)
        answer = await ecs.describe_definition(arn)
    return tasks, definition_from_botocore(answer)


async def play(broker: Broker, topic: str, tasks: list[DockerTask]) -> list[bytes]:
    """Send the schedule in real time, each event stamped when it is sent; the records sent."""
    sent: list[bytes] = []
    started = time.monotonic()
    for at_s in sorted({step[0] for step in SCHEDULE}):
        await asyncio.sleep(max(0.0, started + at_s - time.monotonic()))
        now = time.time_ns()
        batch = [
            (task.arn, task.event(container, action, 0, exit_code=code, base_ns=now))
            for task in tasks
            for at, container, action, code in SCHEDULE
            if at == at_s
        ]
        await send_records(broker.bootstrap, topic, batch)
        sent.extend(value for _, value in batch)
    return sent


def by_task(requests: list[SubmitTaskStateChangeRequest]) -> dict[str, list[SubmitTaskStateChangeRequest]]:
    grouped: dict[str, list[SubmitTaskStateChangeRequest]] = defaultdict(list)
    for request in requests:
        grouped[request.task or ""].append(request)
    return dict(grouped)


async def test_replay_gives_the_requests_the_worker_sends(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    tasks, definition = await launch(endpoint, 4)
    settings = worker_settings(broker, endpoint, topics, linger_ms=200, stop_linger_ms=1_500)
    async with running(Worker(settings)) as worker:
        records = await play(broker, topics.input, tasks)
        await wait_for(
            lambda: all(endpoint.state()["tasks"][t.arn]["status"] == "STOPPED" for t in tasks), 30, "STOPPED"
        )
        await wait_for(lambda: worker.pending_work() == 0, 30, "resolved")
    outcomes = [
        msgspec.json.decode(r.value, type=Outcome) for r in await read_all(broker.bootstrap, topics.outcome)
    ]
    assert {o.result for o in outcomes} == {"acknowledged"}
    sent = by_task([o.request for o in outcomes])
    replayed = by_task(replay(records, settings, [definition]).submissions)
    assert replayed == sent
    assert all([r.status for r in requests] == ["RUNNING", "STOPPED"] for requests in sent.values())
