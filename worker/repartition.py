"""Stage 1 of ``input_keying = any``: re-key the decoded events by task, through the repartition
topic, as Kafka Streams re-keys a stream (its ``<application.id>-<name>-repartition`` topics).

An input record is decoded and validated as in ``task`` mode (``worker.intake``: bad items
dead-lettered, ignored items counted) and tracked with one claim per event kept. Each event is
then produced to the repartition topic as one record:

- key: the task, ``["<cluster>", "<task ARN>"]`` as compact JSON (``task_key``), so that the
  producer's default partitioner (murmur2 of the key, the Java clients' own) puts every event of
  a task on one partition of the repartition topic;
- value: the canonical event (``schemas.events.TaskEvent``) as JSON;
- timestamp: the input record's (Streams keeps it too);
- header ``source``: ``<topic>:<partition>:<offset>`` of the input record (Kafka topic names hold
  no colon), so that a repartitioned event can be traced back to its input record.

An event's claim is released once the broker has acknowledged its record: the input offset moves
only then. A failed write is retried (tenacity, as ``worker.publish`` does) until the drain gives
up; the claim then stays and the input record is read again by the partition's next owner
(at-least-once: the coalescer takes duplicates and out-of-order events). The coalescing stage
reads the repartition topic (``Intake.read_repartitioned``) under the guarantees of ``task`` mode.

Every ``interval``, ``run_progress`` writes a progress marker to each partition of the topic: how
far each input partition this process owns has come (``worker.watermarks``), so that the coalescing
stage waits for an input partition that is behind before it merges a task's later events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from aiokafka import TopicPartition
from tenacity import AsyncRetrying, retry_if_exception, stop_never, wait_exponential

from worker.intake import RecordBatch
from worker.metrics import Metrics
from worker.offsets import OffsetBook
from worker.watermarks import PROGRESS_HEADER, InputProgress, ProgressMarker, ProgressTracker, Watermarks
from worker.work import SourceRef

__all__ = ["SOURCE_HEADER", "Repartitioner", "parse_source", "source_header", "task_key"]

log = logging.getLogger(__name__)

SOURCE_HEADER = "source"
"""The header naming a repartitioned event's input record: ``<topic>:<partition>:<offset>``."""

_encoder = msgspec.json.Encoder()


def task_key(cluster: str, task: str) -> bytes:
    """The repartition record key of a task: ``["<cluster>", "<task ARN>"]``, compact JSON (a task
    ARN of the old format does not name its cluster, so the cluster is part of the key)."""
    return _encoder.encode((cluster, task))


def source_header(topic: str, partition: int, offset: int) -> bytes:
    """The ``source`` header's value: ``<topic>:<partition>:<offset>``, UTF-8."""
    return f"{topic}:{partition}:{offset}".encode()


def parse_source(headers: Iterable[tuple[str, bytes]]) -> tuple[str, int, int] | None:
    """The (topic, partition, offset) a ``source`` header names, or None when there is none or it
    is malformed."""
    for name, value in headers:
        if name == SOURCE_HEADER:
            topic, _, rest = bytes(value).decode("utf-8", "replace").rpartition(":")
            topic, _, partition = topic.rpartition(":")
            if topic and partition.isdigit() and rest.isdigit():
                return topic, int(partition), int(rest)
    return None


class Repartitioner:
    """Writes the events of input records to the repartition ``topic`` with ``producer`` (an
    aiokafka producer) and releases each event's claim once its record is acknowledged.

    ``forward`` enqueues a record's events in the producer (waiting only while the producer's
    buffer is full: that is the stage's backpressure); ``flush`` hands the acknowledgements
    enqueued so far to ``spawn`` (background work a drain waits for), one task per fetched batch.
    ``release`` releases one claim of a source; ``giving_up`` is true once a drain has run out of
    time (writes then stop retrying).
    """

    def __init__(
        self,
        producer: Any,
        *,
        topic: str,
        metrics: Metrics,
        release: Callable[[SourceRef], object],
        spawn: Callable[[Any], object],
        giving_up: Callable[[], bool] = lambda: False,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.topic = topic
        self._producer = producer
        self._metrics = metrics
        self._release = release
        self._spawn = spawn
        self._giving_up = giving_up
        self._wait = wait_exponential(multiplier=0.1, min=0.1, max=max_backoff_s)
        self._pending: list[tuple[SourceRef, _Record, asyncio.Future[Any]]] = []
        self.progress = ProgressTracker()
        self._taking: set[int] = set()
        """Input partitions whose fetched records are being forwarded (``taking``): their fetch
        position runs ahead of the records tracked."""

    def taking(self, partitions: Iterable[int]) -> None:
        """The consume loop got records of these input partitions and forwards them now (until
        ``flush``): their position is no progress until the records are tracked."""
        self._taking = set(partitions)

    async def forward(self, batch: RecordBatch, timestamp_ms: int | None) -> None:
        """Enqueue ``batch``'s events, one record each, keyed by task."""
        source = batch.source
        header = [(SOURCE_HEADER, source_header(source.topic, source.partition, source.offset))]
        for event in batch.events:
            record = _Record(
                task_key(event.cluster, event.task), _encoder.encode(event), timestamp_ms, header
            )
            self._pending.append((source, record, await self._send(record)))
        if batch.events:
            latest = max(event.observedAt for event in batch.events)
            self.progress.forwarded(source.partition, source.offset, latest)

    def flush(self) -> None:
        """Wait for the enqueued records' acknowledgements in the background."""
        self._taking = set()
        if self._pending:
            pending, self._pending = self._pending, []
            self._spawn(self._acknowledged(pending))

    async def _send(self, record: _Record) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self._producer.send(
            self.topic, record.value, key=record.key, timestamp_ms=record.timestamp_ms, headers=record.headers
        )
        return future

    async def _acknowledged(self, pending: list[tuple[SourceRef, _Record, asyncio.Future[Any]]]) -> None:
        answers = await asyncio.gather(*(future for _, _, future in pending), return_exceptions=True)
        for (source, record, _), answer in zip(pending, answers, strict=True):
            if isinstance(answer, BaseException):
                await self._retry(record, answer)
            self._release(source)
        self._metrics.repartitioned.inc(len(pending))

    async def _retry(self, record: _Record, error: BaseException) -> None:
        """Write ``record`` again until the broker has it, or raise once a drain gives up (its claim
        then stays: the input record is read again)."""
        log.warning(
            "producing to %s failed, retrying: %s",
            self.topic,
            error,
            extra={"topic": self.topic, "error_class": type(error).__name__},
        )
        retrying = AsyncRetrying(
            stop=stop_never,
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, Exception) and not self._giving_up()),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await (await self._send(record))

    async def run_progress(
        self,
        consumer: Any,
        book: OffsetBook,
        input_topic: str,
        watermarks: Watermarks | None,
        interval_s: float,
    ) -> None:
        """Every ``interval_s``: write the progress of the input partitions this process owns to
        every partition of the repartition topic, and give ``watermarks`` (the coalescing stage's)
        the input topic's partitions, and set the input progress lag gauge from them. Runs until
        cancelled; a failed round is logged and skipped."""
        failing = False
        while True:
            await asyncio.sleep(interval_s)
            try:
                if watermarks is not None:
                    watermarks.set_inputs(consumer.partitions_for_topic(input_topic) or ())
                    watermarks.retain({p for t, p in book.partitions() if t == self.topic})
                    self._metrics.input_progress_lag.set(watermarks.lag_ns(time.monotonic_ns()) / 1e9)
                await self._send_progress(await self._progress(consumer, book, input_topic), input_topic)
            except Exception as error:
                if not failing:
                    log.warning("writing progress markers failed: %s", error, extra={"topic": self.topic})
                failing = True
            else:
                failing = False

    async def _progress(self, consumer: Any, book: OffsetBook, input_topic: str) -> dict[int, InputProgress]:
        """The progress of each owned input partition (``ProgressTracker.progress``)."""
        owned = [p for t, p in book.partitions() if t == input_topic]
        self.progress.retain(owned)
        progress: dict[int, InputProgress] = {}
        for partition in owned:
            tp = TopicPartition(input_topic, partition)
            if tp not in consumer.assignment():
                continue
            done = await self._done(consumer, book, tp)
            if done is None:
                continue
            fetched = consumer.last_poll_timestamp(tp)
            progress[partition] = self.progress.progress(partition, done, consumer.highwater(tp), fetched)
        return progress

    async def _done(self, consumer: Any, book: OffsetBook, tp: TopicPartition) -> int | None:
        """The offset of input partition ``tp`` below which every record is in the repartition
        topic; None when not known this round. With nothing claimed (every record read since the
        assignment acknowledged, or none read), the fetch position: past the records read, and
        past what they leave below it that is no record (a transaction's commit marker, a
        compacted gap), unless the loop is still forwarding records fetched (``taking``)."""
        key = (tp.topic, tp.partition)
        committable = book.committable(*key)
        if committable is not None and book.incomplete().get(key, 0):
            return committable  # the first record still claimed
        position: int = await consumer.position(tp)
        if tp.partition in self._taking or book.incomplete().get(key, 0):
            return book.committable(*key)  # records fetched, not all tracked: the position ran ahead
        committable = book.committable(*key)
        return position if committable is None else max(committable, position)

    async def _send_progress(self, progress: dict[int, InputProgress], input_topic: str) -> None:
        """One marker to each partition of the topic; not waited for (the next one supersedes it)."""
        if not progress:
            return
        value = _encoder.encode(ProgressMarker(input_topic, progress))
        for partition in sorted(await self._producer.partitions_for(self.topic)):
            future = await self._producer.send(
                self.topic, value, partition=partition, headers=[(PROGRESS_HEADER, b"1")]
            )
            future.add_done_callback(_consume_error)


def _consume_error(future: asyncio.Future[Any]) -> None:
    """A lost marker only delays the next one: its error is read (not left to asyncio's warning)."""
    if not future.cancelled() and future.exception() is not None:
        log.debug("a progress marker was not written: %s", future.exception())


class _Record(msgspec.Struct, frozen=True, gc=False):
    key: bytes
    value: bytes
    timestamp_ms: int | None
    headers: list[tuple[str, bytes]]
