"""A plain-text table of fault scenario reports (``devkit.harness.report.Report``), one row per
scenario, then each scenario's timeline and problems."""

from __future__ import annotations

from collections.abc import Sequence

from devkit.harness.report import Report

__all__ = ["render_table"]

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("scenario", "scenario"),
    ("broker", "broker"),
    ("events", "events"),
    ("tasks", "tasks"),
    ("workers", "workers"),
    ("faults", "faults_injected"),
    ("lost", "lost"),
    ("regr", "regressions"),
    ("stop<all", "flag:stopped_while_running"),
    ("upd>stop", "flag:updates_after_stopped"),
    ("run<all", "flag:running_incomplete"),
    ("subm", "submissions"),
    ("dup", "duplicate_submissions"),
    ("dup/task", "max_duplicates_per_task"),
    ("req/task", "max_distinct_per_task"),
    (">2 req", "tasks_over_two"),
    ("calls/task", "calls_per_task"),
    ("def calls", "definition_calls"),
    ("describes", "describe_calls"),
    ("throttled", "throttled"),
    ("quota thr", "quota_throttled"),
    ("covered", "records_covered"),
    ("dlq", "records_dead_lettered"),
    ("other", "records_other"),
    ("replayed", "records_replayed"),
    ("exit s", "max_exit_s"),
    ("drain s", "drain_s"),
    ("handover s", "handover_s"),
    ("wall s", "wall_s"),
    ("ok", "ok"),
)


def render_table(reports: Sequence[Report]) -> str:
    """A plain-text table, one scenario a row, then each scenario's faults and problems."""

    def cell(report: Report, name: str) -> str:
        if name.startswith("flag:"):
            return str(report.flags.get(name.removeprefix("flag:"), 0))
        if name == "tasks_over_two":
            return str(sum(count for n, count in report.tasks_by_distinct.items() if n > 2))
        value = getattr(report, name)
        if name == "ok":
            return "OK" if value else "FAIL"
        if name == "max_duplicates_per_task":
            return f"{value}/{report.duplicate_bound_per_task}"
        if value is None:
            return "-"
        return f"{value:g}" if isinstance(value, float) else str(value)

    rows = [[title for title, _ in _COLUMNS]]
    rows.extend([cell(r, name) for _, name in _COLUMNS] for r in reports)
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for report in reports:
        lines.append("")
        lines.append(f"{report.scenario}:")
        spread = ", ".join(f"{n}: {count}" for n, count in report.tasks_by_distinct.items())
        lines.append(f"  tasks by distinct acknowledged requests: {spread}")
        lines.extend(f"  {r.at_s:6.1f}s  {r.what}" for r in report.faults)
        lines.extend(f"  PROBLEM: {p}" for p in report.problems)
        if report.log_dir:
            lines.append(f"  logs: {report.log_dir}")
    return "\n".join(lines)
