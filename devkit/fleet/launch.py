"""The fleet at an ECS endpoint, through aiobotocore as a scheduler would: ``launch`` registers its
task definitions and starts its tasks with RunTask (up to 10 per call, per cluster and
definition), then binds the fleet to the ARNs ECS returned; ``check_final`` asks DescribeTasks
whether ECS ended up knowing what the fleet expects, exit codes included.

A worker reports only tasks ECS knows (it retires a task DescribeTasks answers MISSING for), so a
fleet is launched before its events are produced."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from devkit.fleet.check import described_mismatches
from devkit.fleet.model import Fleet

__all__ = ["RUN_TASK_LIMIT", "check_final", "ecs_client", "launch"]

RUN_TASK_LIMIT = 10
"""Tasks per RunTask call (ECS's limit)."""
_DESCRIBE_LIMIT = 100
_REGION = "us-east-1"


@asynccontextmanager
async def ecs_client(endpoint_url: str, region: str = _REGION) -> AsyncIterator[Any]:
    """An aiobotocore ECS client for ``endpoint_url``; credentials from the environment, else
    placeholders (the local endpoint does not check signatures)."""
    config = AioConfig(retries={"mode": "standard", "total_max_attempts": 5}, max_pool_connections=16)
    async with get_session().create_client(
        "ecs",
        region_name=region,
        endpoint_url=endpoint_url,
        config=config,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "fleet"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "fleet"),
    ) as client:
        yield client


async def launch(fleet: Fleet, endpoint_url: str, *, region: str = _REGION, concurrency: int = 8) -> Fleet:
    """Register ``fleet``'s definitions and run its tasks at ``endpoint_url``; return the fleet
    bound to the task ARNs, cluster names and definition ARNs ECS answered. Raises
    ``RuntimeError`` when RunTask reports failures."""
    if fleet.launched:
        raise ValueError("the fleet is launched already")
    async with ecs_client(endpoint_url, region) as client:
        definitions: dict[str, str] = {}
        for definition in fleet.definitions:
            answer = await client.register_task_definition(**definition.register_params())
            definitions[definition.arn] = answer["taskDefinition"]["taskDefinitionArn"]
        slots = asyncio.Semaphore(concurrency)

        async def run(cluster: str, definition: str, planned: list[str]) -> dict[str, tuple[str, str]]:
            async with slots:
                answer = await client.run_task(
                    cluster=cluster, taskDefinition=definitions[definition], count=len(planned),
                    startedBy="devkit-fleet",
                )  # fmt: skip
            if answer.get("failures") or len(answer["tasks"]) != len(planned):
                raise RuntimeError(f"RunTask failed in {cluster}: {answer.get('failures')}")
            return {
                arn: (_cluster_name(task["clusterArn"]), task["taskArn"])
                for arn, task in zip(planned, answer["tasks"], strict=True)
            }

        started = await asyncio.gather(*(run(*group) for group in _run_groups(fleet)))
    tasks = {planned: bound for batch in started for planned, bound in batch.items()}
    return fleet.bind(tasks, definitions)


async def check_final(fleet: Fleet, endpoint_url: str, *, region: str = _REGION) -> list[str]:
    """What ECS's DescribeTasks shows against ``fleet.expected`` (statuses and exit codes); one
    line per difference. Costs one DescribeTasks call per 100 tasks of a cluster."""
    by_cluster: dict[str, list[str]] = {}
    for arn, want in fleet.expected.items():
        by_cluster.setdefault(want.cluster, []).append(arn)
    described: list[dict[str, Any]] = []
    async with ecs_client(endpoint_url, region) as client:
        for cluster, arns in by_cluster.items():
            for start in range(0, len(arns), _DESCRIBE_LIMIT):
                answer = await client.describe_tasks(
                    cluster=cluster, tasks=arns[start : start + _DESCRIBE_LIMIT]
                )
                described.extend(answer["tasks"])
    return described_mismatches(fleet.expected, described)


def _run_groups(fleet: Fleet) -> list[tuple[str, str, list[str]]]:
    """(cluster, planned definition ARN, up to 10 planned task ARNs): one RunTask call each."""
    groups: dict[tuple[str, str], list[str]] = {}
    for arn, want in fleet.expected.items():
        groups.setdefault((want.cluster, want.definition), []).append(arn)
    return [
        (cluster, definition, arns[start : start + RUN_TASK_LIMIT])
        for (cluster, definition), arns in groups.items()
        for start in range(0, len(arns), RUN_TASK_LIMIT)
    ]


def _cluster_name(cluster: str) -> str:
    return cluster.split(":cluster/", 1)[1] if ":cluster/" in cluster else cluster
