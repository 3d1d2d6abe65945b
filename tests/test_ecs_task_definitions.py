"""The local ECS endpoint's task definitions (RegisterTaskDefinition, DescribeTaskDefinition),
driven by the real aiobotocore client over a socket."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from devkit.ecs_endpoint import LocalEcsEndpoint
from tests.ecs_support import (
    ACCOUNT,
    CONTAINERS,
    REGION,
    client_error,
    raw_post,
    register,
    signed,
)


async def test_revisions_are_numbered_per_family(ep: LocalEcsEndpoint, ecs: Any) -> None:
    before = datetime.now(UTC)
    first = (await ecs.register_task_definition(family="web", containerDefinitions=CONTAINERS))[
        "taskDefinition"
    ]
    assert first["taskDefinitionArn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/web:1"
    assert (first["family"], first["revision"], first["status"]) == ("web", 1, "ACTIVE")
    assert before <= first["registeredAt"] <= datetime.now(UTC)
    assert await register(ecs, "web") == f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/web:2"
    assert await register(ecs, "api") == f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/api:1"
    assert list(ep.state()["task_definitions"]) == [
        f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{ref}" for ref in ("web:1", "web:2", "api:1")
    ]


async def test_container_definitions_come_back_as_registered_with_ecs_defaults(ecs: Any) -> None:
    answer = await ecs.register_task_definition(
        family="web", containerDefinitions=CONTAINERS, tags=[{"key": "team", "value": "core"}]
    )
    assert answer["tags"] == [{"key": "team", "value": "core"}]
    init, app, sidecar = answer["taskDefinition"]["containerDefinitions"]
    assert (init["name"], init["image"], init["essential"]) == ("init", "busybox:1.36", False)
    assert app["essential"] is True  # ECS's default
    assert app["dependsOn"] == CONTAINERS[1]["dependsOn"]
    assert app["restartPolicy"] == {"enabled": True, "ignoredExitCodes": [0], "restartAttemptPeriod": 300}
    assert sidecar["healthCheck"] == {"command": ["CMD-SHELL", "true"], "interval": 10, "retries": 3}
    assert (app["cpu"], app["portMappings"], app["environment"]) == (0, [], [])


async def test_describe_task_definition_by_arn_family_revision_and_family(ecs: Any) -> None:
    arn1 = await register(ecs, "web")
    arn2 = await register(ecs, "web", [{"name": "solo", "image": "alpine"}])
    for reference, arn in ((arn1, arn1), ("web:1", arn1), ("web:2", arn2), ("web", arn2), (arn2, arn2)):
        answer = await ecs.describe_task_definition(taskDefinition=reference)
        assert answer["taskDefinition"]["taskDefinitionArn"] == arn, reference
        assert "tags" not in answer
    tagged = await ecs.describe_task_definition(taskDefinition="web", include=["TAGS"])
    assert tagged["tags"] == []
    assert [c["name"] for c in tagged["taskDefinition"]["containerDefinitions"]] == ["solo"]


@pytest.mark.parametrize(
    "reference",
    ["nope", "web:3", "web:0", "web:x", f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/nope:1", "arn:x"],
)
async def test_unknown_task_definition_is_a_client_exception(ecs: Any, reference: str) -> None:
    await register(ecs, "web")
    await register(ecs, "web")
    code, message, status = await client_error(ecs.describe_task_definition(taskDefinition=reference))
    assert (code, message, status) == ("ClientException", "Unable to describe task definition.", 400)


def _container(name: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "image": "alpine", **more}


@pytest.mark.parametrize(
    ("family", "containers", "needle"),
    [
        ("web", [], "cannot be empty"),
        ("web", [_container(f"c{i}") for i in range(11)], "at most 10"),
        ("web", [{"image": "alpine"}], "Container.name"),
        ("web", [{"name": "a"}], "Container.image"),
        ("web", [_container("a b")], "Invalid container name"),
        ("web", [_container("a"), _container("a")], "unique"),
        ("web", [_container("a", essential=False)], "essential"),
        ("bad family!", [_container("a")], "Family"),
        ("web", [_container("a", dependsOn=[{"containerName": "b", "condition": "START"}])], "'b'"),
        ("web", [_container("a", dependsOn=[{"containerName": "a", "condition": "START"}])], "itself"),
        (
            "web",
            [_container("a"), _container("b", dependsOn=[{"containerName": "a", "condition": "COMPLETE"}])],
            "essential container 'a'",
        ),
        (
            "web",
            [_container("a"), _container("b", dependsOn=[{"containerName": "a", "condition": "HEALTHY"}])],
            "healthCheck",
        ),
        ("web", [_container("a", restartPolicy={"enabled": True, "restartAttemptPeriod": 30})], "60-1800"),
        ("web", [_container("a", restartPolicy={"enabled": True, "ignoredExitCodes": [1] * 51})], "50"),
        ("web", [_container("a", healthCheck={"command": ["CMD", "true"], "retries": 11})], "retries"),
    ],
)
async def test_registration_enforces_the_ecs_rules(
    ep: LocalEcsEndpoint, ecs: Any, family: str, containers: list[dict[str, Any]], needle: str
) -> None:
    call = ecs.register_task_definition(family=family, containerDefinitions=containers)
    code, message, status = await client_error(call)
    assert (code, status) == ("ClientException", 400)
    assert needle in message
    assert ep.state()["task_definitions"] == {}


async def test_registration_is_validated_against_the_model(ep: LocalEcsEndpoint, ecs: Any) -> None:
    bad_condition = [_container("a"), _container("b", dependsOn=[{"containerName": "a", "condition": "UP"}])]
    code, message, _ = await client_error(
        ecs.register_task_definition(family="web", containerDefinitions=bad_condition)
    )
    assert code == "InvalidParameterException"
    assert "containerDefinitions[1].dependsOn[0].condition" in message
    body = {"family": "web", "containerDefinitions": [_container("a", bogus=1)]}
    status, _, payload = await raw_post(ep, body, signed("RegisterTaskDefinition"))
    assert (status, payload["__type"]) == (400, "InvalidParameterException")
    status, _, payload = await raw_post(ep, {"containerDefinitions": []}, signed("RegisterTaskDefinition"))
    assert (status, payload["__type"]) == (400, "InvalidParameterException")
    assert "family" in payload["message"]
