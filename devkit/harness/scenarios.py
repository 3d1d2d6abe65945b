"""The scenarios: which faults, when, on how many tasks and workers; the fast ones run in
``make test``, the slow ones in ``make test-full`` and ``make faults``."""

from __future__ import annotations

from typing import Literal

import msgspec

from devkit.ecs_endpoint import Faults
from devkit.fleet import FleetShape, Format
from devkit.proxy import CutMode
from worker.config import InputKeying

__all__ = ["DISRUPTIONS", "FAST_SCENARIOS", "SLOW_SCENARIOS", "Fault", "FaultKind", "Scenario"]

FaultKind = Literal["kill", "term", "join", "leave", "endpoint", "broker_cut", "freeze"]
DISRUPTIONS: frozenset[str] = frozenset({"kill", "term", "join", "leave", "broker_cut", "freeze"})
"""Fault kinds that disrupt the group: each may replay or forget a task's last state once."""


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """One fault, ``at_s`` seconds after production starts.

    - ``kill`` / ``term``: SIGKILL / SIGTERM a worker (``worker`` index among the live ones, or a
      seeded random one), then start a replacement ``restart_after_s`` later (None: no restart);
    - ``join``: start one more worker; ``leave``: SIGTERM a worker for good;
    - ``endpoint``: apply ``endpoint`` faults (rates, latency; the quota is the scenario's) for
      ``duration_s``;
    - ``broker_cut``: cut every broker connection at the proxy for ``duration_s`` (``cut_mode``
      refuse: connections reset; blackhole: held open, unanswered);
    - ``freeze``: stop a worker (SIGSTOP, as the cgroup freezer or a paused VM would) for
      ``duration_s``, then let it run on (SIGCONT): past the session timeout, its partitions go to
      others while it holds changes it has not sent.
    """

    at_s: float
    kind: FaultKind
    duration_s: float = 0.0
    restart_after_s: float | None = None
    worker: int | None = None
    endpoint: Faults | None = None
    cut_mode: CutMode = "refuse"


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    """A synthetic fleet launched at the endpoint and produced to ``workers`` worker processes
    while ``faults`` happen; the last four fields are the workers' settings.

    The fleet (``devkit.fleet``) is ``shape`` with the scenario's ``spread_s`` and
    ``running_share``; its schedule runs ``pace`` times real time (0.05: twenty times faster), and
    the workers' stop linger and settle time are scaled to match (``Fleet.worker_timers``).
    ``unkeyed``: the events are produced without a key, the partitions in turn (round-robin), so
    that a task's events spread over every partition; ``input_keying`` is the workers' setting."""

    name: str
    tasks: int = 120
    workers: int = 2
    spread_s: float = 6.0
    """Task starts are spread over this many wall seconds; each lifecycle then lasts up to ~20 s."""
    running_share: float = 0.1
    pace: float = 0.05
    fmt: Format = "docker"
    unkeyed: bool = False
    input_keying: InputKeying = "task"
    reorder_ms: int = 1_000
    """The workers' ``repartition_reorder_ms`` (``input_keying = any``)."""
    shape: FleetShape = FleetShape()
    partitions: int = 6
    poison: int = 3
    faults: tuple[Fault, ...] = ()
    repeats_allowed: bool = True
    """False: no call may repeat a task's previous one, even across the disruptions."""
    quota_burst: int = 100
    quota_refill_per_s: float = 60.0
    """The endpoint's token bucket (ECS: ~200 burst, ~120/s), shared by the workers: each gets a
    share of it as its own rate limit."""
    seed: int = 7
    quiesce_timeout_s: float = 90.0
    linger_ms: int = 200
    drain_timeout_ms: int = 5_000
    session_timeout_ms: int = 6_000
    rebalance_timeout_ms: int = 12_000

    def fleet_shape(self) -> FleetShape:
        """``shape`` with the scenario's spread (in schedule seconds) and running share."""
        return msgspec.structs.replace(
            self.shape, spread_s=self.spread_s / self.pace, running_share=self.running_share
        )


def _window(at_s: float, duration_s: float, **faults: float) -> Fault:
    return Fault(at_s=at_s, kind="endpoint", duration_s=duration_s, endpoint=Faults(**faults))  # type: ignore[arg-type]


_ROLLING_RESTART = (
    Fault(at_s=2.0, kind="term", worker=0, restart_after_s=0.5),
    Fault(at_s=7.0, kind="term", worker=1, restart_after_s=0.5),
    Fault(at_s=12.0, kind="term", worker=2, restart_after_s=0.5),
)
"""Each of three workers SIGTERMed in turn, 5 s apart, and restarted half a second later."""

FAST_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="sigkill-restart",
        tasks=120,
        workers=2,
        faults=(Fault(at_s=3.0, kind="kill", restart_after_s=2.0),),
    ),
    Scenario(
        name="sigterm-join-leave",
        tasks=120,
        workers=2,
        spread_s=12.0,
        # Each membership change once the previous rebalance is over (Tansu takes 3-6 s). With
        # them overlapping, Tansu 0.6.0 was seen to leave a group wedged: a generation of three
        # formed, one member got its assignment, the two joiners never did. "everything" (slow)
        # overlaps them.
        faults=(
            Fault(at_s=1.0, kind="term", restart_after_s=0.5),
            Fault(at_s=8.0, kind="join"),
            Fault(at_s=14.0, kind="leave"),
        ),
    ),
    Scenario(
        name="endpoint-faults",
        tasks=120,
        workers=2,
        spread_s=8.0,
        faults=(
            _window(1.0, 2.5, throttle_rate=0.5),
            _window(3.5, 2.5, error_rate=0.3),
            _window(6.0, 2.0, latency_ms=700),
            _window(8.0, 2.5, drop_rate=0.25),
        ),
    ),
    Scenario(
        name="broker-cut",
        tasks=120,
        workers=2,
        faults=(Fault(at_s=3.0, kind="broker_cut", duration_s=8.0),),
    ),
    Scenario(
        # Long-running tasks of 2-6 containers outlive two graceful restarts, one worker after the
        # other (each restart: a leave, then a join, spaced past Tansu's rebalances); then they
        # stop. The new owners ask ECS for what they missed: no task STOPPED before its last
        # container, no call repeated.
        name="rolling-long-tasks",
        tasks=60,
        workers=2,
        spread_s=2.0,
        running_share=0.0,
        shape=FleetShape(containers=(2, 6), run_s=(360.0, 420.0)),
        repeats_allowed=False,
        faults=(
            Fault(at_s=3.0, kind="term", worker=0, restart_after_s=0.5),
            Fault(at_s=11.0, kind="term", worker=0, restart_after_s=0.5),
        ),
    ),
)

SLOW_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        # The events of each task spread over every partition (no key, round-robin): the workers
        # re-key them through the repartition topic while one is SIGKILLed and restarted and a
        # third joins.
        name="unkeyed-kill-join",
        tasks=120,
        workers=2,
        spread_s=10.0,
        unkeyed=True,
        input_keying="any",
        # The default reorder window (1 s): the killed worker's input partitions stall for the
        # session timeout and a rebalance, and the progress markers keep the order meanwhile.
        faults=(Fault(at_s=3.0, kind="kill", restart_after_s=1.0), Fault(at_s=9.0, kind="join")),
    ),
    Scenario(
        # Workers frozen past their session timeout (6 s) while they hold unsent changes: when they
        # run again, their calls must not contradict what the partitions' new owners reported.
        name="freeze-past-session",
        tasks=200,
        workers=3,
        spread_s=14.0,
        faults=(
            Fault(at_s=4.0, kind="freeze", duration_s=10.0),
            Fault(at_s=9.0, kind="freeze", duration_s=8.0),
        ),
    ),
    Scenario(
        name="kill-storm",
        tasks=400,
        workers=3,
        spread_s=15.0,
        quota_burst=150,
        quota_refill_per_s=90.0,
        faults=(
            Fault(at_s=3.0, kind="kill", restart_after_s=1.0),
            Fault(at_s=9.0, kind="kill", restart_after_s=3.0),
            Fault(at_s=14.0, kind="kill", restart_after_s=0.5),
        ),
    ),
    Scenario(
        name="blackhole-cut",
        tasks=300,
        workers=3,
        spread_s=12.0,
        quota_burst=150,
        quota_refill_per_s=90.0,
        faults=(Fault(at_s=4.0, kind="broker_cut", duration_s=12.0, cut_mode="blackhole"),),
    ),
    Scenario(
        name="tight-quota",
        tasks=400,
        workers=3,
        spread_s=8.0,
        running_share=0.0,
        quota_burst=40,
        quota_refill_per_s=30.0,
        quiesce_timeout_s=120.0,
    ),
    Scenario(
        name="rolling-restart",
        tasks=400,
        workers=3,
        spread_s=16.0,
        quota_burst=150,
        quota_refill_per_s=90.0,
        faults=_ROLLING_RESTART,
    ),
    Scenario(
        # The case: multi-container tasks, unkeyed input, a rolling restart of every
        # worker, re-keyed through the repartition topic.
        name="unkeyed-rolling-restart",
        tasks=400,
        workers=3,
        spread_s=16.0,
        unkeyed=True,
        input_keying="any",
        # The default reorder window (1 s): the input partitions changing owner stall for a
        # rebalance, and the progress markers keep the order meanwhile.
        shape=FleetShape(containers=(2, 6)),
        quota_burst=150,
        quota_refill_per_s=90.0,
        faults=_ROLLING_RESTART,
    ),
    Scenario(
        name="everything",
        tasks=500,
        workers=3,
        spread_s=20.0,
        quota_burst=150,
        quota_refill_per_s=90.0,
        quiesce_timeout_s=120.0,
        faults=(
            _window(1.0, 3.0, throttle_rate=0.4, latency_ms=200),
            Fault(at_s=3.0, kind="kill", restart_after_s=2.0),
            Fault(at_s=7.0, kind="join"),
            _window(8.0, 3.0, error_rate=0.3, drop_rate=0.1),
            Fault(at_s=10.0, kind="broker_cut", duration_s=7.0),
            Fault(at_s=18.0, kind="term", restart_after_s=1.0),
            Fault(at_s=21.0, kind="leave"),
        ),
    ),
)
