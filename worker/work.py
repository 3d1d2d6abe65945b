"""The units of work the stages hand each other, in one place.

``SourceRef`` names the Kafka record an event came from, with the assignment epoch under which it
was read; ``Submission`` is one task's state change on its way to ECS, with the records it answers
for; ``SubmitResult`` is how that submission ended. Plain data, no behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from schemas.ecs import SubmitTaskStateChangeRequest
from schemas.records import OutcomeResult

__all__ = ["NS_PER_MS", "OutcomeResult", "SourceRef", "Submission", "SubmitResult", "TaskKey"]

TaskKey = tuple[str, str]
"""(cluster, task ARN)"""


class SourceRef(NamedTuple):
    """The Kafka record an event came from, and the epoch of the partition's assignment under which
    it was read (``worker.offsets``): a completion from an older epoch releases nothing."""

    topic: str
    partition: int
    offset: int
    epoch: int


@dataclass(slots=True)
class Submission:
    """One ``SubmitTaskStateChange`` request for one task and the records whose changes it carries."""

    key: TaskKey
    request: SubmitTaskStateChangeRequest
    fingerprint: str
    sources: list[SourceRef]
    first_event_at: int
    """Observation time (wall-clock ns) of the oldest change this submission carries."""
    stopped: bool
    throttled: int = 0
    """Earlier submissions of this task that ECS throttled in a row (each went back unsent)."""


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """How one submission ended, its retries included. ``result`` is one of the outcome record's
    values: ``acknowledged``, ``rejected`` (a terminal ECS answer) or ``failed`` (retries
    exhausted)."""

    result: OutcomeResult
    attempts: int
    finished_at: int
    """Wall-clock nanoseconds."""
    acknowledgment: str | None = None
    error_code: str | None = None
    error_message: str | None = None


NS_PER_MS = 1_000_000
"""Nanoseconds per millisecond: clocks are nanoseconds, settings milliseconds."""
