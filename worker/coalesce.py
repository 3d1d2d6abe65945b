"""Stage 3, coalesce: many events per task -> few full-snapshot submissions. Pure: the caller
passes the clock (``now``, monotonic nanoseconds) and does all I/O.

Per task the coalescer keeps the merged state (``TaskState``) and the Kafka records whose changes
the next submission will carry. A changed task becomes due ``linger`` after its first unsent
change, or at once when it reaches STOPPED. At most one submission per task is in flight; changes
arriving meanwhile go into the next one. A snapshot equal to the last acknowledged one is not sent,
nor is one whose task is still PENDING (the ECS agent reports RUNNING and STOPPED). Once STOPPED is
acknowledged the task retires into a bounded cache, so late events cause no call.

What a task is comes from outside, never fetched here (``worker.knowledge``): a task's events are
held until its definition is known (``learn_definition``), and a task whose history this process
missed is not reported until ECS's own view of it is known (``learn_view``). ``take_wants`` tells
the resolver what to fetch.

Every source record handed to ``apply`` comes back exactly once, from ``apply``, ``complete``,
``due`` or ``drop``: that is when its part is resolved and its offset may move on.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Collection
from enum import Enum

from schemas.events import TaskEvent
from worker.knowledge import DefinitionCache, KnowledgeMixin, Wants, deferred_until, guarded
from worker.reorder import Held, ReorderBuffer
from worker.snapshot import build_request, fingerprint
from worker.task_entry import TaskEntry, statuses
from worker.task_limits import over_limits
from worker.task_state import PENDING, STOPPED, TaskState
from worker.watermarks import Watermarks
from worker.work import OutcomeResult, SourceRef, Submission, TaskKey

__all__ = ["Applied", "Coalescer"]


class Applied(Enum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    RETIRED = "retired"
    """The task's STOPPED state was already acknowledged: the event is late and is ignored."""
    HELD = "held"
    """Held until the task's definition is known."""


_CHANGED, _UNCHANGED, _RETIRED, _HELD = Applied.CHANGED, Applied.UNCHANGED, Applied.RETIRED, Applied.HELD
"""The members read once: an Enum member's lookup runs Python code, and these go out per event."""


class Coalescer(KnowledgeMixin):
    """Per-task state for the tasks of this process.

    ``linger_ns``: delay between a task's first unsent change and its submission.
    ``max_active_tasks``: above it, clean tasks (nothing unsent, nothing in flight) are evicted,
    least recently changed first; ``enforce_cap`` does that and tells the caller to pause
    consumption when only busy tasks remain. ``retired_cap``: how many retired tasks are
    remembered. ``max_containers`` and ``max_attachments`` bound one task's containers and its
    attachments or managed agents: an event that would pass them is refused (``over_limits``) and
    dead-lettered by the caller. ``settle_ns``, ``stop_linger_ns`` and ``exit_wait_ns`` are the
    waits of ``knowledge.deferred_until`` (``exit_wait_ns``: how long a container's stop waits for
    the facts of its end that have not come yet; 0: not at all). ``detect_split``: note each task
    whose events come from more than one partition (``take_split``), the sign that the input is not
    keyed by task. With re-keyed input: ``reorder_ns``, the window of the reorder buffer events pass
    through before they are merged (``worker.reorder``), and with ``watermarks`` until the input
    has progressed past them, for at most ``max_idle_ns`` (``worker.watermarks``);
    ``rekeyed_exit_wait_ns``, how long a
    STOPPED task waits for its containers' exit codes, even while draining (``deferred_until``).
    """

    def __init__(
        self,
        *,
        linger_ns: int,
        max_active_tasks: int,
        retired_cap: int,
        max_containers: int = 100,
        max_attachments: int = 100,
        definitions: DefinitionCache | None = None,
        describe: bool = True,
        settle_ns: int = 45_000_000_000,
        stop_linger_ns: int = 35_000_000_000,
        exit_wait_ns: int = 0,
        detect_split: bool = False,
        rekeyed_exit_wait_ns: int = 0,
        reorder_ns: int = 0,
        watermarks: Watermarks | None = None,
        max_idle_ns: int = 0,
    ) -> None:
        self._linger = linger_ns
        self._detect_split = detect_split
        self._rekeyed_exit_wait = rekeyed_exit_wait_ns
        self.watermarks = watermarks
        self._reorder = ReorderBuffer(reorder_ns, watermarks, max_idle_ns) if reorder_ns else None
        self._held_replayed: set[TaskKey] = set()
        """Tasks with an event held in the reorder buffer from a replayed record."""
        self.late = 0
        """Events released by the reorder buffer for tasks already retired (counted by the caller)."""
        self._split: list[tuple[TaskKey, int, int]] = []
        self.definitions = definitions if definitions is not None else DefinitionCache(1024)
        self._wants = Wants()
        self._describe = describe
        self._settle = settle_ns
        self._stop_linger = stop_linger_ns
        self._exit_wait = exit_wait_ns
        self._draining = False
        self._settle_heap: list[tuple[int, int, TaskKey]] = []
        self._max_containers = max_containers
        self._max_attachments = max_attachments
        self._bound = min(max_containers, max_attachments)
        """Items (containers, attachments, managed agents) a task may hold under every bound."""
        self._max_active = max_active_tasks
        self._retired_cap = retired_cap
        self._active: OrderedDict[TaskKey, TaskEntry] = OrderedDict()
        self._retired: OrderedDict[TaskKey, None] = OrderedDict()
        self._heap: list[tuple[int, int, TaskKey]] = []
        self._seq = 0
        self.evicted = 0

    @property
    def active_count(self) -> int:
        return len(self._active)

    def enforce_cap(self) -> bool:
        """Evict clean tasks over the cap; return True when the cap is still passed (only busy
        tasks left): the caller should then pause consumption."""
        if len(self._active) > self._max_active:
            self._evict_clean(len(self._active) - self._max_active)
        return len(self._active) > self._max_active

    def is_retired(self, key: TaskKey) -> bool:
        return key in self._retired

    def over_limits(self, event: TaskEvent) -> str | None:
        """Why applying ``event`` would pass a per-task bound, or None (``task_limits``)."""
        entry = self._active.get((event.cluster, event.task))
        state = None if entry is None else entry.state
        # ``over_limits``'s first check spelled out (it runs per event): far below every bound.
        count = len(event.containers) + len(event.attachments) + len(event.managedAgents)
        if state is not None:
            count += len(state.containers) + len(state.attachments or ()) + len(state.managed_agents or ())
        if count <= self._bound:
            return None
        return over_limits(state, event, self._max_containers, self._max_attachments)

    def over_event_limits(self, event: TaskEvent) -> str | None:
        """Why ``event`` alone passes a per-task bound, or None: the check of a stage that does not
        hold the task's state (``worker.repartition``)."""
        return over_limits(None, event, self._max_containers, self._max_attachments)

    def apply(
        self, event: TaskEvent, source: SourceRef, now: int, *, replayed: bool = False
    ) -> tuple[Applied, list[SourceRef]]:
        """Merge one event (or hold it in the reorder buffer: ``HELD``, merged by ``due_keys``).
        ``replayed``: its record may have been processed before (below its partition's replay end):
        a task first seen in it starts from ECS's view (``knowledge.KnowledgeMixin._known``).
        Returns what happened and the sources resolved at once."""
        key = (event.cluster, event.task)
        if self._reorder is not None and key not in self._retired:
            self._reorder.hold(key, event, source, now)
            if replayed:
                self._held_replayed.add(key)
            return _HELD, []
        return self._apply(key, event, source, now, replayed)

    def _release(self, held: list[Held]) -> list[SourceRef]:
        """Merge the events the reorder buffer hands over; return the sources resolved at once."""
        resolved: list[SourceRef] = []
        for event, source, at in held:
            key = (event.cluster, event.task)
            applied, done = self._apply(key, event, source, at, key in self._held_replayed)
            self._held_replayed.discard(key)
            self.late += applied is _RETIRED
            resolved.extend(done)
        return resolved

    def _apply(
        self, key: TaskKey, event: TaskEvent, source: SourceRef, now: int, replayed: bool
    ) -> tuple[Applied, list[SourceRef]]:
        active = self._active
        entry = active.get(key)
        if entry is None:
            if key in self._retired:  # (never also active: a task retires out of ``_active``)
                return _RETIRED, [source]
            self._make_room()
            entry = active[key] = TaskEntry(TaskState(key), replayed=replayed)
            self._first_sight(key, entry, event.taskDefinitionArn, now)
        else:
            active.move_to_end(key)
        if self._detect_split and entry.partition != source.partition:
            self._note_partition(key, entry, source.partition)
        entry.origin = source
        if entry.waiting is not None:
            entry.waiting.append((event, now))
            entry.sources.append(source)
            return _HELD, []
        changed = self._merge(key, entry, event, now)
        entry.sources.append(source)
        if not changed and not entry.dirty and entry.in_flight is None:
            # Nothing to send: this record is resolved, with any the task held while it waited
            # (for an answer, a settle, a restart) unless it still waits.
            return _UNCHANGED, self._settled_sources(entry)
        return (_CHANGED if changed else _UNCHANGED), []

    def _note_partition(self, key: TaskKey, entry: TaskEntry, partition: int) -> None:
        if entry.partition < 0:
            entry.partition = partition
        elif not entry.split:
            entry.split = True
            self._split.append((key, entry.partition, partition))

    def take_forced(self) -> int:
        """Tasks whose re-keyed events passed the reorder buffer without the input's progress since
        the last call (``worker.reorder``)."""
        if self._reorder is None:
            return 0
        forced, self._reorder.forced = self._reorder.forced, 0
        return forced

    def take_split(self) -> list[tuple[TaskKey, int, int]]:
        """The tasks first seen on a second partition since the last call: (task, the partition of
        its first event, the other partition). Each task is noted once while it is held."""
        split, self._split = self._split, []
        return split

    def _first_sight(self, key: TaskKey, entry: TaskEntry, arn: str | None, now: int) -> None:
        """A task new to this process: wait for its definition, or know it (or that it has none)."""
        if arn is not None and not self.definitions.known(arn, now):
            entry.waiting = []
            self._wants.definition(arn, key)
            return
        definition = None if arn is None else self.definitions.get(arn)
        entry.state.know(definition)
        self._known(key, entry, unavailable=arn is not None and definition is None)

    def _merge(self, key: TaskKey, entry: TaskEntry, event: TaskEvent, now: int) -> bool:
        state = entry.state
        missed = state.missed
        changed = state.merge(event)
        entry.last_event_at = now
        entry.last_observed_at = event.observedAt
        if state.end_seen:
            state.end_seen = False
            if entry.end_since is None:
                entry.end_since = now
        missed_now = state.missed and not missed
        if missed_now:
            if self._describe:
                self._want_view(key, entry)
            else:
                changed |= self._fall_back(key, entry)  # (its quiet time starts)
        holding = state.maybe_holding and state.holding()
        if holding or (entry.fallback and not state.settled and not missed_now):
            # The quiet time starts again; for an exit held on the record that showed the history
            # missed too (the task's first, often), else nothing would ever make it final.
            self._push_settle(key, entry)
        if changed:
            if not entry.dirty:
                entry.dirty = True
                entry.first_event_at = event.observedAt
                entry.changed_at = now
            elif not entry.first_event_at or event.observedAt < entry.first_event_at:
                entry.first_event_at = event.observedAt  # the earliest observation unsent
            if not entry.needs_view:
                self._schedule(key, entry, now)
        return changed

    def next_due_at(self) -> int | None:
        """The next time ``due`` has work: a submission's due time, a settle check (none while
        draining: ``_settle_due``), held events."""
        submission = self._next_submission_at()
        held = None if self._reorder is None else self._reorder.next_due_at()
        if held is not None and (submission is None or held < submission):
            submission = held
        settle = self._settle_heap[0][0] if self._settle_heap and not self._draining else None
        if settle is not None and (submission is None or settle < submission):
            return settle
        return submission

    def _next_submission_at(self) -> int | None:
        while self._heap:
            due_at, _, key = self._heap[0]
            entry = self._active.get(key)
            if entry is not None and entry.due_at == due_at and entry.in_flight is None and not entry.queued:
                return due_at
            heapq.heappop(self._heap)
        return None

    def due(self, now: int) -> tuple[list[Submission], list[SourceRef]]:
        """Submissions to send now, and sources resolved because there was nothing to send:
        ``due_keys`` then ``take`` of each at once (``replay``, tests). The dispatcher calls the
        two apart, taking a task only when its call can go (late binding)."""
        keys, resolved = self.due_keys(now)
        ready: list[Submission] = []
        for key in keys:
            submission, settled = self.take(key)
            resolved.extend(settled)
            if submission is not None:
                ready.append(submission)
        return ready, resolved

    def due_keys(self, now: int) -> tuple[list[TaskKey], list[SourceRef]]:
        """The tasks due now, marked queued: each waits for ``take`` (its request is built then,
        with every change merged until that moment); and the sources resolved at once: of settle
        checks, and of the reorder buffer's held events merged now that had nothing to send."""
        keys: list[TaskKey] = []
        resolved: list[SourceRef] = []
        if self._reorder is not None:
            resolved.extend(self._release(self._reorder.due(now)))
        resolved.extend(self._settle_due(now))
        while (due_at := self._next_submission_at()) is not None and due_at <= now:
            _, _, key = heapq.heappop(self._heap)
            entry = self._active[key]
            entry.due_at = None
            if entry.needs_view or entry.waiting is not None:
                continue  # rescheduled when the answer comes
            until = deferred_until(
                entry.state,
                partial=entry.fallback and entry.state.missed and entry.state.definition is None,
                last_event_at=entry.last_event_at,
                changed_at=entry.changed_at,
                settle_ns=self._settle,
                stop_linger_ns=0 if self._draining else self._stop_linger,
                end_since=entry.end_since,
                exit_wait_ns=0 if self._draining else self._exit_wait,
                rekeyed_exit_wait_ns=self._rekeyed_exit_wait,
            )
            if until is not None and until > now:
                self._push(key, entry, until)
                continue
            entry.queued = True
            keys.append(key)
        return keys, resolved

    def take(self, key: TaskKey) -> tuple[Submission | None, list[SourceRef]]:
        """Build the submission of a queued task now (its call can go): None when there is
        nothing to send any more, with the sources that resolves. A task not queued (dropped by a
        revocation, or forgotten meanwhile) gives (None, [])."""
        entry = self._active.get(key)
        if entry is None or not entry.queued:
            return None, []
        entry.queued = False
        if entry.needs_view or entry.waiting is not None:
            return None, []  # rescheduled when the answer comes
        submission = self._take(key, entry)
        if submission is not None:
            return submission, []
        resolved: list[SourceRef] = []
        if not guarded(entry):
            resolved, entry.sources = entry.sources, []
        entry.first_event_at = None
        if entry.state.rank == STOPPED and entry.acked is not None:
            self._retire(key)  # STOPPED was acknowledged and nothing new to say
        return None, resolved

    def requeue(self, submission: Submission, now: int) -> None:
        """A submission ECS throttled goes back, unsent: its records return to the task, which is
        due again at once, and its request is built anew when its next call can go, carrying every
        change that arrived meanwhile (a throttled task costs no extra call per change)."""
        entry = self._active.get(submission.key)
        if entry is None or entry.in_flight is not submission:
            return
        entry.in_flight = None
        entry.sources = [*submission.sources, *entry.sources]
        entry.throttled += 1
        entry.reported = entry.acked is not None or entry.baseline is not None
        if entry.first_event_at is None or submission.first_event_at < entry.first_event_at:
            entry.first_event_at = submission.first_event_at
        if not entry.dirty:
            entry.dirty = True
            entry.changed_at = now
        self._push(submission.key, entry, now)

    def complete(self, submission: Submission, result: OutcomeResult, now: int) -> list[SourceRef]:
        """Record a finished submission; return the sources it resolves."""
        entry = self._active.get(submission.key)
        if entry is None or entry.in_flight is not submission:
            return list(submission.sources)
        entry.in_flight = None
        entry.throttled = 0
        if result == "acknowledged":
            entry.acked = submission.fingerprint
        resolved = list(submission.sources)
        if entry.missing or (submission.stopped and (result == "acknowledged" or not entry.dirty)):
            # Final for ECS. An acknowledged STOPPED is the task's last report, as the agent's is
            # (its task status goes no further): what was merged while it was in flight is late,
            # as it would be after. A rejected or failed STOPPED went to the dead-letter topic.
            resolved.extend(entry.sources)
            self._retire(submission.key)
        elif entry.dirty:
            # The heap entry of a change made while in flight was dropped by next_due_at: its due
            # time (linger from that change) still stands, or now if it has passed.
            self._push(submission.key, entry, max(now, entry.due_at or now))
        elif not guarded(entry):
            resolved.extend(entry.sources)
            entry.sources = []
        return resolved

    def drop(self, owns: Callable[[SourceRef], bool]) -> list[SourceRef]:
        """Give up the unresolved sources for which ``owns`` is true (partitions revoked): their
        records will be re-read by the partitions' next owner. A task left with nothing else is
        forgotten, a clean one too (everything reported) when its last record (``origin``) is of
        a revoked partition: what it knows goes stale as the next owner reports, and were the
        partition assigned back, its records read again start from ECS's view instead
        (``KnowledgeMixin._known``). Retired tasks stay retired: STOPPED is final. A task that
        also answers for records of partitions still owned is kept with those, so that their
        offsets are not committed before its changes are reported. Returns the sources given up
        (an in-flight submission hands its own back through ``complete``)."""
        given_up: list[SourceRef] = [] if self._reorder is None else self._reorder.drop(owns)
        for key, entry in list(self._active.items()):
            stale = entry.origin is not None and owns(entry.origin)
            if not stale and not _holds(entry, owns):
                continue
            kept = [s for s in entry.sources if not owns(s)]
            given_up.extend(s for s in entry.sources if owns(s))
            in_flight_kept = entry.in_flight is not None and not all(owns(s) for s in entry.in_flight.sources)
            if kept or in_flight_kept:
                entry.sources = kept
            else:
                del self._active[key]
        return given_up

    def pinned(self) -> set[tuple[str, int, int]]:
        """(topic, partition, offset) of the records held by tasks that wait (``guarded``, or a
        STOPPED task waiting for its exit codes) or in the reorder buffer: a drain cannot resolve
        them; a revocation gives them up to be read again."""
        held = set() if self._reorder is None else self._reorder.sources()
        return held | {
            (s.topic, s.partition, s.offset)
            for entry in self._active.values()
            if guarded(entry) or self._awaits_exits(entry)
            for s in entry.sources
        }

    def _awaits_exits(self, entry: TaskEntry) -> bool:
        """With re-keyed input, a STOPPED task is not sent without its exit codes, not even by a
        drain: the ``die`` may be in an input partition another member is about to read."""
        return bool(self._rekeyed_exit_wait) and entry.state.rank == STOPPED and entry.state.exits_pending()

    def in_flight(self) -> list[Submission]:
        return [e.in_flight for e in self._active.values() if e.in_flight is not None]

    def flush_all(self, now: int, *, held: bool = False) -> list[SourceRef]:
        """Make every changed task due now (shutdown, rebalance); return the sources resolved at
        once. The events in the reorder buffer stay held, ahead of their input's progress, and a
        revocation gives them up to the partition's next owner, who reads them again in order
        (merged now, a late ``die`` would land after the restart it precedes); ``held``: merge
        them too (``replay``, offline: there is no next owner)."""
        resolved = [] if self._reorder is None or not held else self._release(self._reorder.everything())
        for key, entry in self._active.items():
            idle = entry.in_flight is None and not entry.queued
            if entry.dirty and idle and not entry.needs_view and entry.waiting is None:
                self._push(key, entry, now)
        return resolved

    def set_linger(self, linger_ns: int) -> None:
        """Change the linger (0 while draining, so that changes arriving meanwhile go at once)."""
        self._linger = linger_ns

    def set_draining(self, draining: bool) -> None:
        """While draining, a stopping task does not wait for its STOPPED (``stop_linger``), nor a
        stop for the facts of its end (``exit_wait``); and no settle time passes (consumption is
        paused: ``_settle_due``)."""
        self._draining = draining

    def keys(self) -> Collection[TaskKey]:
        return self._active.keys()

    def _schedule(self, key: TaskKey, entry: TaskEntry, now: int) -> None:
        if entry.queued:
            return  # its request is built when its call goes: this change rides along
        due_at = now if entry.state.rank == STOPPED else now + self._linger
        if entry.due_at is not None and entry.due_at <= due_at:
            return
        entry.due_at = due_at  # (``_push`` spelled out: this runs per change)
        self._seq += 1
        heapq.heappush(self._heap, (due_at, self._seq, key))

    def _push(self, key: TaskKey, entry: TaskEntry, due_at: int) -> None:
        entry.due_at = due_at
        self._seq += 1
        heapq.heappush(self._heap, (due_at, self._seq, key))

    def _take(self, key: TaskKey, entry: TaskEntry) -> Submission | None:
        entry.dirty = False
        entry.end_since = None  # what came of the ends so far goes now; later facts go next time
        if entry.state.rank == PENDING:
            return None
        request = build_request(entry.state)
        digest = fingerprint(request)
        if digest == entry.acked:
            return None
        if entry.baseline is not None and statuses(request) == entry.baseline:
            entry.acked = digest  # ECS already shows these statuses: not repeated
            return None
        entry.state.floor = entry.state.rank  # reported: never below it from now on
        entry.reported = True
        submission = Submission(
            key=key,
            request=request,
            fingerprint=digest,
            sources=entry.sources,
            first_event_at=entry.first_event_at or 0,
            stopped=entry.state.rank == STOPPED,
            throttled=entry.throttled,
        )
        entry.sources = []
        entry.first_event_at = None
        entry.in_flight = submission
        return submission

    def _retire(self, key: TaskKey) -> None:
        self._active.pop(key, None)
        self._retired[key] = None
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


def _holds(entry: TaskEntry, owns: Callable[[SourceRef], bool]) -> bool:
    if any(owns(s) for s in entry.sources):
        return True
    return entry.in_flight is not None and any(owns(s) for s in entry.in_flight.sources)
