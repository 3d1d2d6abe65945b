"""A synthetic ECS fleet: realistic task definitions, tasks started with RunTask, and their
containers' runtime events on a seeded schedule with realistic gaps.

Plan (pure, seeded), launch (I/O), produce, check::

    fleet = synthetic_fleet(400, seed=7, fmt="docker")        # definitions, lifecycles, expected
    fleet = await launch(fleet, endpoint_url)                 # RegisterTaskDefinition + RunTask
    await produce_fleet(bootstrap, topic, fleet, pace=0.05)   # devkit.topics: 20x real time
    final_state_mismatches(fleet.expected, endpoint.state())  # or: await check_final(fleet, url)

- Definitions (``definitions``): 1-10 containers, essential and not; an ``init`` container an
  ``app`` depends on with ``SUCCESS``; an ``envoy`` with a health check the ``app`` depends on
  with ``HEALTHY``; a ``log-router`` depended on with ``START``; a ``metrics`` container with a
  restart policy; sidecars.
- Lifecycles (``lifecycle``): dependents created seconds after their dependencies' conditions
  hold; restart-policy restarts (``die`` after running past ``restartAttemptPeriod``, then
  ``start``); the essential container's exit and the agent's stop of the others (``kill``, then
  ``die`` up to ``stop_gap_s`` later); a share of tasks keeps running. Shape: ``FleetShape``.
- Delivery (``model``): a few percent of events duplicated or swapped with the next, except a
  restart's events and two events of one container. Known limit of the worker this avoids: a
  duplicated ``die`` of a restarted container is taken as final.
- Time: ``Step.at_s`` is schedule time (seconds as the runtime observes them). Producers send at a
  ``pace`` (0.05: twenty times faster) but stamp events on the schedule's clock
  (``Fleet.observed_ns``), so that a restart still shows its container ran past the restart
  period; the event times then run ahead of the wall clock, so latency is measured from the
  records' production times (``devkit.topics.outcome_latencies_ms``). Give the worker
  ``Fleet.worker_timers(pace)``: a stop linger and settle time scaled to the pace.
- Expected (``ExpectedTask``): each task's final status, its containers' statuses and exit codes.
"""

from __future__ import annotations

from devkit.fleet.check import described_mismatches, final_state_mismatches, flag_counts
from devkit.fleet.definitions import ContainerShape, FleetDefinition
from devkit.fleet.launch import check_final, ecs_client, launch
from devkit.fleet.model import ExpectedTask, Fleet, synthetic_fleet
from devkit.fleet.shape import DEFAULT_SHAPE, FleetShape, worker_timers
from devkit.fleet.steps import Format, Step, render_canonical, render_docker

__all__ = [
    "DEFAULT_SHAPE",
    "ContainerShape",
    "ExpectedTask",
    "Fleet",
    "FleetDefinition",
    "FleetShape",
    "Format",
    "Step",
    "check_final",
    "described_mismatches",
    "ecs_client",
    "final_state_mismatches",
    "flag_counts",
    "launch",
    "render_canonical",
    "render_docker",
    "synthetic_fleet",
    "worker_timers",
]
