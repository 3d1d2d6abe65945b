"""The local ECS's state and its operations, apart from HTTP: pure, with clocks and ids passed in.

Each operation takes a body already validated against botocore's model (JSON values, as sent)
and returns its answer payload (timestamps as datetimes), or raises :class:`ApiError`:

``RegisterTaskDefinition``  -> ``{"taskDefinition", "tags"?}``; 400 ``ClientException`` for the
                               rules in :mod:`devkit.ecs.taskdefs`
``DescribeTaskDefinition``  -> ``{"taskDefinition", "tags"?}`` (tags with ``include=["TAGS"]``);
                               400 ``ClientException`` ``Unable to describe task definition.``
``RunTask``                 -> ``{"tasks", "failures": []}``; 400 ``InvalidParameterException``
                               for a count outside 1-10 or an unknown task definition
``DescribeTasks``           -> ``{"tasks", "failures"}``, a failure ``{"arn", "reason": "MISSING"}``
                               per unknown task; 400 ``InvalidParameterException`` for an empty
                               list or more than 100 tasks
``SubmitTaskStateChange``   -> ``{"acknowledgment": "ACK"}``

Tasks are keyed by (cluster name, task id): a cluster may be named by name or ARN and a task by
id or ARN, in any call. A task named in a DescribeTasks by an ARN of another cluster is MISSING.
Clusters need no creating: any name is a cluster.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime
from typing import Any

from devkit.ecs.arns import Scope, cluster_name, resource_id
from devkit.ecs.reports import Findings, apply_report
from devkit.ecs.taskdefs import TaskDefinition, TaskDefinitions
from devkit.ecs.tasks import Task, new_task, render_task, task_snapshot
from devkit.ecs.wire import ApiError

__all__ = ["MAX_DESCRIBED_TASKS", "MAX_RUN_COUNT", "EcsState"]

MAX_RUN_COUNT = 10
MAX_DESCRIBED_TASKS = 100


def _invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidParameterException", message)


class EcsState:
    """Task definitions, tasks and findings of one local ECS (one store for every scope)."""

    def __init__(self) -> None:
        self.definitions = TaskDefinitions()
        self.tasks: dict[tuple[str, str], Task] = {}
        self.findings = Findings()

    # -- operations ----------------------------------------------------------------------------
    def register_task_definition(self, body: dict[str, Any], scope: Scope, now: datetime) -> dict[str, Any]:
        definition = self.definitions.register(body, scope, now)
        return _definition_answer(definition, tags="tags" in body)

    def describe_task_definition(self, body: dict[str, Any]) -> dict[str, Any]:
        definition = self.definitions.find(str(body["taskDefinition"]))
        if definition is None:
            raise ApiError(400, "ClientException", "Unable to describe task definition.")
        return _definition_answer(definition, tags="TAGS" in body.get("include", ()))

    def run_task(
        self, body: dict[str, Any], scope: Scope, rng: random.Random, now: datetime
    ) -> dict[str, Any]:
        count = body.get("count", 1)
        if not 1 <= count <= MAX_RUN_COUNT:
            raise _invalid(f"count must be between 1 and {MAX_RUN_COUNT}, was {count}.")
        definition = self.definitions.find(str(body["taskDefinition"]))
        if definition is None:
            raise _invalid("TaskDefinition not found.")
        started = []
        for _ in range(count):
            task = new_task(definition, body, scope, rng, now)
            self.tasks[(task.cluster, resource_id(task.task))] = task
            started.append(render_task(task, scope, tags=True))
        return {"tasks": started, "failures": []}

    def describe_tasks(self, body: dict[str, Any], scope: Scope) -> dict[str, Any]:
        references: list[str] = body["tasks"]
        if not references:
            raise _invalid("Tasks cannot be empty.")
        if len(references) > MAX_DESCRIBED_TASKS:
            raise _invalid(f"Too many tasks: at most {MAX_DESCRIBED_TASKS} tasks can be described at once.")
        cluster = cluster_name(body.get("cluster"))
        tags = "TAGS" in body.get("include", ())
        found: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for reference in references:
            key = _task_key(cluster, reference)
            task = self.tasks.get(key) if key is not None else None
            if task is None or key is None:
                arn = reference if reference.startswith("arn:") else scope.task_arn(cluster, reference)
                failures.append({"arn": arn, "reason": "MISSING"})
            elif key not in seen:
                seen.add(key)
                found.append(render_task(task, scope, tags=tags))
        return {"tasks": found, "failures": failures}

    def submit(self, body: dict[str, Any], now: datetime) -> dict[str, Any]:
        cluster, reference = str(body["cluster"]), str(body["task"])
        key = (cluster_name(cluster), resource_id(reference))
        task = self.tasks.get(key)
        if task is None:
            task = self.tasks[key] = Task(cluster=cluster, task=reference)
        apply_report(task, body, now, self.findings)
        return {"acknowledgment": "ACK"}

    # -- inspection ----------------------------------------------------------------------------
    @staticmethod
    def merged(states: list[EcsState]) -> dict[str, Any]:
        """The ``snapshot`` of several scopes' states as one (a task known in two scopes under
        one name keeps the last)."""
        if len(states) == 1:
            return states[0].snapshot()
        merged: dict[str, Any] = {"tasks": {}, "regressions": [], "flags": {}, "task_definitions": {}}
        for state in states or [EcsState()]:
            snapshot = state.snapshot()
            merged["tasks"].update(snapshot["tasks"])
            merged["regressions"].extend(snapshot["regressions"])
            merged["task_definitions"].update(snapshot["task_definitions"])
            for name, tally in snapshot["flags"].items():
                into = merged["flags"].setdefault(name, {"count": 0, "examples": []})
                into["count"] += tally["count"]
                into["examples"] = (into["examples"] + tally["examples"])[:20]
        return merged

    def snapshot(self) -> dict[str, Any]:
        """``{"tasks", "regressions", "flags", "task_definitions"}`` of ``GET /_state``.

        ``tasks`` is keyed by task (as first given, the ARN for RunTask), or by
        ``"<cluster>|<task>"`` when one task string is in two clusters.
        """
        seen = Counter(task.task for task in self.tasks.values())
        tasks = {
            (task.task if seen[task.task] == 1 else f"{task.cluster}|{task.task}"): task_snapshot(task)
            for task in self.tasks.values()
        }
        return {
            "tasks": tasks,
            "regressions": list(self.findings.regressions),
            "flags": {name: tally.snapshot() for name, tally in self.findings.flags.items()},
            "task_definitions": self.definitions.snapshot(),
        }


def _definition_answer(definition: TaskDefinition, *, tags: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {"taskDefinition": definition.payload}
    if tags:
        answer["tags"] = list(definition.tags)
    return answer


def _task_key(cluster: str, reference: str) -> tuple[str, str] | None:
    """The key of a task named in ``cluster``; None for an ARN of a task in another cluster."""
    if reference.startswith("arn:") and ":task/" in reference:
        path = reference.split(":task/", 1)[1].split("/")
        if len(path) == 2 and path[0] != cluster:
            return None
    return cluster, resource_id(reference)
