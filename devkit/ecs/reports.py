"""How one accepted ``SubmitTaskStateChange`` updates a task, and what it reveals as wrong.

Statuses are ranked (unknown statuses are not ranked)::

    PROVISIONING = PENDING = ACTIVATING = MANIFEST_PULLED  <  RUNNING
        <  DEACTIVATING = STOPPING = DEPROVISIONING  <  STOPPED

A **regression** is a task or container status reported with a lower rank than its previous
status; as in ECS it is still acknowledged and applied. Regressions and the three flags below are
what an ECS user would see as wrong; each is counted per call, with the first 20 examples kept.
A container *of a task* is one of its definition's containers (RunTask), else one reported so far;
a container *ran* once any report gave it RUNNING or STOPPED. Flags are judged after the call's
own changes are applied, so a call that stops a task and its containers together is right.

``stopped_while_running``
    A call reports the task STOPPED while some container of the task was not last reported
    STOPPED (last reported RUNNING or any other status, or never reported).
``updates_after_stopped``
    A call for a task already reported STOPPED by an earlier call whose body is not a repeat of a
    body accepted since then, byte for byte once keys are sorted (a retried STOPPED report is
    fine; a later report that changes a container, or anything else, is not).
``running_incomplete``
    A call reports the task RUNNING while some container of the task never ran.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from devkit.ecs.tasks import Container, Task

__all__ = ["EXAMPLE_LIMIT", "FLAGS", "REGRESSION_LIMIT", "STATUS_RANK", "Findings", "Tally", "apply_report"]

EXAMPLE_LIMIT = 20
REGRESSION_LIMIT = 1000
FLAGS = ("stopped_while_running", "updates_after_stopped", "running_incomplete")
STATUS_RANK: dict[str, float] = {
    "PROVISIONING": 0, "PENDING": 0, "ACTIVATING": 0, "MANIFEST_PULLED": 0,
    "RUNNING": 1, "DEACTIVATING": 1.5, "STOPPING": 1.5, "DEPROVISIONING": 1.5, "STOPPED": 2,
}  # fmt: skip
_TIMES = ("pullStartedAt", "pullStoppedAt", "executionStoppedAt")


@dataclass
class Tally:
    """A count and its first ``EXAMPLE_LIMIT`` examples."""

    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, example: dict[str, Any]) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLE_LIMIT:
            self.examples.append(example)

    def snapshot(self) -> dict[str, Any]:
        """``{"count": int, "examples": [dict]}``."""
        return {"count": self.count, "examples": list(self.examples)}


@dataclass
class Findings:
    """What the reports so far reveal: the last 1000 regressions and the flags' tallies."""

    regressions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REGRESSION_LIMIT))
    flags: dict[str, Tally] = field(default_factory=lambda: {name: Tally() for name in FLAGS})

    def regression(self, task: Task, container: str | None, old: str | None, new: str) -> None:
        old_rank = STATUS_RANK.get(old) if old is not None else None
        new_rank = STATUS_RANK.get(new)
        if old_rank is not None and new_rank is not None and new_rank < old_rank:
            self.regressions.append(
                {"cluster": task.cluster, "task": task.task, "container": container,
                 "from": old, "to": new, "call": task.calls}
            )  # fmt: skip

    def flag(self, name: str, task: Task, **detail: Any) -> None:
        self.flags[name].add({"cluster": task.cluster, "task": task.task, "call": task.calls, **detail})


def apply_report(task: Task, body: dict[str, Any], now: datetime, findings: Findings) -> None:
    """Apply one validated ``SubmitTaskStateChange`` body (JSON values) to ``task``, noting its
    regressions and flags in ``findings``."""
    status = body.get("status")
    fingerprint = _fingerprint(body) if task.stopped or status == "STOPPED" else None
    task.calls += 1
    task.version += 1
    if task.stopped and fingerprint not in task.since_stopped:
        findings.flag("updates_after_stopped", task, status=status)
    if status is not None:
        findings.regression(task, None, task.status, status)
        task.status = status
        task.history.append(status)
    _apply_task_members(task, body, now)
    for change in body.get("containers") or ():
        if change.get("containerName") is not None:
            _apply_container(task, change, findings)
    for agent in body.get("managedAgents") or ():
        _apply_managed_agent(task, agent, now)
    for attachment in body.get("attachments") or ():
        task.attachments[attachment["attachmentArn"]] = attachment["status"]
    _check_flags(task, status, findings)
    if fingerprint is not None:  # the task is STOPPED now: later repeats of this body are fine
        task.stopped = True
        task.since_stopped.add(fingerprint)


def _fingerprint(body: dict[str, Any]) -> bytes:
    return hashlib.blake2b(msgspec.json.encode(body, order="sorted"), digest_size=16).digest()


def _apply_task_members(task: Task, body: dict[str, Any], now: datetime) -> None:
    status = body.get("status")
    if status == "RUNNING":
        task.times.setdefault("startedAt", now)
    elif status == "STOPPED":
        task.times.setdefault("stoppedAt", now)
        task.desired_status = "STOPPED"
    reason = body.get("reason")
    if reason is not None and (status == "STOPPED" or task.stopped):
        task.stopped_reason = reason
    for key in _TIMES:
        value = body.get(key)
        if value is not None:
            task.times[key] = datetime.fromtimestamp(value, tz=UTC)


def _apply_container(task: Task, change: dict[str, Any], findings: Findings) -> None:
    name = change["containerName"]
    container = task.containers.setdefault(name, Container(name))
    status = change.get("status")
    if status is not None:
        findings.regression(task, name, container.status, status)
        container.status = status
        container.ran = container.ran or status in ("RUNNING", "STOPPED")
    if "networkBindings" in change:
        container.network_bindings = list(change["networkBindings"])
    members = {
        "exitCode": "exit_code", "reason": "reason", "runtimeId": "runtime_id",
        "imageDigest": "image_digest",
    }  # fmt: skip
    for member, attribute in members.items():
        if change.get(member) is not None:
            setattr(container, attribute, change[member])


def _apply_managed_agent(task: Task, agent: dict[str, Any], now: datetime) -> None:
    record = task.managed_agents.setdefault(agent["containerName"], {}).setdefault(
        agent["managedAgentName"], {}
    )
    record["lastStatus"] = agent["status"]
    if agent["status"] == "RUNNING":
        record.setdefault("lastStartedAt", now)
    if agent.get("reason") is not None:
        record["reason"] = agent["reason"]


def _check_flags(task: Task, status: str | None, findings: Findings) -> None:
    if status == "STOPPED":
        unstopped = sorted(n for n, c in task.containers.items() if c.status != "STOPPED")
        if unstopped:
            findings.flag(
                "stopped_while_running",
                task,
                containers={n: task.containers[n].status for n in unstopped},
            )
    elif status == "RUNNING":
        never_ran = sorted(n for n, c in task.containers.items() if not c.ran)
        if never_ran:
            findings.flag("running_incomplete", task, containers=never_ran)
