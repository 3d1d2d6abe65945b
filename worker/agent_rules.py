"""The ECS agent's rules for a task's status, on the full container set of its definition. Pure.

- **Task status** is the earliest status among the task's containers, every container of the
  definition counted, one never seen as PENDING: RUNNING once every container has reached RUNNING
  or has stopped (an init container that completed), STOPPED once every container has stopped
  (agent: ``Task.updateTaskKnownStatus`` takes the earliest known status of its containers).
  Without a definition only the containers seen are counted, as before this module existed.
- **Restarts** (agent: ``restart.RestartTracker.ShouldRestart``): an exit is restarted, and so not
  reported, when the container's restart policy is enabled, no stop was asked of it (its desired
  status is not STOPPED), it has an exit code not in ``ignoredExitCodes``, and it ran at least
  ``restartAttemptPeriod`` seconds since it started or last restarted.
- **A container's end** (agent: ``dockerapi.DockerClient`` ``metadataFromContainer`` in
  ``agent/dockerclient/dockerapi/docker_client.go`` reads the exit code and ``OOMKilled`` from
  inspect once the container exited, so its STOPPED carries both): events bring those facts
  apart (Docker's ``die`` the exit code, ``oom`` the OOM kill), in any order. A STOPPED whose
  container ran but whose exit code is unknown, or whose exit code is 137 (128 + SIGKILL, the OOM
  killer's signal) with no reason yet, is incomplete (``end_incomplete``): the coalescer waits a
  bounded time for the missing fact before it reports it.
- **Managed agents** (ECS Exec): when a container stops, its managed agents stop with it, with
  the reason ``MANAGED_AGENT_STOPPED_REASON`` (agent: ``agent/engine/task_manager.go``,
  ``handleManagedAgentStoppedTransition``).
- **Missed history**: a view is partial when a container of the definition is first seen past
  PENDING (its creation and start happened before this process read the task: another owner, or
  before a restart) or when a container is seen before a container it ``dependsOn`` (the agent
  creates a dependent only once its dependencies' conditions are met). Then ECS's own view is
  asked for (``DescribeTasks``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from worker.task_definition import ContainerDefinition, TaskDefinition

__all__ = [
    "MANAGED_AGENT_STOPPED_REASON",
    "PENDING",
    "RUNNING",
    "SIGKILL_EXIT_CODE",
    "STOPPED",
    "Ranked",
    "earliest_rank",
    "earliest_rank_above",
    "end_incomplete",
    "missed_history",
    "should_restart",
]

PENDING, RUNNING, STOPPED = 0, 1, 2
_NS_PER_S = 1_000_000_000
SIGKILL_EXIT_CODE = 137
"""128 + SIGKILL: the exit code of a process the OOM killer killed (or any SIGKILL)."""
MANAGED_AGENT_STOPPED_REASON = "Received Container Stopped event"
"""The reason the agent gives a managed agent stopped with its container
(``agent/engine/task_manager.go``, ``handleManagedAgentStoppedTransition``)."""


def end_incomplete(exit_code: int | None, reason: str | None, *, ran: bool) -> bool:
    """Whether a stopped container's end still lacks a fact the agent would report with it: the
    exit code of a container seen running (a ``stop`` or ``destroy`` came before its ``die``), or
    the reason of an exit 137 (SIGKILL, as the OOM killer sends it; its ``oom`` may still come).
    A container never seen running has no ``die`` to wait for."""
    if exit_code is None:
        return ran
    return exit_code == SIGKILL_EXIT_CODE and reason is None


def earliest_rank(ranks: Mapping[str, int], definition: TaskDefinition | None) -> int:
    """The task rank that container ranks (by name; -1 = seen, status unknown) give: the earliest
    of every container of ``definition`` (one not in ``ranks`` counts as PENDING), or of the
    containers in ``ranks`` without a definition. PENDING when there is none."""
    if definition is None:
        names: Iterable[str] = ranks
        if not ranks:
            return PENDING
    else:
        names = definition.containers
    lowest = STOPPED
    for name in names:
        rank = ranks.get(name, PENDING)
        if rank < lowest:
            lowest = rank
    return max(lowest, PENDING)


class Ranked(Protocol):
    """A container's state as these rules read it: its rank (-1 = seen, status unknown)."""

    @property
    def rank(self) -> int: ...


def earliest_rank_above(containers: Mapping[str, Ranked], definition: TaskDefinition, floor: int) -> int:
    """``max(floor, earliest_rank(ranks, definition))`` for ``floor`` >= PENDING, with ``ranks``
    the ranks of ``containers``: it runs per event, so it reads the containers where they are
    and stops at the first one of the definition at or below ``floor`` (the rank cannot rise
    above ``floor`` then)."""
    lowest = STOPPED
    for name in definition.containers:
        container = containers.get(name)
        rank = PENDING if container is None else container.rank
        if rank <= floor:
            return floor
        if rank < lowest:
            lowest = rank
    return lowest  # above ``floor`` (STOPPED, the highest rank, without containers)


def should_restart(
    container: ContainerDefinition | None,
    *,
    exit_code: int | None,
    stop_requested: bool,
    task_stopping: bool,
    started_at: int | None,
    exited_at: int,
) -> bool:
    """Whether the agent restarts a container that exited at ``exited_at`` (ns) with
    ``exit_code``, having started (or last restarted) at ``started_at`` (ns; None = not seen).

    A stop asked of the container or a task that is stopping (an essential container stopped)
    sets its desired status to STOPPED: no restart. When its start was not seen the period cannot
    be judged: the exit is taken for a restart, held until a start shows it (or a stop, or the
    caller's deadline, makes it final)."""
    policy = None if container is None else container.restartPolicy
    if policy is None or not policy.enabled or stop_requested or task_stopping or exit_code is None:
        return False
    if exit_code in policy.ignoredExitCodes:
        return False
    if started_at is None:
        return True
    return exited_at - started_at >= policy.restartAttemptPeriod * _NS_PER_S


def missed_history(
    definition: TaskDefinition, containers: Mapping[str, Ranked], name: str, first_rank: int
) -> bool:
    """Whether first seeing container ``name`` at ``first_rank``, with ``containers`` known
    before it (by name; one with rank -1 was seen without a status, so not as created), shows
    that this process missed part of the task's history."""
    if first_rank > PENDING:
        return True
    container = definition.containers.get(name)
    if container is None or not container.dependsOn:
        return False
    for dependency in container.dependsOn:
        seen = containers.get(dependency.containerName)
        if seen is None or seen.rank < 0:
            return True
    return False
