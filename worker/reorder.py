"""The reorder buffer of re-keyed events (``input_keying = any``). Pure: the caller passes the clock.

Re-keying keeps the order of each input partition, not the order across partitions: the events of
one container read from two input partitions (a ``stop`` and its ``die``, a restart's ``die`` and
``start``) can reach the repartition topic in either order. The coalescer's ranks make most
reorderings harmless, but not all: an exit read after the container's restart, a STOPPED read
before the exit that carries its code. So, as a stream processor sorts within a grace period, a
task's re-keyed events are held until the task has been quiet for ``window_ns`` (or its oldest
held event waited ``4 * window_ns``), then handed over in observation order (``observedAt``, then
arrival). The cost is ``window_ns`` of latency per burst of a task's events.

An input partition that stops for longer than the window (its owner changes, or lags) would still
deliver its events after the task's later ones: with ``watermarks`` (``worker.watermarks``), a
task's events also wait until every input partition has progressed past them, for at most
``max_idle_ns`` from the first (then they pass anyway, counted in ``forced``).

Every (event, source) held comes back exactly once, from ``due``, ``everything`` or ``drop``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas.events import TaskEvent
from worker.watermarks import Watermarks
from worker.work import SourceRef, TaskKey

__all__ = ["Held", "ReorderBuffer"]

Held = tuple[TaskEvent, SourceRef, int]
"""A released event, its source and its arrival (monotonic ns)."""

_LONGEST_WAIT = 4
"""A task's oldest held event waits at most this many windows, however busy the task."""


_RECHECKS_PER_WINDOW = 4
"""How often, per window, a task held back by the watermarks is looked at again."""


@dataclass(slots=True)
class _Held:
    first_at: int
    last_at: int
    partition: int
    observed_ns: int = 0
    """The latest ``observedAt`` held."""
    events: list[tuple[int, int, TaskEvent, SourceRef, int]] = field(default_factory=list)
    """(observedAt, arrival sequence, event, source, arrival time)"""


class ReorderBuffer:
    """Held events by task; ``window_ns`` > 0. With ``watermarks``, a task's events also wait for
    every input partition's progress, up to ``max_idle_ns`` after the first."""

    def __init__(self, window_ns: int, watermarks: Watermarks | None = None, max_idle_ns: int = 0) -> None:
        self._window = window_ns
        self._watermarks = watermarks
        self._max_idle = max_idle_ns
        self.forced = 0
        """Tasks whose events passed at ``max_idle_ns`` without the input's progress."""
        self._tasks: dict[TaskKey, _Held] = {}
        self._heap: list[tuple[int, TaskKey]] = []
        self._seq = 0

    def __len__(self) -> int:
        return sum(len(held.events) for held in self._tasks.values())

    def hold(self, key: TaskKey, event: TaskEvent, source: SourceRef, now: int) -> None:
        """Hold ``event`` of task ``key``, read from ``source`` at ``now`` (monotonic ns)."""
        held = self._tasks.get(key)
        if held is None:
            held = self._tasks[key] = _Held(now, now, source.partition)
            heapq.heappush(self._heap, (now + self._window, key))
        held.last_at = now
        if event.observedAt > held.observed_ns:
            held.observed_ns = event.observedAt
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
            behind_until = self._behind_until(held, now)
            if behind_until is not None:
                released.extend(self._passing_prefix(held))
                if held.events:
                    heapq.heappush(self._heap, (behind_until, key))
                else:
                    del self._tasks[key]
                continue
            del self._tasks[key]
            released.extend(_in_order(held))
        return released

    def _passing_prefix(self, held: _Held) -> list[Held]:
        """Hand over the events of a task held back by the watermarks that the input has already
        passed, in observation order up to the first that it has not (a task whose events keep
        coming would otherwise wait for ``max_idle_ns`` each time); the others stay held."""
        assert self._watermarks is not None  # only a task behind the watermarks is here
        ordered = sorted(held.events, key=lambda item: item[:2])
        cut = 0
        for observed, _, _, source, at in ordered:
            if not self._watermarks.passes(source.partition, observed, at):
                break
            cut += 1
        if cut == 0:
            return []
        rest = held.events = ordered[cut:]
        if rest:
            held.first_at = min(item[4] for item in rest)
            held.observed_ns = max(item[0] for item in rest)
        return [(event, source, at) for _, _, event, source, at in ordered[:cut]]

    def _behind_until(self, held: _Held, now: int) -> int | None:
        """When to look again at a task whose input is behind; None when its events may pass."""
        watermarks = self._watermarks
        if watermarks is None or watermarks.passes(held.partition, held.observed_ns, held.last_at):
            return None
        give_up_at = held.first_at + self._max_idle
        if now >= give_up_at:
            self.forced += 1
            return None
        return min(give_up_at, now + max(1, self._window // _RECHECKS_PER_WINDOW))

    def sources(self) -> set[tuple[str, int, int]]:
        """(topic, partition, offset) of every held event's record."""
        return {(s.topic, s.partition, s.offset) for held in self._tasks.values() for *_, s, _ in held.events}

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
