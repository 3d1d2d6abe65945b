"""One task's entry in the coalescer: its merged state and what is known of its reporting. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.ecs import SubmitTaskStateChangeRequest
from schemas.events import TaskEvent
from worker.task_state import TaskState
from worker.work import SourceRef, Submission

__all__ = ["TaskEntry", "statuses"]


@dataclass(slots=True)
class TaskEntry:
    """One task in the coalescer: its state and its reporting bookkeeping."""

    state: TaskState
    sources: list[SourceRef] = field(default_factory=list)
    dirty: bool = False
    due_at: int | None = None
    first_event_at: int | None = None
    in_flight: Submission | None = None
    acked: str | None = None
    waiting: list[tuple[TaskEvent, int]] | None = None
    """Events held until the definition is known, with their arrival times."""
    reported: bool = False
    """A submission was made for the task (or ECS shows it past PENDING)."""
    missing: bool = False
    """ECS does not know the task: it retires once the submission in flight completes."""
    needs_view: bool = False
    """ECS's view was asked for: nothing is sent until it is known."""
    origin: SourceRef | None = None
    """The last record read for the task: its partition is the one the task's knowledge comes
    from, and that knowledge is given up with it (``Coalescer.drop``)."""
    replayed: bool = False
    """First seen in a record below its partition's replay end (``OffsetBook.replayed``): its
    history may have been reported already, by an earlier owner or by this process."""
    fallback: bool = False
    """The view is known partial and ECS's view could not be had."""
    baseline: tuple[object, ...] | None = None
    """The statuses ECS already shows (``_statuses``): a request with the same is not sent."""
    last_event_at: int = 0
    """Arrival (monotonic ns) of the task's last event."""
    last_observed_at: int = 0
    """Observation (wall-clock ns) of the task's last event."""
    changed_at: int = 0
    """Arrival (monotonic ns) of the first unsent change."""
    partition: int = -1
    """The input partition of the task's first event (with ``input_keying = task``), -1 before it."""
    split: bool = False
    """The task's events came from more than one partition (noted once)."""
    end_since: int | None = None
    """Arrival (monotonic ns) of the first container stop not yet reported: the wait for the
    facts of its end (``exit_wait``) counts from it."""
    queued: bool = False
    """Due and waiting for its call's turn (a token of its account and Region): its request is
    built when the call can go (``Coalescer.take``)."""
    throttled: int = 0
    """Submissions of the task ECS throttled in a row (each went back unsent)."""


def statuses(request: SubmitTaskStateChangeRequest) -> tuple[object, ...]:
    """What a request says of statuses: the task's, and each container's status and exit code."""
    return (
        request.status,
        tuple((c.containerName, c.status, c.exitCode) for c in request.containers or ()),
    )
