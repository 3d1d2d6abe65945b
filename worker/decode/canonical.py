"""The canonical format: ``schemas.events.TaskEvent`` as JSON (what enriching shippers produce).

An exit code outside int32 (the schema takes any int64, as the ECS agent reads one) is wrapped to
the int32 ECS takes (``worker.decode.exit_codes``) before the event goes on.
"""

from __future__ import annotations

import msgspec

from schemas.bounds import INT32_MAX, INT32_MIN
from schemas.events import TaskEvent
from worker.decode.exit_codes import wrap_int32
from worker.decode.format_contract import JsonFormat
from worker.decode.result import DecodeResult

__all__ = ["CanonicalFormat"]


class CanonicalFormat(JsonFormat[TaskEvent]):
    """``TaskEvent`` forbids unknown members, so a decoded document can be no other format."""

    document = TaskEvent

    def apply(self, doc: TaskEvent, index: int, into: DecodeResult) -> None:
        for container in doc.containers:
            code = container.exitCode
            if code is not None and not INT32_MIN <= code <= INT32_MAX:
                doc = _wrapped(doc)
                break
        into.events.append(doc)


def _wrapped(event: TaskEvent) -> TaskEvent:
    """``event`` with every container's exit code wrapped to int32."""
    containers = tuple(
        c if c.exitCode is None else msgspec.structs.replace(c, exitCode=wrap_int32(c.exitCode))
        for c in event.containers
    )
    return msgspec.structs.replace(event, containers=containers)
