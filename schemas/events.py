"""The canonical runtime event: one observed change for one ECS task.

An event reads as a fragment of a ``SubmitTaskStateChange`` request: the same member names and
types, plus the observation time. This is the format enriching shippers produce; the decoders in
``worker.decode`` map Docker, Podman, containerd and shipper formats onto it.

Statuses accept the ECS API values and the runtime-level values the ECS agent knows (``CREATED``,
``PULLED``...); ``worker.coalesce`` ranks them PENDING < RUNNING < STOPPED.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from schemas.bounds import (
    INT64_MAX,
    INT64_MIN,
    MAX_ITEMS,
    MAX_NAME_LENGTH,
    MAX_NANOTIME,
    MAX_TEXT_LENGTH,
)
from schemas.ecs import ManagedAgentName, NetworkBinding

__all__ = [
    "AttachmentChange",
    "ContainerChange",
    "ContainerStatus",
    "ManagedAgentChange",
    "TaskEvent",
    "TaskStatus",
]

ContainerStatus = Literal[
    "NONE",
    "PENDING",
    "MANIFEST_PULLED",
    "PULLED",
    "CREATED",
    "RESOURCES_PROVISIONED",
    "RUNNING",
    "STOPPED",
    "ZOMBIE",
]
TaskStatus = Literal[
    "NONE",
    "PROVISIONING",
    "PENDING",
    "MANIFEST_PULLED",
    "CREATED",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
]

# Generous structural bounds (schemas.bounds) so one hostile record cannot allocate without limit;
# the tighter limits are applied downstream: ECS's field rules by worker.ecs_rules, the
# configurable per-task limits by worker.coalesce (over_limits).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_LENGTH)]
NanoTime = Annotated[int, msgspec.Meta(ge=0, le=MAX_NANOTIME)]
ExitCode = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
"""An exit code as a runtime gives it (the ECS agent reads a Go ``int``); the worker reports it
wrapped to the int32 ECS takes, as the agent does: 3221225477 (0xC0000005) is -1073741819."""


class _Event(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True, gc=False
):
    pass


class ContainerChange(_Event, frozen=True):
    """One container's change. Absent members mean "not observed", never "cleared". A ``reason``
    without a ``status`` (an OOM kill: Docker's ``oom``) is a fact of the container's end: it is
    reported with the container's STOPPED and causes no call by itself."""

    containerName: Name
    runtimeId: Text | None = None
    imageDigest: Text | None = None
    status: ContainerStatus | None = None
    exitCode: ExitCode | None = None
    reason: Text | None = None
    networkBindings: Annotated[tuple[NetworkBinding, ...], msgspec.Meta(max_length=MAX_ITEMS)] | None = None
    stopRequested: bool = False
    """A stop was asked of the container (Docker's ``kill`` before its ``die``): its exit is not a
    natural one, so a restart policy does not restart it (the agent restarts only containers that
    exit by themselves). Never reported to ECS."""


class AttachmentChange(_Event, frozen=True):
    """One attachment's (an ENI's) new status."""

    attachmentArn: Name
    status: Name


class ManagedAgentChange(_Event, frozen=True):
    """One managed agent's (ECS Exec's ``ExecuteCommandAgent``) new status: RUNNING once it runs in
    the container, STOPPED (with a reason) when it stopped. It stops with its container, as the
    ECS agent reports it, without an event of its own."""

    containerName: Name
    managedAgentName: ManagedAgentName
    status: Name
    reason: Text | None = None


class TaskEvent(_Event, frozen=True):
    """One observed change of one task, at ``observedAt`` nanoseconds since the Unix epoch."""

    cluster: Name
    task: Name
    observedAt: NanoTime
    status: TaskStatus | None = None
    reason: Text | None = None
    containers: Annotated[tuple[ContainerChange, ...], msgspec.Meta(max_length=MAX_ITEMS)] = ()
    attachments: Annotated[tuple[AttachmentChange, ...], msgspec.Meta(max_length=MAX_ITEMS)] = ()
    managedAgents: Annotated[tuple[ManagedAgentChange, ...], msgspec.Meta(max_length=MAX_ITEMS)] = ()
    pullStartedAt: datetime | None = None
    pullStoppedAt: datetime | None = None
    executionStoppedAt: datetime | None = None
    taskDefinitionArn: Name | None = None
    """The task's definition: its ARN, or ``family:revision`` (Docker's
    ``com.amazonaws.ecs.task-definition-family`` and ``-version`` labels) when the task's ARN gives
    no Region and account. ``DescribeTaskDefinition`` accepts either. Never reported to ECS."""
