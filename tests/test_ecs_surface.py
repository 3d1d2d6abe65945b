"""The local ECS endpoint's surface: the SigV4 credential scope, per-operation counters, the admin
routes, the package's exports and ``serve``; through real clients over a socket."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError

import devkit.ecs
import devkit.ecs_endpoint
from devkit.ecs_endpoint import Faults, LocalEcsEndpoint, serve
from tests.ecs_support import ecs_client, http_state, raw_post, running_endpoint, signed

TASK = "arn:aws:ecs:us-east-1:123456789012:task/demo/0123456789abcdef"
SIGNED = signed()


async def submit(ecs: Any, **kwargs: Any) -> dict[str, Any]:
    response: dict[str, Any] = await ecs.submit_task_state_change(cluster="demo", task=TASK, **kwargs)
    return response


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20261130/ecs/aws4_request, Signature=00",
    ],
)
async def test_authorization_without_a_credential_scope_is_403(
    ep: LocalEcsEndpoint, authorization: str
) -> None:
    headers = {**SIGNED, "Authorization": authorization}
    status, head, payload = await raw_post(ep, {"cluster": "demo", "task": TASK}, headers)
    assert status == 403
    assert payload["__type"] == head["x-amzn-ErrorType"] == "IncompleteSignatureException"
    assert ep.state()["tasks"] == {}


async def test_region_comes_from_the_credential_scope_and_account_from_the_endpoint() -> None:
    async with running_endpoint(account="123456789012") as endpoint:
        body = {"cluster": "blue", "tasks": ["f" * 32]}
        status, _, payload = await raw_post(endpoint, body, signed("DescribeTasks", region="ap-south-1"))
        assert status == 200
        assert payload["failures"] == [
            {"arn": f"arn:aws:ecs:ap-south-1:123456789012:task/blue/{'f' * 32}", "reason": "MISSING"}
        ]
        async with ecs_client(endpoint.url, region="eu-central-1") as client:
            answer = await client.describe_tasks(cluster="blue", tasks=["abc"])
        assert answer["failures"][0]["arn"] == "arn:aws:ecs:eu-central-1:123456789012:task/blue/abc"


async def test_calls_are_counted_per_operation(ep: LocalEcsEndpoint, ecs: Any) -> None:
    await submit(ecs, status="RUNNING")
    await ecs.describe_tasks(cluster="demo", tasks=[TASK])
    with pytest.raises(ClientError):
        await ecs.describe_task_definition(taskDefinition="nope")
    headers = {**SIGNED, "X-Amz-Target": "AmazonEC2ContainerServiceV20141113.ListTasks"}
    await raw_post(ep, {}, headers)
    state = await http_state(ep)
    ops = state["operations"]
    assert ops["SubmitTaskStateChange"] == {"calls": 1, "accepted": 1, "dropped": 0, "errors": {}}
    assert ops["DescribeTasks"] == {"calls": 1, "accepted": 1, "dropped": 0, "errors": {}}
    assert ops["DescribeTaskDefinition"]["errors"] == {"ClientException": 1}
    assert ops["RunTask"]["calls"] == ops["RegisterTaskDefinition"]["calls"] == 0
    # The top-level counters keep meaning the submit path: submissions and unknown operations.
    assert (state["calls"], state["accepted"]) == (2, 1)
    assert state["errors"] == {"UnknownOperationException": 1}


async def test_faults_over_http_reject_rates_out_of_range(ep: LocalEcsEndpoint) -> None:
    async with aiohttp.ClientSession() as s:
        for bad in ({"throttle_rate": 1.5}, {"describe_deny_rate": -0.1}, {"describe_latency_ms": -1}):
            async with s.post(f"{ep.url}/_faults", json=bad) as r:
                assert r.status == 400
        async with s.post(f"{ep.url}/_faults", json={"describe_deny_rate": 1.0}) as r:
            assert r.status == 200
    assert ep.state()["faults"]["describe_deny_rate"] == 1.0
    assert ep.state()["faults"]["throttle_rate"] == 0.0


async def test_reset_clears_definitions_tasks_and_flags(ep: LocalEcsEndpoint, ecs: Any) -> None:
    await ecs.register_task_definition(family="web", containerDefinitions=[{"name": "a", "image": "x"}])
    await ecs.run_task(cluster="demo", taskDefinition="web")
    await submit(ecs, status="STOPPED", containers=[{"containerName": "web", "status": "RUNNING"}])
    state = ep.state()
    assert len(state["tasks"]) == 2
    assert state["flags"]["stopped_while_running"]["count"] == 1
    ep.reset()
    state = ep.state()
    assert state["tasks"] == state["task_definitions"] == {}
    assert all(f == {"count": 0, "examples": []} for f in state["flags"].values())
    assert all(c["calls"] == 0 for c in state["operations"].values())
    with pytest.raises(ClientError):
        await ecs.describe_task_definition(taskDefinition="web")


def test_the_old_module_re_exports_the_package() -> None:
    assert {"TARGET", "Faults", "LocalEcsEndpoint", "serve"} <= set(devkit.ecs_endpoint.__all__)
    for name in devkit.ecs_endpoint.__all__:
        assert getattr(devkit.ecs_endpoint, name) is getattr(devkit.ecs, name)
    assert set(devkit.ecs.__all__) == set(devkit.ecs_endpoint.__all__)


async def test_serve_listens_until_cancelled(unused_tcp_port: int) -> None:
    server = asyncio.create_task(serve("127.0.0.1", unused_tcp_port, Faults(), seed=1))
    url = f"http://127.0.0.1:{unused_tcp_port}/_state"
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(100):
                try:
                    async with s.get(url) as r:
                        assert r.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("serve never listened")
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server


def test_every_module_of_the_package_declares_a_true_all() -> None:
    names = [devkit.ecs.__name__]
    names += [info.name for info in pkgutil.iter_modules(devkit.ecs.__path__, prefix="devkit.ecs.")]
    assert len(names) >= 8
    for name in names:
        module = importlib.import_module(name)
        exported = module.__dict__.get("__all__")
        assert exported, f"{name} has no __all__"
        assert [n for n in exported if not hasattr(module, n)] == [], name
