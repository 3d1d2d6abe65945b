"""Partitions: assignment and its epochs, the offset book, commits, lag, and the rebalance listener.

Whoever holds the offsets handles their revocation (as Confluent's Parallel Consumer does): this
object is the consumer's ``ConsumerRebalanceListener``. On assignment each partition opens a new
epoch in the ``OffsetBook``. On revocation its work is drained (sent and resolved, up to the drain
deadline), what is resolved is committed, the unresolved sources are given up (the next owner
re-reads them) and the partition leaves the book, so that a completion arriving later, from the
old epoch, releases nothing. A partition's replay end (``OffsetBook.note_replay_end``) is noted
by the consume loop from the high watermark of its first fetch (``worker.consume``), not here: a
``ListOffsets`` request in the listener would hold the rebalance up, and one cut short by a
timeout leaves aiokafka a connection it never closes.

Lifecycle of a partition here::

    assigned (epoch n, tracked) --revoked--> drain -> commit -> drop -> untracked
                                --lost-----> drop -> untracked   (this member was dropped)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from worker.fence import StallFence
from worker.group_log import member_of, membership_lost
from worker.metrics import Metrics
from worker.offsets import OffsetBook, TopicPartitionKey
from worker.start_position import seek_to_start_time
from worker.work import SourceRef

__all__ = ["COMMIT_TIMEOUT_S", "Drainer", "Partitions"]

log = logging.getLogger(__name__)

COMMIT_TIMEOUT_S = 3.0
"""Bound on one commit: after a broker outage aiokafka can wait out its 40 s request timeout,
more than a pod's grace period leaves after the drain."""
_POSITION_TIMEOUT_S = 1.0
_MEMBERSHIP_ERRORS = (
    CommitFailedError,
    UnknownMemberIdError,
    IllegalGenerationError,
    RebalanceInProgressError,
)
"""What a commit raises when the group no longer counts this member in the generation of its
assignment (Kafka's OffsetCommit: UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS;
aiokafka wraps them in ``CommitFailedError``)."""


class Drainer(Protocol):
    """What a revocation needs from the rest of the pipeline."""

    async def drain(self, partitions: set[TopicPartitionKey] | None) -> None:
        """Send every pending change now and wait, up to the drain deadline, until the work of
        ``partitions`` (all when None) is resolved."""

    def drop(self, owns: Callable[[SourceRef], bool]) -> list[SourceRef]:
        """Give up the unresolved sources for which ``owns`` is true; return them."""


class Partitions(ConsumerRebalanceListener):  # type: ignore[misc]
    """The partitions this process owns. ``attach`` the consumer and the drainer before the
    consumer starts; ``ready`` is set at the first assignment."""

    def __init__(
        self, book: OffsetBook, metrics: Metrics, *, start_time: datetime | None = None, commits: bool = True
    ) -> None:
        """``start_time``: where partitions without a committed offset start
        (``worker.start_position``); None leaves them to ``auto_offset_reset``. ``commits``
        False (a dry run): offsets are tracked, never committed."""
        self.book = book
        self._commits = commits
        self._start_time = start_time
        self.ready = asyncio.Event()
        self._metrics = metrics
        self._consumer: Any = None
        self._drainer: Drainer | None = None
        self._lag_known = True
        self._on_share: Callable[[int, int], None] | None = None
        self._share_topic: str | None = None
        self._commit_failing: str | None = None
        self._committing = asyncio.Lock()
        """One commit at a time, its offsets read under the lock: two commits in flight together
        (the periodic one and the fence's confirmation, both due right after a stall) could land
        in the other order, the older offsets last."""
        self.fence: StallFence | None = None
        """Reopened by every assignment (``worker.fence``)."""

    def attach(
        self,
        consumer: Any,
        drainer: Drainer,
        on_share: Callable[[int, int], None] | None = None,
        *,
        share_topic: str | None = None,
    ) -> None:
        """``on_share(owned, partitions)`` is told this process's share of the topic's
        partitions after every assignment and revocation (``RateBudgets.set_share``).
        ``share_topic``: the one topic whose partitions the share counts (with ``input_keying =
        any``, the repartition topic: its records are the ones reported to ECS); None: all."""
        self._consumer = consumer
        self._drainer = drainer
        self._on_share = on_share
        self._share_topic = share_topic

    def _reshare(self) -> None:
        held = self.book.partitions()
        if self._on_share is None or self._consumer is None or not held:
            return
        owned = [tp for tp in held if self._share_topic in (None, tp[0])]
        topics = {topic for topic, _ in owned} if self._share_topic is None else {self._share_topic}
        total = sum(len(self._consumer.partitions_for_topic(topic) or ()) for topic in topics)
        if total:
            self._on_share(len(owned), total)

    # -- rebalance listener (called by aiokafka's coordinator) -----------------------------------

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        partitions = [(tp.topic, tp.partition) for tp in assigned]
        self._metrics.rebalances.labels("assigned").inc()
        if self._start_time is not None and assigned:
            try:
                await seek_to_start_time(self._consumer, assigned, self._start_time)
            except Exception as exc:  # the brokers failed to answer: say so, start as configured
                log.warning(
                    "start_time not applied (%s): partitions without a committed offset follow "
                    "auto_offset_reset",
                    exc,
                    extra={"error_class": type(exc).__name__},
                )
        self.book.assign(partitions)
        self._reshare()
        self.ready.set()
        if self.fence is not None:
            self.fence.reopen()
        log.info(
            "partitions assigned: %s",
            ", ".join(f"{t}[{p}]" for t, p in sorted(partitions)) or "none (more members than partitions)",
            extra={
                "partitions": [(t, p, self.book.epoch(t, p)) for t, p in partitions],
                **member_of(self._consumer),
            },
        )

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        partitions = [(tp.topic, tp.partition) for tp in revoked]
        self._metrics.rebalances.labels("revoked").inc()
        if not partitions:  # aiokafka calls this with none before every join, the first included
            return
        if membership_lost(self._consumer):
            self.lose(partitions)
        else:
            await self.revoke(partitions)

    def lose(self, partitions: list[TopicPartitionKey]) -> None:
        """The group dropped this member (``group_log.membership_lost``) and gave ``partitions``
        to others, who read their uncommitted records again: no drain (changes sent now would
        land after their new owners asked ECS for its view, and could contradict it), no commit
        (the group refuses it); the work is given up, the submissions under way for those
        partitions alone cancelled (``Drainer.drop``), and the partitions leave the book."""
        assert self._drainer is not None
        lost = set(partitions)
        log.warning(
            "partitions lost: the group dropped this member and gave them to others; their work "
            "is given up without a drain, and their next owners read it again",
            extra={"partitions": partitions},
        )
        for source in self._drainer.drop(lambda s: (s.topic, s.partition) in lost):
            self.book.release(source)
        self.book.revoke(partitions)

    async def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        """Drain, commit, drop, untrack: see the module docstring."""
        assert self._drainer is not None
        revoked = set(partitions)
        log.info("partitions revoked: draining their work", extra={"partitions": partitions})
        await self._drainer.drain(revoked)
        await self.commit(revoked)
        for source in self._drainer.drop(lambda s: (s.topic, s.partition) in revoked):
            self.book.release(source)
        self.book.revoke(partitions)
        self._reshare()

    # -- commits and lag -------------------------------------------------------------------------

    async def run_commits(self, interval_s: float) -> None:
        """Every ``interval_s``: commit what moved, then publish the offset gauges."""
        while True:
            await asyncio.sleep(interval_s)
            await self.commit()
            await self.report_offsets()

    async def commit(self, partitions: Iterable[TopicPartitionKey] | None = None) -> None:
        """Commit the committable offsets that moved (of ``partitions``, or all owned). A failed
        commit is logged and left to the next one: the next owner re-reads (at-least-once)."""
        async with self._committing:
            await self._commit(partitions)

    async def _commit(self, partitions: Iterable[TopicPartitionKey] | None) -> None:
        moves = self.book.to_commit()
        if partitions is not None:
            wanted = set(partitions)
            moves = {tp: o for tp, o in moves.items() if tp in wanted}
        if not moves or self._consumer is None or not self._commits:
            return
        try:
            async with asyncio.timeout(COMMIT_TIMEOUT_S):
                await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in moves.items()})
        except Exception as exc:  # logged once per cause (commit_failed); never raised
            self.commit_failed(exc)
            return
        if self._commit_failing is not None:
            log.info("offset commits succeed again", extra={"cause": self._commit_failing})
            self._commit_failing = None
        self.book.mark_committed(moves)
        for (topic, partition), offset in moves.items():
            self._metrics.committed_offset.labels(topic, str(partition)).set(offset)

    async def confirm_membership(self) -> bool:
        """Whether the group still counts this member in its generation (``worker.fence``): the
        offsets last committed (or, none yet, the committable ones) committed again, which the
        coordinator refuses from a member it dropped. The offsets committed are the newest ones
        (the last committed, updated by the committable ones that moved since), never older ones
        than a commit before. True when there is nothing to commit (no partition read: no call to
        fence) and in a dry run (no commit, and no ECS call either). Raises what the commit raises
        when the brokers do not answer (unknown yet)."""
        if not self._commits:
            return True
        async with self._committing:
            offsets = {**self.book.committed(), **self.book.to_commit()}
            if self._consumer is None or not offsets:
                return True
            try:
                async with asyncio.timeout(COMMIT_TIMEOUT_S):
                    await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
            except _MEMBERSHIP_ERRORS as exc:
                self.commit_failed(exc)
                return False
            self.book.mark_committed(offsets)
        return True

    def commit_failed(self, exc: BaseException) -> None:
        """Say why commits fail, once per cause until one succeeds again (commits are retried
        every ``commit_interval_ms``; the offsets stay in the book). A group error means the
        group dropped this member (its session expired, a rebalance passed it by): its partitions
        go to another member, or back to this one once it rejoins, and the records past the last
        committed offsets are read again there; the tasks first seen in them start from ECS's view
        (``worker.knowledge``)."""
        if isinstance(exc, _MEMBERSHIP_ERRORS):
            cause = "membership"
            message = (
                "offset commit refused: this member is no longer in the group's generation "
                "(%s: its session expired or a rebalance passed it by); it rejoins, and the "
                "records past the last committed offsets are read again by their next owner"
            )
        else:
            cause = type(exc).__name__
            message = "offset commit failed (%s): retried at the next commit; on a rebalance first, the "
            message += "next owner reads the records past the last committed offsets again"
        if cause != self._commit_failing:
            self._commit_failing = cause
            log.warning(message, _summary(exc), extra={"error_class": type(exc).__name__, "cause": cause})

    def lag_known(self, known: bool) -> None:
        """Whether the brokers answer (``worker.broker_watch``): while they do not, the lag gauges
        are removed rather than left at their last value, and not set again until they do."""
        self._lag_known = known
        if not known:
            self._metrics.consumer_lag.clear()

    async def report_offsets(self) -> None:
        """Incomplete offsets and the lag of the fetch position, per owned partition."""
        for (topic, partition), count in self.book.incomplete().items():
            self._metrics.incomplete_offsets.labels(topic, str(partition)).set(count)
            tp = TopicPartition(topic, partition)
            high = self._consumer.highwater(tp)
            if high is None or not self._lag_known:  # nothing fetched yet, or a broker outage
                continue
            # Lag of the fetch position: records not yet read. (Read but unresolved records are
            # incomplete_offsets; committed_offset trails both.)
            with contextlib.suppress(Exception):  # the partition was revoked meanwhile
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel() that
                # lands as the wrapped call completes, and this loop then never stops.
                async with asyncio.timeout(_POSITION_TIMEOUT_S):
                    position = await self._consumer.position(tp)
                self._metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - position))


def _summary(exc: BaseException) -> str:
    """An exception's class, and its message when that is one short line (aiokafka's
    ``CommitFailedError`` carries a paragraph of advice about poll intervals, beside the point)."""
    text = str(exc)
    if not text or "\n" in text or len(text) > 200 or isinstance(exc, _MEMBERSHIP_ERRORS):
        return type(exc).__name__
    return f"{type(exc).__name__}: {text}"
