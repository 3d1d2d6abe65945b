"""Offset bookkeeping: which offsets of each partition may be committed. Pure.

A record is tracked with a number of claims (one per part of it still being worked on: an event
whose task has not yet reported it, a dead-letter record not yet acknowledged...). The committable
offset of a partition is the lowest offset still holding claims, or one past the highest tracked
offset when none does: everything below it is resolved. Records arrive in offset order per
partition, so this is a queue, and each operation is O(1) amortised.

Every assignment of a partition opens a new **epoch** (as Confluent's Parallel Consumer fences
work): records are tracked under the epoch current when they were read, and a release names the
epoch of its ``SourceRef``. A release from an earlier epoch, work still in flight when the
partition was revoked and finished after it was assigned back, releases nothing: that record was
read again under the new epoch, and only the new work may let the offset pass it.

Every assignment also notes the partition's **replay end**: its end offset (high watermark) when
it was assigned, as the first fetch after it shows it (``worker.consume``). The records below it
may have been processed already, by an earlier owner or by this process before it lost its
membership (at-least-once: commits lag the work, and a member the group dropped cannot commit at
all), so a task first seen there is not trusted to be new (``worker.knowledge``). Records at or
past it were produced after the assignment: this owner is the first to read them.

A partition's lifecycle in the book::

    unassigned --assign()--> owned (epoch n) --revoke()--> unassigned --assign()--> owned (n+1)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable

from worker.work import SourceRef

__all__ = ["OffsetBook", "PartitionOffsets", "TopicPartitionKey"]

TopicPartitionKey = tuple[str, int]


_new_source = tuple.__new__
"""``SourceRef``'s constructor without its Python-level ``__new__`` (one per record)."""


class PartitionOffsets:
    """The claims of one partition (``topic``, ``partition``) under one assignment (``epoch``)."""

    __slots__ = ("_claims", "_order", "committed", "epoch", "highest", "partition", "replay_end", "topic")

    def __init__(
        self, committed: int | None = None, epoch: int = 0, *, topic: str = "", partition: int = -1
    ) -> None:
        self.topic = topic
        self.partition = partition
        self._claims: dict[int, int] = {}
        self._order: deque[int] = deque()
        self.highest: int | None = None
        self.committed = committed
        self.epoch = epoch
        self.replay_end: int | None = None
        """The end offset when the partition was assigned (None: not noted yet)."""

    def track(self, offset: int, claims: int) -> SourceRef:
        """Track the record at ``offset`` with ``claims``; returns its ``SourceRef`` under this
        epoch. A record re-delivered after a seek (at or below the highest offset tracked) is
        tracked already: only its ``SourceRef`` is returned."""
        if self.highest is None or offset > self.highest:
            self.highest = offset
            if claims > 0:
                self._claims[offset] = claims
                self._order.append(offset)
        return _new_source(SourceRef, (self.topic, self.partition, offset, self.epoch))

    def replayed(self, offset: int) -> bool:
        """Whether ``offset`` lies below the replay end noted at assignment (False when none was)."""
        end = self.replay_end
        return end is not None and offset < end

    def release(self, offset: int, count: int = 1) -> None:
        left = self._claims.get(offset)
        if left is None:
            return
        if left <= count:
            del self._claims[offset]
        else:
            self._claims[offset] = left - count

    def committable(self) -> int | None:
        """The next offset to commit (Kafka's convention: the first one not yet processed)."""
        while self._order and self._order[0] not in self._claims:
            self._order.popleft()
        if self._order:
            return self._order[0]
        return None if self.highest is None else self.highest + 1

    @property
    def incomplete(self) -> int:
        return len(self._claims)

    def claimed(self) -> set[int]:
        return set(self._claims)


class OffsetBook:
    """The ``PartitionOffsets`` of the partitions this process owns, each under its epoch."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartitionKey, PartitionOffsets] = {}
        self._epochs: dict[TopicPartitionKey, int] = {}
        """The last epoch of every partition ever assigned (kept after revocation)."""

    def assign(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """Own ``partitions`` under a new epoch each; one already owned keeps its epoch."""
        for tp in partitions:
            key = (tp[0], tp[1])
            if key not in self._partitions:
                epoch = self._epochs[key] = self._epochs.get(key, 0) + 1
                self._partitions[key] = PartitionOffsets(epoch=epoch, topic=key[0], partition=key[1])

    def revoke(self, partitions: Iterable[TopicPartitionKey]) -> None:
        for tp in partitions:
            self._partitions.pop((tp[0], tp[1]), None)

    def owns(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self._partitions

    def owned(self, topic: str, partition: int) -> PartitionOffsets | None:
        """The claims of an owned partition under its current epoch, None when it is not owned:
        ``Intake`` looks a record's partition up once, and tracks the record in it
        (``PartitionOffsets.track``) once decoded."""
        return self._partitions.get((topic, partition))

    def epoch(self, topic: str, partition: int) -> int | None:
        """The current epoch of an owned partition, None when it is not owned."""
        book = self._partitions.get((topic, partition))
        return None if book is None else book.epoch

    def note_replay_end(self, topic: str, partition: int, end: int) -> None:
        """Note an owned partition's end offset at its assignment (Kafka's high watermark: the
        offset of the next record to be produced). Only the first note of an epoch counts; a
        partition not owned is ignored."""
        book = self._partitions.get((topic, partition))
        if book is not None and book.replay_end is None:
            book.replay_end = end

    def replay_end(self, topic: str, partition: int) -> int | None:
        """The replay end noted for an owned partition's epoch; None when not noted or not owned."""
        book = self._partitions.get((topic, partition))
        return None if book is None else book.replay_end

    def replayed(self, source: SourceRef) -> bool:
        """Whether ``source``'s record lies below its partition's replay end, under the epoch it
        was read in: it may have been processed before. False when no end was noted (``python -m
        worker replay`` notes none: offline, it cannot ask ECS anyway)."""
        topic, partition, offset, epoch = source
        book = self._partitions.get((topic, partition))
        return book is not None and book.epoch == epoch and book.replayed(offset)

    def committable(self, topic: str, partition: int) -> int | None:
        """An owned partition's committable offset now (every record below it resolved); None when
        it is not owned or nothing was read since its assignment."""
        book = self._partitions.get((topic, partition))
        return None if book is None else book.committable()

    def track(self, topic: str, partition: int, offset: int, claims: int) -> SourceRef | None:
        """Track a record read now; returns its ``SourceRef`` (under the current epoch), or None
        when the partition is not owned (the record must be read again by its owner)."""
        book = self._partitions.get((topic, partition))
        return None if book is None else book.track(offset, claims)

    def release(self, source: SourceRef, count: int = 1) -> bool:
        """Release ``count`` claims of ``source``'s record. Returns False, releasing nothing, when
        the partition is not owned or is owned under another epoch than the source's."""
        topic, partition, offset, epoch = source  # (unpacked once: this runs per record)
        book = self._partitions.get((topic, partition))
        if book is None or book.epoch != epoch:
            return False
        book.release(offset, count)
        return True

    def to_commit(self) -> dict[TopicPartitionKey, int]:
        """Committable offsets that moved since the last ``mark_committed``."""
        moves: dict[TopicPartitionKey, int] = {}
        for tp, book in self._partitions.items():
            offset = book.committable()
            if offset is not None and offset != book.committed:
                moves[tp] = offset
        return moves

    def mark_committed(self, offsets: dict[TopicPartitionKey, int]) -> None:
        for tp, offset in offsets.items():
            book = self._partitions.get(tp)
            if book is not None:
                book.committed = offset

    def committed(self) -> dict[TopicPartitionKey, int]:
        return {tp: b.committed for tp, b in self._partitions.items() if b.committed is not None}

    def unresolved(
        self,
        waiting: Collection[tuple[str, int, int]] = (),
        partitions: Collection[TopicPartitionKey] | None = None,
    ) -> int:
        """How many offsets (of ``partitions``, all owned when None) still hold claims, leaving
        out the (topic, partition, offset) records in ``waiting``."""
        return sum(
            1
            for tp, book in self._partitions.items()
            if partitions is None or tp in partitions
            for offset in book.claimed()
            if (tp[0], tp[1], offset) not in waiting
        )

    def incomplete(self) -> dict[TopicPartitionKey, int]:
        return {tp: book.incomplete for tp, book in self._partitions.items()}

    def partitions(self) -> list[TopicPartitionKey]:
        return list(self._partitions)
