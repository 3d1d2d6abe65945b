"""Helpers for the local ECS endpoint's tests: a running endpoint, a real aiobotocore client over
a socket, raw signed calls, and a strict check of raw answers against botocore's output shapes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import botocore.session
import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError
from botocore.validate import ParamValidator

from devkit.ecs_endpoint import TARGET_PREFIX, LocalEcsEndpoint

__all__ = [
    "ACCOUNT",
    "CONTAINERS",
    "REGION",
    "answer_problems",
    "client_error",
    "ecs_client",
    "http_state",
    "raw_post",
    "register",
    "running_endpoint",
    "signed",
]

REGION = "us-west-2"
ACCOUNT = "000000000000"
_SESSION = get_session()
# A definition with an init container that must succeed before app starts, and a sidecar that
# must be healthy first.
CONTAINERS: list[dict[str, Any]] = [
    {"name": "init", "image": "busybox:1.36", "essential": False},
    {
        "name": "app",
        "image": "nginx:1.27",
        "dependsOn": [
            {"containerName": "init", "condition": "SUCCESS"},
            {"containerName": "sidecar", "condition": "HEALTHY"},
        ],
        "restartPolicy": {"enabled": True, "ignoredExitCodes": [0], "restartAttemptPeriod": 300},
    },
    {
        "name": "sidecar",
        "image": "envoy:1.31",
        "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 10, "retries": 3},
    },
]


def signed(operation: str = "SubmitTaskStateChange", region: str = REGION) -> dict[str, str]:
    """Headers of a signed AWS JSON 1.1 call (the signature is never checked)."""
    return {
        "X-Amz-Target": TARGET_PREFIX + operation,
        "Content-Type": "application/x-amz-json-1.1",
        "Authorization": f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261130/{region}/ecs/aws4_request, "
        "SignedHeaders=host;x-amz-date;x-amz-target, Signature=00",
    }


@asynccontextmanager
async def running_endpoint(**options: Any) -> AsyncIterator[LocalEcsEndpoint]:
    """A started :class:`LocalEcsEndpoint` (``seed=7`` unless given), stopped on exit."""
    endpoint = LocalEcsEndpoint(**{"seed": 7, **options})
    await endpoint.start()
    try:
        yield endpoint
    finally:
        await endpoint.stop()


@asynccontextmanager
async def ecs_client(url: str, region: str = REGION) -> AsyncIterator[Any]:
    """A real aiobotocore ECS client for ``url`` that makes one attempt per call."""
    async with _SESSION.create_client(
        "ecs",
        region_name=region,
        endpoint_url=url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=AioConfig(retries={"total_max_attempts": 1}),
    ) as client:
        yield client


async def http_state(endpoint: LocalEcsEndpoint) -> dict[str, Any]:
    """``GET /_state``."""
    async with aiohttp.ClientSession() as session, session.get(f"{endpoint.url}/_state") as answer:
        assert answer.status == 200
        data: dict[str, Any] = await answer.json(content_type=None)
        return data


async def raw_post(
    endpoint: LocalEcsEndpoint, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST a body (signed as SubmitTaskStateChange unless ``headers``): status, headers, JSON."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(endpoint.url + "/", data=data, headers=signed() if headers is None else headers) as r,
    ):
        return r.status, dict(r.headers), json.loads(await r.read())


def answer_problems(operation: str, payload: dict[str, Any]) -> str | None:
    """What in a raw JSON answer does not fit the operation's output shape (None: it all fits).

    botocore's own validator is strict about unknown members and types; epoch-second timestamps
    are valid input to it, as they are on the wire.
    """
    model = botocore.session.get_session().get_service_model("ecs")
    report = ParamValidator().validate(payload, model.operation_model(operation).output_shape)
    return str(report.generate_report()) if report.has_errors() else None


async def register(ecs: Any, family: str = "web", containers: list[dict[str, Any]] | None = None) -> str:
    """Register a task definition (``CONTAINERS`` unless given); returns its ARN."""
    answer = await ecs.register_task_definition(family=family, containerDefinitions=containers or CONTAINERS)
    arn: str = answer["taskDefinition"]["taskDefinitionArn"]
    return arn


async def client_error(call: Any) -> tuple[str, str, int]:
    """Await ``call``, which must fail: its error code, message and HTTP status."""
    with pytest.raises(ClientError) as info:
        await call
    error = info.value.response
    return error["Error"]["Code"], error["Error"]["Message"], error["ResponseMetadata"]["HTTPStatusCode"]
