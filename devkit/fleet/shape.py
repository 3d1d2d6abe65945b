"""What a synthetic fleet looks like: its size, mix and pace of lifecycles (``FleetShape``), and
the worker timers that suit a fleet produced faster than real time (``worker_timers``). Pure."""

from __future__ import annotations

import math

import msgspec

__all__ = ["DEFAULT_SHAPE", "FleetShape", "worker_timers"]


class FleetShape(msgspec.Struct, frozen=True, kw_only=True):
    """A fleet's knobs. Times are schedule seconds: as the runtime would observe them, before a
    producer's ``pace`` compresses them into wall time.

    - ``clusters``: clusters the tasks are spread over; ``definitions``: task definition revisions
      (``devkit.fleet.definitions``); ``containers``: (fewest, most) containers per definition.
    - ``spread_s``: task starts are spread over this long.
    - ``run_s``: (shortest, longest) time from a task's last container start to its essential
      container's exit (a restart needs ``restartAttemptPeriod`` + 6 s of it).
    - ``stop_gap_s``: the agent's stop timeout: the other containers stop within this long of the
      essential container's exit (``kill`` then ``die``; at the timeout ``SIGKILL``, exit 137).
    - ``running_share``: tasks that keep running past the schedule's end (services).
    - ``restart_share``: of the tasks able to, those whose ``metrics`` container exits and is
      restarted once by its restart policy.
    - ``destroy_share``: stopped tasks whose containers are removed (``destroy``, Docker only) a
      minute after the task stopped: late events.
    - ``duplicate_share`` / ``reorder_share``: events delivered twice / swapped with the next one.
    """

    clusters: int = 3
    definitions: int = 8
    containers: tuple[int, int] = (1, 10)
    spread_s: float = 120.0
    run_s: tuple[float, float] = (20.0, 150.0)
    stop_gap_s: float = 30.0
    running_share: float = 0.1
    restart_share: float = 0.5
    destroy_share: float = 0.3
    duplicate_share: float = 0.03
    reorder_share: float = 0.03


DEFAULT_SHAPE = FleetShape()

_MARGIN_MS = 1_000
"""Delivery jitter allowed beyond the compressed stop gap (broker, fetch wait, linger)."""


def worker_timers(pace: float, stop_gap_s: float = DEFAULT_SHAPE.stop_gap_s) -> dict[str, int]:
    """``stop_linger_ms`` and ``settle_ms`` for a worker fed a fleet at ``pace`` (0.05: twenty
    times faster than real time): the compressed stop gap plus a margin, so that a task's last
    container still stops within the stop linger (one STOPPED call, no intermediate one), and a
    partial view settles only once it is over. The defaults (35 s, 45 s) suit ``pace`` 1."""
    gap_ms = math.ceil(stop_gap_s * pace * 1000)
    return {"stop_linger_ms": gap_ms + _MARGIN_MS, "settle_ms": gap_ms + 2 * _MARGIN_MS}
