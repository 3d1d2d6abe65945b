"""A rig for the coalescer's knowledge edge cases: a real ``Coalescer`` and ``OffsetBook``, one
Kafka record per event on partition ``("t", 0)``, and a clock in seconds after ``base_ns``.

Every source the coalescer resolves (from ``apply``, ``due``, ``complete`` and the ``learn_*``
answers) is released into the book at once, so ``committable()`` is the offset a commit would
take: everything below it has been reported (or needs no report).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.events import ContainerChange, ContainerStatus, TaskEvent
from worker.coalesce import Applied, Coalescer
from worker.offsets import OffsetBook
from worker.task_definition import EcsContainerView, EcsTaskView, TaskDefinition, definition_from_botocore
from worker.work import SourceRef, Submission, TaskKey

__all__ = [
    "APP_METRICS",
    "ARN",
    "CLUSTER",
    "KEY",
    "T0",
    "TASK",
    "Rig",
    "S",
    "at",
    "coalescer",
    "definition",
    "ev",
    "replaying_rig",
    "shown",
    "view",
]

S = 1_000_000_000
CLUSTER = "prod"
ARN = "arn:aws:ecs:us-east-1:111122223333:task-definition/web:1"
TASK = "arn:aws:ecs:us-east-1:111122223333:task/prod/0123456789abcdef"
KEY: TaskKey = (CLUSTER, TASK)
T0 = 1_764_598_465_000_000_000
"""Observation time (wall-clock ns) of an event at 0 s; the rig's monotonic clock starts there too."""
APP_METRICS: list[dict[str, Any]] = [
    {"name": "app"},
    {
        "name": "metrics",
        "essential": False,
        "restartPolicy": {"enabled": True, "ignoredExitCodes": [0], "restartAttemptPeriod": 60},
    },
]
"""An essential app and a sidecar the agent restarts (exit codes but 0, after 60 s up)."""


def at(seconds: float) -> datetime:
    """The wall-clock time of the rig's ``seconds`` (as ECS's view and requests carry it)."""
    return datetime.fromtimestamp((T0 + int(seconds * S)) / 1e9, tz=UTC)


def definition(containers: Sequence[dict[str, Any]], arn: str = ARN) -> TaskDefinition:
    """A definition with ``containers`` (``containerDefinitions`` members, as botocore returns them)."""
    return definition_from_botocore(
        {"taskDefinition": {"taskDefinitionArn": arn, "containerDefinitions": list(containers)}}
    )


def ev(
    name: str,
    status: ContainerStatus | None = None,
    *,
    at: float = 0.0,
    exit_code: int | None = None,
    stop: bool = False,
    arn: str | None = ARN,
    task: str = TASK,
    cluster: str = CLUSTER,
) -> TaskEvent:
    """One container's change, observed ``at`` seconds after ``T0``. ``status`` None with ``stop``
    is Docker's ``kill`` (a stop asked of the container); ``arn`` None: no definition label."""
    return TaskEvent(
        cluster=cluster,
        task=task,
        observedAt=T0 + int(at * S),
        containers=(
            ContainerChange(
                containerName=name,
                status=status,
                exitCode=exit_code,
                stopRequested=stop,
                runtimeId="r-" + name,
            ),
        ),
        taskDefinitionArn=arn,
    )


def view(
    status: str,
    containers: dict[str, tuple[str, int | None]],
    task: str = TASK,
    *,
    stopped_at: datetime | None = None,
) -> EcsTaskView:
    """ECS's view of a task (what ``DescribeTasks`` shows): its ``lastStatus``, each container's
    ``(lastStatus, exitCode)`` and the ``executionStoppedAt`` it was told (``stopped_at``)."""
    return EcsTaskView(
        taskArn=task,
        lastStatus=status,
        executionStoppedAt=stopped_at,
        containers=tuple(
            EcsContainerView(name=name, lastStatus=last, exitCode=code)
            for name, (last, code) in containers.items()
        ),
    )


def coalescer(**options: Any) -> Coalescer:
    """A coalescer with a 0.5 s linger (and the defaults otherwise, unless given)."""
    return Coalescer(**({"linger_ns": S // 2, "max_active_tasks": 1000, "retired_cap": 1000} | options))


def shown(submission: Submission) -> str:
    """A submission as ``"STATUS name=STATUS(exit code),..."``."""
    request = submission.request
    containers = ",".join(f"{c.containerName}={c.status}({c.exitCode})" for c in request.containers or ())
    return f"{request.status} {containers}"


class Rig:
    """A coalescer and the offset book of partition ``("t", 0)``, fed one record per event."""

    def __init__(self, co: Coalescer | None = None, *, base_ns: int = T0, **options: Any) -> None:
        self.co = co if co is not None else coalescer(**options)
        self.base_ns = base_ns
        self.book = OffsetBook()
        self.book.assign([("t", 0)])
        self.offset = 0
        """The next offset to read (so: how many records were read)."""
        self.sent: list[tuple[float, Submission]] = []
        """Every submission taken from ``due``, with the time it was taken."""
        self.definitions_wanted: list[str] = []
        self.views_wanted: list[TaskKey] = []
        """Wants taken from the coalescer (``wanted``) and not answered yet."""

    def ns(self, at: float) -> int:
        return self.base_ns + int(at * S)

    def release(self, sources: Iterable[SourceRef]) -> None:
        for source in sources:
            self.book.release(source)

    def track(self, claims: int = 1) -> SourceRef:
        """Read the next record (``claims`` parts of it to resolve)."""
        source = self.book.track("t", 0, self.offset, claims)
        assert source is not None, "partition not owned"
        self.offset += 1
        return source

    def feed(self, event: TaskEvent, at: float | None = None) -> tuple[Applied, SourceRef]:
        """Apply ``event`` as the next record, arriving ``at`` (default: when it was observed);
        replayed when the record lies below the replay end noted in the book, as ``Intake``
        applies it."""
        at = (event.observedAt - T0) / S if at is None else at
        source = self.track()
        applied, resolved = self.co.apply(event, source, self.ns(at), replayed=self.book.replayed(source))
        self.release(resolved)
        return applied, source

    def tick(self, at: float, *, ack: bool = True) -> list[Submission]:
        """Take what is due ``at``; ECS acknowledges each submission at once (``ack``), else they
        stay in flight and one round is taken."""
        now = self.ns(at)
        taken: list[Submission] = []
        while True:
            ready, resolved = self.co.due(now)
            self.release(resolved)
            taken.extend(ready)
            self.sent.extend((at, s) for s in ready)
            if not ready or not ack:
                return taken
            for submission in ready:
                self.release(self.co.complete(submission, "acknowledged", now))

    def wanted(self) -> tuple[list[str], list[TaskKey]]:
        """The definitions and views the coalescer wants (``take_wants``) and that the rig has
        not answered yet."""
        arns, keys = self.co.take_wants()
        self.definitions_wanted.extend(arns)
        self.views_wanted.extend(keys)
        return list(self.definitions_wanted), list(self.views_wanted)

    def learn_definitions(self, containers: Sequence[dict[str, Any]] | None, at: float = 0.0) -> list[str]:
        """Answer every definition wanted with ``containers`` (None: it cannot be had), as the
        resolver would ``at``. Returns the ARNs answered."""
        arns, _ = self.wanted()
        self.definitions_wanted = []
        answer = None if containers is None else definition(containers)
        for arn in arns:
            self.release(self.co.learn_definition(arn, answer, self.ns(at)))
        return arns

    def answer_views(self, answer: EcsTaskView | None, at: float) -> list[TaskKey]:
        """Answer every view wanted with ``answer`` (None: ``DescribeTasks`` failed or was denied),
        as the resolver would ``at``. Returns the tasks answered."""
        _, keys = self.wanted()
        self.views_wanted = []
        for key in keys:
            self.release(self.co.learn_view(key, answer, self.ns(at)))
        return keys

    def statuses(self) -> list[str]:
        return [shown(s) for _, s in self.sent]

    def committable(self) -> int | None:
        """The offset a commit of partition ``("t", 0)`` would take now."""
        return self.book.to_commit().get(("t", 0))


def replaying_rig(containers: list[dict[str, Any]], replay_end: int | None, **options: Any) -> Rig:
    """The definition of ``containers`` known; with ``replay_end``, a new owner: partition
    ``("t", 0)`` read again below it. ``options`` go to the coalescer (``settle_ns``...)."""
    rig = Rig(**options)
    rig.co.definitions.put(ARN, definition(containers))
    if replay_end is not None:
        rig.book.note_replay_end("t", 0, replay_end)
    return rig
