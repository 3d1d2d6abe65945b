"""The check of ``input_keying = task``: is each task's stream on one partition?

With ``task`` keying the worker trusts the producer to keep all of a task's events on one
partition (keyed by task ARN, or by host: a task's containers share a host), so that one process
owns each task. When a task's events arrive on two partitions, two processes may hold partial
views of it and report it independently: the stream needs ``input_keying = any``. The coalescer
notes such tasks for free (it knows each task's partition, ``Coalescer.take_split``); this module
counts them (``ecs_state_worker_tasks_split_total``) and warns once per task, at most one log line
per ``every_s`` (the tasks met meanwhile are counted in the next line).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from worker.metrics import Metrics
from worker.work import TaskKey

__all__ = ["SplitTaskWarnings"]

log = logging.getLogger(__name__)
WARN_EVERY_S = 30.0


class SplitTaskWarnings:
    """``report(split, now)``: ``split`` as ``Coalescer.take_split`` gives it, ``now`` monotonic
    seconds."""

    def __init__(self, metrics: Metrics, *, every_s: float = WARN_EVERY_S) -> None:
        self._metrics = metrics
        self._every_s = every_s
        self._next_at = 0.0
        self._unlogged = 0

    def report(self, split: Sequence[tuple[TaskKey, int, int]], now: float) -> None:
        if not split:
            return
        self._metrics.tasks_split.inc(len(split))
        if now < self._next_at:
            self._unlogged += len(split)
            return
        (cluster, task), first, other = split[0]
        log.warning(
            "a task's events arrive on more than one partition (%d and %d): the input is not keyed by "
            "task; set input_keying = any (%d more such tasks not logged, since the last line or the start)",
            first,
            other,
            self._unlogged + len(split) - 1,
            extra={"task": task, "cluster": cluster, "partitions": [first, other]},
        )
        self._unlogged = 0
        self._next_at = now + self._every_s
