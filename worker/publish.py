"""Stage 5, publish: outcome records and dead-letter records, written to Kafka.

Building the records is pure (``build_outcome``, ``input_dead_letter``, ``submit_dead_letter``,
``dead_letter_headers``). ``Publisher`` writes them through a ``Sink`` and returns only once the
broker has acknowledged them, retrying (tenacity, the project's one retry style) until it does or
until the worker gives up draining. The caller releases an offset only after that return.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import msgspec
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_never, wait_exponential

from schemas.records import (
    CONNECT_STAGES,
    STAGE_CLASSES,
    DeadLetter,
    Outcome,
    SourceRecords,
    Stage,
    split_dead_letter_headers,
)
from worker.decode import BadItem
from worker.metrics import Metrics, code_label
from worker.retrying import retry_after_first
from worker.work import Submission, SubmitResult, TaskKey

__all__ = [
    "KafkaSink",
    "Origin",
    "Publisher",
    "Sink",
    "build_outcome",
    "dead_letter_headers",
    "input_dead_letter",
    "submit_dead_letter",
]

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
_MAX_LISTED_ITEMS = 10
"""Bad items named one by one in a dead letter's message; the rest are counted."""


class Sink(Protocol):
    """Where records go: ``send`` returns once the broker has acknowledged the record and raises
    when it could not be written."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> None: ...


class KafkaSink:
    """A ``Sink`` on an aiokafka producer.

    One sender at a time enqueues: aiokafka wakes every sender waiting for room in a batch whenever
    one drains, which with thousands of submissions finishing at once costs more than the calls.
    The acknowledgements are still awaited concurrently.
    """

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._enqueue = asyncio.Lock()

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> None:
        async with self._enqueue:
            delivered = await self._producer.send(topic, value=value, key=key, headers=headers)
        await delivered


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def build_outcome(submission: Submission, result: SubmitResult, worker: str) -> Outcome:
    """The outcome record of a finished submission; its sources grouped by partition, sorted."""
    by_partition: dict[tuple[str, int], list[int]] = defaultdict(list)
    for source in submission.sources:
        by_partition[(source.topic, source.partition)].append(source.offset)
    cluster, task = submission.key
    return Outcome(
        cluster=cluster,
        task=task,
        status=submission.request.status or "",
        result=result.result,
        attempts=result.attempts,
        fingerprint=submission.fingerprint,
        request=submission.request,
        firstEventAt=_utc(submission.first_event_at),
        completedAt=_utc(result.finished_at),
        latencyMs=round((result.finished_at - submission.first_event_at) / 1e6, 3),
        sources=[
            SourceRecords(topic=t, partition=p, offsets=sorted(set(o)))
            for (t, p), o in sorted(by_partition.items())
        ],
        acknowledgment=result.acknowledgment,
        errorCode=result.error_code,
        errorMessage=result.error_message,
        worker=worker,
    )


class Origin(NamedTuple):
    """Who writes a dead letter: ``connector`` (the consumer group id) and ``worker`` (this
    replica), Kafka Connect's connector name and task id."""

    connector: str
    worker: str


def input_dead_letter(
    topic: str, partition: int, offset: int, bad: Sequence[tuple[Stage, BadItem]], origin: Origin
) -> DeadLetter:
    """The dead letter of an input record with bad items (decode or validate stage); the stage and
    error class are the first item's, the message lists the first ten."""
    stage, first = bad[0]
    message = "; ".join(f"item {item.index}: {item.reason}" for _, item in bad[:_MAX_LISTED_ITEMS])
    if len(bad) > _MAX_LISTED_ITEMS:
        message += f"; and {len(bad) - _MAX_LISTED_ITEMS} more"
    return DeadLetter(
        stage=CONNECT_STAGES[stage],
        className=STAGE_CLASSES[stage],
        errorClass=first.error_class,
        message=message,
        connector=origin.connector,
        worker=origin.worker,
        topic=topic,
        partition=partition,
        offset=offset,
        item=first.index,
    )


def submit_dead_letter(key: TaskKey, result: SubmitResult, origin: Origin) -> DeadLetter:
    """The dead letter of a submission whose retries ran out, naming its ECS cluster and task."""
    return DeadLetter(
        stage=CONNECT_STAGES["submit"],
        className=STAGE_CLASSES["submit"],
        errorClass=result.error_code or "Unknown",
        message=f"retries exhausted after {result.attempts} attempts: {result.error_message}",
        connector=origin.connector,
        worker=origin.worker,
        cluster=key[0],
        task=key[1],
        attempts=result.attempts,
    )


def dead_letter_headers(
    letter: DeadLetter, own: Sequence[tuple[str, bytes | None]] = ()
) -> list[tuple[str, bytes]]:
    """The headers of a dead-letter record: ``own`` (the input record's headers, any error headers
    of an earlier dead-lettering dropped), then ``letter``'s, one per member set, UTF-8 text."""
    _, kept = split_dead_letter_headers(own)
    fields: dict[str, Any] = msgspec.to_builtins(letter)
    return kept + [(name, str(value).encode("utf-8")) for name, value in fields.items()]


class Publisher:
    """Writes outcome and dead-letter records and waits for the broker's acknowledgement.

    A failed write is retried with exponential backoff (0.1 s doubling up to ``max_backoff_s``)
    for as long as ``giving_up()`` is false; then the last error is raised.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        outcome_topic: str,
        dlq_topic: str,
        worker: str,
        connector: str = "ecs-state-worker",
        metrics: Metrics,
        giving_up: Callable[[], bool] = lambda: False,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._sink = sink
        self._outcome_topic = outcome_topic
        self._dlq_topic = dlq_topic
        self.worker = worker
        self.origin = Origin(connector, worker)
        self._metrics = metrics
        self._giving_up = giving_up
        self._wait = wait_exponential(multiplier=0.1, min=0.1, max=max_backoff_s)

    async def outcome(self, submission: Submission, result: SubmitResult) -> None:
        outcome = build_outcome(submission, result, self.worker)
        await self._send(self._outcome_topic, submission.key[1].encode(), _encoder.encode(outcome), None)

    async def dead_letter_input(self, record: Any, bad: Sequence[tuple[Stage, BadItem]]) -> None:
        """Dead-letter an input record (a Kafka record: topic, partition, offset, key, value,
        headers) with its own key, bytes and headers, and log why."""
        letter = input_dead_letter(record.topic, record.partition, record.offset, bad, self.origin)
        log.error(
            "dead-lettering input record: %s",
            letter.message,
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "stage": letter.pipeline_stage,
            },
        )
        await self._dead_letter(record.key, record.value, letter, record.headers or ())

    async def dead_letter_submission(self, submission: Submission, result: SubmitResult) -> None:
        """Dead-letter a submission whose retries ran out: the JSON request, keyed by task ARN."""
        letter = submit_dead_letter(submission.key, result, self.origin)
        await self._dead_letter(submission.key[1].encode(), _encoder.encode(submission.request), letter)

    async def _dead_letter(
        self,
        key: bytes | None,
        value: bytes | None,
        letter: DeadLetter,
        own: Sequence[tuple[str, bytes | None]] = (),
    ) -> None:
        await self._send(self._dlq_topic, key, value, dead_letter_headers(letter, own))
        self._metrics.dead_lettered.labels(letter.pipeline_stage, code_label(letter.errorClass)).inc()

    async def _send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> None:
        def retrying() -> AsyncRetrying:
            return AsyncRetrying(
                stop=stop_never,
                wait=self._wait,
                retry=retry_if_exception(lambda exc: isinstance(exc, Exception) and not self._giving_up()),
                before_sleep=_log_retry(topic),
                reraise=True,
            )

        async def attempt(_: int) -> None:
            await self._sink.send(topic, key, value, headers)

        await retry_after_first(attempt, retrying)


def _log_retry(topic: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "producing to %s failed, retrying in %.1fs: %s",
            topic,
            delay,
            exc,
            extra={"topic": topic, "error_class": type(exc).__name__},
        )

    return before_sleep
