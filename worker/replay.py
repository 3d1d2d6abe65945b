"""``python -m worker replay FILE``: decode and coalesce a captured stream offline.

Each line of FILE is one record (JSON lines, ``ctr events`` text, Fluent Bit output); a file that
opens with ``[`` is a JSON array of records. Records are decoded exactly as the worker decodes
them and coalesced with the events' own observation times as the clock, so linger behaves as it
would live; every submission is taken as acknowledged. The result is the state changes that would
be submitted, with counts of ignored and bad records by reason: a check of a stream before the
worker is pointed at ECS. No broker, no ECS.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from schemas.ecs import SubmitTaskStateChangeRequest
from worker.coalesce import Coalescer, Result
from worker.decode import RecordDecoder
from worker.ecs_rules import check_event

__all__ = ["ReplayReport", "read_records", "replay"]


@dataclass(slots=True)
class ReplayReport:
    records: int = 0
    events: int = 0
    submissions: list[SubmitTaskStateChangeRequest] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)
    late: int = 0
    """Events for tasks whose STOPPED was already reported."""

    def summary(self) -> dict[str, object]:
        tasks = {(s.cluster, s.task) for s in self.submissions}
        return {
            "records": self.records,
            "events": self.events,
            "submissions": len(self.submissions),
            "tasks": len(tasks),
            "late_events": self.late,
            "ignored": dict(self.ignored.most_common()),
            "bad": dict(self.bad.most_common()),
        }


def read_records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    if data.lstrip()[:1] == b"[":
        for item in msgspec.json.decode(data, type=list[msgspec.Raw]):
            yield bytes(item)
        return
    for line in data.splitlines():
        if line.strip():
            yield line


def replay(records: Iterable[bytes], *, input_format: str = "auto", linger_ms: int = 500) -> ReplayReport:
    decoder = RecordDecoder(input_format=input_format)
    coalescer = Coalescer(linger_ns=linger_ms * 1_000_000, max_active_tasks=10**9, retired_cap=10**9)
    report = ReplayReport()
    clock = 0
    for offset, record in enumerate(records):
        report.records += 1
        decoded = decoder.decode(record)
        report.ignored.update(decoded.ignored)
        for item in decoded.bad:
            report.bad[f"{item.error_class}: {_first_line(item.reason)}"] += 1
        for event in decoded.events:
            broken = check_event(event)
            if broken is not None:
                report.bad[f"EcsRuleViolation: {broken}"] += 1
                continue
            report.events += 1
            clock = max(clock, event.observedAt)
            _send_due(coalescer, clock, report)
            if coalescer.is_retired((event.cluster, event.task)):
                report.late += 1
            coalescer.apply(event, ("replay", 0, offset), clock)
    coalescer.set_linger(0)
    coalescer.flush_all(clock)
    _send_due(coalescer, clock, report)
    return report


def _send_due(coalescer: Coalescer, now: int, report: ReplayReport) -> None:
    while True:
        ready, _ = coalescer.due(now)
        if not ready:
            return
        for submission in ready:
            report.submissions.append(submission.request)
            coalescer.complete(submission, Result.ACKNOWLEDGED, now)


def _first_line(text: str, limit: int = 120) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def render(report: ReplayReport) -> str:
    lines = []
    for request in report.submissions:
        containers = ", ".join(
            f"{c.containerName}={c.status}" + (f"({c.exitCode})" if c.exitCode is not None else "")
            for c in request.containers or ()
        )
        lines.append(f"{request.status:8} {request.task}  [{containers}]")
    summary = report.summary()
    lines.append("")
    lines.append(
        f"{summary['records']} records, {summary['events']} events -> {summary['submissions']} submissions "
        f"for {summary['tasks']} tasks; {summary['late_events']} late events"
    )
    for title, counts in (("ignored", report.ignored), ("bad", report.bad)):
        lines.append(f"{title}: {sum(counts.values())}")
        lines.extend(f"  {count:6}  {reason}" for reason, count in counts.most_common())
    return "\n".join(lines)
