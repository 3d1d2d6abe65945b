"""Stage 5, record: outcome records and dead-letter records, written to Kafka.

Building the records is pure (``build_outcome``, ``dead_letter_headers``); ``Recorder`` produces
them and returns only once the broker has acknowledged them, retrying until it does or until the
worker gives up draining. An offset is released only after that acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from schemas.records import DEAD_LETTER_HEADER_PREFIX, DeadLetter, Outcome, SourceRecords
from worker.coalesce import Submission
from worker.submit import SubmitResult

__all__ = ["Producer", "Recorder", "build_outcome", "dead_letter_headers"]

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()


class Producer(Protocol):
    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        """Enqueue a record; the awaitable returned completes when the broker acknowledges it."""
        ...


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def build_outcome(submission: Submission, result: SubmitResult, worker: str) -> Outcome:
    by_partition: dict[tuple[str, int], list[int]] = defaultdict(list)
    for topic, partition, offset in submission.sources:
        by_partition[(topic, partition)].append(offset)
    cluster, task = submission.key
    return Outcome(
        cluster=cluster,
        task=task,
        status=submission.request.status or "",
        result=result.result.value,
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


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    fields: dict[str, Any] = msgspec.structs.asdict(letter)
    return [
        (DEAD_LETTER_HEADER_PREFIX + name, str(value).encode("utf-8"))
        for name, value in fields.items()
        if value is not None
    ]


class Recorder:
    """Writes records and waits for the broker's acknowledgement, retrying transient failures."""

    def __init__(
        self,
        producer: Producer,
        *,
        outcome_topic: str,
        dlq_topic: str,
        worker: str,
        giving_up: Callable[[], bool] = lambda: False,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._producer = producer
        self._outcome_topic = outcome_topic
        self._dlq_topic = dlq_topic
        self.worker = worker
        self._giving_up = giving_up
        self._max_backoff = max_backoff_s
        self._enqueue = asyncio.Lock()

    async def outcome(self, submission: Submission, result: SubmitResult) -> Outcome:
        outcome = build_outcome(submission, result, self.worker)
        await self._send(self._outcome_topic, submission.key[1].encode(), _encoder.encode(outcome), None)
        return outcome

    async def dead_letter(self, key: bytes | None, value: bytes | None, letter: DeadLetter) -> None:
        await self._send(self._dlq_topic, key, value, dead_letter_headers(letter))

    async def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
    ) -> None:
        backoff = 0.1
        while True:
            try:
                # One sender at a time enqueues: aiokafka wakes every sender waiting for room in a
                # batch whenever one drains, which with thousands of submissions finishing at once
                # costs more than the calls. The acknowledgements are still awaited concurrently.
                async with self._enqueue:
                    delivered = await self._producer.send(topic, value=value, key=key, headers=headers)
                await delivered
                return
            except Exception as exc:  # the broker is away: keep the record, retry
                if self._giving_up():
                    raise
                log.warning(
                    "producing to %s failed, retrying in %.1fs: %s",
                    topic,
                    backoff,
                    exc,
                    extra={"topic": topic, "error_class": type(exc).__name__},
                )
                await asyncio.sleep(backoff)
                backoff = min(self._max_backoff, backoff * 2)
