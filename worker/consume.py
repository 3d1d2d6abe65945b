"""Stage 1, consume: fetch records from the input topic and hand them to the intake.

Per batch: records of a partition this process does not track are fetched again (never skipped);
a partition's first records since its assignment note its replay end (``worker.offsets``);
every other record goes through ``worker.intake`` (decode -> validate -> apply); a record with bad
items is dead-lettered in the background and its last claim released once the broker has the
dead letter. Consumption of the records the coalescer takes pauses while it is over its task cap
with only busy tasks.

With ``input_keying = any`` one consumer reads two topics, as a Kafka Streams thread reads its
source and repartition topics: input records are decoded and validated, then re-keyed by task
(``worker.repartition``) instead of applied; repartition records are applied
(``Intake.read_repartitioned``). With ``task`` keying, tasks seen on two partitions are reported
(``worker.keying``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from aiokafka import TopicPartition

from worker.decode.reasons import reason_code
from worker.dispatch import Dispatcher
from worker.intake import Intake, RecordBatch
from worker.keying import SplitTaskWarnings
from worker.metrics import Metrics
from worker.publish import Publisher
from worker.repartition import SOURCE_HEADER, Repartitioner, parse_source
from worker.watermarks import PROGRESS_HEADER

__all__ = ["ConsumeLoop"]

log = logging.getLogger(__name__)
_FETCH_TIMEOUT_MS = 100


class _Origin(NamedTuple):
    """What a dead letter names: the input record a repartitioned event came from, with the
    repartition record's key, value (the canonical event) and headers (but ``source``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _is_progress(headers: Any) -> bool:
    """Is a repartition record a progress marker (``worker.watermarks``)?"""
    return any(name == PROGRESS_HEADER for name, _ in headers or ())


class ConsumeLoop:
    """``run()`` fetches until ``stopping()`` is true; ``on_progress`` is called per batch, and
    ``on_wants`` when the coalescer then wants a definition or a view (``worker.resolve``).
    ``repartitioner``: with ``input_keying = any``, stage 1's writer (records of its topic are
    applied, the others re-keyed); None with ``task`` keying (every record is applied)."""

    def __init__(
        self,
        consumer: Any,
        *,
        intake: Intake,
        dispatcher: Dispatcher,
        publisher: Publisher,
        metrics: Metrics,
        max_poll_records: int,
        stopping: Callable[[], bool],
        on_progress: Callable[[], None],
        on_wants: Callable[[], None],
        repartitioner: Repartitioner | None = None,
    ) -> None:
        self._consumer = consumer
        self._intake = intake
        self._dispatcher = dispatcher
        self._publisher = publisher
        self._metrics = metrics
        self._max_poll_records = max_poll_records
        self._stopping = stopping
        self._on_progress = on_progress
        self._on_wants = on_wants
        self._repartitioner = repartitioner
        self._split = SplitTaskWarnings(metrics)
        self._paused = False

    async def run(self) -> None:
        consumer, intake = self._consumer, self._intake
        while not self._stopping():
            self._apply_backpressure()
            batches = await consumer.getmany(timeout_ms=_FETCH_TIMEOUT_MS, max_records=self._max_poll_records)
            now, wall = time.monotonic_ns(), time.time_ns()
            if self._repartitioner is not None:  # until flush(): fetched, not yet all tracked
                self._repartitioner.taking(tp.partition for tp in batches if not self._coalesces(tp.topic))
            for tp, records in batches.items():
                if not intake.book.owns(tp.topic, tp.partition):
                    self._refetch_later(tp, records[0].offset)
                elif self._coalesces(tp.topic):
                    if intake.book.replay_end(tp.topic, tp.partition) is None:
                        self._note_replay_end(tp, records[-1].offset + 1)
                    for record in records:
                        self._take(record, now, wall)
                    if self._repartitioner is None:
                        self._metrics.records_consumed.labels(tp.topic, str(tp.partition)).inc(len(records))
                else:
                    await self._repartition(records)
            if self._repartitioner is not None:
                self._repartitioner.flush()
            self._publish_tallies()
            if batches:
                self._on_progress()
                self._dispatcher.wake()
            if intake.coalescer.wants_pending():  # events merged by the dispatcher count too
                self._on_wants()
            self._metrics.active_tasks.set(intake.coalescer.active_count)

    def _coalesces(self, topic: str) -> bool:
        """Are ``topic``'s records applied here (the input with task keying, else the repartition
        topic), rather than re-keyed?"""
        return self._repartitioner is None or topic == self._repartitioner.topic

    def _take(self, record: Any, now: int, wall: int) -> None:
        if self._repartitioner is None:
            batch = self._read_input(record, task_state=True)
        elif _is_progress(record.headers):
            batch = self._intake.read_progress(
                record.topic, record.partition, record.offset, record.value, now, wall
            )
        else:
            batch = self._intake.read_repartitioned(
                record.topic, record.partition, record.offset, record.value
            )
        if batch is None:  # owned: checked per partition by the caller
            return
        self._intake.admit(batch, now, wall)
        if batch.bad:
            self._dispatcher.spawn(self._dead_letter(self._origin(record), batch))

    def _read_input(self, record: Any, *, task_state: bool) -> RecordBatch | None:
        """``Intake.read`` of one input record (an aiokafka ``ConsumerRecord``); None when its
        partition is no longer owned."""
        return self._intake.read(
            record.topic,
            record.partition,
            record.offset,
            record.value,
            record.headers or (),
            timestamp_ms=record.timestamp,
            task_state=task_state,
        )

    async def _repartition(self, records: list[Any]) -> None:
        """Stage 1 with ``input_keying = any``: decode, validate and re-key (``worker.repartition``)."""
        assert self._repartitioner is not None
        for record in records:
            batch = self._read_input(record, task_state=False)
            if batch is None:  # revoked while this batch was being written
                return
            await self._repartitioner.forward(batch, record.timestamp)
            if batch.bad:
                self._dispatcher.spawn(self._dead_letter(record, batch))
        self._metrics.records_consumed.labels(records[0].topic, str(records[0].partition)).inc(len(records))

    def _origin(self, record: Any) -> Any:
        """A repartition record's dead letter names the input record it came from (its ``source``
        header), with the canonical event as its value."""
        if self._repartitioner is None:
            return record
        source = parse_source(record.headers or ())
        if source is None:
            return record
        own = [(name, value) for name, value in record.headers or () if name != SOURCE_HEADER]
        return _Origin(*source, record.key, record.value, own)

    async def _dead_letter(self, record: Any, batch: RecordBatch) -> None:
        await self._publisher.dead_letter_input(record, batch.bad)
        self._dispatcher.release([batch.source])

    def _note_replay_end(self, tp: TopicPartition, fetched_end: int) -> None:
        """Note the partition's replay end at its first fetch since its assignment: the high
        watermark of that fetch (at least the end offset at the assignment: the few records
        produced in between are treated as replayed too, none fewer), or, when the client has
        none, the end of the records fetched."""
        high = self._consumer.highwater(tp)
        self._intake.book.note_replay_end(tp.topic, tp.partition, max(high or 0, fetched_end))

    def _refetch_later(self, tp: TopicPartition, offset: int) -> None:
        """Records of a partition this worker does not (yet) track are never skipped: the fetch
        position goes back to them, for this worker once it tracks the partition, or for its
        owner."""
        log.warning(
            "records of an untracked partition: fetching them again",
            extra={"topic": tp.topic, "partition": tp.partition},
        )
        with contextlib.suppress(Exception):  # not assigned any more: its owner reads them
            self._consumer.seek(tp, offset)

    def _publish_tallies(self) -> None:
        """Counted per record, published per batch: a labelled metric costs more than a count."""
        ignored, decoded = self._intake.take_tallies()
        for reason, count in ignored.items():
            self._metrics.ignored.labels(reason_code(reason)).inc(count)
        for fmt, count in decoded.items():
            self._metrics.events_decoded.labels(fmt).inc(count)
        coalescer = self._intake.coalescer
        self._split.report(coalescer.take_split(), time.monotonic())
        forced = coalescer.take_forced()
        if forced:
            self._metrics.reorder_forced.inc(forced)

    def _apply_backpressure(self) -> None:
        """Pause the partitions whose records the coalescer takes while it is over its cap with
        only busy tasks (the re-keying stage goes on: the repartition topic holds its output)."""
        saturated = self._intake.coalescer.enforce_cap()
        if saturated != self._paused:
            partitions = [tp for tp in self._consumer.assignment() if self._coalesces(tp.topic)]
            if saturated:
                self._consumer.pause(*partitions)
                log.warning(
                    "task cap reached: pausing consumption",
                    extra={"active_tasks": self._intake.coalescer.active_count},
                )
            else:
                self._consumer.resume(*partitions)
                log.info("resuming consumption")
            self._paused = saturated
            self._metrics.paused.set(1 if saturated else 0)
