"""Task records: what ECS knows of one task and its containers, and how ECS shows it.

A task comes to be in one of two ways. ``RunTask`` creates it from a task definition: lastStatus
``PENDING``, desiredStatus ``RUNNING``, one container per container definition, each ``PENDING``
until reported. A first ``SubmitTaskStateChange`` for a task never run creates it with no
definition; its containers are those reported so far. Reports then update it in place (see
:mod:`devkit.ecs.reports`).

``render_task`` gives the ``Task`` shape of DescribeTasks and RunTask answers (timestamps as
datetimes); ``task_snapshot`` the task's entry in ``GET /_state``.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from devkit.ecs.arns import Scope, cluster_name, resource_id
from devkit.ecs.taskdefs import TaskDefinition

__all__ = ["HISTORY_LIMIT", "Container", "Task", "new_task", "render_task", "task_snapshot"]

HISTORY_LIMIT = 50


@dataclass(slots=True)
class Container:
    """One container as ECS knows it: ``status`` is the last status reported (None: never)."""

    name: str
    image: str | None = None
    arn: str | None = None
    status: str | None = None
    ran: bool = False
    """Reported RUNNING or STOPPED in some report."""
    exit_code: int | None = None
    reason: str | None = None
    runtime_id: str | None = None
    image_digest: str | None = None
    network_bindings: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class Task:
    """One task. ``cluster`` and ``task`` are as first given (``task`` is the ARN for RunTask)."""

    cluster: str
    task: str
    definition: TaskDefinition | None = None
    arn: str | None = None
    cluster_arn: str | None = None
    status: str | None = None
    desired_status: str = "RUNNING"
    containers: dict[str, Container] = field(default_factory=dict)
    calls: int = 0
    version: int = 1
    history: deque[str] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))
    stopped: bool = False
    """Reported STOPPED in some report (sticky, even if a later report regresses)."""
    since_stopped: set[bytes] = field(default_factory=set)
    """Fingerprints of the reports accepted since the task was first reported STOPPED."""
    stopped_reason: str | None = None
    times: dict[str, datetime] = field(default_factory=dict)
    """createdAt, startedAt, stoppedAt, pullStartedAt, pullStoppedAt, executionStoppedAt."""
    extra: dict[str, Any] = field(default_factory=dict)
    """RunTask members shown as given: group, startedBy, launchType, overrides, tags..."""
    attachments: dict[str, str] = field(default_factory=dict)
    managed_agents: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """container name -> agent name -> ``ManagedAgent`` answer."""


def new_task(
    definition: TaskDefinition, body: dict[str, Any], scope: Scope, rng: random.Random, now: datetime
) -> Task:
    """A PENDING task of ``definition`` for a validated ``RunTask`` body, ids drawn from ``rng``."""
    cluster = cluster_name(body.get("cluster"))
    task_id = f"{rng.getrandbits(128):032x}"
    arn = scope.task_arn(cluster, task_id)
    containers = {
        spec.name: Container(
            name=spec.name,
            image=spec.image,
            arn=scope.container_arn(cluster, task_id, str(uuid.UUID(int=rng.getrandbits(128), version=4))),
        )
        for spec in definition.containers
    }
    extra: dict[str, Any] = {
        "group": body.get("group", f"family:{definition.family}"),
        "launchType": body.get("launchType", "EC2"),
    }
    for key in ("startedBy", "overrides", "tags", "enableExecuteCommand", "platformVersion"):
        if key in body:
            extra[key] = body[key]
    for key in ("cpu", "memory"):
        if key in definition.payload:
            extra[key] = definition.payload[key]
    return Task(
        cluster=cluster,
        task=arn,
        definition=definition,
        arn=arn,
        cluster_arn=scope.cluster_arn(cluster),
        status="PENDING",
        containers=containers,
        times={"createdAt": now},
        extra=extra,
    )


def render_task(task: Task, scope: Scope, *, tags: bool = False) -> dict[str, Any]:
    """The ``Task`` answer shape; ARNs not yet known are built in ``scope``."""
    arn = task.arn or (task.task if task.task.startswith("arn:") else None)
    arn = arn or scope.task_arn(task.cluster, resource_id(task.task))
    out: dict[str, Any] = {
        "taskArn": arn,
        "clusterArn": task.cluster_arn or scope.cluster_arn(task.cluster),
        "lastStatus": task.status or "PENDING",
        "desiredStatus": task.desired_status,
        "containers": [
            _render_container(c, arn, task.managed_agents.get(c.name)) for c in task.containers.values()
        ],
        "version": task.version,
        "attachments": [{"id": resource_id(a), "status": status} for a, status in task.attachments.items()],
    }
    if task.definition is not None:
        out["taskDefinitionArn"] = task.definition.arn
    if task.stopped_reason is not None:
        out["stoppedReason"] = task.stopped_reason
    out.update(task.times)
    out.update((k, v) for k, v in task.extra.items() if k != "tags")
    if tags:
        out["tags"] = task.extra.get("tags", [])
    return out


def _render_container(
    container: Container, task_arn: str, agents: dict[str, dict[str, Any]] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "taskArn": task_arn,
        "name": container.name,
        "lastStatus": container.status or "PENDING",
        "networkBindings": container.network_bindings,
    }
    optional = {
        "containerArn": container.arn,
        "image": container.image,
        "imageDigest": container.image_digest,
        "runtimeId": container.runtime_id,
        "exitCode": container.exit_code,
        "reason": container.reason,
    }
    out.update((k, v) for k, v in optional.items() if v is not None)
    if agents:
        out["managedAgents"] = [{"name": name, **agent} for name, agent in agents.items()]
    return out


def task_snapshot(task: Task) -> dict[str, Any]:
    """The task's ``/_state`` entry.

    ``{"cluster", "status", "containers": {name: status}, "calls", "history", "desiredStatus",
    "taskDefinitionArn"}``: ``status`` is the last status reported (``PENDING`` from RunTask until
    then; None if no report carried one), ``containers`` the last status of each container
    reported with one, and each container of the definition never reported as ``PENDING``,
    ``calls`` the SubmitTaskStateChange calls, ``history`` the last 50 task statuses reported.
    """
    containers = {
        name: c.status or "PENDING"
        for name, c in task.containers.items()
        if c.status is not None or task.definition is not None
    }
    return {
        "cluster": task.cluster,
        "status": task.status,
        "containers": containers,
        "calls": task.calls,
        "history": list(task.history),
        "desiredStatus": task.desired_status,
        "taskDefinitionArn": task.definition.arn if task.definition is not None else None,
    }
