"""A fleet's scheduled events (``Step``) and their Kafka record values. Pure.

``docker``: Docker 29 ``/events`` documents with the ECS agent's labels (cluster, task ARN,
container name, task definition family and revision), the container's image, ``exitCode`` on
``die``, ``signal`` on ``kill``; the name follows the agent's ``ecs-<family>-<revision>-<container>-<id>``.

``canonical``: ``schemas.events.TaskEvent`` with ``taskDefinitionArn``: ``create`` -> PENDING,
``start`` -> RUNNING, ``die`` -> STOPPED with its exit code, ``kill`` -> ``stopRequested``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

from schemas.events import ContainerChange, TaskEvent

__all__ = ["Format", "Step", "render_canonical", "render_docker"]

Format = Literal["canonical", "docker"]
_encoder = msgspec.json.Encoder()
_S = 1_000_000_000
_STATUS = {"create": "PENDING", "start": "RUNNING", "die": "STOPPED", "stop": "STOPPED", "destroy": "STOPPED"}


@dataclass(frozen=True, slots=True)
class Step:
    """One runtime event: ``at_s`` schedule seconds after the fleet's start."""

    at_s: float
    cluster: str
    task: str
    """The task ARN (planned until the fleet is launched)."""
    container: str
    runtime_id: str
    action: str
    """create | start | health_status | kill | oom | die | stop | restart | destroy"""
    exit_code: int | None = None
    definition: str = ""
    """The task definition ARN."""
    image: str = "public.ecr.aws/docker/library/busybox:1.36"
    signal: int | None = None
    restart: bool = False
    """Part of a restart-policy restart (its ``die`` and the ``start`` after it)."""


def render_canonical(step: Step, observed_at_ns: int) -> bytes:
    """The canonical event of ``step``; Docker-only actions (health, oom, stop...) are not steps
    of a canonical fleet."""
    container = ContainerChange(
        containerName=step.container,
        runtimeId=step.runtime_id,
        status=_STATUS.get(step.action),  # type: ignore[arg-type]  # ContainerStatus literals
        exitCode=step.exit_code if step.action == "die" else None,
        stopRequested=step.action == "kill",
    )
    event = TaskEvent(
        cluster=step.cluster,
        task=step.task,
        observedAt=observed_at_ns,
        containers=(container,),
        taskDefinitionArn=step.definition or None,
    )
    return _encoder.encode(event)


def render_docker(step: Step, observed_at_ns: int) -> bytes:
    """The Docker ``/events`` document of ``step``."""
    family, _, revision = step.definition.rpartition("/")[2].partition(":")
    attributes = {
        "com.amazonaws.ecs.cluster": step.cluster,
        "com.amazonaws.ecs.container-name": step.container,
        "com.amazonaws.ecs.task-arn": step.task,
        "com.amazonaws.ecs.task-definition-family": family,
        "com.amazonaws.ecs.task-definition-version": revision,
        "image": step.image,
        "name": f"ecs-{family}-{revision}-{step.container}-{step.runtime_id[:20]}",
    }
    action = step.action
    if action == "die":
        attributes["exitCode"] = str(0 if step.exit_code is None else step.exit_code)
    elif action == "kill":
        attributes["signal"] = str(step.signal or 15)
    elif action == "health_status":
        action = "health_status: healthy"
    document = {
        "Type": "container",
        "Action": action,
        "Actor": {"ID": step.runtime_id, "Attributes": attributes},
        "scope": "local",
        "time": observed_at_ns // _S,
        "timeNano": observed_at_ns,
    }
    return _encoder.encode(document)
