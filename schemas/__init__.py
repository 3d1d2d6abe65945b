"""msgspec Structs shared by the worker, its tools and the consumers of its topics.

Public records: ``TaskEvent`` (input), ``Outcome`` (outcome topic), ``DeadLetter`` (dead-letter
headers), and the ``SubmitTaskStateChangeRequest`` they embed. ``python -m schemas`` writes their
JSON Schema files to ``schemas/json/``.
"""

from __future__ import annotations

from schemas.ecs import (
    AttachmentStateChange,
    ContainerStateChange,
    ManagedAgentStateChange,
    NetworkBinding,
    SubmitTaskStateChangeRequest,
    SubmitTaskStateChangeResponse,
)
from schemas.events import AttachmentChange, ContainerChange, ManagedAgentChange, TaskEvent
from schemas.records import DeadLetter, Outcome, SourceRecords

__all__ = [
    "AttachmentChange",
    "AttachmentStateChange",
    "ContainerChange",
    "ContainerStateChange",
    "DeadLetter",
    "ManagedAgentChange",
    "ManagedAgentStateChange",
    "NetworkBinding",
    "Outcome",
    "SourceRecords",
    "SubmitTaskStateChangeRequest",
    "SubmitTaskStateChangeResponse",
    "TaskEvent",
]
