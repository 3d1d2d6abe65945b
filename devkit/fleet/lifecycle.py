"""One task's lifecycle as the runtime observes it: its containers' events in schedule time, and
its final state. Pure: every draw comes from the caller's seeded ``random.Random``.

As the ECS agent runs a task: containers without dependencies are created at the task's start and
started after their image pull; a dependent is created once its dependencies' conditions hold
(``START``: started; ``HEALTHY``: ``health_status: healthy``; ``SUCCESS``: exited 0, seconds
before). An ``init`` container exits 0 early. A ``metrics`` container may exit (code 1) after
running past its ``restartAttemptPeriod`` and be restarted by the agent (``die``, ``start``,
``restart``): nothing to report. At the end the essential ``app`` exits on its own (``oom`` first
for 137), and the agent stops every other running container (``kill``, then ``die`` and ``stop``
up to ``stop_gap_s`` later; at the timeout a second ``kill`` and exit 137).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from devkit.fleet.definitions import RESTART_ATTEMPT_PERIOD_S, ContainerShape, FleetDefinition
from devkit.fleet.shape import FleetShape

__all__ = ["DOCKER_ONLY", "Happening", "Lifecycle", "plan_lifecycle"]

DOCKER_ONLY = frozenset({"health_status", "oom", "stop", "restart", "destroy"})
"""Actions with no canonical rendering: a canonical fleet has none of them."""
_CREATE_JITTER_S = (0.0, 0.3)
_PULL_S = (0.3, 2.5)
"""From a container's creation to its start (the image pull)."""
_AFTER_CONDITION_S = {
    "START": (0.2, 1.5),
    "HEALTHY": (0.5, 2.0),
    "SUCCESS": (1.0, 4.0),
    "COMPLETE": (1.0, 4.0),
}
_HEALTHY_AFTER_S = (4.0, 12.0)
_INIT_RUN_S = (1.0, 6.0)
_KILL_AFTER_S = (0.05, 0.6)
"""From the essential container's exit to the agent's stop of the others."""
_QUICK_STOP_S = (0.1, 3.0)
_RESTART_DELAY_S = (0.5, 2.0)
_CLEANUP_S = (60.0, 75.0)
"""From a task's stop to its containers' removal (the agent's cleanup wait, at its 1 min minimum)."""


@dataclass(frozen=True, slots=True)
class Happening:
    """One runtime event of one container, ``at_s`` schedule seconds after the fleet's start."""

    at_s: float
    container: str
    action: str
    """create | start | health_status | kill | oom | die | stop | restart | destroy"""
    exit_code: int | None = None
    signal: int | None = None
    restart: bool = False
    """Part of a restart-policy restart: never duplicated or reordered (see ``devkit.fleet``)."""


@dataclass(slots=True)
class Lifecycle:
    """A task's events and its final state: ``final`` maps each container to (status, exit code)."""

    happenings: list[Happening] = field(default_factory=list)
    final: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    stopped: bool = False


def _draw(rng: random.Random, bounds: tuple[float, float]) -> float:
    return rng.uniform(*bounds)


def plan_lifecycle(
    rng: random.Random,
    definition: FleetDefinition,
    shape: FleetShape,
    *,
    begin_s: float,
    keeps_running: bool,
    docker: bool,
) -> Lifecycle:
    """The lifecycle of one task of ``definition`` starting at ``begin_s``."""
    life = Lifecycle()
    started = _bring_up(rng, definition, begin_s, life)
    running = [c for c in definition.containers if c.role != "init"]
    up_at = max(started[c.name] for c in running)
    end_at = up_at + _draw(rng, shape.run_s)
    for container in running:
        life.final[container.name] = ("RUNNING", None)
        if container.restart_policy and rng.random() < shape.restart_share:
            _restart(rng, container.name, started[container.name], end_at, life)
    if not keeps_running:
        _stop(rng, running, end_at, shape.stop_gap_s, life)
        if docker and rng.random() < shape.destroy_share:
            gone = end_at + shape.stop_gap_s + _draw(rng, _CLEANUP_S)
            life.happenings.extend(Happening(gone, c.name, "destroy") for c in definition.containers)
    if not docker:
        life.happenings = [h for h in life.happenings if h.action not in DOCKER_ONLY]
    return life


def _bring_up(
    rng: random.Random, definition: FleetDefinition, begin_s: float, life: Lifecycle
) -> dict[str, float]:
    """Create and start every container in dependency order; ``init`` runs to its exit. Returns
    each container's start time."""
    reached: dict[tuple[str, str], float] = {}
    """(container, condition) -> when the condition holds."""
    started: dict[str, float] = {}
    add = life.happenings.append
    for container in definition.containers:
        if container.depends_on:
            created = max(
                reached[(name, condition)] + _draw(rng, _AFTER_CONDITION_S[condition])
                for name, condition in container.depends_on
            )
        else:
            created = begin_s + _draw(rng, _CREATE_JITTER_S)
        start = started[container.name] = created + _draw(rng, _PULL_S)
        add(Happening(created, container.name, "create"))
        add(Happening(start, container.name, "start"))
        reached[(container.name, "START")] = start
        if container.health_check:
            healthy = start + _draw(rng, _HEALTHY_AFTER_S)
            add(Happening(healthy, container.name, "health_status"))
            reached[(container.name, "HEALTHY")] = healthy
        if container.role == "init":
            done = start + _draw(rng, _INIT_RUN_S)
            add(Happening(done, container.name, "die", exit_code=0))
            reached[(container.name, "SUCCESS")] = reached[(container.name, "COMPLETE")] = done
            life.final[container.name] = ("STOPPED", 0)
    return started


def _restart(rng: random.Random, name: str, started: float, end_at: float, life: Lifecycle) -> None:
    """An exit after running past the restart period, then the agent's restart; only when the
    task runs long enough for both well before its end."""
    room = end_at - started - RESTART_ATTEMPT_PERIOD_S - 4.0
    if room < 2.0:
        return
    exited = started + RESTART_ATTEMPT_PERIOD_S + rng.uniform(1.0, min(room, 30.0))
    again = exited + _draw(rng, _RESTART_DELAY_S)
    life.happenings.extend(
        (
            Happening(exited, name, "die", exit_code=1, restart=True),
            Happening(again, name, "start", restart=True),
            Happening(again + 0.001, name, "restart", restart=True),
        )
    )


def _stop(
    rng: random.Random, running: list[ContainerShape], end_at: float, stop_gap_s: float, life: Lifecycle
) -> None:
    """The essential ``app`` exits; the agent stops the others within ``stop_gap_s``."""
    add = life.happenings.append
    life.stopped = True
    for container in running:
        name = container.name
        if container.role == "app":
            code = rng.choice((0, 0, 0, 1, 137))
            if code == 137:
                add(Happening(end_at - 0.005, name, "oom"))
            add(Happening(end_at, name, "die", exit_code=code))
            life.final[name] = ("STOPPED", code)
            continue
        killed = end_at + _draw(rng, _KILL_AFTER_S)
        add(Happening(killed, name, "kill", signal=15))
        draw = rng.random()
        if draw < 0.05 or killed + _QUICK_STOP_S[0] >= end_at + stop_gap_s:
            exited, code = max(end_at + stop_gap_s, killed + 0.02), 137  # the stop timeout: SIGKILL
            add(Happening(exited - 0.01, name, "kill", signal=9))
        else:
            longest = min(stop_gap_s - (killed - end_at), 3.0 if draw < 0.85 else stop_gap_s)
            exited, code = killed + rng.uniform(_QUICK_STOP_S[0], longest), rng.choice((143, 143, 0))
        add(Happening(exited, name, "die", exit_code=code))
        add(Happening(exited + 0.005, name, "stop"))
        life.final[name] = ("STOPPED", code)
