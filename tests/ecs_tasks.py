"""Tasks started through the local ECS endpoint, and the Docker events their containers make.

``EcsTasks`` registers definitions and runs tasks with a real aiobotocore client over a socket, as
a scheduler would; ``DockerTask`` renders one task's container events as Docker 29 ``/events``
documents with the ECS agent's labels (task ARN, cluster, container name, definition family and
revision), at chosen observation times.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiobotocore.session import get_session
from aiokafka import AIOKafkaProducer

__all__ = ["DockerTask", "EcsTasks", "ecs_tasks", "send_records"]

_S = 1_000_000_000


@dataclass
class DockerTask:
    cluster: str
    arn: str
    definition_arn: str
    runtime_ids: dict[str, str] = field(default_factory=dict)

    def event(
        self, container: str, action: str, at_s: float, *, exit_code: int | None = None, base_ns: int = 0
    ) -> bytes:
        """One Docker event: ``action`` is create, start, kill, die, stop, destroy or ``health_status:
        healthy``; observed ``at_s`` seconds after ``base_ns``."""
        family, revision = self.definition_arn.rsplit("/", 1)[-1].split(":")
        runtime_id = self.runtime_ids.setdefault(container, f"{abs(hash((self.arn, container))):064x}"[:64])
        attributes = {
            "com.amazonaws.ecs.cluster": self.cluster,
            "com.amazonaws.ecs.container-name": container,
            "com.amazonaws.ecs.task-arn": self.arn,
            "com.amazonaws.ecs.task-definition-family": family,
            "com.amazonaws.ecs.task-definition-version": revision,
            "image": "public.ecr.aws/docker/library/busybox:latest",
            "name": f"ecs-{family}-{revision}-{container}-{runtime_id[:8]}",
        }
        if action == "die":
            attributes["exitCode"] = str(0 if exit_code is None else exit_code)
        elif action == "kill":
            attributes["signal"] = "15"
        at_ns = base_ns + int(at_s * _S)
        document = {
            "Type": "container",
            "Action": action,
            "Actor": {"ID": runtime_id, "Attributes": attributes},
            "scope": "local",
            "time": at_ns // _S,
            "timeNano": at_ns,
        }
        return msgspec.json.encode(document)


class EcsTasks:
    """RegisterTaskDefinition and RunTask against the local endpoint."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def register(self, family: str, containers: Sequence[dict[str, Any]]) -> str:
        definitions = [
            {"image": "public.ecr.aws/docker/library/busybox:latest", "memory": 64, **c} for c in containers
        ]
        answer = await self._client.register_task_definition(family=family, containerDefinitions=definitions)
        arn: str = answer["taskDefinition"]["taskDefinitionArn"]
        return arn

    async def describe_definition(self, arn: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._client.describe_task_definition(taskDefinition=arn)
        return answer

    async def describe(self, cluster: str, tasks: Sequence[DockerTask]) -> dict[str, dict[str, Any]]:
        """DescribeTasks: each task's ``Task`` answer by ARN."""
        answer = await self._client.describe_tasks(cluster=cluster, tasks=[t.arn for t in tasks])
        return {task["taskArn"]: task for task in answer["tasks"]}

    async def run(self, cluster: str, definition_arn: str, count: int = 1) -> list[DockerTask]:
        answer = await self._client.run_task(cluster=cluster, taskDefinition=definition_arn, count=count)
        assert not answer.get("failures"), answer["failures"]
        return [DockerTask(cluster, task["taskArn"], definition_arn) for task in answer["tasks"]]


@asynccontextmanager
async def ecs_tasks(endpoint_url: str) -> AsyncIterator[EcsTasks]:
    async with get_session().create_client(
        "ecs", region_name="us-east-1", endpoint_url=endpoint_url
    ) as client:
        yield EcsTasks(client)


async def send_records(bootstrap: str, topic: str, records: Sequence[tuple[str, bytes]]) -> dict[int, int]:
    """Send (task ARN, value) records keyed by task ARN, in order; each partition's end offset."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        ends: dict[int, int] = {}
        for key, value in records:
            meta = await producer.send_and_wait(topic, value, key=key.encode())
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        return ends
    finally:
        await producer.stop()
