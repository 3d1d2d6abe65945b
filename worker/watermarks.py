"""Input progress across the repartition topic (``input_keying = any``): the watermarks that let the
coalescing stage wait for an input partition that is behind. Pure.

Re-keying keeps each input partition's order, not the order across input partitions. The reorder
buffer (``worker.reorder``) sorts what arrives within its window, but an input partition that stops
for longer (its owner leaves or dies, and the group hands it over; its owner lags) holds back the
events of every task it carries, for seconds or a session timeout. As a Kafka Streams task with
several input partitions waits for one whose lag is known and not zero (``max.task.idle.ms``, KIP-695),
the coalescing stage waits for it, knowing it from **progress markers**:

- stage 1 notes, per input partition it owns, the largest ``observedAt`` of the events its
  acknowledged prefix carries (every record below the partition's committable offset is in the
  repartition topic: *event progress*), and when the partition was last **caught up** (its
  committable offset at or past the high watermark of a fetch: every record appended before that
  fetch is in the repartition topic), and writes them every interval as one marker record to each
  partition of the repartition topic (header ``progress``; ``ProgressMarker``). A marker follows
  the events it covers in every partition's log, since it is written after their acknowledgement;
- stage 2 keeps, per repartition partition, the largest progress each input partition's markers
  gave there (``Watermarks``), and a task's held events pass once every input partition has
  either event progress at or past their latest ``observedAt`` or been caught up at or after their
  arrival (on a clock made local at the marker's arrival). Until then they stay held, up to
  ``max_idle`` (``repartition_max_idle_ms``), then pass anyway (counted).

Progress only grows (the largest seen wins), so markers of an earlier owner of an input partition,
or read again after a restart, are harmless. Clocks: event progress compares hosts' observation
times with each other (as the reorder buffer's order does); caught-up times compare the workers'
wall clocks (NTP-close), never a host's with a worker's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import msgspec

from worker.work import NS_PER_MS

__all__ = ["PROGRESS_HEADER", "InputProgress", "ProgressMarker", "ProgressTracker", "Watermarks"]

PROGRESS_HEADER = "progress"
"""The header that marks a repartition record as a progress marker (its value: ``1``)."""


class InputProgress(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One input partition's progress: ``[event_ns, caught_up_ms]`` on the wire.

    ``event_ns``: the largest ``observedAt`` (wall ns, the hosts' clocks) of the events of its
    acknowledged prefix; 0 when none. ``caught_up_ms``: the wall time (ms, the writing worker's
    clock) of the last fetch whose high watermark that prefix had reached; 0 when never."""

    event_ns: int
    caught_up_ms: int

    def merged(self, other: InputProgress) -> InputProgress:
        """The larger of each progress."""
        return InputProgress(max(self.event_ns, other.event_ns), max(self.caught_up_ms, other.caught_up_ms))


class ProgressMarker(msgspec.Struct, frozen=True, gc=False):
    """A progress marker's value: the input ``topic`` and its partitions' progress, by partition."""

    topic: str
    progress: dict[int, InputProgress]


class _Partition:
    __slots__ = ("caught_up_ms", "event_ns", "forwarded")

    def __init__(self) -> None:
        self.forwarded: deque[tuple[int, int]] = deque()
        """(offset, largest observedAt) of the records forwarded and not yet acknowledged."""
        self.event_ns = 0
        self.caught_up_ms = 0


class ProgressTracker:
    """Stage 1's side: what each owned input partition has put in the repartition topic."""

    def __init__(self) -> None:
        self._partitions: dict[int, _Partition] = {}

    def forwarded(self, partition: int, offset: int, observed_ns: int) -> None:
        """Note that the record at ``offset`` of input ``partition`` was forwarded with events
        whose latest ``observedAt`` is ``observed_ns``."""
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = _Partition()
        state.forwarded.append((offset, observed_ns))

    def progress(
        self, partition: int, committable: int | None, high_watermark: int | None, fetched_ms: int | None
    ) -> InputProgress:
        """Input ``partition``'s progress now: ``committable`` is its committable offset (every
        record below it acknowledged; None: none read since its assignment), ``high_watermark``
        and ``fetched_ms`` the high watermark of its last fetch and that fetch's wall time (ms)."""
        state = self._partitions.get(partition)
        if state is None:
            state = self._partitions[partition] = _Partition()
        done = -1 if committable is None else committable
        forwarded = state.forwarded
        while forwarded and forwarded[0][0] < done:
            state.event_ns = max(state.event_ns, forwarded.popleft()[1])
        if high_watermark is not None and fetched_ms is not None and done >= high_watermark:
            state.caught_up_ms = max(state.caught_up_ms, fetched_ms)
        return InputProgress(state.event_ns, state.caught_up_ms)

    def retain(self, owned: Iterable[int]) -> None:
        """Forget the input partitions not ``owned`` any more (their next owner reports them)."""
        keep = set(owned)
        for partition in [p for p in self._partitions if p not in keep]:
            del self._partitions[partition]


class Watermarks:
    """Stage 2's side: per repartition partition, the progress its markers gave for each input
    partition, and whether a task's held events may pass (``passes``)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._inputs: frozenset[int] = frozenset()
        self._by_partition: dict[int, dict[int, tuple[int, int]]] = {}
        """repartition partition -> input partition -> (event_ns, caught up on the monotonic clock)"""

    def set_inputs(self, partitions: Iterable[int]) -> None:
        """The input topic's partitions (from the consumer's metadata): each must progress."""
        self._inputs = frozenset(partitions)

    def note(self, partition: int, marker: ProgressMarker, wall_ns: int, now: int) -> None:
        """Take ``marker``, read from repartition ``partition`` at ``now`` (monotonic ns, that is
        ``wall_ns`` on the wall clock); a marker of another input topic is ignored."""
        if marker.topic != self.topic:
            return
        table = self._by_partition.setdefault(partition, {})
        shift = now - wall_ns
        for input_partition, progress in marker.progress.items():
            caught_up = progress.caught_up_ms * NS_PER_MS + shift if progress.caught_up_ms else -1
            event_ns, known = table.get(input_partition, (0, -1))
            table[input_partition] = (max(event_ns, progress.event_ns), max(known, caught_up))

    def passes(self, partition: int, observed_ns: int, arrived: int) -> bool:
        """May events held in repartition ``partition`` pass: the latest observed at
        ``observed_ns`` (wall ns), the last arrived at ``arrived`` (monotonic ns)? Each input
        partition must have progressed past the one or been caught up since the other. False
        while the input topic's partitions are not known."""
        table = self._by_partition.get(partition)
        if table is None or not self._inputs:
            return False
        for input_partition in self._inputs:
            event_ns, caught_up = table.get(input_partition, (0, -1))
            if event_ns < observed_ns and caught_up < arrived:
                return False
        return True

    def retain(self, owned: Iterable[int]) -> None:
        """Forget the repartition partitions not ``owned`` any more (their next owner reads newer
        markers)."""
        keep = set(owned)
        for partition in [p for p in self._by_partition if p not in keep]:
            del self._by_partition[partition]

    def lag_ns(self, now: int) -> int:
        """How far behind ``now`` (monotonic ns) the least caught-up input partition is, over the
        repartition partitions owned; 0 when nothing is known."""
        worst = 0
        for table in self._by_partition.values():
            for input_partition in self._inputs:
                caught_up = table.get(input_partition, (0, -1))[1]
                if caught_up >= 0:
                    worst = max(worst, now - caught_up)
        return worst
