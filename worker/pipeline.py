"""The pipeline: read -> decode -> coalesce -> submit -> record -> commit, on one event loop.

Three loops share the pure core (``RecordDecoder``, ``Coalescer``, ``OffsetBook``):
- consume: fetch records, decode, apply events, dead-letter bad input; pause at the task cap;
- schedule: start the submissions that are due (one asyncio task each, no slot while backing off);
- commit: every ``commit_interval_ms``, commit what is resolved on the partitions still owned.
A record's offset is released when every part of it is resolved: its events reported (outcome
acknowledged by the broker), or dead-lettered (acknowledged), or ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiokafka import TopicPartition

from schemas.records import DeadLetter
from worker.coalesce import Applied, Coalescer, Result, SourceRef, Submission
from worker.config import Settings
from worker.decode import BadItem, RecordDecoder
from worker.ecs_rules import check_event
from worker.metrics import Metrics
from worker.offsets import OffsetBook, TopicPartitionKey
from worker.ratelimit import AsyncRateLimiter
from worker.read import PartitionListener, make_consumer, make_producer
from worker.record import Recorder
from worker.submit import Submitter, open_ecs_client

__all__ = ["Worker", "WorkerStats"]


log = logging.getLogger(__name__)
_MS = 1_000_000


@dataclass(slots=True)
class WorkerStats:
    records: int = 0
    events: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    submissions: dict[str, int] = field(default_factory=lambda: {r.value: 0 for r in Result})
    commits: int = 0


_COMMIT_TIMEOUT_S = 3.0
_CLOSE_TIMEOUT_S = 4.0
"""Bounds on one commit and on one Kafka client's stop: after a broker outage aiokafka can wait
out its 40 s request timeout, more than a pod's grace period leaves after the drain. A stop then
takes at most the drain, one commit and two closes (5 s + 3 s + 2 x 4 s with the test settings)."""


async def _close(client: Any, name: str) -> None:
    """Stop a Kafka client, bounded, never raising: by then the work is drained and committed (or
    left to be re-read), so a failing close must not turn a clean stop into a crash."""
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await client.stop()
    except Exception as exc:
        log.warning("closing the Kafka %s failed: %s", name, exc, extra={"error_class": type(exc).__name__})


def _asdict(stats: WorkerStats) -> dict[str, Any]:
    return {
        name: getattr(stats, name)
        for name in ("records", "events", "ignored", "dead_lettered", "submissions", "commits")
    }


class Worker:
    """One worker process's pipeline: ``run()`` until ``request_stop()`` (SIGTERM)."""

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.stats = WorkerStats()
        self.ready = asyncio.Event()
        self._decoder = RecordDecoder(
            input_format=settings.input_format, max_record_bytes=settings.max_record_bytes
        )
        self._coalescer = Coalescer(
            linger_ns=settings.linger_ms * _MS,
            max_active_tasks=settings.max_active_tasks,
            retired_cap=settings.retired_cache,
            max_containers=settings.max_containers_per_task,
            max_attachments=settings.max_attachments_per_task,
        )
        self._offsets = OffsetBook()
        self._linger_ns = settings.linger_ms * _MS
        self._stopping = asyncio.Event()
        self._draining = False
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._consumer: Any = None
        self._recorder: Recorder | None = None
        self._submitter: Submitter | None = None
        self._paused = False
        self._drain_deadline = 0.0
        self._progress_at = time.monotonic()
        self._ignored: Counter[str] = Counter()
        self._decoded: Counter[str] = Counter()

    # -- health ----------------------------------------------------------------------------------

    def is_ready(self) -> bool:
        return self.ready.is_set() and not self._stopping.is_set()

    def pending_work(self) -> int:
        return sum(self._offsets.incomplete().values()) + len(self._tasks)

    def committed_offsets(self) -> dict[TopicPartitionKey, int]:
        return self._offsets.committed()

    def last_progress(self) -> float:
        return self._progress_at

    def _progressed(self) -> None:
        self._progress_at = time.monotonic()
        self.metrics.last_progress.set(time.time())

    # -- lifecycle -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Graceful stop: no more fetching; flush, drain, commit, leave the group."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        s = self.settings
        producer = make_producer(s)
        consumer = self._consumer = make_consumer(s)
        consumer.subscribe([s.input_topic], listener=PartitionListener(self._on_assigned, self._on_revoked))
        try:
            if await self._unless_stopped(producer.start()):
                async with open_ecs_client(s) as client:
                    limiter = AsyncRateLimiter(rate=s.rate_limit_per_s, burst=s.rate_limit_burst)
                    self._submitter = Submitter(client, s, metrics=self.metrics, limiter=limiter)
                    self._recorder = Recorder(
                        producer,
                        outcome_topic=s.outcome_topic,
                        dlq_topic=s.dlq_topic,
                        worker=s.group_instance_id or s.client_id,
                        giving_up=self._past_drain_deadline,
                    )
                    if await self._unless_stopped(consumer.start()):
                        await self._run_loops()
        finally:
            # Stopped in every case, started or not: aiokafka warns about clients never closed.
            await _close(consumer, "consumer")
            await _close(producer, "producer")
        log.info("worker stopped", extra={"stats": _asdict(self.stats)})

    async def _unless_stopped(self, starting: Awaitable[None]) -> bool:
        """Await a client's start unless a stop is requested first: the consumer's start waits for
        the group's first assignment, which a stalled rebalance can hold back indefinitely, and a
        SIGTERM must not wait for it. Nothing is held yet, so nothing needs draining."""
        start = asyncio.ensure_future(starting)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([start, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not start.done():
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)
        if start.cancelled():
            log.info("stop requested while starting: not started")
            return False
        start.result()  # a failed start raises here
        return True

    async def _run_loops(self) -> None:
        consume = asyncio.create_task(self._consume_loop(), name="consume")
        others = [
            asyncio.create_task(self._schedule_loop(), name="schedule"),
            asyncio.create_task(self._commit_loop(), name="commit"),
        ]
        stop = asyncio.create_task(self._stopping.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([consume, *others, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            consume.cancel()
            await asyncio.gather(consume, return_exceptions=True)
            # aiokafka does not call the rebalance listener on stop(): drain and commit here.
            await self._drain()
            await self._commit()
        finally:
            for task in [consume, *others, stop]:
                task.cancel()
            await asyncio.gather(consume, *others, stop, return_exceptions=True)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- consume ---------------------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        consumer = self._consumer
        while not self._stopping.is_set():
            self._apply_backpressure()
            batches = await consumer.getmany(timeout_ms=100, max_records=self.settings.max_poll_records)
            now, wall = time.monotonic_ns(), time.time_ns()
            for tp, records in batches.items():
                if not self._offsets.owns(tp.topic, tp.partition):
                    self._refetch_later(tp, records[0].offset)
                    continue
                for record in records:
                    self._handle_record(record, now, wall)
                self.metrics.records_consumed.labels(str(tp.partition)).inc(len(records))
            self._flush_tallies()
            if batches:
                self._progressed()
                self._wake.set()
            self.metrics.active_tasks.set(self._coalescer.active_count)

    def _refetch_later(self, tp: TopicPartition, offset: int) -> None:
        """Records of a partition this worker does not (yet) track are never skipped: the fetch
        position goes back to them, for this worker once it tracks the partition, or for its
        owner."""
        log.warning(
            "records of an untracked partition: fetching them again", extra={"partition": tp.partition}
        )
        with contextlib.suppress(Exception):  # not assigned any more: its owner reads them
            self._consumer.seek(tp, offset)

    def _handle_record(self, record: Any, now: int, wall: int) -> None:
        """Decode, validate and apply one record. ``now`` is the monotonic clock of the coalescer;
        ``wall`` the same instant on the wall clock, to date each change back to its observation."""
        topic, partition, offset = record.topic, record.partition, record.offset
        self.stats.records += 1
        decoded = self._decoder.decode(
            record.value, record.headers or (), record_timestamp_ns=record.timestamp * 1_000_000
        )
        events = []
        bad: list[tuple[str, BadItem]] = [("decode", item) for item in decoded.bad]
        for index, event in enumerate(decoded.events):
            broken = check_event(event) or self._coalescer.over_limits(event)
            if broken is None:
                events.append(event)
            else:
                bad.append(("validate", BadItem(broken, "EcsRuleViolation", index)))
        self._offsets.track(topic, partition, offset, len(events) + (1 if bad else 0))
        if decoded.ignored:
            self.stats.ignored += len(decoded.ignored)
            self._ignored.update(decoded.ignored)
        if events:
            self._decoded[decoded.format] += len(events)
        source: SourceRef = (topic, partition, offset)
        for event in events:
            self.stats.events += 1
            # A fresh change's linger counts from its observation, not from its arrival here: time
            # in transit (the shipper, Kafka) is not added to it. An older one (a backlog after a
            # restart, a skewed clock) lingers from its arrival, so that a backlog is coalesced.
            age = wall - event.observedAt
            applied, resolved = self._coalescer.apply(
                event, source, now - age if 0 < age < self._linger_ns else now
            )
            if applied is Applied.RETIRED and self._coalescer.reopen(event):
                # A container the task's reported STOPPED lacked (a partial view): report it.
                applied, resolved = self._coalescer.apply(event, source, now)
            if applied is Applied.RETIRED:
                self._ignored["task already stopped and reported"] += 1
            self._release(resolved)
        if bad:
            self._spawn(self._dead_letter_input(record, bad))

    def _flush_tallies(self) -> None:
        """Counted per record, published per batch: a labelled metric costs more than a count."""
        for reason, count in self._ignored.items():
            self.metrics.ignored.labels(reason).inc(count)
        for fmt, count in self._decoded.items():
            self.metrics.events_decoded.labels(fmt).inc(count)
        self._ignored.clear()
        self._decoded.clear()

    async def _dead_letter_input(self, record: Any, bad: list[tuple[str, BadItem]]) -> None:
        assert self._recorder is not None
        stage, first = bad[0]
        message = "; ".join(f"item {item.index}: {item.reason}" for _, item in bad[:10])
        if len(bad) > 10:
            message += f"; and {len(bad) - 10} more"
        log.error(
            "dead-lettering input record: %s",
            message,
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "stage": stage,
            },
        )
        letter = DeadLetter(
            stage=stage,  # type: ignore[arg-type]  # "decode" or "validate"
            errorClass=first.error_class,
            message=message,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            item=first.index,
            worker=self._recorder.worker,
        )
        await self._recorder.dead_letter(record.key, record.value, letter)
        self.stats.dead_lettered += 1
        self.metrics.dead_lettered.labels(stage, first.error_class).inc()
        self._release([(record.topic, record.partition, record.offset)])

    def _apply_backpressure(self) -> None:
        saturated = self._coalescer.saturated
        if saturated != self._paused:
            partitions = self._consumer.assignment()
            if saturated:
                self._consumer.pause(*partitions)
                log.warning(
                    "task cap reached: pausing consumption",
                    extra={"active_tasks": self._coalescer.active_count},
                )
            else:
                self._consumer.resume(*partitions)
                log.info("resuming consumption")
            self._paused = saturated
            self.metrics.paused.set(1 if saturated else 0)

    # -- schedule and submit ---------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while True:
            now = time.monotonic_ns()
            ready, resolved = self._coalescer.due(now)
            if resolved:
                self.metrics.skipped_unchanged.inc()
            self._release(resolved)
            for submission in ready:
                self._spawn(self._submit(submission))
            due_at = self._coalescer.next_due_at()
            timeout = None if due_at is None else max(0.0, (due_at - time.monotonic_ns()) / 1e9)
            self._wake.clear()
            # asyncio.timeout, not wait_for: no task is made per wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _submit(self, submission: Submission) -> None:
        assert self._submitter is not None
        assert self._recorder is not None
        result = await self._submitter.submit(submission)
        await self._recorder.outcome(submission, result)
        if result.result is Result.FAILED:
            await self._recorder.dead_letter(
                submission.key[1].encode(),
                msgspec.json.encode(submission.request),
                DeadLetter(
                    stage="submit",
                    errorClass=result.error_code or "Unknown",
                    message=f"retries exhausted after {result.attempts} attempts: {result.error_message}",
                    worker=self._recorder.worker,
                ),
            )
            self.metrics.dead_lettered.labels("submit", result.error_code or "Unknown").inc()
        if result.result is Result.ACKNOWLEDGED:
            self.metrics.event_to_ack.observe(max(0, result.finished_at - submission.first_event_at) / 1e9)
        else:
            log.error(
                "submission %s: %s %s",
                result.result.value,
                result.error_code,
                result.error_message,
                extra={
                    "task": submission.key[1],
                    "cluster": submission.key[0],
                    "attempts": result.attempts,
                },
            )
        self.stats.submissions[result.result.value] += 1
        self.metrics.submissions.labels(result.result.value).inc()
        self._progressed()
        self._release(self._coalescer.complete(submission, result.result, time.monotonic_ns()))
        self._wake.set()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed; its offsets stay uncommitted", exc_info=task.exception())

    def _release(self, sources: Iterable[SourceRef]) -> None:
        for topic, partition, offset in sources:
            self._offsets.release(topic, partition, offset)

    # -- commit ----------------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.commit_interval_ms / 1000)
            await self._commit()
            await self._report_offsets()

    async def _commit(self, partitions: Iterable[TopicPartitionKey] | None = None) -> None:
        moves = self._offsets.to_commit()
        if partitions is not None:
            wanted = set(partitions)
            moves = {tp: o for tp, o in moves.items() if tp in wanted}
        if not moves or self._consumer is None:
            return
        try:
            async with asyncio.timeout(_COMMIT_TIMEOUT_S):
                await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in moves.items()})
        except Exception as exc:  # a rebalance in progress: the next owner re-reads, at-least-once
            log.warning("offset commit failed: %s", exc, extra={"error_class": type(exc).__name__})
            return
        self._offsets.mark_committed(moves)
        self.stats.commits += 1
        for (topic, partition), offset in moves.items():
            self.metrics.committed_offset.labels(topic, str(partition)).set(offset)

    async def _report_offsets(self) -> None:
        for (topic, partition), count in self._offsets.incomplete().items():
            self.metrics.incomplete_offsets.labels(topic, str(partition)).set(count)
            tp = TopicPartition(topic, partition)
            high = self._consumer.highwater(tp)
            if high is None:  # nothing fetched yet: no position to compare with
                continue
            # Lag of the fetch position: records not yet read. (Read but unresolved records are
            # incomplete_offsets; committed_offset trails both.)
            with contextlib.suppress(Exception):  # the partition was revoked meanwhile
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel() that
                # lands as the wrapped call completes, and this loop then never stops (shutdown
                # hangs in _run_loops' gather).
                async with asyncio.timeout(1.0):
                    position = await self._consumer.position(tp)
                self.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - position))

    # -- rebalance and drain ---------------------------------------------------------------------

    async def _on_assigned(self, partitions: list[TopicPartitionKey]) -> None:
        self._offsets.assign(partitions)
        self.ready.set()
        log.info("partitions assigned", extra={"partitions": partitions})

    async def _on_revoked(self, partitions: list[TopicPartitionKey]) -> None:
        revoked = set(partitions)
        log.info("partitions revoked: draining their work", extra={"partitions": partitions})
        await self._drain(revoked)
        await self._commit(revoked)
        for source in self._coalescer.drop(lambda s: (s[0], s[1]) in revoked):
            self._offsets.release(*source)
        self._offsets.revoke(partitions)

    async def _drain(self, partitions: set[TopicPartitionKey] | None = None) -> None:
        """Send every pending change now and wait, up to the drain deadline, until the work of
        ``partitions`` (all when None) is resolved."""
        self._drain_deadline = time.monotonic() + self.settings.drain_timeout_ms / 1000
        self._draining = True
        try:
            self._coalescer.set_linger(0)
            self._coalescer.flush_all(time.monotonic_ns())
            self._wake.set()
            while time.monotonic() < self._drain_deadline:
                incomplete = self._offsets.incomplete()
                if partitions is not None:
                    incomplete = {tp: n for tp, n in incomplete.items() if tp in partitions}
                if not any(incomplete.values()) and (partitions is not None or not self._tasks):
                    return
                await asyncio.sleep(0.02)
            log.warning("drain deadline passed with work unresolved: it will be re-read")
        finally:
            self._coalescer.set_linger(self.settings.linger_ms * _MS)
            self._draining = False

    def _past_drain_deadline(self) -> bool:
        return self._draining and time.monotonic() >= self._drain_deadline
