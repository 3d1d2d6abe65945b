"""One task's known state, and how an event merges into it. Pure: no I/O, no clock.

Statuses are ranked PENDING < RUNNING < STOPPED; the runtime-level states the ECS agent knows
(CREATED, PULLED...) count as PENDING. A status never goes backwards: an event of a lower rank only
fills members that are still unknown, so duplicated and out-of-order events are harmless.

Once the task's definition is known (``TaskState.definition``), the agent's rules apply
(``worker.agent_rules``): the task's status counts every container of the definition; a container
not in it (one of the agent's internal containers) is never merged; an exit the agent restarts
under a restart policy is held back, not reported, and becomes final only if a stop is then
asked of the container; ``executionStoppedAt`` is the observation time of the first essential
container's stop. ECS's own view (``merge_view``) fills what was reported before this process
read the task, never lowering what it has observed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas.ecs import NetworkBinding
from schemas.events import ContainerChange, ManagedAgentChange, TaskEvent
from worker.agent_rules import (
    MANAGED_AGENT_STOPPED_REASON,
    PENDING,
    RUNNING,
    STOPPED,
    earliest_rank_above,
    end_incomplete,
    missed_history,
    should_restart,
)
from worker.task_definition import EcsTaskView, TaskDefinition
from worker.work import TaskKey

__all__ = [
    "CONTAINER_RANK",
    "EXECUTION_STOP_TOLD",
    "PENDING",
    "RUNNING",
    "STATUS_NAMES",
    "STOPPED",
    "TASK_RANK",
    "ContainerState",
    "ManagedAgentState",
    "TaskKey",
    "TaskState",
]

STATUS_NAMES = ("PENDING", "RUNNING", "STOPPED")
CONTAINER_RANK: dict[str, int] = {
    "NONE": PENDING,
    "PENDING": PENDING,
    "MANIFEST_PULLED": PENDING,
    "PULLED": PENDING,
    "CREATED": PENDING,
    "RESOURCES_PROVISIONED": RUNNING,
    "RUNNING": RUNNING,
    "STOPPED": STOPPED,
    "ZOMBIE": STOPPED,
}
TASK_RANK: dict[str, int] = {
    "NONE": PENDING,
    "PROVISIONING": PENDING,
    "PENDING": PENDING,
    "MANIFEST_PULLED": PENDING,
    "CREATED": PENDING,
    "ACTIVATING": PENDING,
    "RUNNING": RUNNING,
    "DEACTIVATING": RUNNING,
    "STOPPING": RUNNING,
    "DEPROVISIONING": RUNNING,
    "STOPPED": STOPPED,
}
_AGENT_RANK = {"PENDING": PENDING, "RUNNING": RUNNING, "STOPPED": STOPPED}
EXECUTION_STOP_TOLD = -1
"""``TaskState.execution_stopped_ns`` once ECS's view showed the task's execution stopped."""


def _ns(moment: datetime) -> int:
    """``moment`` in integer nanoseconds since the epoch, exactly (a datetime holds microseconds)."""
    return int(moment.replace(microsecond=0).timestamp()) * 1_000_000_000 + moment.microsecond * 1000


@dataclass(slots=True)
class ContainerState:
    rank: int = -1
    runtime_id: str | None = None
    image_digest: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    network_bindings: tuple[NetworkBinding, ...] | None = None
    started_at: int | None = None
    """Observation time (ns) of the container's start or last restart."""
    running_at: int = 0
    """Observation time (ns) of the latest RUNNING seen (0: none): an exit observed before it was
    followed by a run, so it was not the container's last."""
    stop_requested: bool = False
    held_exit: ContainerChange | None = None
    """An exit the agent restarts (restart policy): not reported unless it becomes final."""
    exit_at: int = 0
    """Observation time (ns) of the exit whose code is ``exit_code``."""
    stop_requested_at: int = 0
    """Observation time (ns) of the first stop asked of the container (``stop_requested``)."""
    held_at: int = 0
    """Observation time (ns) of ``held_exit``."""
    end_reason: str | None = None
    """A reason observed without a status before the container stopped (Docker's ``oom`` of any
    of its processes): a fact of its end, reported with its STOPPED, as the agent reads the OOM flag
    from inspect once the container exited. A restart forgets it (Docker clears the flag)."""

    def merge(self, change: ContainerChange) -> bool:
        # Spelled out member by member: this runs for every event.
        rank = -1 if change.status is None else CONTAINER_RANK[change.status]
        changed = rank > self.rank
        if changed:
            self.rank = rank
        forward = rank >= self.rank
        value: object = change.runtimeId
        if value is not None and value != self.runtime_id and (forward or self.runtime_id is None):
            self.runtime_id = change.runtimeId
            changed = True
        value = change.imageDigest
        if value is not None and value != self.image_digest and (forward or self.image_digest is None):
            self.image_digest = change.imageDigest
            changed = True
        value = change.exitCode
        if value is not None and value != self.exit_code and (forward or self.exit_code is None):
            self.exit_code = change.exitCode
            changed = True
        value = change.reason
        if value is not None and value != self.reason and (forward or self.reason is None):
            if rank < 0 and self.rank < STOPPED:
                self.end_reason = change.reason  # no call by itself: it waits for the end
            else:
                self.reason = change.reason
                changed = True
        value = change.networkBindings
        if (
            value is not None
            and value != self.network_bindings
            and (forward or self.network_bindings is None)
        ):
            self.network_bindings = change.networkBindings
            changed = True
        if self.end_reason is not None and self.rank == STOPPED:
            if self.reason is None:
                self.reason = self.end_reason
                changed = True
            self.end_reason = None
        return changed


@dataclass(slots=True)
class ManagedAgentState:
    status: str
    rank: int
    reason: str | None


@dataclass(slots=True)
class TaskState:
    """What is known of one task, plus its reporting bookkeeping (owned by ``Coalescer``)."""

    key: TaskKey
    containers: dict[str, ContainerState] = field(default_factory=dict)
    explicit_rank: int = -1
    rank: int = PENDING
    reason: str | None = None
    attachments: dict[str, tuple[int, str]] | None = None
    """By attachment ARN: (observation time ns, status). None until the first one (most tasks
    have none: an empty dict per task is 64 bytes of the memory bound)."""
    managed_agents: dict[tuple[str, str], ManagedAgentState] | None = None
    """By (container name, agent name). None until the first one."""
    pull_started_at: datetime | None = None
    pull_stopped_at: datetime | None = None
    execution_stopped_at: datetime | None = None
    floor: int = PENDING
    """The rank already reported (or shown by ECS): the task's status never goes below it."""
    definition: TaskDefinition | None = None
    missed: bool = False
    """Part of the task's history happened before this process read it (``agent_rules``)."""
    stop_seen: bool = False
    end_seen: bool = False
    """A container stopped since the coalescer last looked (it times the wait for the end's facts)."""
    execution_stopped_ns: int = 0
    """Observation (ns) behind a derived ``execution_stopped_at`` (0: none, or given by an
    event). ``EXECUTION_STOP_TOLD`` (-1): ECS's view showed the task's execution stopped, so
    ``execution_stopped_at`` is what ECS was told (maybe nothing) and is not derived again
    (``merge_view``; a sentinel, not a slot of its own: a slot more costs 16 bytes a task)."""
    stopping_known: bool = False
    maybe_holding: bool = False
    settled: bool = False
    """The full view could not be had: the status derives from the containers seen."""
    all_seen: bool = False
    """Every container of the definition was seen with a status (``unseen`` is empty): known
    once looked for, it stays so until the definition changes (``know``)."""

    def merge(self, event: TaskEvent) -> bool:
        """Fold one event in; return whether anything reportable changed."""
        changed = False
        if event.containers:
            for change in event.containers:
                changed |= self._merge_container(change, event.observedAt)
            # (stopping() and holding() spelled out to their flags first: this runs per event)
            if self.definition is not None and (self.stopping_known or (self.stop_seen and self.stopping())):
                if self.maybe_holding and self.holding():
                    # The task stops: the agent restarts nothing more (an exit from before the
                    # stop, read again after ECS's view showed it, was restarted: its start follows).
                    changed |= self.finalize_held(stopping=True)
                if not self.missed and not self.all_seen:
                    # Stopping, yet a container of the definition was never seen?
                    self.missed = self._any_unseen(self.definition)
                    self.all_seen = not self.missed
        # Only a change of the containers (a rank rises, a container appears: each a change) can
        # raise the derived rank above the one ``rank`` already holds (``_rerank`` takes it too).
        derive = changed
        event_rank = -1
        if event.status is not None:
            event_rank = TASK_RANK[event.status]
            if event_rank > self.explicit_rank:
                self.explicit_rank = event_rank
        if (
            event.reason is not None
            and event.reason != self.reason
            and (self.reason is None or event_rank >= self.rank)
        ):
            self.reason = event.reason
            changed = True
        if event.attachments:
            changed |= self._merge_attachments(event)
        if event.managedAgents:
            for agent in event.managedAgents:
                changed |= self._merge_agent(agent)
        if event.pullStartedAt or event.pullStoppedAt or event.executionStoppedAt:
            changed |= self._merge_times(event)
        # Events never lower the status (a late first sight of a pending container does not take
        # a RUNNING task back); what is learnt of the task may (``_rerank``).
        floor = self.rank if self.rank >= self.explicit_rank else self.explicit_rank
        rank = self._derived_rank(floor) if derive and floor < STOPPED else floor
        if rank != self.rank:
            self.rank = rank
            changed = True
        return changed

    def _merge_attachments(self, event: TaskEvent) -> bool:
        changed = False
        attachments = self.attachments
        if attachments is None:
            attachments = self.attachments = {}
        for attachment in event.attachments:
            seen = attachments.get(attachment.attachmentArn)
            if seen is None or event.observedAt >= seen[0]:
                # A newer observation of the same status still moves the time on, so that an
                # older, out-of-order status cannot win afterwards.
                attachments[attachment.attachmentArn] = (event.observedAt, attachment.status)
                changed |= seen is None or seen[1] != attachment.status
        return changed

    def _derived_rank(self, floor: int) -> int:
        """The rank the containers give (the agent's rule, ``agent_rules.earliest_rank``), or
        ``floor`` (>= PENDING) when it is not above it: the callers take the highest."""
        if self.settled and self.stopping():
            # Stopping and quiet past the settle time: the containers known to have run decide; one
            # only known PENDING will never run (the agent stops it without starting it).
            ran = [c.rank for c in self.containers.values() if c.rank > PENDING]
            return max(min(ran) if ran else PENDING, floor)
        definition = None if self.settled else self.definition
        if definition is not None:
            return earliest_rank_above(self.containers, definition, floor)
        if floor >= STOPPED or not self.containers:
            return floor
        lowest = STOPPED
        for container in self.containers.values():
            if container.rank <= floor:
                return floor
            if container.rank < lowest:
                lowest = container.rank
        return lowest

    def _merge_container(self, change: ContainerChange, observed_at: int) -> bool:
        name = change.containerName
        definition = self.definition
        if definition is not None and name not in definition.containers:
            return False  # not in the definition: one of the agent's internal containers
        container = self.containers.get(name)
        rank = -1 if change.status is None else CONTAINER_RANK[change.status]
        changed = False
        if container is None:
            container = self.containers[name] = ContainerState()
            changed = True
        if rank >= 0 and container.rank < 0 and not self.missed:
            # The container's first status (a kill or an oom before it carries none) tells whether
            # its beginning was seen.
            if definition is None:
                self.missed = rank > PENDING
            else:
                self.missed = missed_history(definition, self.containers, name, rank)
        if change.stopRequested or rank >= RUNNING or container.held_exit is not None:
            return self._merge_lifecycle(container, change, rank, observed_at) or changed
        return container.merge(change) or changed

    def _merge_lifecycle(
        self, container: ContainerState, change: ContainerChange, rank: int, at: int
    ) -> bool:
        """A start, an exit or a stop request: the restart policy and executionStoppedAt."""
        if change.stopRequested:
            container.stop_requested = True
            if not container.stop_requested_at or at < container.stop_requested_at:
                container.stop_requested_at = at
        if rank == RUNNING:
            if container.held_exit is not None and at < container.held_at:
                return False  # a start from before the held exit (read late): not its restart
            if container.held_exit is not None or container.rank < RUNNING:
                container.started_at = at  # started, or restarted by the agent
            if container.held_exit is not None:
                container.end_reason = None  # a new life: Docker clears the OOM flag at a start
            container.held_exit = None
            if at > container.running_at:
                container.running_at = at
        elif rank == STOPPED and self._exit_not_final(container, change, at):
            return False
        changed = False
        if container.held_exit is not None and (rank == STOPPED or container.stop_requested):
            held, container.held_exit = container.held_exit, None
            changed |= container.merge(held)  # the held exit is final after all
            container.exit_at = max(container.exit_at, container.held_at)
            if rank == STOPPED and change.exitCode is not None and at < container.exit_at:
                return changed  # an exit observed before the held one (read late): stale
        changed |= container.merge(change)
        if change.exitCode is not None and container.exit_code == change.exitCode and at > container.exit_at:
            container.exit_at = at
        if container.rank == STOPPED:
            self.stop_seen = self.end_seen = True
            if self.managed_agents:
                changed |= self._stop_agents(change.containerName)
            if (rank == STOPPED or change.stopRequested) and self._essential(change):
                changed |= self._date_execution_stop(at, rank)
        return changed

    def _exit_not_final(self, container: ContainerState, change: ContainerChange, at: int) -> bool:
        """Whether an exit (a STOPPED change observed at ``at`` ns) is left unmerged: stale (from
        before the container's last restart, or before the exit merged), or held as one the agent
        restarts under the container's restart policy (``agent_rules.should_restart``; then held)."""
        definition = self.definition.containers.get(change.containerName) if self.definition else None
        # (without a restart policy there is no restart: the rest is not looked at)
        policy = None if definition is None else definition.restartPolicy
        if at < container.running_at and policy is not None and policy.enabled:
            # The container ran after this exit: the agent restarted it. A duplicate of an exit
            # before the last restart, or one read after its restart's start (re-keyed input
            # released out of order): not final.
            return True
        if container.rank == STOPPED:  # an exit observed before the one merged (read late): stale
            return change.exitCode is not None and at < container.exit_at
        if container.held_exit is not None or policy is None:
            return False
        if should_restart(
            definition,
            exit_code=change.exitCode,
            # Asked before the exit: a stop read after an earlier exit (re-keyed input read out of
            # order) did not cause it.
            stop_requested=container.stop_requested and container.stop_requested_at <= at,
            task_stopping=self.stopping() and self._stopping_before(at),
            started_at=container.started_at,
            exited_at=at,
        ):
            container.held_exit, container.held_at = change, at
            self.maybe_holding = True
            return True
        return False

    def _date_execution_stop(self, at: int, rank: int) -> bool:
        """An essential container's stop observed at ``at`` (ns) dates ``executionStoppedAt``: the
        earliest one (the die before its stop, in whatever order they came), as the agent dates it
        at its first essential container's stop and never again (``SetExecutionStoppedAt``,
        ``agent/api/task/task.go``). Once ECS's view showed that stop (``EXECUTION_STOP_TOLD``)
        it is ECS's time or none: a later record of that container (read again, or its
        ``destroy``) is no date of it. Returns whether the time changed."""
        if self.execution_stopped_ns == EXECUTION_STOP_TOLD:
            return False
        earlier = rank == STOPPED and 0 < at < self.execution_stopped_ns
        if self.execution_stopped_at is not None and not earlier:
            return False
        self.execution_stopped_at = datetime.fromtimestamp(at / 1e9, tz=UTC)
        self.execution_stopped_ns = at
        return True

    def _stopping_before(self, at: int) -> bool:
        """The task's stop (its first essential container's exit) was observed before ``at`` (ns)
        or at that instant, or its time is unknown. Compared in integer nanoseconds: the
        observation itself when this process dated the stop, else the time given (to the
        microsecond); a float of seconds is 256 ns apart at today's epoch."""
        observed = self.execution_stopped_ns
        if observed > 0:
            return observed <= at
        stopped = self.execution_stopped_at
        return stopped is None or _ns(stopped) <= at

    def _essential(self, change: ContainerChange) -> bool:
        return self.definition is not None and self.definition.essential(change.containerName)

    def ends_incomplete(self) -> bool:
        """Some stopped container lacks a fact of its end that the agent would report with it
        (``agent_rules.end_incomplete``): its exit code, or the OOM reason of an exit 137."""
        return any(
            c.rank == STOPPED
            and c.held_exit is None
            and end_incomplete(c.exit_code, c.reason, ran=c.started_at is not None)
            for c in self.containers.values()
        )

    def unseen(self) -> list[str]:
        """Containers of the definition with no status seen (none without a definition)."""
        if self.definition is None:
            return []
        containers = self.containers
        return [n for n in self.definition.containers if n not in containers or containers[n].rank < 0]

    def _any_unseen(self, definition: TaskDefinition) -> bool:
        """``unseen()`` is not empty (per event: no list built)."""
        containers = self.containers
        for name in definition.containers:
            container = containers.get(name)
            if container is None or container.rank < 0:
                return True
        return False

    def unresolved(self) -> list[str]:
        """Containers of the definition not known to have run (never seen, or only PENDING)."""
        if self.definition is None:
            return []
        containers = self.containers
        return [n for n in self.definition.containers if n not in containers or containers[n].rank < RUNNING]

    def holding(self) -> bool:
        """Some container's exit is held for a restart that has not shown yet."""
        if not self.maybe_holding:
            return False
        self.maybe_holding = any(c.held_exit is not None for c in self.containers.values())
        return self.maybe_holding

    def finalize_held(self, *, stopping: bool = False) -> bool:
        """Take every held exit as final: no restart followed in time; or, ``stopping``, the task
        is stopping, and then only the exits observed once it was (``_stopping_before``): the
        agent restarted an earlier one before the stop (``RestartTracker.ShouldRestart``). Returns
        whether anything reportable changed."""
        changed = False
        for container in self.containers.values():
            if container.held_exit is not None and (not stopping or self._stopping_before(container.held_at)):
                held, container.held_exit = container.held_exit, None
                changed |= container.merge(held)
        return self._rerank() or changed

    def exits_pending(self) -> bool:
        """Some container is STOPPED without an exit code (its ``die`` not read, or it never ran)."""
        return any(c.rank == STOPPED and c.exit_code is None for c in self.containers.values())

    def stopping(self) -> bool:
        """An essential container has stopped: the agent is stopping the others (within its stop
        timeout), so the task's STOPPED follows. Once true it stays true (ranks never fall); it is
        looked for again only after a container stopped (``stop_seen``): this runs per event."""
        if self.stopping_known:
            return True
        if not self.stop_seen:
            return False
        self.stop_seen = False
        definition = self.definition
        if definition is None:
            return False
        self.stopping_known = any(
            c.rank == STOPPED and definition.essential(n) for n, c in self.containers.items()
        )
        return self.stopping_known

    def know(self, definition: TaskDefinition | None) -> bool:
        """Set the task's definition (None: none can be had) and drop containers outside it.
        Returns whether anything reportable changed."""
        self.definition = definition
        self.all_seen = False
        if definition is not None:
            for name in [n for n in self.containers if n not in definition.containers]:
                del self.containers[name]
        return self._rerank()

    def settle(self) -> bool:
        """Give up waiting for a full view (fallback): derive the status from the containers seen."""
        self.settled = True
        return self._rerank()

    def merge_view(self, view: EcsTaskView) -> bool:
        """Fold in ECS's view of the task (what was reported so far), never lowering what this
        process observed. Returns whether anything reportable changed."""
        for seen in view.containers:
            if seen.lastStatus not in CONTAINER_RANK:
                continue
            change = ContainerChange(
                containerName=seen.name,
                status=seen.lastStatus,  # type: ignore[arg-type]  # checked above
                exitCode=seen.exitCode,
                reason=seen.reason,
                runtimeId=seen.runtimeId,
            )
            container = self.containers.get(seen.name)
            if container is None:
                if self.definition is not None and seen.name not in self.definition.containers:
                    continue
                container = self.containers[seen.name] = ContainerState()
            container.merge(change)
        if view.lastStatus in TASK_RANK:
            self.explicit_rank = max(self.explicit_rank, TASK_RANK[view.lastStatus])
        self._learn_execution_stop(view)
        self._rerank()
        return True

    def _learn_execution_stop(self, view: EcsTaskView) -> None:
        """ECS's view shows the task's execution stopped (an essential container STOPPED, or its
        ``executionStoppedAt``): the time ECS was told, if any, is the task's, reported again as
        told (the agent repeats it with every report), and no record read after dates it
        (``_date_execution_stop``). So the restart rules judge an exit read again against the real
        stop (``_stopping_before``), not against a later record's time."""
        definition = self.definition
        shown_stopped = definition is not None and any(
            seen.lastStatus == "STOPPED" and definition.essential(seen.name) for seen in view.containers
        )
        if view.executionStoppedAt is not None:
            self.execution_stopped_at = view.executionStoppedAt
        if shown_stopped or view.executionStoppedAt is not None:
            self.execution_stopped_ns = EXECUTION_STOP_TOLD

    def _rerank(self) -> bool:
        self.stop_seen = True  # (called after what is learnt: a view, a definition, a settle)
        """The task's rank once something is learnt of it (its definition, ECS's view, a settle):
        the explicit or derived rank, never below ``floor``. It can fall when it was not reported:
        ECS's view can show that a task thought STOPPED from a partial view still runs."""
        rank = self._derived_rank(max(self.floor, self.explicit_rank))
        if rank == self.rank:
            return False
        self.rank = rank
        return True

    def _merge_agent(self, agent: ManagedAgentChange) -> bool:
        key = (agent.containerName, agent.managedAgentName)
        rank = _AGENT_RANK.get(agent.status, -1)
        status, reason = agent.status, agent.reason
        container = self.containers.get(agent.containerName)
        if rank < STOPPED and container is not None and container.rank == STOPPED:
            # Its container already stopped (the events came out of order): so did the agent.
            rank, status, reason = STOPPED, "STOPPED", MANAGED_AGENT_STOPPED_REASON
        agents = self.managed_agents
        if agents is None:
            agents = self.managed_agents = {}
        seen = agents.get(key)
        if seen is not None and (rank < seen.rank or (seen.status, seen.reason) == (status, reason)):
            return False
        agents[key] = ManagedAgentState(status, max(rank, -1), reason)
        return True

    def _stop_agents(self, container_name: str) -> bool:
        """The container stopped: so did its managed agents (agent: ``agent/engine/task_manager.go``,
        ``handleManagedAgentStoppedTransition``, with the reason it gives). Returns whether any
        changed."""
        changed = False
        for (name, _), agent in (self.managed_agents or {}).items():
            if name == container_name and agent.rank < STOPPED:
                agent.status, agent.rank, agent.reason = "STOPPED", STOPPED, MANAGED_AGENT_STOPPED_REASON
                changed = True
        return changed

    def _merge_times(self, event: TaskEvent) -> bool:
        changed = False
        if event.pullStartedAt is not None and self.pull_started_at is None:
            self.pull_started_at = event.pullStartedAt
            changed = True
        if event.pullStoppedAt is not None and self.pull_stopped_at is None:
            self.pull_stopped_at = event.pullStoppedAt
            changed = True
        if event.executionStoppedAt is not None and self.execution_stopped_at is None:
            self.execution_stopped_at = event.executionStoppedAt
            changed = True
        return changed
