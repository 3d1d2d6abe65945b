"""The synthetic fleet: planned task definitions, task lifecycles as one timed schedule of runtime
events, and what ECS must end up knowing. Pure and seeded; ``launch`` (``devkit.fleet.launch``)
binds it to the ARNs an endpoint gives."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from devkit.fleet.definitions import (
    PLACEHOLDER_ACCOUNT,
    PLACEHOLDER_REGION,
    FleetDefinition,
    plan_definitions,
)
from devkit.fleet.lifecycle import Lifecycle, plan_lifecycle
from devkit.fleet.shape import DEFAULT_SHAPE, FleetShape, worker_timers
from devkit.fleet.steps import Format, Step, render_canonical, render_docker

__all__ = ["ExpectedTask", "Fleet", "synthetic_fleet"]

_S = 1_000_000_000
_TASK_ARN_HEAD = f"arn:aws:ecs:{PLACEHOLDER_REGION}:{PLACEHOLDER_ACCOUNT}:task/"


@dataclass(slots=True)
class ExpectedTask:
    """What ECS must end up knowing of one task: its status, each container's status, the exit
    code of each stopped container, and its task definition ARN."""

    cluster: str
    status: str
    containers: dict[str, str] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)
    definition: str = ""


@dataclass(slots=True)
class Fleet:
    """``steps`` in delivery order (schedule order, but for duplicates and swaps); ``expected`` by
    task ARN, in task order. Until ``bind`` (or ``launch``) the ARNs are planned ones, in the
    local endpoint's account: good for offline use (replay, the decode benchmark), unknown to any
    endpoint."""

    steps: list[Step]
    expected: dict[str, ExpectedTask]
    definitions: list[FleetDefinition]
    fmt: Format = "canonical"
    shape: FleetShape = DEFAULT_SHAPE
    launched: bool = False

    @property
    def duration_s(self) -> float:
        """Schedule seconds from the fleet's start to its last event."""
        return max((s.at_s for s in self.steps), default=0.0)

    def observed_ns(self, step: Step, base_ns: int) -> int:
        """When the runtime observed ``step`` (ns) on the schedule's clock starting at ``base_ns``.

        Producers stamp events on the schedule's clock whatever their pace: the worker judges a
        restart by the event times (a container that ran ``restartAttemptPeriod``), so these keep
        the schedule's gaps while the records are sent faster than real time."""
        return base_ns + round(step.at_s * _S)

    def render(self, step: Step, observed_at_ns: int, fmt: Format | None = None) -> bytes:
        """The Kafka record value of ``step`` observed at ``observed_at_ns``, in ``fmt`` (default:
        the fleet's own)."""
        if (fmt or self.fmt) == "docker":
            return render_docker(step, observed_at_ns)
        return render_canonical(step, observed_at_ns)

    def worker_timers(self, pace: float) -> dict[str, int]:
        """``stop_linger_ms`` and ``settle_ms`` for a worker fed this fleet at ``pace``."""
        return worker_timers(pace, self.shape.stop_gap_s)

    def bind(self, tasks: Mapping[str, tuple[str, str]], definitions: Mapping[str, str]) -> Fleet:
        """The same fleet with real names: ``tasks`` maps each planned task ARN to its (cluster,
        task ARN), ``definitions`` each planned definition ARN to the registered one."""
        steps = [
            replace(
                step,
                cluster=tasks[step.task][0],
                task=tasks[step.task][1],
                definition=definitions[step.definition],
            )
            for step in self.steps
        ]
        expected = {
            tasks[arn][1]: replace(want, cluster=tasks[arn][0], definition=definitions[want.definition])
            for arn, want in self.expected.items()
        }
        bound = [FleetDefinition(d.family, definitions[d.arn], d.containers) for d in self.definitions]
        return Fleet(steps, expected, bound, self.fmt, self.shape, launched=True)


def synthetic_fleet(
    tasks: int, *, seed: int = 7, fmt: Format = "canonical", shape: FleetShape = DEFAULT_SHAPE
) -> Fleet:
    """``tasks`` task lifecycles of ``shape``, drawn from ``seed``: Docker-shaped (``docker``:
    health, oom, stop, restart and destroy events too) or canonical."""
    rng = random.Random(seed)
    definitions = plan_definitions(rng, shape.definitions, shape.containers, prefix="fleet")
    steps: list[Step] = []
    expected: dict[str, ExpectedTask] = {}
    for number in range(tasks):
        cluster = f"fleet-{number % shape.clusters}"
        arn = f"{_TASK_ARN_HEAD}{cluster}/{rng.getrandbits(128):032x}"
        definition = definitions[rng.randrange(len(definitions))]
        life = plan_lifecycle(
            rng,
            definition,
            shape,
            begin_s=rng.uniform(0, shape.spread_s),
            keeps_running=rng.random() < shape.running_share,
            docker=fmt == "docker",
        )
        steps.extend(_task_steps(rng, life, cluster, arn, definition))
        expected[arn] = _expected(life, cluster, definition.arn)
    steps.sort(key=lambda s: s.at_s)
    return Fleet(_disorder(rng, steps, shape), expected, definitions, fmt, shape)


def _task_steps(
    rng: random.Random, life: Lifecycle, cluster: str, task: str, definition: FleetDefinition
) -> list[Step]:
    ids = {c.name: f"{rng.getrandbits(256):064x}" for c in definition.containers}
    images = {c.name: c.image for c in definition.containers}
    return [
        Step(
            h.at_s,
            cluster,
            task,
            h.container,
            ids[h.container],
            h.action,
            h.exit_code,
            definition.arn,
            images[h.container],
            h.signal,
            h.restart,
        )
        for h in life.happenings
    ]


def _expected(life: Lifecycle, cluster: str, definition: str) -> ExpectedTask:
    return ExpectedTask(
        cluster=cluster,
        status="STOPPED" if life.stopped else "RUNNING",
        containers={name: status for name, (status, _) in life.final.items()},
        exit_codes={name: code for name, (_, code) in life.final.items() if code is not None},
        definition=definition,
    )


def _disorder(rng: random.Random, steps: list[Step], shape: FleetShape) -> list[Step]:
    """Duplicate a share of the steps and swap a share with their successor, as at-least-once
    shippers do. A restart's steps are left alone (the worker takes a second ``die`` of a
    restarted container as final), and so are two steps of one container (Docker emits a
    container's events in order)."""
    out: list[Step] = []
    for step in steps:
        out.append(step)
        if not step.restart and rng.random() < shape.duplicate_share:
            out.append(step)
    for i in range(len(out) - 1):
        first, second = out[i], out[i + 1]
        if first.restart or second.restart or first.runtime_id == second.runtime_id:
            continue
        if rng.random() < shape.reorder_share:
            out[i], out[i + 1] = second, first
    return out
