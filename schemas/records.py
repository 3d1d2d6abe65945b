"""Records this worker writes: one outcome per finished submission, and dead-letter records.

Outcome records (JSON, keyed by task ARN) go to the outcome topic, as Confluent's HTTP sink writes
its result topic. Dead-letter records keep the original key and bytes of what could not be
processed; their headers, modelled on Kafka Connect's ``errors.*`` headers, say why
(``DeadLetter`` documents them, one header per member, prefixed ``errors.``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from schemas.ecs import SubmitTaskStateChangeRequest

__all__ = [
    "DEAD_LETTER_HEADER_PREFIX",
    "DeadLetter",
    "Outcome",
    "OutcomeResult",
    "SourceRecords",
    "Stage",
]

OutcomeResult = Literal["acknowledged", "rejected", "failed"]
Stage = Literal["decode", "validate", "submit"]
DEAD_LETTER_HEADER_PREFIX = "errors."


class SourceRecords(msgspec.Struct, frozen=True, kw_only=True):
    """Offsets of one input partition covered by a submission."""

    topic: str
    partition: int
    offsets: list[int]


class Outcome(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The result of one finished ``SubmitTaskStateChange`` submission (its retries included)."""

    cluster: str
    task: str
    status: str
    result: OutcomeResult
    attempts: int
    fingerprint: str
    request: SubmitTaskStateChangeRequest
    firstEventAt: datetime
    completedAt: datetime
    latencyMs: float
    """From the oldest change carried (its observation time) to completion."""
    sources: list[SourceRecords]
    acknowledgment: str | None = None
    errorCode: str | None = None
    errorMessage: str | None = None
    worker: str | None = None


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The ``errors.*`` headers of a dead-letter record (header ``errors.<member>``, UTF-8).

    For ``decode`` and ``validate`` the record's key and value are the input record's, byte for
    byte; for ``submit`` (retries exhausted) the value is the JSON request, keyed by task ARN, so
    that it can be replayed.
    """

    stage: Stage
    errorClass: str
    message: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    item: int | None = None
    """Index of the bad item within a record holding several events."""
    worker: str | None = None
