"""What decoding one Kafka record produced: events, ignored items and bad items, each with a reason."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from schemas.events import TaskEvent

__all__ = ["BadItem", "DecodeResult"]


@dataclass(frozen=True, slots=True)
class BadItem:
    """One part of a record that could not be decoded or validated: it goes to the dead-letter topic."""

    reason: str
    error_class: str
    index: int = 0


class DecodeResult(msgspec.Struct, gc=False):
    """A msgspec Struct rather than a dataclass: one is made per record, and this is cheaper."""

    events: list[TaskEvent] = msgspec.field(default_factory=list)
    ignored: list[str] = msgspec.field(default_factory=list)
    """One reason per ignored item (a non-container event, an unlabelled container...)."""
    bad: list[BadItem] = msgspec.field(default_factory=list)
    format: str = "unknown"
