"""Routing and quotas at the local ECS endpoint, over sockets, with two Regions and two accounts:
the worker's submission path (``Submitter`` on ``EcsClients``) sends each task to the account and
Region of its ARN, assumes the configured role (STS ``AssumeRole`` at the endpoint, refreshable
credentials) for the other account, and rejects a task of an account without a route with no
call. The endpoint keeps state and quota per account and Region and, with ``strict_scope``,
refuses a report made in another account or Region than its task's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from devkit.ecs_endpoint import DEFAULT_ACCOUNT, Faults, LocalEcsEndpoint
from schemas.ecs import ContainerStateChange, SubmitTaskStateChangeRequest
from worker.config import Settings
from worker.ecs_clients import EcsClients, routes_of
from worker.metrics import Metrics
from worker.ratelimit import RateBudgets
from worker.routing import NO_ROUTE
from worker.submit import Submitter
from worker.work import Submission, SubmitResult

HOME = DEFAULT_ACCOUNT
OTHER = "222233334444"
STRANGER = "333344445555"
ROLE = f"arn:aws:iam::{OTHER}:role/ecs-state-worker"
REGIONS = ("us-east-1", "eu-west-1")


def task_arn(account: str, region: str, n: int = 1) -> str:
    return f"arn:aws:ecs:{region}:{account}:task/prod/{n:032x}"


def submission(task: str, cluster: str = "prod") -> Submission:
    request = SubmitTaskStateChangeRequest(
        cluster=cluster,
        task=task,
        status="RUNNING",
        containers=(ContainerStateChange(containerName="app", status="RUNNING"),),
    )
    return Submission((cluster, task), request, task, [], 0, False)


@pytest_asyncio.fixture(loop_scope="function")
async def strict() -> AsyncIterator[LocalEcsEndpoint]:
    """An endpoint that refuses a report of another scope's task; its STS issues credentials
    valid for a minute, inside botocore's refresh window, so that each call assumes the role anew."""
    server = LocalEcsEndpoint(seed=3, strict_scope=True, sts_expiry_s=60.0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def submit_all(url: str, tasks: list[str], **routing: Any) -> tuple[dict[str, SubmitResult], list[Any]]:
    settings = Settings(ecs_endpoint_url=url, sts_endpoint_url=url, max_attempts=1, **routing)
    routes = routes_of(settings)
    budgets = RateBudgets(rate_cap=1000.0, burst_cap=1000, quota_per_s=None, quota_burst=1)
    async with EcsClients(settings, routes) as clients:
        submitter = Submitter(clients, settings, metrics=Metrics(), budgets=budgets)
        results = {task: await submitter.submit(submission(task)) for task in tasks}
        return results, clients.built


def scope_tasks(endpoint: LocalEcsEndpoint) -> dict[str, dict[str, str]]:
    return {scope: view["tasks"] for scope, view in endpoint.state()["scopes"].items()}


async def test_each_task_reaches_its_own_account_and_region(strict: LocalEcsEndpoint) -> None:
    tasks = [task_arn(account, region) for account in (HOME, OTHER) for region in REGIONS]
    stranger = task_arn(STRANGER, "eu-west-1")
    results, built = await submit_all(
        strict.url, [*tasks, stranger], home_account=HOME, account_roles={OTHER: ROLE}
    )
    assert {t: results[t].result for t in tasks} == dict.fromkeys(tasks, "acknowledged")
    assert (results[stranger].result, results[stranger].error_code, results[stranger].attempts) == (
        "rejected",
        NO_ROUTE,
        0,
    )
    assert f"no route to account {STRANGER}" in (results[stranger].error_message or "")
    assert scope_tasks(strict) == {
        f"{account}/{region}": {task_arn(account, region): "RUNNING"}
        for account in (HOME, OTHER)
        for region in REGIONS
    }
    state = strict.state()
    assert (state["calls"], state["accepted"], state["scope_mismatches"]) == (4, 4, 0)
    # One client per Region and credentials; the role assumed anew for each of its two calls (its
    # credentials expire within botocore's refresh window), twice: before the call takes its
    # concurrency slot, and when botocore signs it (credentials this short are due again at
    # once; STS issues none shorter than 15 minutes, and the worker's last an hour), never for
    # the home account.
    assert sorted(built, key=str) == sorted(
        [(region, role) for region in REGIONS for role in (None, ROLE)], key=str
    )
    assert strict.identities.assumed == {ROLE: 4}


async def test_without_a_route_a_call_would_reach_the_wrong_account(strict: LocalEcsEndpoint) -> None:
    """The control: with no roles and no home account the default credentials call every account,
    and the endpoint refuses the other account's task as ECS does."""
    other = task_arn(OTHER, "eu-west-1")
    results, _ = await submit_all(strict.url, [other])
    assert (results[other].result, results[other].error_code) == ("rejected", "AccessDeniedException")
    assert strict.state()["scope_mismatches"] == 1


async def test_the_quota_is_per_account_and_region(strict: LocalEcsEndpoint) -> None:
    strict.set_faults(Faults(quota_burst=2, quota_refill_per_s=0.01))
    crowded = [task_arn(HOME, "us-east-1", n) for n in range(3)]
    others = [task_arn(HOME, "eu-west-1", n) for n in range(2)] + [
        task_arn(OTHER, "us-east-1", n) for n in range(2)
    ]
    results, _ = await submit_all(
        strict.url, [*crowded, *others], home_account=HOME, account_roles={OTHER: ROLE}
    )
    assert [results[t].result for t in crowded] == ["acknowledged", "acknowledged", "failed"]
    assert results[crowded[2]].error_code == "ThrottlingException"
    assert [results[t].result for t in others] == ["acknowledged"] * 4
    errors = {scope: view["errors"] for scope, view in strict.state()["scopes"].items()}
    assert errors == {
        f"{HOME}/us-east-1": {"ThrottlingException": 1},
        f"{HOME}/eu-west-1": {},
        f"{OTHER}/us-east-1": {},
    }


async def test_tasks_no_credentials_of_this_process_may_call_are_rejected_without_a_call(
    strict: LocalEcsEndpoint,
) -> None:
    """A China or GovCloud task (another partition than the home Region's), a task whose cluster
    ARN names another Region or account, and a task named by id in a cluster ARN that cannot be
    read: each rejected (``NO_ROUTE``) with its reason, and the endpoint sees no call at all."""
    cases = {
        (
            f"arn:aws-cn:ecs:cn-north-1:{HOME}:cluster/prod",
            task_arn(HOME, "cn-north-1").replace(":aws:", ":aws-cn:"),
        ): "partition aws-cn",
        ("prod", task_arn(OTHER, "us-gov-west-1").replace(":aws:", ":aws-us-gov:")): "partition aws-us-gov",
        (f"arn:aws:ecs:us-west-2:{HOME}:cluster/prod", task_arn(HOME, "eu-west-1")): "disagree",
        (f"arn:aws:ecs:eu-west-1:{OTHER}:cluster/prod", task_arn(HOME, "eu-west-1", 2)): "disagree",
        (f"arn:aws:ecs::{OTHER}:cluster/prod", f"{3:032x}"): "cannot be read",
    }
    settings = Settings(
        ecs_endpoint_url=strict.url,
        sts_endpoint_url=strict.url,
        max_attempts=1,
        region="us-east-1",
        home_account=HOME,
        account_roles={OTHER: ROLE},
    )
    budgets = RateBudgets(rate_cap=1000.0, burst_cap=1000, quota_per_s=None, quota_burst=1)
    async with EcsClients(settings, routes_of(settings)) as clients:
        submitter = Submitter(clients, settings, metrics=Metrics(), budgets=budgets)
        for (cluster, task), reason in cases.items():
            result = await submitter.submit(submission(task, cluster))
            assert (result.result, result.error_code, result.attempts) == ("rejected", NO_ROUTE, 0), task
            assert reason in (result.error_message or ""), (task, result.error_message)
        assert clients.built == []
    assert (strict.state()["calls"], strict.identities.assumed) == (0, {})
