"""The local ECS endpoint's tasks (RunTask, DescribeTasks, and SubmitTaskStateChange on a task that
RunTask made), driven by the real aiobotocore client over a socket."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from devkit.ecs_endpoint import MAX_DESCRIBED_TASKS, MAX_RUN_COUNT, LocalEcsEndpoint
from tests.ecs_support import (
    ACCOUNT,
    CONTAINERS,
    REGION,
    answer_problems,
    client_error,
    http_state,
    raw_post,
    register,
    signed,
)

TASK_ARN = re.compile(rf"arn:aws:ecs:{REGION}:{ACCOUNT}:task/demo/[0-9a-f]{{32}}")


# -- RunTask ---------------------------------------------------------------------------------------


async def test_run_task_creates_pending_tasks_of_the_definition(ep: LocalEcsEndpoint, ecs: Any) -> None:
    definition = await register(ecs)
    answer = await ecs.run_task(cluster="demo", taskDefinition="web", count=3, startedBy="tests")
    assert answer["failures"] == []
    tasks = answer["tasks"]
    assert len({t["taskArn"] for t in tasks}) == 3
    for task in tasks:
        assert TASK_ARN.fullmatch(task["taskArn"]), task["taskArn"]
        assert task["clusterArn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/demo"
        assert (task["lastStatus"], task["desiredStatus"]) == ("PENDING", "RUNNING")
        assert (task["taskDefinitionArn"], task["startedBy"], task["group"]) == (
            definition,
            "tests",
            "family:web",
        )
        assert [(c["name"], c["image"], c["lastStatus"]) for c in task["containers"]] == [
            ("init", "busybox:1.36", "PENDING"),
            ("app", "nginx:1.27", "PENDING"),
            ("sidecar", "envoy:1.31", "PENDING"),
        ]
        prefix = f"arn:aws:ecs:{REGION}:{ACCOUNT}:container/demo/{task['taskArn'].rsplit('/', 1)[1]}/"
        assert all(c["containerArn"].startswith(prefix) for c in task["containers"])
    state = ep.state()["tasks"]
    assert set(state) == {t["taskArn"] for t in tasks}
    assert state[tasks[0]["taskArn"]] == {
        "cluster": "demo",
        "status": "PENDING",
        "containers": {"init": "PENDING", "app": "PENDING", "sidecar": "PENDING"},
        "calls": 0,
        "history": [],
        "desiredStatus": "RUNNING",
        "taskDefinitionArn": definition,
    }


async def test_run_task_defaults_to_the_default_cluster_and_takes_a_cluster_arn(ecs: Any) -> None:
    await register(ecs)
    default = (await ecs.run_task(taskDefinition="web:1"))["tasks"][0]
    assert ":task/default/" in default["taskArn"]
    cluster = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/blue"
    blue = (await ecs.run_task(cluster=cluster, taskDefinition="web"))["tasks"][0]
    assert ":task/blue/" in blue["taskArn"]
    assert blue["clusterArn"] == cluster


@pytest.mark.parametrize("count", [0, MAX_RUN_COUNT + 1, -1])
async def test_run_task_count_is_limited_to_10(ep: LocalEcsEndpoint, ecs: Any, count: int) -> None:
    await register(ecs)
    code, message, _ = await client_error(ecs.run_task(cluster="demo", taskDefinition="web", count=count))
    assert code == "InvalidParameterException"
    assert "count" in message
    assert ep.state()["tasks"] == {}
    answer = await ecs.run_task(cluster="demo", taskDefinition="web", count=MAX_RUN_COUNT)
    assert len(answer["tasks"]) == len(ep.state()["tasks"]) == 10


async def test_run_task_of_an_unknown_definition_fails(ep: LocalEcsEndpoint, ecs: Any) -> None:
    await register(ecs)
    for reference in ("nope", "web:2"):
        code, message, _ = await client_error(ecs.run_task(cluster="demo", taskDefinition=reference))
        assert (code, message) == ("InvalidParameterException", "TaskDefinition not found.")
    assert ep.state()["tasks"] == {}


# -- DescribeTasks -----------------------------------------------------------------------------------


async def run(ecs: Any, count: int = 1, cluster: str = "demo") -> list[str]:
    answer = await ecs.run_task(cluster=cluster, taskDefinition="web", count=count)
    return [t["taskArn"] for t in answer["tasks"]]


async def test_describe_tasks_by_arn_or_id_with_missing_failures(ecs: Any) -> None:
    await register(ecs)
    first, second = await run(ecs, 2)
    unknown_arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/demo/{'0' * 32}"
    answer = await ecs.describe_tasks(
        cluster="demo", tasks=[second, first.rsplit("/", 1)[1], unknown_arn, "nope", first]
    )
    assert [t["taskArn"] for t in answer["tasks"]] == [second, first]  # each task once
    assert answer["failures"] == [
        {"arn": unknown_arn, "reason": "MISSING"},
        {"arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/demo/nope", "reason": "MISSING"},
    ]
    by_cluster_arn = await ecs.describe_tasks(
        cluster=f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/demo", tasks=[first]
    )
    assert [t["taskArn"] for t in by_cluster_arn["tasks"]] == [first]


async def test_a_task_of_another_cluster_is_missing(ecs: Any) -> None:
    await register(ecs)
    (blue,) = await run(ecs, cluster="blue")
    answer = await ecs.describe_tasks(cluster="demo", tasks=[blue, blue.rsplit("/", 1)[1]])
    assert answer["tasks"] == []
    assert [f["reason"] for f in answer["failures"]] == ["MISSING", "MISSING"]
    default = await ecs.describe_tasks(tasks=[blue])  # no cluster: the default cluster
    assert default["tasks"] == []


async def test_describe_tasks_takes_up_to_100_tasks(ep: LocalEcsEndpoint, ecs: Any) -> None:
    await register(ecs)
    arns = await run(ecs, 2)
    references = arns + [f"{i:032x}" for i in range(MAX_DESCRIBED_TASKS - 2)]
    answer = await ecs.describe_tasks(cluster="demo", tasks=references)
    assert (len(answer["tasks"]), len(answer["failures"])) == (2, 98)
    for too_many in ([*references, "one-more"], []):
        code, _, status = await client_error(ecs.describe_tasks(cluster="demo", tasks=too_many))
        assert (code, status) == ("InvalidParameterException", 400)
    assert ep.state()["operations"]["DescribeTasks"]["errors"] == {"InvalidParameterException": 2}


BINDING = {"bindIP": "0.0.0.0", "containerPort": 80, "hostPort": 32768, "protocol": "tcp"}


async def run_and_report_running(ecs: Any) -> str:
    """A task of the standard definition, reported RUNNING: init ran and exited, the others run."""
    await register(ecs)
    (arn,) = await run(ecs)
    app = {"containerName": "app", "status": "RUNNING", "runtimeId": "r-app", "imageDigest": "sha256:ab"}
    await ecs.submit_task_state_change(
        cluster="demo",
        task=arn,
        status="RUNNING",
        containers=[
            {"containerName": "init", "status": "STOPPED", "exitCode": 0, "runtimeId": "r-init"},
            {"containerName": "sidecar", "status": "RUNNING", "runtimeId": "r-side"},
            {**app, "networkBindings": [BINDING]},
        ],
        managedAgents=[
            {"containerName": "app", "managedAgentName": "ExecuteCommandAgent", "status": "RUNNING"}
        ],
    )
    return arn


async def test_a_report_updates_a_run_task_in_place(ep: LocalEcsEndpoint, ecs: Any) -> None:
    arn = await run_and_report_running(ecs)
    task = (await ecs.describe_tasks(cluster="demo", tasks=[arn]))["tasks"][0]
    assert (task["lastStatus"], task["desiredStatus"], task["version"]) == ("RUNNING", "RUNNING", 2)
    assert "startedAt" in task
    assert "stoppedReason" not in task
    init, app, sidecar = task["containers"]
    assert (init["lastStatus"], init["exitCode"], init["runtimeId"]) == ("STOPPED", 0, "r-init")
    assert (app["lastStatus"], app["runtimeId"], app["imageDigest"]) == ("RUNNING", "r-app", "sha256:ab")
    assert app["networkBindings"] == [BINDING]
    assert [(a["name"], a["lastStatus"]) for a in app["managedAgents"]] == [
        ("ExecuteCommandAgent", "RUNNING")
    ]
    assert sidecar["lastStatus"] == "RUNNING"
    state = ep.state()
    assert list(state["tasks"]) == [arn]
    assert state["tasks"][arn]["containers"] == {"init": "STOPPED", "app": "RUNNING", "sidecar": "RUNNING"}


async def test_a_stopped_task_shows_what_was_reported(ep: LocalEcsEndpoint, ecs: Any) -> None:
    arn = await run_and_report_running(ecs)
    stopped_at = datetime(2026, 11, 30, 12, 0, 5, tzinfo=UTC)
    await ecs.submit_task_state_change(
        cluster=f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/demo",  # the same task, by cluster ARN and id
        task=arn.rsplit("/", 1)[1],
        status="STOPPED",
        reason="Essential container in task exited",
        executionStoppedAt=stopped_at,
        containers=[
            {"containerName": "init", "status": "STOPPED", "exitCode": 0, "runtimeId": "r-init"},
            {"containerName": "app", "status": "STOPPED", "exitCode": 137, "reason": "OOMKilled"},
            {"containerName": "sidecar", "status": "STOPPED", "exitCode": 0},
        ],
    )
    task = (await ecs.describe_tasks(cluster="demo", tasks=[arn]))["tasks"][0]
    assert (task["lastStatus"], task["desiredStatus"], task["version"]) == ("STOPPED", "STOPPED", 3)
    assert task["stoppedReason"] == "Essential container in task exited"
    assert task["executionStoppedAt"] == stopped_at
    assert task["startedAt"] <= task["stoppedAt"]
    assert [(c["lastStatus"], c.get("exitCode")) for c in task["containers"]] == [
        ("STOPPED", 0), ("STOPPED", 137), ("STOPPED", 0)
    ]  # fmt: skip
    assert task["containers"][1]["reason"] == "OOMKilled"
    state = await http_state(ep)
    assert list(state["tasks"]) == [arn]
    assert (state["tasks"][arn]["calls"], state["tasks"][arn]["history"]) == (2, ["RUNNING", "STOPPED"])
    assert state["tasks"][arn]["desiredStatus"] == "STOPPED"
    assert state["regressions"] == []
    assert all(flag["count"] == 0 for flag in state["flags"].values())


async def test_a_task_never_run_is_described_from_its_reports(ecs: Any) -> None:
    arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/demo/{'a' * 32}"
    await ecs.submit_task_state_change(
        cluster="demo", task=arn, status="RUNNING", containers=[{"containerName": "web", "status": "RUNNING"}]
    )
    task = (await ecs.describe_tasks(cluster="demo", tasks=["a" * 32]))["tasks"][0]
    assert (task["taskArn"], task["lastStatus"]) == (arn, "RUNNING")
    assert "taskDefinitionArn" not in task
    assert [(c["name"], c["lastStatus"]) for c in task["containers"]] == [("web", "RUNNING")]


async def test_every_answer_fits_the_output_shape(ep: LocalEcsEndpoint, ecs: Any) -> None:
    """Raw answers, checked by botocore's strict validator (unknown members, types)."""
    await register(ecs)
    (arn,) = await run(ecs)
    stopped = [{"containerName": n, "status": "STOPPED", "exitCode": 0} for n in ("init", "app", "sidecar")]
    agent = {"containerName": "app", "managedAgentName": "ExecuteCommandAgent", "status": "STOPPED"}
    await ecs.submit_task_state_change(
        cluster="demo",
        task=arn,
        status="STOPPED",
        reason="done",
        pullStartedAt=datetime.now(UTC),
        containers=stopped,
        managedAgents=[{**agent, "reason": "exited"}],
        attachments=[{"attachmentArn": "arn:aws:ecs:x:y:attachment/abc", "status": "DELETED"}],
    )
    tags = [{"key": "k", "value": "v"}]
    overrides = {"containerOverrides": [{"name": "app", "command": ["run"]}]}
    calls: list[tuple[str, dict[str, Any]]] = [
        (
            "RegisterTaskDefinition",
            {"family": "api", "containerDefinitions": CONTAINERS, "cpu": "256", "tags": tags},
        ),
        ("DescribeTaskDefinition", {"taskDefinition": "api", "include": ["TAGS"]}),
        (
            "RunTask",
            {"cluster": "demo", "taskDefinition": "api", "count": 2, "tags": tags, "overrides": overrides},
        ),
        ("DescribeTasks", {"cluster": "demo", "tasks": [arn, "missing"], "include": ["TAGS"]}),
        ("SubmitTaskStateChange", {"cluster": "demo", "task": arn, "status": "STOPPED"}),
    ]
    for operation, body in calls:
        status, _, payload = await raw_post(ep, body, signed(operation))
        assert status == 200, (operation, payload)
        assert answer_problems(operation, payload) is None, operation
    described = (await raw_post(ep, calls[3][1], signed("DescribeTasks")))[2]["tasks"][0]
    assert isinstance(described["pullStartedAt"], float)  # epoch seconds on the wire
    assert described["attachments"] == [{"id": "abc", "status": "DELETED"}]
