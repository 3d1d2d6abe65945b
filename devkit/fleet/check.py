"""Is ECS's knowledge what the fleet expects? Pure comparisons; each difference is one line that
starts with the task ARN and ``": "`` (an ARN holds colons, never ``": "``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from devkit.fleet.model import ExpectedTask

__all__ = ["described_mismatches", "final_state_mismatches", "flag_counts"]


def final_state_mismatches(expected: Mapping[str, ExpectedTask], state: Mapping[str, Any]) -> list[str]:
    """Differences in task and container statuses between ``expected`` and the local endpoint's
    ``/_state`` (which holds no exit codes: see ``described_mismatches``)."""
    tasks = state.get("tasks", {})
    assert isinstance(tasks, dict)
    problems: list[str] = []
    for arn, want in expected.items():
        got = tasks.get(arn)
        if not isinstance(got, dict):
            problems.append(f"{arn}: never reported")
            continue
        if got.get("status") != want.status:
            problems.append(f"{arn}: status {got.get('status')} != {want.status}")
        containers = got.get("containers", {})
        for name, status in want.containers.items():
            if containers.get(name) != status:
                problems.append(f"{arn}: container {name} {containers.get(name)} != {status}")
    return problems


def described_mismatches(
    expected: Mapping[str, ExpectedTask], described: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Differences between ``expected`` and ECS's ``DescribeTasks`` answers (their ``tasks``
    members): task ``lastStatus``, each container's ``lastStatus`` and ``exitCode``."""
    by_arn = {str(task["taskArn"]): task for task in described}
    problems: list[str] = []
    for arn, want in expected.items():
        task = by_arn.get(arn)
        if task is None:
            problems.append(f"{arn}: unknown to ECS")
            continue
        if task.get("lastStatus") != want.status:
            problems.append(f"{arn}: status {task.get('lastStatus')} != {want.status}")
        containers = {c["name"]: c for c in task.get("containers") or ()}
        for name, status in want.containers.items():
            got = containers.get(name, {})
            if got.get("lastStatus") != status:
                problems.append(f"{arn}: container {name} {got.get('lastStatus')} != {status}")
            elif got.get("exitCode") != want.exit_codes.get(name):
                problems.append(
                    f"{arn}: container {name} exit code {got.get('exitCode')} != {want.exit_codes.get(name)}"
                )
    return problems


def flag_counts(state: Mapping[str, Any]) -> dict[str, int]:
    """The endpoint's flags (``stopped_while_running``, ``updates_after_stopped``,
    ``running_incomplete``) as counts, from its ``/_state``."""
    flags: Mapping[str, Mapping[str, Any]] = state.get("flags", {})
    return {name: int(tally["count"]) for name, tally in flags.items()}
