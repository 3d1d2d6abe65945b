"""Tests for the local ECS endpoint's protocol and its SubmitTaskStateChange path, driven by the
real aiobotocore client over a socket. Other operations: test_ecs_operations.py; the flags:
test_ecs_flags.py; describe faults: test_ecs_describe_faults.py."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, HTTPClientError

from devkit.ecs_endpoint import TARGET, Faults, LocalEcsEndpoint
from tests.ecs_support import http_state, raw_post, signed

TASK = "arn:aws:ecs:us-east-1:123456789012:task/demo/0123456789abcdef"
SIGNED = signed()


async def submit(ecs: Any, **kwargs: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"cluster": "demo", "task": TASK, **kwargs}
    response: dict[str, Any] = await ecs.submit_task_state_change(**params)
    return response


async def test_valid_call_is_acknowledged_and_reflected_in_state(ep: LocalEcsEndpoint, ecs: Any) -> None:
    resp = await submit(
        ecs,
        status="RUNNING",
        containers=[
            {
                "containerName": "web",
                "runtimeId": "abc",
                "status": "RUNNING",
                "networkBindings": [{"containerPort": 80, "hostPort": 8080, "protocol": "tcp"}],
            }
        ],
        managedAgents=[
            {"containerName": "web", "managedAgentName": "ExecuteCommandAgent", "status": "RUNNING"}
        ],
    )
    assert resp["acknowledgment"] == "ACK"
    meta = resp["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == 200
    assert meta["RequestId"]
    assert meta["HTTPHeaders"]["x-amzn-requestid"] == meta["RequestId"]

    state = await http_state(ep)
    assert state == ep.state()
    assert state["calls"] == 1
    assert state["accepted"] == 1
    assert state["errors"] == {}
    assert state["tasks"] == {
        TASK: {
            "cluster": "demo",
            "status": "RUNNING",
            "containers": {"web": "RUNNING"},
            "calls": 1,
            "history": ["RUNNING"],
            "desiredStatus": "RUNNING",
            "taskDefinitionArn": None,
        }
    }
    assert state["regressions"] == []
    assert state["operations"]["SubmitTaskStateChange"] == {
        "calls": 1, "accepted": 1, "dropped": 0, "errors": {}
    }  # fmt: skip
    assert all(f["count"] == 0 for f in state["flags"].values())


async def test_timestamps_validate_from_botocore_and_epoch_numbers(ep: LocalEcsEndpoint, ecs: Any) -> None:
    started = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    resp = await submit(ecs, status="PENDING", pullStartedAt=started, pullStoppedAt=started)
    assert resp["acknowledgment"] == "ACK"
    status, _, body = await raw_post(
        ep, {"cluster": "demo", "task": TASK, "executionStoppedAt": 1714564800.25}
    )
    assert (status, body) == (200, {"acknowledgment": "ACK"})
    # The JSON wire form carries epoch seconds; an ISO string is not what ECS accepts.
    status, _, body = await raw_post(
        ep, {"cluster": "demo", "task": TASK, "pullStartedAt": "2024-05-01T12:00:00Z"}
    )
    assert status == 400
    assert body["__type"] == "InvalidParameterException"
    assert "pullStartedAt" in body["message"]
    status, _, body = await raw_post(ep, {"cluster": "demo", "task": TASK, "pullStoppedAt": 1e30})
    assert status == 400
    assert body["__type"] == "InvalidParameterException"
    assert ep.state()["accepted"] == 2


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"containers": [{"containerName": "web", "exitCode": "x"}]}, "containers[0].exitCode"),
        ({"containers": [{"containerName": "web", "exitCode": True}]}, "containers[0].exitCode"),
        ({"managedAgents": [{"containerName": "web", "status": "RUNNING"}]}, "managedAgentName"),
        (
            {"containers": [{"networkBindings": [{"containerPort": 80, "protocol": "sctp"}]}]},
            "protocol",
        ),
        ({"status": "RUNNING", "bogus": 1}, "bogus"),
        ({"attachments": [{"attachmentArn": "a"}]}, "attachments[0]"),
    ],
)
async def test_invalid_body_gets_invalid_parameter_exception(
    ep: LocalEcsEndpoint, body: dict[str, Any], needle: str
) -> None:
    status, headers, payload = await raw_post(ep, {"cluster": "demo", "task": TASK, **body})
    assert status == 400
    assert payload["__type"] == "InvalidParameterException"
    assert headers["x-amzn-ErrorType"] == "InvalidParameterException"
    assert headers["Content-Type"] == "application/x-amz-json-1.1"
    assert headers["x-amzn-RequestId"]
    assert needle in payload["message"]
    state = await http_state(ep)
    assert state["accepted"] == 0
    assert state["tasks"] == {}
    assert state["errors"] == {"InvalidParameterException": 1}


@pytest.mark.parametrize("missing", ["cluster", "task"])
async def test_cluster_and_task_are_required(ep: LocalEcsEndpoint, ecs: Any, missing: str) -> None:
    params = {"cluster": "demo", "task": TASK, "status": "RUNNING"}
    del params[missing]
    with pytest.raises(ClientError) as info:
        await ecs.submit_task_state_change(**params)
    assert info.value.response["Error"]["Code"] == "InvalidParameterException"
    assert missing in info.value.response["Error"]["Message"]
    assert ep.state()["tasks"] == {}


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"RUNNING"'])
async def test_non_object_body_gets_serialization_exception(ep: LocalEcsEndpoint, raw: bytes) -> None:
    status, headers, payload = await raw_post(ep, raw)
    assert status == 400
    assert payload["__type"] == headers["x-amzn-ErrorType"] == "SerializationException"


async def test_missing_authorization_is_403(ep: LocalEcsEndpoint) -> None:
    unsigned = {k: v for k, v in SIGNED.items() if k != "Authorization"}
    status, headers, payload = await raw_post(ep, {"cluster": "demo", "task": TASK}, unsigned)
    assert status == 403
    assert payload == {
        "__type": "MissingAuthenticationTokenException",
        "message": "Missing Authentication Token",
    }
    assert headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    basic = {**SIGNED, "Authorization": "Basic dGVzdDp0ZXN0"}
    status, _, payload = await raw_post(ep, {"cluster": "demo", "task": TASK}, basic)
    assert status == 403
    assert payload["__type"] == "MissingAuthenticationTokenException"
    assert ep.state()["tasks"] == {}


@pytest.mark.parametrize(
    "target", ["AmazonEC2ContainerServiceV20141113.ListTasks", "Nope.SubmitTaskStateChange", None]
)
async def test_unknown_target_is_unknown_operation(ep: LocalEcsEndpoint, target: str | None) -> None:
    headers = {k: v for k, v in SIGNED.items() if k != "X-Amz-Target"}
    if target is not None:
        headers["X-Amz-Target"] = target
    status, _, payload = await raw_post(ep, {"cluster": "demo", "task": TASK}, headers)
    assert status == 400
    assert payload["__type"] == "UnknownOperationException"


async def test_throttle_rate_gives_throttling_client_error(ep: LocalEcsEndpoint, ecs: Any) -> None:
    ep.set_faults(Faults(throttle_rate=1.0))
    with pytest.raises(ClientError) as info:
        await submit(ecs, status="RUNNING")
    assert info.value.response["Error"]["Code"] == "ThrottlingException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    state = ep.state()
    assert state["errors"] == {"ThrottlingException": 1}
    assert state["tasks"] == {}
    assert state["accepted"] == 0
    assert state["calls"] == 1


async def test_error_rate_gives_server_exception_500(ep: LocalEcsEndpoint, ecs: Any) -> None:
    ep.set_faults(Faults(error_rate=1.0))
    with pytest.raises(ClientError) as info:
        await submit(ecs, status="RUNNING")
    assert info.value.response["Error"]["Code"] == "ServerException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert ep.state()["tasks"] == {}


async def test_quota_bucket_allows_burst_then_throttles(ep: LocalEcsEndpoint, ecs: Any) -> None:
    ep.set_faults(Faults(quota_burst=3, quota_refill_per_s=1e-6))
    codes: list[str] = []
    for _ in range(6):
        try:
            codes.append((await submit(ecs, status="RUNNING"))["acknowledgment"])
        except ClientError as exc:
            codes.append(exc.response["Error"]["Code"])
    assert codes == ["ACK"] * 3 + ["ThrottlingException"] * 3
    state = ep.state()
    assert state["accepted"] == 3
    assert state["tasks"][TASK]["calls"] == 3
    assert state["errors"] == {"ThrottlingException": 3}


async def test_quota_bucket_refills_over_time(ep: LocalEcsEndpoint, ecs: Any) -> None:
    ep.set_faults(Faults(quota_burst=1, quota_refill_per_s=5.0))
    await submit(ecs, status="RUNNING")
    with pytest.raises(ClientError):
        await submit(ecs, status="RUNNING")
    await asyncio.sleep(0.25)  # 5/s * 0.25 s = 1.25 tokens, capped at the burst of 1
    assert (await submit(ecs, status="RUNNING"))["acknowledgment"] == "ACK"
    with pytest.raises(ClientError):
        await submit(ecs, status="RUNNING")


async def test_regressions_are_recorded_but_acknowledged(ep: LocalEcsEndpoint, ecs: Any) -> None:
    web = {"containerName": "web"}
    await submit(ecs, status="RUNNING", containers=[{**web, "status": "RUNNING"}])
    await submit(ecs, status="STOPPED", containers=[{**web, "status": "STOPPED", "exitCode": 0}])
    resp = await submit(ecs, status="RUNNING")
    assert resp["acknowledgment"] == "ACK"
    await submit(ecs, containers=[{**web, "status": "RUNNING"}])  # container-only update
    await submit(ecs, status="SOMETHING_NEW")  # unknown statuses are accepted, never ranked

    state = await http_state(ep)
    task = state["tasks"][TASK]
    assert task["status"] == "SOMETHING_NEW"
    assert task["containers"] == {"web": "RUNNING"}
    assert task["calls"] == 5
    assert task["history"] == ["RUNNING", "STOPPED", "RUNNING", "SOMETHING_NEW"]
    assert state["regressions"] == [
        {"cluster": "demo", "task": TASK, "container": None, "from": "STOPPED", "to": "RUNNING",
         "call": 3},
        {"cluster": "demo", "task": TASK, "container": "web", "from": "STOPPED", "to": "RUNNING",
         "call": 4},
    ]  # fmt: skip


async def test_stopping_ranks_between_running_and_stopped(ep: LocalEcsEndpoint, ecs: Any) -> None:
    for status in ("PROVISIONING", "PENDING", "RUNNING", "DEACTIVATING", "STOPPING", "STOPPED"):
        await submit(ecs, status=status)
    assert ep.state()["regressions"] == []
    await submit(ecs, status="DEPROVISIONING")
    assert [(r["from"], r["to"]) for r in ep.state()["regressions"]] == [("STOPPED", "DEPROVISIONING")]


async def test_drop_rate_closes_connection(ep: LocalEcsEndpoint, ecs: Any) -> None:
    ep.set_faults(Faults(drop_rate=1.0))
    with pytest.raises(ConnectionClosedError) as info:
        await submit(ecs, status="RUNNING")
    assert isinstance(info.value, HTTPClientError)
    state = ep.state()
    assert state["calls"] == 1
    assert state["dropped"] == 1
    assert state["tasks"] == {}
    ep.set_faults(Faults())  # the server keeps serving after a drop
    assert (await submit(ecs, status="RUNNING"))["acknowledgment"] == "ACK"


async def test_latency_delays_the_answer(ep: LocalEcsEndpoint, ecs: Any) -> None:
    ep.set_faults(Faults(latency_ms=80))
    start = time.monotonic()
    await submit(ecs, status="RUNNING")
    assert time.monotonic() - start >= 0.075


async def test_rates_are_deterministic_for_a_seed(ecs: Any) -> None:
    async def outcomes(seed: int) -> list[int]:
        endpoint = LocalEcsEndpoint(faults=Faults(throttle_rate=0.5), seed=seed)
        await endpoint.start()
        try:
            return [(await raw_post(endpoint, {"cluster": "c", "task": "t"}))[0] for _ in range(16)]
        finally:
            await endpoint.stop()

    first = await outcomes(42)
    assert first == await outcomes(42)
    assert set(first) == {200, 400}


async def test_faults_and_reset_over_http(ep: LocalEcsEndpoint, ecs: Any) -> None:
    await submit(ecs, status="RUNNING")
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{ep.url}/_faults", json={"throttle_rate": 1.0}) as r:
            assert r.status == 200
        assert ep.state()["faults"]["throttle_rate"] == 1.0
        with pytest.raises(ClientError):
            await submit(ecs, status="STOPPED")
        async with s.post(f"{ep.url}/_faults", json={"throttle_rate": "lots"}) as r:
            assert r.status == 400
        async with s.post(f"{ep.url}/_reset") as r:
            assert r.status == 200
    state = await http_state(ep)
    assert state["calls"] == 0
    assert state["accepted"] == 0
    assert state["errors"] == {}
    assert state["tasks"] == {}
    assert state["regressions"] == []
    assert state["faults"]["throttle_rate"] == 1.0  # reset keeps the faults


async def test_same_task_arn_in_two_clusters_is_keyed_by_cluster(ep: LocalEcsEndpoint, ecs: Any) -> None:
    await submit(ecs, status="RUNNING")
    await ecs.submit_task_state_change(cluster="other", task=TASK, status="PENDING")
    await ecs.submit_task_state_change(cluster="other", task="t2", status="PENDING")
    tasks = ep.state()["tasks"]
    assert set(tasks) == {f"demo|{TASK}", f"other|{TASK}", "t2"}
    assert tasks[f"other|{TASK}"]["status"] == "PENDING"


async def test_history_is_bounded(ep: LocalEcsEndpoint) -> None:
    for i in range(60):
        status, _, _ = await raw_post(ep, {"cluster": "c", "task": "t", "status": f"S{i}"})
        assert status == 200
    task = ep.state()["tasks"]["t"]
    assert task["calls"] == 60
    assert task["history"] == [f"S{i}" for i in range(10, 60)]


async def test_submit_target_is_the_default(ep: LocalEcsEndpoint) -> None:
    assert SIGNED["X-Amz-Target"] == TARGET == "AmazonEC2ContainerServiceV20141113.SubmitTaskStateChange"
