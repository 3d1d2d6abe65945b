"""The ``SubmitTaskStateChange`` request and response, mirroring botocore's ECS service model.

Member names, types, enums and required members follow ``ecs-2014-11-13`` exactly (a test compares
these structs with botocore's model so drift is caught). Optional members default to ``None`` and
are omitted from the wire form, as botocore omits unset parameters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

__all__ = [
    "AttachmentStateChange",
    "ContainerStateChange",
    "ManagedAgentStateChange",
    "NetworkBinding",
    "SubmitTaskStateChangeRequest",
    "SubmitTaskStateChangeResponse",
    "TransportProtocol",
]

TransportProtocol = Literal["tcp", "udp"]
ManagedAgentName = Literal["ExecuteCommandAgent"]


class _Shape(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True, gc=False
):
    """Base of every request shape: immutable, hashable, deterministic on the wire."""


class NetworkBinding(_Shape, frozen=True):
    """A container's port mapping."""

    bindIP: str | None = None
    containerPort: int | None = None
    hostPort: int | None = None
    protocol: TransportProtocol | None = None
    containerPortRange: str | None = None
    hostPortRange: str | None = None


class ContainerStateChange(_Shape, frozen=True):
    """One container's state, as the request reports it."""

    containerName: str | None = None
    imageDigest: str | None = None
    runtimeId: str | None = None
    exitCode: int | None = None
    networkBindings: tuple[NetworkBinding, ...] | None = None
    reason: str | None = None
    status: str | None = None


class AttachmentStateChange(_Shape, frozen=True):
    """One attachment's state."""

    attachmentArn: str
    status: str


class ManagedAgentStateChange(_Shape, frozen=True):
    """One managed agent's state."""

    containerName: str
    managedAgentName: ManagedAgentName
    status: str
    reason: str | None = None


class SubmitTaskStateChangeRequest(_Shape, frozen=True):
    """The parameters of one ``SubmitTaskStateChange`` call."""

    cluster: str | None = None
    task: str | None = None
    status: str | None = None
    reason: str | None = None
    containers: tuple[ContainerStateChange, ...] | None = None
    attachments: tuple[AttachmentStateChange, ...] | None = None
    managedAgents: tuple[ManagedAgentStateChange, ...] | None = None
    pullStartedAt: datetime | None = None
    pullStoppedAt: datetime | None = None
    executionStoppedAt: datetime | None = None


class SubmitTaskStateChangeResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What ECS answers."""

    acknowledgment: str | None = None
