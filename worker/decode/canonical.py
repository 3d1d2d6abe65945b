"""The canonical format: ``schemas.events.TaskEvent`` as JSON (what enriching shippers produce).

An exit code outside int32 (the schema takes any int64, as the ECS agent reads one) is wrapped to
the int32 ECS takes (``worker.decode.exit_codes``). The agent's internal containers and tasks are
never reported (``worker.decode.labels.internal_reason``): an event of an internal task is
ignored, internal containers are dropped from an event, and an event left with nothing to say is
ignored.
"""

from __future__ import annotations

import msgspec

from schemas.bounds import INT32_MAX, INT32_MIN
from schemas.events import TaskEvent
from worker.decode import reasons
from worker.decode.exit_codes import wrap_int32
from worker.decode.format_contract import JsonFormat
from worker.decode.labels import INTERNAL_CONTAINER_PREFIX, is_internal_task
from worker.decode.result import DecodeResult

__all__ = ["CanonicalFormat"]


class CanonicalFormat(JsonFormat[TaskEvent]):
    """``TaskEvent`` forbids unknown members, so a decoded document can be no other format."""

    document = TaskEvent

    def apply(self, doc: TaskEvent, index: int, into: DecodeResult) -> None:
        if is_internal_task(doc.task):
            into.ignored.append(reasons.ECS_INTERNAL_TASK)
            return
        if any(c.containerName.startswith(INTERNAL_CONTAINER_PREFIX) for c in doc.containers):
            kept = _without_internal_containers(doc)
            if kept is None:
                into.ignored.append(reasons.ECS_INTERNAL_CONTAINER)
                return
            doc = kept
        into.events.append(_wrapped(doc))


def _without_internal_containers(event: TaskEvent) -> TaskEvent | None:
    """``event`` without its internal containers; None when nothing else is left in it."""
    kept = tuple(c for c in event.containers if not c.containerName.startswith(INTERNAL_CONTAINER_PREFIX))
    if not kept and event.status is None and not event.attachments and not event.managedAgents:
        return None
    return msgspec.structs.replace(event, containers=kept)


def _wrapped(event: TaskEvent) -> TaskEvent:
    """``event`` with every container's exit code wrapped to int32 (itself when none needs it)."""
    if all(c.exitCode is None or INT32_MIN <= c.exitCode <= INT32_MAX for c in event.containers):
        return event
    containers = tuple(
        c if c.exitCode is None else msgspec.structs.replace(c, exitCode=wrap_int32(c.exitCode))
        for c in event.containers
    )
    return msgspec.structs.replace(event, containers=containers)
