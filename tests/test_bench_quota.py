"""The quota benchmark's workload and, at a small scale against the local endpoint enforcing a
small quota, what it shows: under quota pressure the worker's late-bound requests make fewer
calls than the agent-like reporter (a task stopped while its RUNNING waited is reported once),
every task's view converges to the truth, and the worker's own budget keeps throttling away.
Counts are asserted, never speeds."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import pytest

from devkit.bench_quota import REPORTERS, EcsQuota, run_quota_bench
from devkit.bench_quota_burst import BurstShape, make_burst
from devkit.cli import QUOTA_REPORTERS
from tests.support import ROOT


def test_the_burst_s_changes_lead_to_its_truth() -> None:
    shape = BurstShape(tasks=200, max_containers=4, start_window_s=2.0, stop_window_s=6.0, seed=3)
    burst = make_burst(shape)
    assert [c.at for c in burst.changes] == sorted(c.at for c in burst.changes)
    last: dict[tuple[int, str], str] = {}
    order: dict[tuple[int, str], list[str]] = defaultdict(list)
    for change in burst.changes:
        last[change.task, change.container] = change.status
        order[change.task, change.container].append(change.status)
    for number, truth in enumerate(burst.truths):
        status, containers = truth.final
        assert {name: last[number, name] for name in truth.containers} == containers
        assert 1 <= len(truth.containers) <= 4
        for name in truth.containers:
            assert order[number, name] == (
                ["PENDING", "RUNNING", "STOPPED"] if status == "STOPPED" else ["PENDING", "RUNNING"]
            )
    assert sum(t.stopped_at is not None for t in burst.truths) == round(200 / 3)
    assert max(t.running_at for t in burst.truths) <= 2.0 + 1.0


async def test_under_quota_pressure_the_worker_makes_fewer_calls_than_the_agent() -> None:
    shape = BurstShape(tasks=120, max_containers=3, start_window_s=1.0, stop_window_s=3.0, seed=5)
    quota = EcsQuota(refill_per_s=30.0, burst=40)
    report = await run_quota_bench(
        shape, machine="test", quota=quota, deadline_s=60.0, only=["worker", "agent-like"]
    )
    worker, agent = report.reporters
    assert (worker.reporter, agent.reporter) == ("worker", "agent-like")
    assert (worker.tasks_wrong, agent.tasks_wrong) == (0, 0)
    assert worker.convergence_s is not None
    stopping = round(120 / 3)
    # The agent makes one call per status change at least; the worker folds the STOPPED of a task
    # whose RUNNING still waited for quota into one call.
    assert agent.calls >= 120 + stopping
    assert worker.calls < 120 + stopping
    # Its budget runs 5 % under the endpoint's: throttling stays rare (the calls of one event loop
    # shared with the endpoint may reach it bunched).
    assert worker.throttled_after_first_s <= 0.05 * worker.calls


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--quota-tasks", "0"], "--quota-tasks"),
        (["--quota-start-window-s", "-1"], "--quota-start-window-s"),
        (["--quota-deadline-s", "0"], "--quota-deadline-s"),
        (["--quota-reporters", "worker,agent"], "--quota-reporters"),
        (["--quota-reporters", ","], "--quota-reporters"),
    ],
)
def test_bad_quota_flags_fail_at_once_naming_the_flag(flags: list[str], named: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "bench", "--quota", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"argument {named}: " in result.stderr
    assert "Traceback" not in result.stderr


def test_the_command_line_names_every_reporter_of_the_benchmark() -> None:
    assert tuple(REPORTERS) == QUOTA_REPORTERS
