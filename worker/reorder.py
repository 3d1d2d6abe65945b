"""The reorder buffer of re-keyed events (``input_keying = any``). Pure: the caller passes the clock.

Re-keying keeps the order of each input partition, not the order across partitions: the events of
one container read from two input partitions (a ``stop`` and its ``die``, a restart's ``die`` and
``start``) can reach the repartition topic in either order. The coalescer's ranks make most
reorderings harmless, but not all: an exit read after the container's restart, a STOPPED read
before the exit that carries its code. So, as a stream processor sorts within a grace period, a
task's re-keyed events are held until the task has been quiet for ``window_ns`` (or its oldest
held event waited ``4 * window_ns``), then handed over in observation order (``observedAt``, then
arrival). The cost is ``window_ns`` of latency per burst of a task's events.

Every (event, source) held comes back exactly once, from ``due``, ``everything`` or ``drop``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas.events import TaskEvent
from worker.work import SourceRef, TaskKey

__all__ = ["Held", "ReorderBuffer"]

Held = tuple[TaskEvent, SourceRef, int]
"""A released event, its source and its arrival (monotonic ns)."""

_LONGEST_WAIT = 4
"""A task's oldest held event waits at most this many windows, however busy the task."""


@dataclass(slots=True)
class _Held:
    first_at: int
    last_at: int
    events: list[tuple[int, int, TaskEvent, SourceRef, int]] = field(default_factory=list)
    """(observedAt, arrival sequence, event, source, arrival time)"""


class ReorderBuffer:
    """Held events by task; ``window_ns`` > 0."""

    def __init__(self, window_ns: int) -> None:
        self._window = window_ns
        self._tasks: dict[TaskKey, _Held] = {}
        self._heap: list[tuple[int, TaskKey]] = []
        self._seq = 0

    def __len__(self) -> int:
        return sum(len(held.events) for held in self._tasks.values())

    def hold(self, key: TaskKey, event: TaskEvent, source: SourceRef, now: int) -> None:
        """Hold ``event`` of task ``key``, read from ``source`` at ``now`` (monotonic ns)."""
        held = self._tasks.get(key)
        if held is None:
            held = self._tasks[key] = _Held(now, now)
            heapq.heappush(self._heap, (now + self._window, key))
        held.last_at = now
        self._seq += 1
        held.events.append((event.observedAt, self._seq, event, source, now))

    def next_due_at(self) -> int | None:
        """When ``due`` next hands something over (a lower bound), or None when nothing is held."""
        return self._heap[0][0] if self._heap else None

    def due(self, now: int) -> list[Held]:
        """The events of the tasks due at ``now``, each task's in observation order."""
        released: list[Held] = []
        while self._heap and self._heap[0][0] <= now:
            _, key = heapq.heappop(self._heap)
            held = self._tasks.get(key)
            if held is None:
                continue
            due_at = min(held.last_at + self._window, held.first_at + _LONGEST_WAIT * self._window)
            if due_at > now:
                heapq.heappush(self._heap, (due_at, key))
                continue
            del self._tasks[key]
            released.extend(_in_order(held))
        return released

    def everything(self) -> list[Held]:
        """Every held event now (a drain), each task's in observation order."""
        released = [pair for held in self._tasks.values() for pair in _in_order(held)]
        self._tasks.clear()
        self._heap.clear()
        return released

    def drop(self, owns: Callable[[SourceRef], bool]) -> list[SourceRef]:
        """Give up the held events whose source ``owns`` is true (their partition was revoked: the
        next owner reads them again); return their sources."""
        given_up: list[SourceRef] = []
        for key, held in list(self._tasks.items()):
            kept = [item for item in held.events if not owns(item[3])]
            given_up.extend(item[3] for item in held.events if owns(item[3]))
            if kept:
                held.events = kept
            else:
                del self._tasks[key]
        return given_up


def _in_order(held: _Held) -> list[Held]:
    return [(event, source, at) for _, _, event, source, at in sorted(held.events, key=lambda item: item[:2])]
