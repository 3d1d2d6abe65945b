"""Stage 3, coalesce: many events per task -> few full-snapshot submissions. Pure: the caller
passes the clock (``now``, monotonic nanoseconds) and does all I/O.

Per task the coalescer keeps the merged state (``TaskState``) and the Kafka records whose changes
the next submission will carry. A changed task becomes due ``linger`` after its first unsent
change, or at once when it reaches STOPPED. At most one submission per task is in flight; changes
arriving meanwhile go into the next one. A snapshot equal to the last acknowledged one is not sent,
nor is one whose task is still PENDING (the ECS agent reports RUNNING and STOPPED). Once STOPPED is
acknowledged the task retires into a bounded cache, so late events cause no call.

Every source record handed to ``apply`` comes back exactly once, from ``apply``, ``complete``,
``due`` or ``drop``: that is when its part is resolved and its offset may move on.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import Enum

from schemas.ecs import SubmitTaskStateChangeRequest
from schemas.events import TaskEvent
from worker.snapshot import build_request, fingerprint
from worker.task_state import CONTAINER_RANK, PENDING, STOPPED, TaskKey, TaskState

__all__ = ["Applied", "Coalescer", "Result", "SourceRef", "Submission"]

SourceRef = tuple[str, int, int]
"""(topic, partition, offset) of the Kafka record an event came from."""


class Applied(Enum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    RETIRED = "retired"
    """The task's STOPPED state was already acknowledged: the event is late and is ignored."""


class Result(Enum):
    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(slots=True)
class Submission:
    key: TaskKey
    request: SubmitTaskStateChangeRequest
    fingerprint: str
    sources: list[SourceRef]
    first_event_at: int
    """Observation time (wall-clock ns) of the oldest change this submission carries."""
    stopped: bool


@dataclass(slots=True)
class _Entry:
    state: TaskState
    sources: list[SourceRef] = field(default_factory=list)
    dirty: bool = False
    due_at: int | None = None
    first_event_at: int | None = None
    in_flight: Submission | None = None
    acked: str | None = None
    reported: frozenset[str] = frozenset()
    """Containers reported before the task was reopened (see ``Coalescer.reopen``)."""


class Coalescer:
    """Per-task state for the tasks of this process.

    ``linger_ns``: delay between a task's first unsent change and its submission.
    ``max_active_tasks``: above it, clean tasks (nothing unsent, nothing in flight) are evicted,
    least recently changed first; ``saturated`` tells the caller to pause consumption when only
    busy tasks remain. ``retired_cap``: how many retired tasks are remembered. ``max_containers``
    and ``max_attachments`` bound one task's containers and its attachments or managed agents: an
    event that would pass them is refused (``over_limits``) and dead-lettered by the caller.
    """

    def __init__(
        self,
        *,
        linger_ns: int,
        max_active_tasks: int,
        retired_cap: int,
        max_containers: int = 100,
        max_attachments: int = 100,
    ) -> None:
        self._linger = linger_ns
        self._max_containers = max_containers
        self._max_attachments = max_attachments
        self._max_active = max_active_tasks
        self._retired_cap = retired_cap
        self._active: OrderedDict[TaskKey, _Entry] = OrderedDict()
        self._retired: OrderedDict[TaskKey, frozenset[str]] = OrderedDict()
        """Retired tasks and the names of the containers they had."""
        self._heap: list[tuple[int, int, TaskKey]] = []
        self._seq = 0
        self.evicted = 0

    @property
    def active_count(self) -> int:
        return len(self._active)

    @property
    def saturated(self) -> bool:
        """Over the cap with only busy tasks left: the caller should pause consumption."""
        if len(self._active) > self._max_active:
            self._evict_clean(len(self._active) - self._max_active)
        return len(self._active) > self._max_active

    def is_retired(self, key: TaskKey) -> bool:
        return key in self._retired

    def reopen(self, event: TaskEvent) -> bool:
        """Reopen a retired task when ``event`` reports containers it never had, all STOPPED: its
        STOPPED was then reported from a partial view (its earlier records were read by another
        owner, or before a restart, and committed: a task with one known container, stopped,
        counts as stopped) and these containers' ends must still reach ECS. The task stays
        STOPPED. Returns whether it was reopened: ``apply`` the event again then."""
        key = (event.cluster, event.task)
        known = self._retired.get(key)
        if known is None:
            return False
        new = [c for c in event.containers if c.containerName not in known]
        if not new or any(c.status is None or CONTAINER_RANK[c.status] != STOPPED for c in new):
            return False
        del self._retired[key]
        state = TaskState(key)
        state.rank = state.explicit_rank = STOPPED
        self._make_room()
        self._active[key] = _Entry(state, reported=known)
        return True

    def over_limits(self, event: TaskEvent) -> str | None:
        """Why applying ``event`` would pass a per-task bound, or None."""
        entry = self._active.get((event.cluster, event.task))
        state = entry.state if entry is not None else None
        known_items = (
            0 if state is None else len(state.containers) + len(state.attachments) + len(state.managed_agents)
        )
        if known_items + len(event.containers) + len(event.attachments) + len(event.managedAgents) <= min(
            self._max_containers, self._max_attachments
        ):
            return None  # the common case: far below every bound, no sets to build
        if event.containers:
            known = state.containers if state is not None else {}
            names = {c.containerName for c in event.containers} | known.keys()
            if len(names) > self._max_containers:
                return (
                    f"task would have {len(names)} containers, "
                    f"more than max_containers_per_task={self._max_containers}"
                )
        for kind, items, held in (
            ("attachments", {a.attachmentArn for a in event.attachments}, state.attachments if state else {}),
            (
                "managed agents",
                {(m.containerName, m.managedAgentName) for m in event.managedAgents},
                state.managed_agents if state else {},
            ),
        ):
            if items and len(items | held.keys()) > self._max_attachments:
                return f"task would have more than max_attachments_per_task={self._max_attachments} {kind}"
        return None

    def apply(self, event: TaskEvent, source: SourceRef, now: int) -> tuple[Applied, list[SourceRef]]:
        """Merge one event. Returns what happened and the sources resolved at once."""
        key = (event.cluster, event.task)
        if key in self._retired:
            return Applied.RETIRED, [source]
        entry = self._active.get(key)
        if entry is None:
            self._make_room()
            entry = self._active[key] = _Entry(TaskState(key))
        else:
            self._active.move_to_end(key)
        changed = entry.state.merge(event)
        if not changed and not entry.dirty and entry.in_flight is None:
            return Applied.UNCHANGED, [source]
        entry.sources.append(source)
        if changed:
            if not entry.dirty:
                entry.dirty = True
                entry.first_event_at = event.observedAt
            else:
                entry.first_event_at = min(entry.first_event_at or event.observedAt, event.observedAt)
            self._schedule(key, entry, now)
        return (Applied.CHANGED if changed else Applied.UNCHANGED), []

    def next_due_at(self) -> int | None:
        while self._heap:
            due_at, _, key = self._heap[0]
            entry = self._active.get(key)
            if entry is not None and entry.due_at == due_at and entry.in_flight is None:
                return due_at
            heapq.heappop(self._heap)
        return None

    def due(self, now: int) -> tuple[list[Submission], list[SourceRef]]:
        """Submissions to send now, and sources resolved because there was nothing to send."""
        ready: list[Submission] = []
        resolved: list[SourceRef] = []
        while (due_at := self.next_due_at()) is not None and due_at <= now:
            _, _, key = heapq.heappop(self._heap)
            entry = self._active[key]
            entry.due_at = None
            submission = self._take(key, entry)
            if submission is None:
                resolved.extend(entry.sources)
                entry.sources = []
                entry.first_event_at = None
                if entry.state.rank == STOPPED and entry.acked is not None:
                    self._retire(key)  # STOPPED was acknowledged and nothing new to say
            else:
                ready.append(submission)
        return ready, resolved

    def complete(self, submission: Submission, result: Result, now: int) -> list[SourceRef]:
        """Record a finished submission; return the sources it resolves."""
        entry = self._active.get(submission.key)
        if entry is None or entry.in_flight is not submission:
            return list(submission.sources)
        entry.in_flight = None
        if result is Result.ACKNOWLEDGED:
            entry.acked = submission.fingerprint
        resolved = list(submission.sources)
        if submission.stopped and not entry.dirty:
            # Final for ECS: a rejected or failed STOPPED went to the dead-letter topic for replay.
            resolved.extend(entry.sources)
            self._retire(submission.key)
        elif entry.dirty:
            # The heap entry of a change made while in flight was dropped by next_due_at: its due
            # time (linger from that change) still stands, or now if it has passed.
            self._push(submission.key, entry, max(now, entry.due_at or now))
        else:
            resolved.extend(entry.sources)
            entry.sources = []
        return resolved

    def drop(self, owns: Callable[[SourceRef], bool]) -> list[SourceRef]:
        """Give up the unresolved sources for which ``owns`` is true (partitions revoked): their
        records will be re-read by the partitions' next owner. A task left with nothing else is
        forgotten; a task that also answers for records of partitions still owned is kept with
        those, so that their offsets are not committed before its changes are reported. Returns
        the sources given up (an in-flight submission hands its own back through ``complete``)."""
        given_up: list[SourceRef] = []
        for key, entry in list(self._active.items()):
            if not _holds(entry, owns):
                continue
            kept = [s for s in entry.sources if not owns(s)]
            given_up.extend(s for s in entry.sources if owns(s))
            in_flight_kept = entry.in_flight is not None and not all(owns(s) for s in entry.in_flight.sources)
            if kept or in_flight_kept:
                entry.sources = kept
            else:
                del self._active[key]
        return given_up

    def in_flight(self) -> list[Submission]:
        return [e.in_flight for e in self._active.values() if e.in_flight is not None]

    def flush_all(self, now: int) -> None:
        """Make every changed task due now (shutdown, rebalance)."""
        for key, entry in self._active.items():
            if entry.dirty and entry.in_flight is None:
                self._push(key, entry, now)

    def set_linger(self, linger_ns: int) -> None:
        """Change the linger (0 while draining, so that changes arriving meanwhile go at once)."""
        self._linger = linger_ns

    def keys(self) -> Collection[TaskKey]:
        return self._active.keys()

    def _schedule(self, key: TaskKey, entry: _Entry, now: int) -> None:
        due_at = now if entry.state.rank == STOPPED else now + self._linger
        if entry.due_at is not None and entry.due_at <= due_at:
            return
        self._push(key, entry, due_at)

    def _push(self, key: TaskKey, entry: _Entry, due_at: int) -> None:
        entry.due_at = due_at
        self._seq += 1
        heapq.heappush(self._heap, (due_at, self._seq, key))

    def _take(self, key: TaskKey, entry: _Entry) -> Submission | None:
        entry.dirty = False
        if entry.state.rank == PENDING:
            return None
        request = build_request(entry.state)
        digest = fingerprint(request)
        if digest == entry.acked:
            return None
        submission = Submission(
            key=key,
            request=request,
            fingerprint=digest,
            sources=entry.sources,
            first_event_at=entry.first_event_at or 0,
            stopped=entry.state.rank == STOPPED,
        )
        entry.sources = []
        entry.first_event_at = None
        entry.in_flight = submission
        return submission

    def _retire(self, key: TaskKey) -> None:
        entry = self._active.pop(key, None)
        self._retired[key] = (
            frozenset(entry.state.containers) | entry.reported if entry is not None else frozenset()
        )
        while len(self._retired) > self._retired_cap:
            self._retired.popitem(last=False)

    def _make_room(self) -> None:
        if len(self._active) >= self._max_active:
            self._evict_clean(len(self._active) - self._max_active + 1)

    def _evict_clean(self, count: int) -> None:
        """Forget up to ``count`` clean tasks (nothing unsent, nothing in flight), least recently
        changed first. Nothing is lost: everything they knew was acknowledged or resolved."""
        clean = [
            key
            for key, entry in self._active.items()
            if not entry.dirty and entry.in_flight is None and not entry.sources
        ][:count]
        for key in clean:
            del self._active[key]
        self.evicted += len(clean)


def _holds(entry: _Entry, owns: Callable[[SourceRef], bool]) -> bool:
    if any(owns(s) for s in entry.sources):
        return True
    return entry.in_flight is not None and any(owns(s) for s in entry.in_flight.sources)
