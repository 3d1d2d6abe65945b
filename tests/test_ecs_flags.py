"""The local ECS endpoint's flags -- stopped_while_running, updates_after_stopped and
running_incomplete -- each 0 after a right sequence of reports and counted after a wrong one,
driven by the real aiobotocore client over a socket."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio

from devkit.ecs_endpoint import FLAGS, LocalEcsEndpoint
from tests.ecs_support import http_state, raw_post, register, signed

UNRUN = "arn:aws:ecs:us-west-2:000000000000:task/demo/" + "b" * 32
ALL_STOPPED = [
    {"containerName": name, "status": "STOPPED", "exitCode": 0} for name in ("init", "app", "sidecar")
]


@pytest_asyncio.fixture(loop_scope="function")
async def task(ecs: Any) -> str:
    """A task RunTask made from the definition init -> sidecar (HEALTHY) -> app."""
    await register(ecs)
    answer = await ecs.run_task(cluster="demo", taskDefinition="web")
    arn: str = answer["tasks"][0]["taskArn"]
    return arn


def c(name: str, status: str, **more: Any) -> dict[str, Any]:
    return {"containerName": name, "status": status, **more}


async def report(
    ecs: Any,
    task: str,
    status: str | None = None,
    containers: list[dict[str, Any]] | None = None,
    **more: Any,
) -> None:
    params: dict[str, Any] = {"cluster": "demo", "task": task, **more}
    if status is not None:
        params["status"] = status
    if containers is not None:
        params["containers"] = containers
    answer = await ecs.submit_task_state_change(**params)
    assert answer["acknowledgment"] == "ACK"  # flagged or not, ECS acknowledges


def counts(ep: LocalEcsEndpoint) -> dict[str, int]:
    return {name: flag["count"] for name, flag in ep.state()["flags"].items()}


NONE = dict.fromkeys(FLAGS, 0)


async def test_a_right_lifecycle_raises_no_flag(ep: LocalEcsEndpoint, ecs: Any, task: str) -> None:
    await report(ecs, task, "PENDING")
    await report(ecs, task, containers=[c("init", "RUNNING")])
    await report(ecs, task, containers=[c("init", "STOPPED", exitCode=0), c("sidecar", "RUNNING")])
    await report(ecs, task, "RUNNING", [c("app", "RUNNING")])  # init ran (and stopped), as SUCCESS wants
    await report(ecs, task, "STOPPED", ALL_STOPPED, reason="Essential container in task exited")
    await report(ecs, task, "STOPPED", ALL_STOPPED, reason="Essential container in task exited")  # a retry
    # A task never run, judged by its containers reported so far.
    await report(ecs, UNRUN, "RUNNING", [c("web", "RUNNING")])
    await report(ecs, UNRUN, "STOPPED", [c("web", "STOPPED", exitCode=0)])
    state = await http_state(ep)
    assert state == ep.state()
    assert {name: flag["count"] for name, flag in state["flags"].items()} == NONE
    assert all(flag["examples"] == [] for flag in state["flags"].values())
    assert state["regressions"] == []


async def test_a_task_never_run_stopped_without_containers_is_right(ep: LocalEcsEndpoint, ecs: Any) -> None:
    await report(ecs, UNRUN, "STOPPED", reason="CannotPullContainerError")
    assert counts(ep) == NONE


@pytest.mark.parametrize(
    ("before", "stopping", "left"),
    [
        (  # a container of the definition last reported RUNNING
            [c("init", "STOPPED"), c("sidecar", "RUNNING"), c("app", "RUNNING")],
            [c("app", "STOPPED", exitCode=1), c("init", "STOPPED")],
            {"sidecar": "RUNNING"},
        ),
        (  # a container of the definition never reported
            [],
            [c("app", "STOPPED", exitCode=1), c("init", "STOPPED")],
            {"sidecar": None},
        ),
        (  # a container last reported PENDING
            [c("sidecar", "PENDING")],
            [c("app", "STOPPED"), c("init", "STOPPED")],
            {"sidecar": "PENDING"},
        ),
    ],
)
async def test_stopped_while_running_counts_a_stop_that_leaves_a_container_behind(
    ep: LocalEcsEndpoint,
    ecs: Any,
    task: str,
    before: list[dict[str, Any]],
    stopping: list[dict[str, Any]],
    left: dict[str, str | None],
) -> None:
    if before:
        await report(ecs, task, containers=before)
    await report(ecs, task, "STOPPED", stopping)
    assert counts(ep) == {**NONE, "stopped_while_running": 1}
    (example,) = ep.state()["flags"]["stopped_while_running"]["examples"]
    assert example == {"cluster": "demo", "task": task, "call": 2 if before else 1, "containers": left}


async def test_stopped_while_running_judges_a_task_never_run_by_its_reported_containers(
    ep: LocalEcsEndpoint, ecs: Any
) -> None:
    await report(ecs, UNRUN, "RUNNING", [c("web", "RUNNING"), c("db", "RUNNING")])
    await report(ecs, UNRUN, "STOPPED", [c("web", "STOPPED")])
    assert counts(ep) == {**NONE, "stopped_while_running": 1}
    assert ep.state()["flags"]["stopped_while_running"]["examples"][0]["containers"] == {"db": "RUNNING"}


async def test_updates_after_stopped_counts_reports_that_are_not_repeats(
    ep: LocalEcsEndpoint, ecs: Any, task: str
) -> None:
    await report(ecs, task, "STOPPED", ALL_STOPPED)
    await report(ecs, task, "STOPPED", ALL_STOPPED)  # a retry: fine
    changed = [c("init", "STOPPED", exitCode=0), c("app", "STOPPED", exitCode=137), c("sidecar", "STOPPED")]
    await report(ecs, task, "STOPPED", changed)
    assert counts(ep) == {**NONE, "updates_after_stopped": 1}
    await report(ecs, task, "STOPPED", changed)  # a retry of that update: not counted again
    await report(ecs, task, "STOPPED", ALL_STOPPED)  # a repeat of a body accepted since the stop
    assert counts(ep)["updates_after_stopped"] == 1
    await report(ecs, task, reason="late")  # any other change counts, task-level too
    await report(ecs, task, containers=[c("app", "RUNNING")])
    assert counts(ep)["updates_after_stopped"] == 3
    example = ep.state()["flags"]["updates_after_stopped"]["examples"][0]
    assert example == {"cluster": "demo", "task": task, "call": 3, "status": "STOPPED"}


async def test_a_repeat_is_byte_identical_once_keys_are_sorted(ep: LocalEcsEndpoint) -> None:
    first = {"cluster": "demo", "task": UNRUN, "status": "STOPPED", "containers": [c("web", "STOPPED")]}
    reordered = {"containers": [{"status": "STOPPED", "containerName": "web"}], "status": "STOPPED",
                 "task": UNRUN, "cluster": "demo"}  # fmt: skip
    for body in (first, reordered):
        status, _, _ = await raw_post(ep, body, signed())
        assert status == 200
    assert counts(ep) == NONE
    await raw_post(ep, {**first, "task": UNRUN.rsplit("/", 1)[1]}, signed())  # the same task by id
    assert counts(ep)["updates_after_stopped"] == 1


async def test_running_incomplete_counts_a_running_task_with_a_container_that_never_ran(
    ep: LocalEcsEndpoint, ecs: Any, task: str
) -> None:
    await report(ecs, task, containers=[c("sidecar", "PENDING")])  # PENDING is not running
    await report(ecs, task, "RUNNING", [c("app", "RUNNING")])
    assert counts(ep) == {**NONE, "running_incomplete": 1}
    (example,) = ep.state()["flags"]["running_incomplete"]["examples"]
    assert example == {"cluster": "demo", "task": task, "call": 2, "containers": ["init", "sidecar"]}
    await report(ecs, task, "RUNNING", [c("init", "STOPPED", exitCode=0)])
    assert counts(ep)["running_incomplete"] == 2  # sidecar still never ran
    await report(ecs, task, "RUNNING", [c("sidecar", "RUNNING")])
    assert counts(ep)["running_incomplete"] == 2


async def test_running_incomplete_judges_a_task_never_run_by_its_reported_containers(
    ep: LocalEcsEndpoint, ecs: Any
) -> None:
    await report(ecs, UNRUN, "RUNNING", [c("web", "RUNNING"), c("db", "PENDING")])
    assert counts(ep) == {**NONE, "running_incomplete": 1}
    await report(ecs, UNRUN, "RUNNING", [c("db", "RUNNING")])
    assert counts(ep)["running_incomplete"] == 1


async def test_examples_are_bounded(ep: LocalEcsEndpoint, ecs: Any) -> None:
    for i in range(25):
        await report(ecs, f"{i:032x}", "STOPPED", [c("web", "RUNNING")])
    flag = ep.state()["flags"]["stopped_while_running"]
    assert flag["count"] == 25
    assert [e["task"] for e in flag["examples"]] == [f"{i:032x}" for i in range(20)]  # the first 20
