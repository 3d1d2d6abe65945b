"""The canonical format: ``schemas.events.TaskEvent`` as JSON (what enriching shippers produce)."""

from __future__ import annotations

from schemas.events import TaskEvent
from worker.decode.format_contract import JsonFormat
from worker.decode.result import DecodeResult

__all__ = ["CanonicalFormat"]


class CanonicalFormat(JsonFormat[TaskEvent]):
    """``TaskEvent`` forbids unknown members, so a decoded document can be no other format."""

    document = TaskEvent

    def apply(self, doc: TaskEvent, index: int, into: DecodeResult) -> None:
        into.events.append(doc)
