"""Records this worker writes: one outcome per finished submission, and dead-letter records.

Outcome records (JSON, keyed by task ARN) go to the outcome topic, as Confluent's HTTP sink writes
its result topic. Dead-letter records keep the original key and bytes of what could not be
processed, with its headers; Kafka Connect's error headers (``__connect.errors.*``) and the
worker's own say why (``DeadLetter`` documents them).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import msgspec

from schemas.ecs import SubmitTaskStateChangeRequest

__all__ = [
    "CONNECT_ERRORS_PREFIX",
    "CONNECT_STAGES",
    "DEAD_LETTER_HEADER_NAMES",
    "STAGE_CLASSES",
    "STAGE_OF_CONNECT",
    "WORKER_ERRORS_PREFIX",
    "ConnectStage",
    "DeadLetter",
    "Outcome",
    "OutcomeResult",
    "SourceRecords",
    "Stage",
    "split_dead_letter_headers",
]

OutcomeResult = Literal["acknowledged", "rejected", "failed"]
Stage = Literal["decode", "validate", "submit"]
ConnectStage = Literal["VALUE_CONVERTER", "TRANSFORMATION", "TASK_PUT"]
CONNECT_STAGES: dict[Stage, ConnectStage] = {
    "decode": "VALUE_CONVERTER",
    "validate": "TRANSFORMATION",
    "submit": "TASK_PUT",
}
"""The worker's stages as Kafka Connect's ``Stage`` (connect/runtime in apache/kafka): decoding is
the value converter's work, validation a transformation's, the ECS call a sink task's ``put``."""
STAGE_OF_CONNECT: dict[ConnectStage, Stage] = {v: k for k, v in CONNECT_STAGES.items()}
STAGE_CLASSES: dict[Stage, str] = {
    "decode": "worker.decode.decoder.RecordDecoder",
    "validate": "worker.intake.Intake",
    "submit": "worker.submit.Submitter",
}
CONNECT_ERRORS_PREFIX = "__connect.errors."
WORKER_ERRORS_PREFIX = "__ecs-state-worker.errors."
_ERROR_PREFIXES = (CONNECT_ERRORS_PREFIX, WORKER_ERRORS_PREFIX)
DEAD_LETTER_HEADER_NAMES: dict[str, str] = {
    "topic": CONNECT_ERRORS_PREFIX + "topic",
    "partition": CONNECT_ERRORS_PREFIX + "partition",
    "offset": CONNECT_ERRORS_PREFIX + "offset",
    "connector": CONNECT_ERRORS_PREFIX + "connector.name",
    "worker": CONNECT_ERRORS_PREFIX + "task.id",
    "stage": CONNECT_ERRORS_PREFIX + "stage",
    "className": CONNECT_ERRORS_PREFIX + "class.name",
    "errorClass": CONNECT_ERRORS_PREFIX + "exception.class.name",
    "message": CONNECT_ERRORS_PREFIX + "exception.message",
    "stacktrace": CONNECT_ERRORS_PREFIX + "exception.stacktrace",
    "item": WORKER_ERRORS_PREFIX + "item",
    "cluster": WORKER_ERRORS_PREFIX + "cluster",
    "task": WORKER_ERRORS_PREFIX + "task",
    "attempts": WORKER_ERRORS_PREFIX + "attempts",
}
"""``DeadLetter`` member -> header name: Kafka Connect's names (``DeadLetterQueueReporter``), then
the worker's own, for what Connect has no header for."""


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


class DeadLetter(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename=DEAD_LETTER_HEADER_NAMES
):
    """The error headers of a dead-letter record: one header per member, its value UTF-8 text
    (numbers in decimal), named as Kafka Connect's ``DeadLetterQueueReporter`` names them
    (``__connect.errors.*``, connect/runtime in apache/kafka) where Connect has the member, and
    ``__ecs-state-worker.errors.*`` for the worker's own (``DEAD_LETTER_HEADER_NAMES``).

    The record's other headers are the input record's own (its ``content-type`` among them). For
    ``decode`` and ``validate`` the key and value are the input record's, byte for byte; for
    ``submit`` (retries exhausted) the value is the JSON ``SubmitTaskStateChange`` request, keyed
    by task ARN, so that it can be submitted again (``python -m worker dlq replay``).
    """

    stage: ConnectStage
    """Connect's name of the stage that failed (``CONNECT_STAGES``)."""
    className: str
    """What was running: the worker's class of that stage (``STAGE_CLASSES``)."""
    errorClass: str
    """A short reason code, e.g. ``DecodeError``, ``EcsRuleViolation``, ``ServerException``."""
    message: str
    connector: str
    """The consumer group id: what every replica shares, as a connector's name."""
    worker: str
    """This replica: the static member id, else the client id (Connect: the task number)."""
    topic: str | None = None
    """The input record's topic, partition and offset (decode, validate)."""
    partition: int | None = None
    offset: int | None = None
    stacktrace: str | None = None
    item: int | None = None
    """Index of the bad item within a record holding several events."""
    cluster: str | None = None
    """The ECS cluster and task of a submit-stage letter."""
    task: str | None = None
    attempts: int | None = None
    """Attempts made by a submit-stage letter's submission."""

    @property
    def pipeline_stage(self) -> Stage:
        """The worker's name of the stage: ``decode``, ``validate`` or ``submit``."""
        return STAGE_OF_CONNECT[self.stage]


def split_dead_letter_headers(
    headers: Sequence[tuple[str, bytes | None]],
) -> tuple[DeadLetter | None, list[tuple[str, bytes]]]:
    """A dead-letter record's headers -> (its error headers as a ``DeadLetter``, or None when they
    are missing or malformed; the record's other headers, in order: the input record's own)."""
    errors: dict[str, str] = {}
    others: list[tuple[str, bytes]] = []
    for name, value in headers:
        if name.startswith(_ERROR_PREFIXES):
            errors[name] = (value or b"").decode("utf-8", "replace")
        else:
            others.append((name, value or b""))
    try:
        return msgspec.convert(errors, DeadLetter, strict=False), others
    except msgspec.ValidationError:
        return None, others
