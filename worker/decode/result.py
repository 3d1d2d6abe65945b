"""What decoding one Kafka record produced: events, ignored items and bad items, each with a reason."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.events import TaskEvent

__all__ = ["BadItem", "DecodeResult"]


@dataclass(frozen=True, slots=True)
class BadItem:
    """One part of a record that could not be decoded or validated: it goes to the dead-letter topic."""

    reason: str
    error_class: str
    index: int = 0


@dataclass(slots=True)
class DecodeResult:
    events: list[TaskEvent] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    """One reason per ignored item (a non-container event, an unlabelled container...)."""
    bad: list[BadItem] = field(default_factory=list)
    format: str = "unknown"
