"""One task's known state, and how an event merges into it. Pure: no I/O, no clock.

Statuses are ranked PENDING < RUNNING < STOPPED; the runtime-level states the ECS agent knows
(CREATED, PULLED...) count as PENDING. A status never goes backwards: an event of a lower rank only
fills members that are still unknown, so duplicated and out-of-order events are harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from schemas.ecs import NetworkBinding
from schemas.events import ContainerChange, ManagedAgentChange, TaskEvent

__all__ = [
    "CONTAINER_RANK",
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

PENDING, RUNNING, STOPPED = 0, 1, 2
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

TaskKey = tuple[str, str]
"""(cluster, task ARN)"""


@dataclass(slots=True)
class ContainerState:
    rank: int = -1
    runtime_id: str | None = None
    image_digest: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    network_bindings: tuple[NetworkBinding, ...] | None = None

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
    attachments: dict[str, tuple[int, str]] = field(default_factory=dict)
    managed_agents: dict[tuple[str, str], ManagedAgentState] = field(default_factory=dict)
    pull_started_at: datetime | None = None
    pull_stopped_at: datetime | None = None
    execution_stopped_at: datetime | None = None

    def merge(self, event: TaskEvent) -> bool:
        """Fold one event in; return whether anything reportable changed."""
        changed = False
        for change in event.containers:
            container = self.containers.get(change.containerName)
            if container is None:
                container = self.containers[change.containerName] = ContainerState()
                changed = True
            changed |= container.merge(change)
        if event.status is not None:
            explicit = TASK_RANK[event.status]
            if explicit > self.explicit_rank:
                self.explicit_rank = explicit
        event_rank = -1 if event.status is None else TASK_RANK[event.status]
        if (
            event.reason is not None
            and event.reason != self.reason
            and (self.reason is None or event_rank >= self.rank)
        ):
            self.reason = event.reason
            changed = True
        for attachment in event.attachments:
            seen = self.attachments.get(attachment.attachmentArn)
            if seen is None or event.observedAt >= seen[0]:
                # A newer observation of the same status still moves the time on, so that an
                # older, out-of-order status cannot win afterwards.
                self.attachments[attachment.attachmentArn] = (event.observedAt, attachment.status)
                changed |= seen is None or seen[1] != attachment.status
        for agent in event.managedAgents:
            changed |= self._merge_agent(agent)
        if event.pullStartedAt or event.pullStoppedAt or event.executionStoppedAt:
            changed |= self._merge_times(event)
        rank = max(self.rank, self.explicit_rank, self._derived_rank())
        if rank != self.rank:
            self.rank = rank
            changed = True
        return changed

    def _derived_rank(self) -> int:
        lowest = STOPPED
        for container in self.containers.values():
            if container.rank < lowest:
                lowest = container.rank
        return lowest if self.containers and lowest > PENDING else PENDING

    def _merge_agent(self, agent: ManagedAgentChange) -> bool:
        key = (agent.containerName, agent.managedAgentName)
        rank = _AGENT_RANK.get(agent.status, -1)
        seen = self.managed_agents.get(key)
        if seen is not None and (
            rank < seen.rank or (seen.status, seen.reason) == (agent.status, agent.reason)
        ):
            return False
        self.managed_agents[key] = ManagedAgentState(agent.status, max(rank, -1), agent.reason)
        return True

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
