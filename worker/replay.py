"""``python -m worker replay FILE``: decode and coalesce a captured stream offline.

Each line of FILE is one record (JSON lines, ``ctr events``, ``docker events`` or ``podman events``
text, Fluent Bit output); a file that opens with ``[`` is a JSON array of records. FILE ``-`` is
standard input; lines are read as they come, never the whole input at once, with a progress line
on standard error every ``PROGRESS_EVERY`` records. Records go through the worker's own intake
(``worker.intake``: decode, validate, the per-task bounds, the reopen and linger policy) with the
events' own observation times as the clock, so linger behaves as it would live; every submission
is taken as acknowledged. The result is the state changes that would be submitted, with counts of
ignored and bad records by reason: a check of a stream before the worker is pointed at ECS. No
broker, no ECS.

Each request is handed on (``on_submission``) as soon as the intake produces it, so a pipe that
stays open shows requests as they come; a ``KeyboardInterrupt`` (Ctrl-C) ends the replay with the
report of what was read so far, marked ``interrupted``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import msgspec

from schemas.ecs import SubmitTaskStateChangeRequest
from worker.config import Settings
from worker.decode.reasons import LATE_EVENT
from worker.intake import Intake
from worker.offsets import OffsetBook
from worker.task_definition import TaskDefinition, definition_from_botocore
from worker.work import NS_PER_MS

__all__ = [
    "PROGRESS_EVERY",
    "ReplayReport",
    "progress_line",
    "read_definitions",
    "read_records",
    "render_request",
    "render_summary",
    "replay",
]

PROGRESS_EVERY = 100_000
"""Records between two progress reports of a long input."""
_TOPIC = "replay"
"""The pseudo-partition the records of a file are tracked in, one offset per record."""


@dataclass(slots=True)
class ReplayReport:
    records: int = 0
    events: int = 0
    submissions: list[SubmitTaskStateChangeRequest] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)
    late: int = 0
    """Events for tasks whose STOPPED was already reported."""
    without_definition: list[str] = field(default_factory=list)
    """Task definitions the events name that were not given."""
    seen_tasks: set[str] = field(default_factory=set)
    """Every task an event named."""
    interrupted: bool = False
    """Ended by Ctrl-C before its input did: the report holds what was read until then, and no
    request still lingering was sent."""

    def unreported(self) -> list[str]:
        """Tasks seen that no submission reported (still PENDING when the file ended)."""
        return sorted(self.seen_tasks - {s.task or "" for s in self.submissions})

    def summary(self) -> dict[str, object]:
        tasks = {(s.cluster, s.task) for s in self.submissions}
        return {
            "records": self.records,
            "events": self.events,
            "submissions": len(self.submissions),
            "tasks": len(tasks),
            "late_events": self.late,
            "without_definition": self.without_definition,
            "unreported_tasks": len(self.unreported()),
            "ignored": dict(self.ignored.most_common()),
            "bad": dict(self.bad.most_common()),
        } | ({"interrupted": True} if self.interrupted else {})


def read_records(source: Path | BinaryIO) -> Iterator[bytes]:
    """The records of a capture, read as they come: one a line (JSON lines, ``ctr events`` text,
    Fluent Bit output; blank lines skipped), or the items of a JSON array when the input opens
    with ``[`` (an array is read whole). ``source`` is a path or a binary stream such as standard
    input. Raises ``OSError`` when it cannot be read, ``ValueError`` for an array that is not
    JSON."""
    if isinstance(source, Path):
        with source.open("rb") as stream:
            yield from _records(stream)
    else:
        yield from _records(source)


def _records(stream: BinaryIO) -> Iterator[bytes]:
    lines = iter(stream)
    for line in lines:
        if not line.strip():
            continue
        if line.lstrip()[:1] == b"[":
            try:
                items = msgspec.json.decode(line + stream.read(), type=list[msgspec.Raw])
            except msgspec.DecodeError as exc:
                raise ValueError(f"a JSON array that is not JSON: {exc}") from exc
            yield from (bytes(item) for item in items)
            return
        yield line.rstrip(b"\r\n")
        break
    for line in lines:
        if line.strip():
            yield line.rstrip(b"\r\n")


def read_definitions(path: Path) -> list[TaskDefinition]:
    """Task definitions from a file of what ``aws ecs describe-task-definition`` prints: one
    answer, a JSON array of them, or JSON lines. Raises ``ValueError`` naming what is wrong."""
    data = path.read_bytes()
    try:
        if data.lstrip()[:1] == b"[":
            answers = msgspec.json.decode(data, type=list[dict[str, object]])
        else:
            answers = [
                msgspec.json.decode(line, type=dict[str, object])
                for line in data.splitlines()
                if line.strip()
            ]
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from exc
    return [definition_from_botocore(answer) for answer in answers]


def replay(
    records: Iterable[bytes],
    settings: Settings | None = None,
    definitions: Iterable[TaskDefinition] = (),
    *,
    on_progress: Callable[[ReplayReport], None] | None = None,
    progress_every: int = PROGRESS_EVERY,
    on_submission: Callable[[SubmitTaskStateChangeRequest], None] | None = None,
) -> ReplayReport:
    """Run ``records`` through the worker's own intake (``worker.intake``, with the per-task
    bounds, the linger policy and the agent's status rules of ``settings``), the events' own
    observation times as the clock; every submission is taken as acknowledged.

    Offline there is no ECS to ask: task definitions come from ``definitions`` (a task whose
    definition is not among them is judged by the containers seen, and counted in
    ``without_definition``), and a task whose history the file misses is judged by what was seen,
    its derived STOPPED held until it is quiet for ``settle_ms``, as the worker does when it
    cannot ask ECS. At the end of the file time runs on past every wait.

    ``records`` is consumed as it comes (a stream is never held whole); ``on_progress``, when
    given, is called with the report so far after every ``progress_every`` records;
    ``on_submission``, when given, with each request as soon as it is due (before the next record
    is read). A ``KeyboardInterrupt`` while reading ends the replay early: the report of what was
    read until then comes back with ``interrupted`` set, requests still lingering unsent."""
    settings = settings or Settings()
    intake = Intake.from_settings(settings, OffsetBook(), describe=False)
    for definition in definitions:
        intake.coalescer.definitions.put(definition.arn, definition)
    intake.book.assign([(_TOPIC, 0)])
    report = ReplayReport()
    sink = _Sink(report, on_submission)
    try:
        clock = _read_all(intake, records, report, sink, on_progress, progress_every)
    except KeyboardInterrupt:
        report.interrupted = True
    else:
        waits_ms = settings.settle_ms + settings.stop_linger_ms + settings.exit_wait_ms + settings.linger_ms
        end = clock + waits_ms * NS_PER_MS + 1
        _send_due(intake, end, sink)
        intake.coalescer.set_linger(0)
        intake.coalescer.set_draining(True)
        intake.coalescer.flush_all(end, held=True)
        _send_due(intake, end, sink)
    ignored, _ = intake.take_tallies()
    report.late = ignored.pop(LATE_EVENT, 0)
    report.ignored = ignored
    return report


@dataclass(slots=True)
class _Sink:
    """Where a due request goes: the report, then ``on_submission`` when given."""

    report: ReplayReport
    on_submission: Callable[[SubmitTaskStateChangeRequest], None] | None

    def send(self, request: SubmitTaskStateChangeRequest) -> None:
        self.report.submissions.append(request)
        if self.on_submission is not None:
            self.on_submission(request)


def _read_all(
    intake: Intake,
    records: Iterable[bytes],
    report: ReplayReport,
    sink: _Sink,
    on_progress: Callable[[ReplayReport], None] | None,
    progress_every: int,
) -> int:
    """Every record through the intake, requests sent as they fall due; the clock at the end
    (the latest observation time seen, nanoseconds)."""
    clock = 0
    for offset, record in enumerate(records):
        report.records += 1
        if on_progress is not None and report.records % progress_every == 0:
            on_progress(report)
        batch = intake.read(_TOPIC, 0, offset, record)
        assert batch is not None  # the pseudo-partition is owned
        for _, item in batch.bad:
            report.bad[f"{item.error_class}: {_first_line(item.reason)}"] += 1
        for event in batch.events:
            report.events += 1
            report.seen_tasks.add(event.task)
            clock = max(clock, event.observedAt)
            _send_due(intake, clock, sink)
            intake.apply(event, batch.source, clock, clock)
            _no_definition(intake, clock, report)
    return clock


def _no_definition(intake: Intake, now: int, report: ReplayReport) -> None:
    """Definitions not given: the tasks of each are judged by the containers seen."""
    arns, _ = intake.coalescer.take_wants()
    for arn in arns:
        report.without_definition.append(arn)
        intake.coalescer.learn_definition(arn, None, now)


def _send_due(intake: Intake, now: int, sink: _Sink) -> None:
    while True:
        ready, _ = intake.coalescer.due(now)
        if not ready:
            return
        for submission in ready:
            sink.send(submission.request)
            intake.coalescer.complete(submission, "acknowledged", now)


def progress_line(report: ReplayReport, elapsed_s: float) -> str:
    """One line of progress: records and events read, submissions so far, records per second."""
    rate = report.records / elapsed_s if elapsed_s > 0 else 0.0
    return (
        f"replay: {report.records:,} records, {report.events:,} events, "
        f"{len(report.submissions):,} submissions ({rate:,.0f} records/s)"
    )


def _first_line(text: str, limit: int = 120) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def render_request(request: SubmitTaskStateChangeRequest) -> str:
    """One request as a line: ``STATUS   TASK_ARN  [name=STATUS(exit code), ...]``."""
    containers = ", ".join(
        f"{c.containerName}={c.status}" + (f"({c.exitCode})" if c.exitCode is not None else "")
        for c in request.containers or ()
    )
    return f"{request.status:8} {request.task}  [{containers}]"


def render_summary(report: ReplayReport) -> str:
    """The summary printed after the requests: a blank line, the counts, the ignored and bad
    records by reason, tasks never reported, definitions not given; a last line when the replay
    was interrupted."""
    summary = report.summary()
    lines = [""]
    lines.append(
        f"{summary['records']} records, {summary['events']} events -> {summary['submissions']} submissions "
        f"for {summary['tasks']} tasks; {summary['late_events']} late events"
    )
    for title, counts in (("ignored", report.ignored), ("bad", report.bad)):
        lines.append(f"{title}: {sum(counts.values())}")
        lines.extend(f"  {count:6}  {reason}" for reason, count in counts.most_common())
    unreported = report.unreported()
    if unreported:
        lines.append(
            f"{len(unreported)} tasks never reported (nothing beyond PENDING was seen): "
            + ", ".join(unreported[:5])
            + (" ..." if len(unreported) > 5 else "")
        )
    if report.without_definition:
        lines.append(
            f"no task definition given for {len(report.without_definition)} revisions (their tasks were "
            "judged by the containers seen; pass --task-definitions): "
            + ", ".join(report.without_definition[:5])
            + (" ..." if len(report.without_definition) > 5 else "")
        )
    if report.interrupted:
        lines.append("interrupted (Ctrl-C): the counts are of the records read until then")
    return "\n".join(lines)
