"""The canonical format: ``schemas.events.TaskEvent`` as JSON (what enriching shippers produce)."""

from __future__ import annotations

import msgspec

from schemas.events import TaskEvent
from worker.decode.formats import JsonFormat
from worker.decode.result import DecodeResult

__all__ = ["CanonicalFormat"]

_decoder = msgspec.json.Decoder(TaskEvent)


class CanonicalFormat(JsonFormat[TaskEvent]):
    """``TaskEvent`` forbids unknown members, so a decoded document can be no other format."""

    name = "canonical"
    label = "canonical"

    def __init__(self) -> None:
        super().__init__(_decoder)

    def apply(self, doc: TaskEvent, index: int, into: DecodeResult) -> None:
        into.events.append(doc)
