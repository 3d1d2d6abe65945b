"""Intake: one Kafka record -> decoded, validated events merged into their tasks. Pure.

The single path from record bytes into the coalescer, used alike by the worker, ``replay`` and
the benchmark, so that what ``replay`` shows is what the worker would do:

1. ``read``: decode (``worker.decode``), check each event against ECS's rules
   (``worker.ecs_rules``) and the per-task bounds (``Coalescer.over_limits``), and track the record
   in the offset book with one claim per event kept, plus one for its dead letter when an item
   is bad;
2. ``apply``: merge each event into its task, with the intake policy: a fresh change lingers from
   its observation, not from its arrival; an event for a task whose STOPPED was acknowledged is
   late, ignored and counted; an event read below its partition's replay end
   (``OffsetBook.replayed``) may have been processed before, and a task first seen in one is not
   trusted to be new (``worker.knowledge``).

Between the two is where later stages plug in: re-keying events by task (``worker.repartition``,
with ``input_keying = any``) and resolving what a task is (its definition, ECS's own view) act on
a ``RecordBatch``'s events before they are applied. Re-keyed, an event comes back as one record of
the repartition topic: ``read_repartitioned`` decodes it (the canonical format, typed) and checks
the per-task bounds there, where the task's state is held. The caller owns I/O: it dead-letters a
batch's ``bad`` items and then releases the record's last claim.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from schemas.events import TaskEvent
from schemas.records import Stage
from worker.coalesce import Applied, Coalescer
from worker.config import Settings
from worker.decode import BadItem, RecordDecoder
from worker.decode.bad_items import PARSE_ERRORS, bad_item_for
from worker.decode.reasons import LATE_EVENT
from worker.ecs_rules import check_event
from worker.knowledge import DefinitionCache
from worker.offsets import OffsetBook
from worker.watermarks import PROGRESS_HEADER, ProgressMarker, Watermarks
from worker.work import NS_PER_MS, SourceRef

__all__ = ["Intake", "RecordBatch", "build_coalescer", "rekeyed_exit_wait_ms"]

_repartitioned = msgspec.json.Decoder(TaskEvent)
_progress = msgspec.json.Decoder(ProgressMarker)
_RETIRED = Applied.RETIRED
"""Read once: an Enum member's lookup runs Python code (``_apply`` checks it per event)."""


def rekeyed_exit_wait_ms(settings: Settings) -> int:
    """With re-keyed input, how long a STOPPED task waits for its stopped containers' exit codes,
    even while draining: ``exit_wait_ms``, the stop linger, or the rebalance or session timeout,
    whichever is longest (an input partition stalls that long when its owner leaves or dies, and
    with it a ``die`` of the task); 0 with ``task`` keying (a container's events keep their order
    within a partition, and ``exit_wait_ms`` alone covers a ``stop`` written before its ``die``)."""
    if settings.input_keying != "any":
        return 0
    return max(
        settings.exit_wait_ms,
        settings.stop_linger_ms,
        settings.session_timeout_ms,
        settings.rebalance_timeout_ms,
    )


def build_coalescer(settings: Settings, *, describe: bool | None = None) -> Coalescer:
    """The coalescer the settings describe: the same for the worker, ``replay`` and the benchmark.
    ``describe`` overrides ``settings.describe_tasks`` (offline there is no ECS to ask)."""
    rekeyed = settings.input_keying == "any"
    return Coalescer(
        linger_ns=settings.linger_ms * NS_PER_MS,
        max_active_tasks=settings.max_active_tasks,
        retired_cap=settings.retired_cache,
        max_containers=settings.max_containers_per_task,
        max_attachments=settings.max_attachments_per_task,
        definitions=DefinitionCache(settings.task_definition_cache),
        describe=settings.describe_tasks if describe is None else describe,
        settle_ns=settings.settle_ms * NS_PER_MS,
        stop_linger_ns=settings.stop_linger_ms * NS_PER_MS,
        exit_wait_ns=settings.exit_wait_ms * NS_PER_MS,
        detect_split=settings.input_keying == "task",
        rekeyed_exit_wait_ns=rekeyed_exit_wait_ms(settings) * NS_PER_MS,
        reorder_ns=settings.repartition_reorder_ms * NS_PER_MS if rekeyed else 0,
        watermarks=Watermarks(settings.input_topic) if rekeyed else None,
        max_idle_ns=(settings.repartition_max_idle_ms or rekeyed_exit_wait_ms(settings)) * NS_PER_MS,
    )


class RecordBatch(msgspec.Struct, gc=False):
    """One record's decoded events, ready to apply, and its bad items, to dead-letter. A Struct,
    not a dataclass: one is made per record, and its constructor runs no Python code."""

    source: SourceRef
    events: list[TaskEvent]
    bad: list[tuple[Stage, BadItem]]
    replayed: bool = False
    """The record lies below its partition's replay end (``OffsetBook.replayed``), as it was read."""


@dataclass(slots=True)
class Intake:
    """Decode -> validate -> apply for the records of the partitions in ``book``.

    ``ignored`` and ``decoded`` count ignored items (by reason) and decoded events (by format)
    since the caller last took them (``take_tallies``), so that labelled metrics are updated per
    batch of records, not per record.
    """

    decoder: RecordDecoder
    coalescer: Coalescer
    book: OffsetBook
    linger_ns: int
    ignored: Counter[str] = field(default_factory=Counter)
    decoded: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_settings(cls, settings: Settings, book: OffsetBook, *, describe: bool | None = None) -> Intake:
        decoder = RecordDecoder(
            input_format=settings.input_format, max_record_bytes=settings.max_record_bytes
        )
        coalescer = build_coalescer(settings, describe=describe)
        return cls(decoder, coalescer, book, settings.linger_ms * NS_PER_MS)

    def read(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
        *,
        timestamp_ms: int | None = None,
        task_state: bool = True,
    ) -> RecordBatch | None:
        """Decode and validate one record and track it; None when its partition is not owned
        (nothing is tracked: the record must be read again by the partition's owner).
        ``task_state`` False: the per-task bounds are checked on the event alone (the repartition
        stage, where the task's state is not held)."""
        offsets = self.book.owned(topic, partition)
        if offsets is None:
            return None
        decoded = self.decoder.decode(
            value, headers, record_timestamp_ns=None if timestamp_ms is None else timestamp_ms * NS_PER_MS
        )
        events = decoded.events
        over_limits = self.coalescer.over_limits if task_state else self.coalescer.over_event_limits
        for event in events:
            if check_event(event) is not None or over_limits(event) is not None:
                events, refused = _validated(events, over_limits)
                break
        else:
            refused = []  # the common case: every event kept, in the decoder's list
        bad: list[tuple[Stage, BadItem]] = [("decode", item) for item in decoded.bad] if decoded.bad else []
        if refused:
            bad += refused
        if decoded.ignored:
            self.ignored.update(decoded.ignored)
        if events:
            self.decoded[decoded.format] += len(events)
        return RecordBatch(
            offsets.track(offset, len(events) + (1 if bad else 0)), events, bad, offsets.replayed(offset)
        )

    def read_repartitioned(
        self, topic: str, partition: int, offset: int, value: bytes | None
    ) -> RecordBatch | None:
        """Decode one repartition record (one canonical event, ``worker.repartition``), check the
        task's bounds against its state, and track it; None when its partition is not owned. A
        record that is not a canonical event (written by something else) is bad, not a crash."""
        offsets = self.book.owned(topic, partition)
        if offsets is None:
            return None
        events: list[TaskEvent] = []
        bad: list[tuple[Stage, BadItem]] = []
        try:
            event = _repartitioned.decode(value or b"")
        except PARSE_ERRORS as exc:
            bad.append(("decode", bad_item_for(exc, 0, "canonical")))
        else:
            broken = self.coalescer.over_limits(event)
            if broken is None:
                events.append(event)
            else:
                bad.append(("validate", BadItem(broken, "EcsRuleViolation", 0)))
        return RecordBatch(offsets.track(offset, 1), events, bad, offsets.replayed(offset))

    def read_progress(
        self, topic: str, partition: int, offset: int, value: bytes | None, now: int, wall: int
    ) -> RecordBatch | None:
        """Take one progress marker of the repartition topic (``worker.watermarks``) at ``now``
        (monotonic ns; ``wall`` on the wall clock) and track its record, resolved at once; None
        when its partition is not owned. A malformed marker is bad, not a crash."""
        offsets = self.book.owned(topic, partition)
        if offsets is None:
            return None
        bad: list[tuple[Stage, BadItem]] = []
        watermarks = self.coalescer.watermarks
        try:
            marker = _progress.decode(value or b"")
        except PARSE_ERRORS as exc:
            bad.append(("decode", bad_item_for(exc, 0, PROGRESS_HEADER)))
        else:
            if watermarks is not None:
                watermarks.note(partition, marker, wall, now)
        return RecordBatch(offsets.track(offset, 1 if bad else 0), [], bad)

    def apply(self, event: TaskEvent, source: SourceRef, now: int, wall: int) -> Applied:
        """Merge one event of ``source``. ``now`` is the coalescer's monotonic clock (ns), ``wall``
        the same instant on the wall clock (ns), to date the change back to its observation."""
        return self._apply(event, source, now, wall, self.book.replayed(source))

    def admit(self, batch: RecordBatch, now: int, wall: int) -> None:
        """Apply every event of ``batch`` (as ``read`` gave it) at one instant."""
        if not batch.events:
            return
        source, replayed, apply = batch.source, batch.replayed, self._apply
        for event in batch.events:
            apply(event, source, now, wall, replayed)

    def _apply(self, event: TaskEvent, source: SourceRef, now: int, wall: int, replayed: bool) -> Applied:
        # A fresh change's linger counts from its observation, not from its arrival here: time in
        # transit (the shipper, Kafka) is not added to it. An older one (a backlog after a
        # restart, a skewed clock) lingers from its arrival, so that a backlog is coalesced.
        age = wall - event.observedAt
        applied, resolved = self.coalescer.apply(
            event, source, now - age if 0 < age < self.linger_ns else now, replayed=replayed
        )
        if applied is _RETIRED:
            self.ignored[LATE_EVENT] += 1
        if resolved:
            release = self.book.release
            for done in resolved:
                release(done)
        return applied

    def take_tallies(self) -> tuple[Counter[str], Counter[str]]:
        """The ignored and decoded counts since the last call; the counters start again."""
        if self.coalescer.late:
            self.ignored[LATE_EVENT] += self.coalescer.late
            self.coalescer.late = 0
        tallies = (self.ignored, self.decoded)
        self.ignored, self.decoded = Counter(), Counter()
        return tallies


def _validated(
    events: list[TaskEvent], over_limits: Callable[[TaskEvent], str | None]
) -> tuple[list[TaskEvent], list[tuple[Stage, BadItem]]]:
    """The events that break no ECS rule (``check_event``) nor bound (``over_limits``), and a bad
    item (its index in the record's events) for each of the others."""
    kept: list[TaskEvent] = []
    refused: list[tuple[Stage, BadItem]] = []
    for index, event in enumerate(events):
        broken = check_event(event) or over_limits(event)
        if broken is None:
            kept.append(event)
        else:
            refused.append(("validate", BadItem(broken, "EcsRuleViolation", index)))
    return kept, refused
