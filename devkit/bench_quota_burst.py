"""The quota benchmark's workload: a deployment burst, as container status changes in time order,
and the truth ECS should end up showing. Pure and seeded.

``BurstShape`` (defaults: the figures of issue 15): ``tasks`` tasks of 1 to ``max_containers``
containers start within ``start_window_s`` (each container created at its task's start and
running 0.05-1 s later); ``stop_share`` of them stop within ``stop_window_s`` of the burst's
start (at least 2 s after they run; each container stops within 0.5 s of the others, exit code
0). Tasks are spread over hosts of ``tasks_per_host`` tasks each (the agent-like reporter runs one
reporter per host).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import msgspec

__all__ = ["Burst", "BurstShape", "Change", "TaskTruth", "make_burst"]

CLUSTER = "bench"


class BurstShape(msgspec.Struct, kw_only=True, frozen=True):
    tasks: int = 3000
    max_containers: int = 10
    start_window_s: float = 10.0
    stop_share: float = 1 / 3
    stop_window_s: float = 60.0
    tasks_per_host: int = 10
    seed: int = 15


@dataclass(frozen=True, slots=True)
class Change:
    """One container status change, ``at`` seconds after the burst's start."""

    at: float
    task: int
    container: str
    status: str
    """PENDING, RUNNING or STOPPED."""


@dataclass(slots=True)
class TaskTruth:
    """One task's containers and the times its status changes (seconds after the start)."""

    containers: list[str]
    host: int
    running_at: float
    stopped_at: float | None = None

    @property
    def final(self) -> tuple[str, dict[str, str]]:
        """(task status, {container: status}) once every change has happened."""
        status = "STOPPED" if self.stopped_at is not None else "RUNNING"
        return status, dict.fromkeys(self.containers, status)


@dataclass(slots=True)
class Burst:
    shape: BurstShape
    changes: list[Change]
    truths: list[TaskTruth] = field(default_factory=list)

    @property
    def last_change_at(self) -> float:
        return self.changes[-1].at if self.changes else 0.0

    def task_arn(self, account: str, region: str, task: int) -> str:
        return f"arn:aws:ecs:{region}:{account}:task/{CLUSTER}/{task:032x}"


def make_burst(shape: BurstShape) -> Burst:
    """The burst of ``shape``: its changes sorted by time, and each task's truth."""
    rng = random.Random(shape.seed)
    changes: list[Change] = []
    truths: list[TaskTruth] = []
    stopping = set(rng.sample(range(shape.tasks), round(shape.tasks * shape.stop_share)))
    for task in range(shape.tasks):
        start = rng.uniform(0.0, shape.start_window_s)
        names = [f"c{i}" for i in range(rng.randint(1, shape.max_containers))]
        runs = {name: start + rng.uniform(0.05, 1.0) for name in names}
        truth = TaskTruth(names, task // shape.tasks_per_host, max(runs.values()))
        for name in names:
            changes.append(Change(start, task, name, "PENDING"))
            changes.append(Change(runs[name], task, name, "RUNNING"))
        if task in stopping:
            stop = rng.uniform(min(truth.running_at + 2.0, shape.stop_window_s), shape.stop_window_s)
            stops = {name: stop + rng.uniform(0.0, 0.5) for name in names}
            truth.stopped_at = max(stops.values())
            changes.extend(Change(at, task, name, "STOPPED") for name, at in stops.items())
        truths.append(truth)
    changes.sort(key=lambda change: change.at)
    return Burst(shape, changes, truths)
