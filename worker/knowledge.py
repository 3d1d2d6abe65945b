"""What the coalescer waits for before it reports a task, and what it asks the resolver for. Pure.

A task's events are held until its definition is known (or known to be unavailable); a task whose
history this process missed (``agent_rules.missed_history``) is not reported until ECS's own view
of it is known (or known to be unavailable). The coalescer records those wants here; the resolver
(``worker.resolve``) takes them, fetches in batches, and hands the answers back to the coalescer.

Without ECS's view (describe denied, throttled, failing; or offline) a task falls back to what was
seen, with one guard (``deferred_until``): a STOPPED derived from a view known to be partial waits
until the task has been quiet for ``settle``, above the agent's 30 s stop timeout, so that the
containers still to stop are seen first. And a task whose essential container stopped waits up to
``stop_linger`` for its STOPPED, which the agent brings within its stop timeout, rather than
spending a call on the intermediate state. A container's stop whose end lacks a fact the agent
reports with it (``agent_rules.end_incomplete``: the exit code of a ``stop`` that came before its
``die``, the OOM reason of an exit 137) waits up to ``exit_wait`` for it.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

from schemas.events import TaskEvent
from worker.agent_rules import PENDING, STOPPED
from worker.snapshot import build_request
from worker.task_definition import EcsTaskView, TaskDefinition
from worker.task_entry import TaskEntry, statuses
from worker.task_state import TaskState
from worker.work import SourceRef, TaskKey

__all__ = ["NEGATIVE_TTL_NS", "DefinitionCache", "KnowledgeMixin", "Wants", "deferred_until", "guarded"]

NEGATIVE_TTL_NS = 60_000_000_000
"""How long a definition that could not be had is not asked again (a minute)."""


def guarded(entry: TaskEntry) -> bool:
    """The entry's records must stay claimed although nothing is due: it waits for a definition
    or for ECS's view, falls back and has not settled, holds an exit for a restart, or has never
    been reported. The last keeps a PENDING task's history (its containers' creation and starts,
    before an init container completes or a sidecar turns healthy) uncommitted until ECS has been
    told something: a new owner then reads it again, since ECS's view could not give it."""
    return (
        not entry.reported
        or entry.waiting is not None
        or entry.needs_view
        or (entry.fallback and not entry.state.settled)
        or entry.state.holding()
    )


class DefinitionCache:
    """Task definitions by ARN (or ``family:revision``), least recently used evicted past
    ``capacity``. A revision never changes, so a definition never goes stale. A definition that
    could not be had is remembered for ``NEGATIVE_TTL_NS`` only, then asked again."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, TaskDefinition | None] = OrderedDict()
        self._unavailable_until: dict[str, int] = {}

    def known(self, arn: str, now: int) -> bool:
        """Whether ``arn`` is known now: its definition, or that it cannot be had (for a while)."""
        if arn not in self._entries:
            return False
        until = self._unavailable_until.get(arn)
        if until is not None and until <= now:
            del self._entries[arn], self._unavailable_until[arn]
            return False
        return True

    def get(self, arn: str) -> TaskDefinition | None:
        definition = self._entries.get(arn)
        if arn in self._entries:
            self._entries.move_to_end(arn)
        return definition

    def put(self, arn: str, definition: TaskDefinition | None, now: int = 0) -> None:
        self._entries[arn] = definition
        self._entries.move_to_end(arn)
        if definition is None:
            self._unavailable_until[arn] = now + NEGATIVE_TTL_NS
        else:
            self._unavailable_until.pop(arn, None)
        while len(self._entries) > self._capacity:
            evicted, _ = self._entries.popitem(last=False)
            self._unavailable_until.pop(evicted, None)

    def __len__(self) -> int:
        return len(self._entries)


class Wants:
    """Definitions and views wanted, and the tasks waiting for each definition."""

    def __init__(self) -> None:
        self.waiting: dict[str, set[TaskKey]] = {}
        self._new_definitions: list[str] = []
        self._new_views: list[TaskKey] = []

    def definition(self, arn: str, key: TaskKey) -> None:
        tasks = self.waiting.get(arn)
        if tasks is None:
            tasks = self.waiting[arn] = set()
            self._new_definitions.append(arn)
        tasks.add(key)

    def view(self, key: TaskKey) -> None:
        self._new_views.append(key)

    def take(self) -> tuple[list[str], list[TaskKey]]:
        """The definitions and views wanted since the last call."""
        taken = (self._new_definitions, self._new_views)
        self._new_definitions, self._new_views = [], []
        return taken

    def answered(self, arn: str) -> set[TaskKey]:
        """The tasks that waited for ``arn``; it is no longer wanted."""
        return self.waiting.pop(arn, set())

    def pending(self) -> bool:
        return bool(self._new_definitions or self._new_views)


def deferred_until(
    state: TaskState,
    *,
    partial: bool,
    last_event_at: int,
    changed_at: int,
    settle_ns: int,
    stop_linger_ns: int,
    end_since: int | None = None,
    exit_wait_ns: int = 0,
    rekeyed_exit_wait_ns: int = 0,
) -> int | None:
    """The time (monotonic ns) before which a due change of ``state`` must not be sent, or None.

    ``partial``: the view is known partial and ECS's view could not be had. ``last_event_at``: the
    task's last event; ``changed_at``: its first unsent change; ``end_since``: its first container
    stop not yet reported (None: none). ``rekeyed_exit_wait_ns``: how long a STOPPED task waits,
    from its last event, for the exit codes of its stopped containers (the agent reports a
    container's exit code with its STOPPED), when one container's events may arrive out of order
    across input partitions (re-keyed input: a ``stop`` read before its ``die``); 0: no wait."""
    if partial and state.rank == STOPPED and state.explicit_rank < STOPPED and not state.settled:
        return last_event_at + settle_ns
    until = changed_at + stop_linger_ns if state.rank < STOPPED and state.stopping() else None
    if end_since is not None and exit_wait_ns and state.ends_incomplete():
        until = max(until or 0, end_since + exit_wait_ns)
    if rekeyed_exit_wait_ns and state.rank == STOPPED and state.exits_pending():
        until = max(until or 0, last_event_at + rekeyed_exit_wait_ns)
    return until


class KnowledgeMixin:
    """The coalescer's side of knowing a task: what it wants, and what it does with the answers.
    Mixed into ``Coalescer``, whose task table and scheduling it uses."""

    definitions: DefinitionCache
    _active: OrderedDict[TaskKey, TaskEntry]
    _wants: Wants
    _settle: int
    _describe: bool
    _settle_heap: list[tuple[int, int, TaskKey]]
    _seq: int
    _draining: bool

    def _schedule(self, key: TaskKey, entry: TaskEntry, now: int) -> None:
        raise NotImplementedError

    def _retire(self, key: TaskKey) -> None:
        raise NotImplementedError

    def _merge(self, key: TaskKey, entry: TaskEntry, event: TaskEvent, now: int) -> bool:
        raise NotImplementedError

    def wants_pending(self) -> bool:
        return self._wants.pending()

    def take_wants(self) -> tuple[list[str], list[TaskKey]]:
        """Definitions (ARNs) and tasks (to describe) wanted since the last call."""
        return self._wants.take()

    def learn_definition(self, arn: str, definition: TaskDefinition | None, now: int) -> list[SourceRef]:
        """The definition ``arn`` (None: it cannot be had): merge the events held for it. Returns
        the sources resolved at once."""
        self.definitions.put(arn, definition, now)
        resolved: list[SourceRef] = []
        for key in self._wants.answered(arn):
            entry = self._active.get(key)
            if entry is None or entry.waiting is None:
                continue
            held, entry.waiting = entry.waiting, None
            entry.state.know(definition)
            self._known(key, entry, unavailable=definition is None)
            for event, at in held:
                self._merge(key, entry, event, at)
            resolved.extend(self._settled_sources(entry))
        return resolved

    def _known(self, key: TaskKey, entry: TaskEntry, *, unavailable: bool) -> None:
        """A new task's definition is settled (``unavailable``: named, but not to be had, so the
        container set is unknown and the view partial). A task first seen in a replayed record
        (``entry.replayed``) may have been reported already: before its first report, ECS's view
        is asked for, and the task starts from it (``learn_view``). Without ``describe`` it is
        reported from what is seen, which may repeat what was reported (at-least-once)."""
        if unavailable:
            self._partial(key, entry)
        if entry.replayed and self._describe:
            self._want_view(key, entry)

    def _want_view(self, key: TaskKey, entry: TaskEntry) -> None:
        """Ask for ECS's view of the task once; nothing is sent for it until the answer."""
        if not entry.needs_view:
            entry.needs_view = True
            self._wants.view(key)

    def _partial(self, key: TaskKey, entry: TaskEntry) -> bool:
        """The task's view is partial: ask ECS's, or fall back. Returns whether the status changed."""
        entry.state.missed = True
        if self._describe:
            self._want_view(key, entry)
            return False
        return self._fall_back(key, entry)

    def learn_view(self, key: TaskKey, view: EcsTaskView | None, now: int) -> list[SourceRef]:
        """ECS's view of a task (None: it cannot be had; the task falls back to what was seen).
        A task ECS shows STOPPED retires without a call. Returns the sources resolved at once."""
        entry = self._active.get(key)
        if entry is None or not entry.needs_view:
            return []
        entry.needs_view = False
        if view is None:
            # A view known partial falls back; a replayed one, whole as far as seen, goes as seen.
            if entry.state.missed and self._fall_back(key, entry) and not entry.dirty:
                entry.dirty = True
                entry.changed_at = now
        else:
            reported = TaskState(key, definition=entry.state.definition)
            reported.merge_view(view)
            entry.baseline = statuses(build_request(reported))
            entry.reported |= reported.rank > PENDING
            entry.state.floor = max(entry.state.floor, reported.rank)
            entry.state.merge_view(view)
            if self._stopping_shown(entry) and not entry.dirty:
                entry.dirty = True
                entry.changed_at = now
                entry.first_event_at = entry.first_event_at or entry.last_observed_at
            if reported.rank == STOPPED and entry.in_flight is None:
                resolved = entry.sources
                self._retire(key)
                return resolved
            if entry.state.stopping() and entry.state.unresolved():
                self._fall_back(key, entry)  # ECS does not know those containers either
        if entry.dirty:
            self._schedule(key, entry, now)
            return []
        return self._settled_sources(entry)

    @staticmethod
    def _stopping_shown(entry: TaskEntry) -> bool:
        """ECS's view shows the task stopping: an exit held from since its stop is final, as when
        a record shows the stop (``TaskState.merge``; agent: ``RestartTracker.ShouldRestart``
        restarts nothing of a stopping task). Not when ECS was never told when the task stopped:
        the records read next (a restart's start) tell. Returns whether anything reportable
        changed."""
        state = entry.state
        if state.execution_stopped_at is None or not state.maybe_holding:
            return False
        if not (state.stopping() and state.holding()):
            return False
        return state.finalize_held(stopping=True)

    def learn_unroutable(self, key: TaskKey, now: int) -> list[SourceRef]:
        """No credentials may call the task's account (``worker.routing.NoRoute``): ECS can be
        neither asked nor told, so the task goes as seen at once, without a settle wait; its
        submission is then rejected (``NoRouteForAccount``) without a call. Returns the sources
        resolved at once (none: the submission resolves them)."""
        entry = self._active.get(key)
        if entry is None or not entry.needs_view:
            return []
        entry.needs_view = False
        if entry.state.missed:
            entry.fallback = True
            entry.state.settle()
        if not entry.dirty:
            entry.dirty = True
            entry.changed_at = now
        self._schedule(key, entry, now)
        return []

    def learn_missing(self, key: TaskKey) -> list[SourceRef]:
        """ECS does not know the task (``DescribeTasks``: MISSING): nothing can be reported to it,
        so the task retires without a call. Returns the sources resolved."""
        entry = self._active.get(key)
        if entry is None or not entry.needs_view:
            return []
        entry.needs_view = False
        if entry.in_flight is not None:
            entry.missing = True  # retired when the submission in flight completes
            return []
        resolved = entry.sources
        self._retire(key)
        return resolved

    def _fall_back(self, key: TaskKey, entry: TaskEntry) -> bool:
        """The view is partial and ECS's cannot be had. Returns whether the status changed."""
        entry.fallback = True
        if self._settle == 0:
            return entry.state.settle()  # no settle time: what was seen is taken as the whole task
        self._push_settle(key, entry)
        return False

    def _push_settle(self, key: TaskKey, entry: TaskEntry) -> None:
        self._seq += 1
        heapq.heappush(self._settle_heap, (entry.last_event_at + self._settle, self._seq, key))

    def _settled_sources(self, entry: TaskEntry) -> list[SourceRef]:
        """An entry with nothing to send, nothing in flight and nothing awaited resolves its
        sources."""
        if entry.dirty or entry.in_flight is not None or guarded(entry):
            return []
        resolved, entry.sources = entry.sources, []
        return resolved

    def _settle_due(self, now: int) -> list[SourceRef]:
        """Timers of quiet tasks (``settle`` after their last event): a fallback task derives its
        status from the containers seen; an exit held for a restart that did not come is final.
        Not while draining: consumption is paused then, so a task is unread, not quiet (the
        ``start`` of a restart may be the next record), and its records go to the next owner.
        Returns the sources resolved because there is then nothing to send."""
        resolved: list[SourceRef] = []
        if self._draining:
            return resolved
        heap = self._settle_heap
        while heap and heap[0][0] <= now:
            _, _, key = heapq.heappop(heap)
            entry = self._active.get(key)
            if entry is None:
                continue
            fallback = entry.fallback and not entry.state.settled
            if not fallback and not entry.state.holding():
                continue
            if entry.last_event_at + self._settle > now:
                self._push_settle(key, entry)  # not quiet yet
                continue
            changed = entry.state.finalize_held()
            changed |= fallback and entry.state.settle()
            if changed and not entry.dirty:
                entry.dirty = True
                entry.changed_at = now
                entry.first_event_at = entry.first_event_at or entry.last_observed_at
            if entry.dirty:
                self._schedule(key, entry, now)
            else:
                resolved.extend(self._settled_sources(entry))
        return resolved
