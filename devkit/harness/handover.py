"""Handover: how long after a worker's SIGTERM every partition it held is assigned to another
member (and so consumed again), read from the workers' JSON logs: each ``partitions assigned``
line names the member's whole assignment and carries the log's wall-clock ``time``.

A worker that leaves the group on SIGTERM (it drains, commits, then sends LeaveGroup) hands over
in seconds; one whose leave is lost is replaced only once its session times out.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

__all__ = ["Assignment", "handover_s", "read_assignments"]

LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"
"""``logging``'s default ``asctime`` (local time), as ``worker.logs`` writes it."""


@dataclass(frozen=True)
class Assignment:
    """One member's assignment of the input topic: ``at`` in seconds since the epoch."""

    worker: str
    at: float
    partitions: frozenset[int]


def read_assignments(log_dir: Path, workers: Iterable[str], topic: str) -> list[Assignment]:
    """Every ``partitions assigned`` line of ``log_dir/NAME.log`` for each worker NAME, oldest first;
    lines that are not JSON (a traceback) are skipped."""
    found: list[Assignment] = []
    for name in workers:
        path = log_dir / f"{name}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                entry = json.loads(line)
                if entry.get("message") == "partitions assigned":
                    at = datetime.strptime(entry["time"], LOG_TIME).timestamp()
                    held = frozenset(int(p) for t, p, *_ in entry["partitions"] if t == topic)
                    found.append(Assignment(name, at, held))
    return sorted(found, key=lambda a: a.at)


def handover_s(assignments: Sequence[Assignment], victim: str, signalled_at: float) -> float | None:
    """Seconds from ``victim``'s SIGTERM (``signalled_at``, epoch seconds) until every partition of
    its last assignment before it was in another member's assignment; 0.0 when it held none;
    ``None`` when some partition was never assigned again."""
    held = [a.partitions for a in assignments if a.worker == victim and a.at <= signalled_at]
    pending = set(held[-1]) if held else set()
    if not pending:
        return 0.0
    for assignment in assignments:
        if assignment.worker != victim and assignment.at > signalled_at:
            pending -= assignment.partitions
            if not pending:
                return round(assignment.at - signalled_at, 2)
    return None
