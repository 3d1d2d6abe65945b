"""A task's state as a full, deterministic ``SubmitTaskStateChange`` request, and its fingerprint.

Containers, attachments and managed agents are sorted, so equal states give byte-equal requests
and equal fingerprints. Containers still PENDING are not reported, as the ECS agent reports a
container only once it is RUNNING or STOPPED.
"""

from __future__ import annotations

import hashlib

import msgspec

from schemas.ecs import (
    AttachmentStateChange,
    ContainerStateChange,
    ManagedAgentStateChange,
    SubmitTaskStateChangeRequest,
)
from worker.ecs_rules import MAX_ID_BYTES, MAX_REASON_BYTES, truncate_utf8
from worker.task_state import PENDING, STATUS_NAMES, TaskState

__all__ = ["build_request", "fingerprint"]

_encoder = msgspec.json.Encoder()


def _cut(text: str | None, limit: int) -> str | None:
    """``truncate_utf8``, with ASCII text (ids, most reasons) cut without encoding it."""
    if text is None or (text.isascii() and len(text) <= limit):
        return text
    return truncate_utf8(text, limit)


def build_request(state: TaskState) -> SubmitTaskStateChangeRequest:
    cluster, task = state.key
    containers = tuple(
        ContainerStateChange(
            containerName=name,
            imageDigest=_cut(c.image_digest, MAX_ID_BYTES),
            runtimeId=_cut(c.runtime_id, MAX_ID_BYTES),
            exitCode=c.exit_code,
            networkBindings=c.network_bindings or None,
            reason=_cut(c.reason, MAX_REASON_BYTES),
            status=STATUS_NAMES[c.rank],
        )
        for name, c in sorted(state.containers.items())
        if c.rank > PENDING
    )
    attachments = tuple(
        AttachmentStateChange(attachmentArn=arn, status=status)
        for arn, (_, status) in sorted((state.attachments or {}).items())
    )
    agents = tuple(
        ManagedAgentStateChange(
            containerName=container,
            managedAgentName=name,  # type: ignore[arg-type]  # validated by the event schema
            status=agent.status,
            reason=truncate_utf8(agent.reason, MAX_REASON_BYTES),
        )
        for (container, name), agent in sorted((state.managed_agents or {}).items())
    )
    return SubmitTaskStateChangeRequest(
        cluster=cluster,
        task=task,
        status=STATUS_NAMES[state.rank],
        reason=truncate_utf8(state.reason, MAX_REASON_BYTES),
        containers=containers or None,
        attachments=attachments or None,
        managedAgents=agents or None,
        pullStartedAt=state.pull_started_at,
        pullStoppedAt=state.pull_stopped_at,
        executionStoppedAt=state.execution_stopped_at,
    )


def fingerprint(request: SubmitTaskStateChangeRequest) -> str:
    """A short stable digest of the request's wire form: equal requests, equal fingerprints."""
    return hashlib.blake2b(_encoder.encode(request), digest_size=12).hexdigest()
