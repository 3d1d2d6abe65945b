"""A synthetic ECS fleet: task lifecycles as a timed schedule of runtime events. Pure and seeded.

Each task has 1-4 containers. Its containers are created together, started a pull later, run a
few seconds, then the essential container exits and the others are stopped shortly after, as the
ECS agent stops a task's other containers. A share of tasks keeps running (services). Docker-shaped
schedules carry the full lifecycle (create, start, health_status, kill, die, stop, destroy), with
the ECS agent's labels. A few percent of events are duplicated, a few are delivered out of order.

``Fleet.expected`` is what ECS must end up knowing: each task's final status and its containers'.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from schemas.events import ContainerChange, TaskEvent

__all__ = ["ExpectedTask", "Fleet", "Step", "synthetic_fleet"]

Format = Literal["canonical", "docker"]
_encoder = msgspec.json.Encoder()
_ACCOUNT = "111122223333"
_REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class Step:
    """One runtime event: ``at_s`` seconds after the schedule starts."""

    at_s: float
    cluster: str
    task: str
    container: str
    runtime_id: str
    action: str
    """create | start | health_status | kill | die | stop | destroy"""
    exit_code: int | None = None


@dataclass(slots=True)
class ExpectedTask:
    cluster: str
    status: str
    containers: dict[str, str] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Fleet:
    steps: list[Step]
    expected: dict[str, ExpectedTask]

    @property
    def duration_s(self) -> float:
        return max((s.at_s for s in self.steps), default=0.0)

    def render(self, step: Step, observed_at_ns: int, fmt: Format = "canonical") -> bytes:
        """The Kafka record value of one step, observed at ``observed_at_ns``."""
        return (
            render_docker(step, observed_at_ns) if fmt == "docker" else render_canonical(step, observed_at_ns)
        )


_STATUS = {
    "create": "PENDING",
    "start": "RUNNING",
    "die": "STOPPED",
    "stop": "STOPPED",
    "destroy": "STOPPED",
}


def render_canonical(step: Step, observed_at_ns: int) -> bytes:
    status = _STATUS.get(step.action)
    container = ContainerChange(
        containerName=step.container,
        runtimeId=step.runtime_id,
        status=status,  # type: ignore[arg-type]  # the values above are ContainerStatus literals
        exitCode=step.exit_code,
    )
    event = TaskEvent(
        cluster=step.cluster, task=step.task, observedAt=observed_at_ns, containers=(container,)
    )
    return _encoder.encode(event)


def render_docker(step: Step, observed_at_ns: int) -> bytes:
    attributes = {
        "com.amazonaws.ecs.cluster": step.cluster,
        "com.amazonaws.ecs.container-name": step.container,
        "com.amazonaws.ecs.task-arn": step.task,
        "com.amazonaws.ecs.task-definition-family": "demo",
        "com.amazonaws.ecs.task-definition-version": "1",
        "image": "public.ecr.aws/docker/library/nginx:latest",
        "name": f"ecs-demo-1-{step.container}-{step.runtime_id[:8]}",
    }
    action = step.action
    if step.action == "die":
        attributes["exitCode"] = str(step.exit_code if step.exit_code is not None else 0)
    elif step.action == "kill":
        attributes["signal"] = "15"
    elif step.action == "health_status":
        action = "health_status: healthy"
    document = {
        "Type": "container",
        "Action": action,
        "Actor": {"ID": step.runtime_id, "Attributes": attributes},
        "scope": "local",
        "time": observed_at_ns // 1_000_000_000,
        "timeNano": observed_at_ns,
    }
    return _encoder.encode(document)


def synthetic_fleet(
    tasks: int,
    *,
    seed: int = 7,
    fmt: Format = "canonical",
    clusters: int = 3,
    spread_s: float = 6.0,
    running_share: float = 0.1,
    duplicate_share: float = 0.03,
    reorder_share: float = 0.03,
) -> Fleet:
    """``tasks`` lifecycles starting over ``spread_s`` seconds."""
    rng = random.Random(seed)
    steps: list[Step] = []
    expected: dict[str, ExpectedTask] = {}
    for number in range(tasks):
        cluster = f"arn:aws:ecs:{_REGION}:{_ACCOUNT}:cluster/demo-{number % clusters}"
        task = f"arn:aws:ecs:{_REGION}:{_ACCOUNT}:task/demo-{number % clusters}/{rng.getrandbits(128):032x}"
        names = [f"app-{i}" for i in range(rng.randint(1, 4))]
        keeps_running = rng.random() < running_share
        task_steps, final = _lifecycle(
            rng, cluster, task, names, rng.uniform(0, spread_s), keeps_running, fmt
        )
        steps.extend(task_steps)
        expected[task] = final
    steps.sort(key=lambda s: s.at_s)
    steps = _disorder(rng, steps, duplicate_share, reorder_share)
    return Fleet(steps, expected)


def _lifecycle(
    rng: random.Random,
    cluster: str,
    task: str,
    names: list[str],
    begin: float,
    keeps_running: bool,
    fmt: Format,
) -> tuple[list[Step], ExpectedTask]:
    steps: list[Step] = []
    final = ExpectedTask(cluster=cluster, status="RUNNING" if keeps_running else "STOPPED")
    started = begin + rng.uniform(0.05, 0.3)  # the image pull
    stopping = started + rng.uniform(1.0, 4.0)
    for index, name in enumerate(names):
        runtime_id = f"{rng.getrandbits(256):064x}"
        at_start = started + rng.uniform(0, 0.05)

        def add(
            at: float,
            action: str,
            exit_code: int | None = None,
            *,
            rid: str = runtime_id,
            n: str = name,
        ) -> None:
            steps.append(Step(at, cluster, task, n, rid, action, exit_code))

        add(begin + rng.uniform(0, 0.02), "create")
        add(at_start, "start")
        if fmt == "docker":
            add(at_start + 0.01, "health_status")
        if keeps_running:
            final.containers[name] = "RUNNING"
            continue
        essential = index == 0
        at_exit = stopping if essential else stopping + rng.uniform(0.02, 0.15)
        exit_code = rng.choice((0, 0, 0, 1, 137)) if essential else 143
        if fmt == "docker" and not essential:
            add(at_exit - 0.005, "kill")
        add(at_exit, "die", exit_code)
        if fmt == "docker":
            add(at_exit + 0.002, "stop")
            add(at_exit + 0.05, "destroy")
        final.containers[name] = "STOPPED"
        final.exit_codes[name] = exit_code
    return steps, final


def _disorder(
    rng: random.Random, steps: list[Step], duplicate_share: float, reorder_share: float
) -> list[Step]:
    out: list[Step] = []
    for step in steps:
        out.append(step)
        if rng.random() < duplicate_share:
            out.append(step)
    for i in range(len(out) - 1):
        if rng.random() < reorder_share:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def final_state_mismatches(expected: dict[str, ExpectedTask], state: dict[str, object]) -> list[str]:
    """Differences between what ECS should know and the local endpoint's ``/_state``."""
    tasks = state.get("tasks", {})
    assert isinstance(tasks, dict)
    problems: list[str] = []
    for arn, want in expected.items():
        got = tasks.get(arn)
        if not isinstance(got, dict):
            problems.append(f"{arn}: never reported")
            continue
        if got.get("status") != want.status:
            problems.append(f"{arn}: status {got.get('status')} != {want.status}")
        containers = got.get("containers", {})
        for name, status in want.containers.items():
            if containers.get(name) != status:
                problems.append(f"{arn}: container {name} {containers.get(name)} != {status}")
    return problems
