"""Faults of the describe calls (DescribeTasks, DescribeTaskDefinition): denied, throttled,
failing or slow, independently of SubmitTaskStateChange's faults; through the real aiobotocore
client over a socket."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devkit.ecs_endpoint import Faults, LocalEcsEndpoint
from tests.ecs_support import raw_post, register, running_endpoint, signed


async def describe(ecs: Any, operation: str) -> dict[str, Any]:
    if operation == "DescribeTasks":
        answer: dict[str, Any] = await ecs.describe_tasks(cluster="demo", tasks=["abc"])
    else:
        answer = await ecs.describe_task_definition(taskDefinition="web")
    return answer


OPERATIONS = ["DescribeTasks", "DescribeTaskDefinition"]


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(
    ("faults", "code", "status"),
    [
        (Faults(describe_deny_rate=1.0), "AccessDeniedException", 400),
        (Faults(describe_throttle_rate=1.0), "ThrottlingException", 400),
        (Faults(describe_error_rate=1.0), "ServerException", 500),
    ],
)
async def test_describes_can_be_denied_throttled_or_failing(
    ep: LocalEcsEndpoint, ecs: Any, operation: str, faults: Faults, code: str, status: int
) -> None:
    await register(ecs)
    ep.set_faults(faults)
    with pytest.raises(ClientError) as info:
        await describe(ecs, operation)
    error = info.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (code, status)
    assert info.value.operation_name == operation
    # SubmitTaskStateChange, RunTask and RegisterTaskDefinition are untouched.
    answer = await ecs.submit_task_state_change(cluster="demo", task="t", status="RUNNING")
    assert answer["acknowledgment"] == "ACK"
    assert (await ecs.run_task(cluster="demo", taskDefinition="web"))["tasks"]
    await register(ecs)
    state = ep.state()
    assert state["operations"][operation]["errors"] == {code: 1}
    assert (state["calls"], state["accepted"], state["errors"]) == (1, 1, {})


async def test_denial_reads_as_an_iam_denial(ep: LocalEcsEndpoint, ecs: Any) -> None:
    ep.set_faults(Faults(describe_deny_rate=1.0))
    with pytest.raises(ClientError) as info:
        await ecs.describe_tasks(cluster="demo", tasks=["abc"])
    message = info.value.response["Error"]["Message"]
    assert "is not authorized to perform: ecs:DescribeTasks" in message
    assert "arn:aws:iam::000000000000:" in message
    status, headers, payload = await raw_post(ep, {"taskDefinition": "web"}, signed("DescribeTaskDefinition"))
    assert (status, headers["x-amzn-ErrorType"], payload["__type"]) == (
        400,
        "AccessDeniedException",
        "AccessDeniedException",
    )


async def test_submit_faults_leave_describes_alone(ep: LocalEcsEndpoint, ecs: Any) -> None:
    await register(ecs)
    ep.set_faults(Faults(throttle_rate=1.0, error_rate=1.0, quota_burst=0, quota_refill_per_s=0.0))
    for operation in OPERATIONS:
        await describe(ecs, operation)
    with pytest.raises(ClientError) as info:
        await ecs.submit_task_state_change(cluster="demo", task="t", status="RUNNING")
    assert info.value.response["Error"]["Code"] == "ThrottlingException"


async def test_faults_change_no_state_and_describes_recover(ep: LocalEcsEndpoint, ecs: Any) -> None:
    await register(ecs)
    (task,) = (await ecs.run_task(cluster="demo", taskDefinition="web"))["tasks"]
    ep.set_faults(Faults(describe_error_rate=1.0))
    with pytest.raises(ClientError):
        await ecs.describe_tasks(cluster="demo", tasks=[task["taskArn"]])
    ep.set_faults(Faults())
    answer = await ecs.describe_tasks(cluster="demo", tasks=[task["taskArn"]])
    assert answer["tasks"][0]["lastStatus"] == "PENDING"
    assert ep.state()["operations"]["DescribeTasks"] == {
        "calls": 2,
        "accepted": 1,
        "dropped": 0,
        "errors": {"ServerException": 1},
    }


async def test_describe_latency_delays_only_describes(ep: LocalEcsEndpoint, ecs: Any) -> None:
    ep.set_faults(Faults(describe_latency_ms=80))
    start = time.monotonic()
    await ecs.describe_tasks(cluster="demo", tasks=["abc"])
    assert time.monotonic() - start >= 0.075
    start = time.monotonic()
    await ecs.submit_task_state_change(cluster="demo", task="t", status="RUNNING")
    assert time.monotonic() - start < 0.075


async def test_describe_draws_do_not_change_submit_outcomes() -> None:
    async def submit_outcomes(describes: bool) -> list[int]:
        faults = Faults(throttle_rate=0.5, describe_error_rate=0.5)
        async with running_endpoint(faults=faults, seed=42) as endpoint:
            outcomes = []
            for _ in range(16):
                if describes:
                    await raw_post(endpoint, {"tasks": ["abc"]}, signed("DescribeTasks"))
                outcomes.append((await raw_post(endpoint, {"cluster": "c", "task": "t"}))[0])
            return outcomes

    alone = await submit_outcomes(describes=False)
    assert alone == await submit_outcomes(describes=True)
    assert set(alone) == {200, 400}


async def test_describe_rates_are_deterministic_for_a_seed() -> None:
    async def outcomes() -> list[int]:
        async with running_endpoint(faults=Faults(describe_throttle_rate=0.5), seed=3) as endpoint:
            return [
                (await raw_post(endpoint, {"tasks": ["abc"]}, signed("DescribeTasks")))[0] for _ in range(16)
            ]

    first = await outcomes()
    assert first == await outcomes()
    assert set(first) == {200, 400}
