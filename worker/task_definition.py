"""What ECS knows of a task: its definition, and its own view of the task's state. Pure.

``TaskDefinition`` is the part of a ``DescribeTaskDefinition`` answer that decides a task's status
as the ECS agent does: every container, whether it is ``essential``, its ``dependsOn`` conditions,
its ``restartPolicy`` and whether it has a health check. A revision never changes, so one fetch
per revision serves every task of it. ``EcsTaskView`` is the part of a ``DescribeTasks`` answer
the worker starts from when it meets a task it has not followed from its start: the task's and each
container's ``lastStatus`` as reported so far, with exit codes and reasons.

Both are read from botocore's parsed answers (dicts, timestamps as datetimes) with
``definition_from_botocore`` and ``view_from_botocore``; they raise ``ValueError`` for an answer
that does not have the shape of the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec

__all__ = [
    "DEFAULT_RESTART_ATTEMPT_PERIOD_S",
    "ContainerDefinition",
    "ContainerDependency",
    "DependencyCondition",
    "EcsContainerView",
    "EcsTaskView",
    "RestartPolicy",
    "TaskDefinition",
    "definition_from_botocore",
    "view_from_botocore",
]

DEFAULT_RESTART_ATTEMPT_PERIOD_S = 300
"""ECS's default ``restartAttemptPeriod`` (seconds) when a restart policy does not set one."""

DependencyCondition = Literal["START", "COMPLETE", "SUCCESS", "HEALTHY"]


class _Known(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    pass


class ContainerDependency(_Known, frozen=True):
    containerName: str
    condition: DependencyCondition


class RestartPolicy(_Known, frozen=True):
    """A container's restart policy (agent: ``restart.RestartPolicy``)."""

    enabled: bool = False
    ignoredExitCodes: tuple[int, ...] = ()
    restartAttemptPeriod: int = DEFAULT_RESTART_ATTEMPT_PERIOD_S
    """Seconds a container must have run (since its start or last restart) before an exit of it
    is restarted."""


class ContainerDefinition(_Known, frozen=True):
    name: str
    essential: bool = True
    """ECS's default: a container is essential unless the definition says otherwise."""
    dependsOn: tuple[ContainerDependency, ...] = ()
    restartPolicy: RestartPolicy | None = None
    healthCheck: bool = False


class TaskDefinition(_Known, frozen=True):
    """A task definition revision: ``arn`` and its containers by name, in definition order."""

    arn: str
    containers: dict[str, ContainerDefinition]

    def essential(self, name: str) -> bool:
        container = self.containers.get(name)
        return container is not None and container.essential

    def dependents(self, name: str) -> list[str]:
        """The containers whose ``dependsOn`` names ``name``."""
        return [c.name for c in self.containers.values() if any(d.containerName == name for d in c.dependsOn)]


class EcsContainerView(_Known, frozen=True):
    name: str
    lastStatus: str | None = None
    exitCode: int | None = None
    reason: str | None = None
    runtimeId: str | None = None


class EcsTaskView(_Known, frozen=True):
    """ECS's view of one task, as ``DescribeTasks`` returns it."""

    taskArn: str
    lastStatus: str | None = None
    desiredStatus: str | None = None
    taskDefinitionArn: str | None = None
    containers: tuple[EcsContainerView, ...] = ()
    executionStoppedAt: datetime | None = None
    """When the task's execution stopped, as ECS was told (the agent sets it once, at its first
    essential container's stop, and sends it with every report after: ``SetExecutionStoppedAt``
    in ``agent/api/task/task.go``)."""


class _WireDependency(msgspec.Struct, frozen=True):
    containerName: str
    condition: DependencyCondition


class _WireRestartPolicy(msgspec.Struct, frozen=True):
    enabled: bool
    ignoredExitCodes: list[int] = []
    restartAttemptPeriod: int | None = None


class _WireContainer(msgspec.Struct, frozen=True):
    name: str
    essential: bool | None = None
    dependsOn: list[_WireDependency] = []
    restartPolicy: _WireRestartPolicy | None = None
    healthCheck: dict[str, Any] | None = None


class _WireDefinition(msgspec.Struct, frozen=True):
    taskDefinitionArn: str
    containerDefinitions: list[_WireContainer]


def definition_from_botocore(answer: Mapping[str, Any]) -> TaskDefinition:
    """The ``TaskDefinition`` of a ``DescribeTaskDefinition`` answer (``{"taskDefinition": {...}}``
    or the inner ``taskDefinition`` itself, as ``aws ecs describe-task-definition`` prints it).
    Raises ``ValueError`` for another shape."""
    body = answer.get("taskDefinition", answer)
    try:
        wire = msgspec.convert(body, _WireDefinition, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not a task definition: {exc}") from exc
    return TaskDefinition(
        arn=wire.taskDefinitionArn, containers={c.name: _container(c) for c in wire.containerDefinitions}
    )


def _container(wire: _WireContainer) -> ContainerDefinition:
    policy = wire.restartPolicy
    return ContainerDefinition(
        name=wire.name,
        essential=True if wire.essential is None else wire.essential,
        dependsOn=tuple(
            ContainerDependency(containerName=d.containerName, condition=d.condition) for d in wire.dependsOn
        ),
        restartPolicy=None
        if policy is None
        else RestartPolicy(
            enabled=policy.enabled,
            ignoredExitCodes=tuple(policy.ignoredExitCodes),
            restartAttemptPeriod=policy.restartAttemptPeriod or DEFAULT_RESTART_ATTEMPT_PERIOD_S,
        ),
        healthCheck=wire.healthCheck is not None,
    )


def view_from_botocore(task: Mapping[str, Any]) -> EcsTaskView:
    """The ``EcsTaskView`` of one member of a ``DescribeTasks`` answer's ``tasks``. Raises
    ``ValueError`` for another shape."""
    try:
        return msgspec.convert(
            {
                "taskArn": task.get("taskArn"),
                "lastStatus": task.get("lastStatus"),
                "desiredStatus": task.get("desiredStatus"),
                "taskDefinitionArn": task.get("taskDefinitionArn"),
                "executionStoppedAt": task.get("executionStoppedAt"),
                "containers": [
                    {k: c.get(k) for k in ("name", "lastStatus", "exitCode", "reason", "runtimeId")}
                    for c in task.get("containers") or ()
                ],
            },
            EcsTaskView,
            strict=False,
        )
    except msgspec.ValidationError as exc:
        raise ValueError(f"not a DescribeTasks task: {exc}") from exc
