"""An STS that fails or hangs, for the accounts reached through a role: the worker's own retries
are the only ones (botocore's STS client retries nothing, and waits ``call_timeout_ms`` at most),
and a role's credentials are fetched before a call takes a concurrency slot, so that an account
whose STS hangs holds back no other account's tasks. A real STS stand-in over sockets (aiohttp),
the local ECS endpoint for the calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio
from aiohttp import web

from devkit.ecs_endpoint import LocalEcsEndpoint
from tests.test_routing_endpoint import HOME, OTHER, ROLE, submission, task_arn
from worker.config import Settings
from worker.ecs_clients import EcsClients, routes_of
from worker.metrics import Metrics
from worker.ratelimit import RateBudgets
from worker.submit import Submitter

_FAILURE = (
    b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Receiver</Type>'
    b"<Code>InternalFailure</Code><Message>injected</Message></Error><RequestId>1</RequestId></ErrorResponse>"
)


class BrokenSts:
    """Answers every request 500 ``InternalFailure``, or never (``hang``); counts the requests."""

    def __init__(self, *, hang: bool) -> None:
        self.hang, self.requests = hang, 0
        self.asked = asyncio.Event()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.asked.set()
        await request.read()
        if self.hang:
            await self._release.wait()
        return web.Response(status=500, body=_FAILURE, content_type="text/xml")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest_asyncio.fixture(loop_scope="function")
async def ecs() -> AsyncIterator[LocalEcsEndpoint]:
    server = LocalEcsEndpoint(seed=4)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def settings_for(ecs: LocalEcsEndpoint, sts: BrokenSts, **extra: object) -> Settings:
    return Settings(
        ecs_endpoint_url=ecs.url,
        sts_endpoint_url=sts.url,
        region="us-east-1",
        home_account=HOME,
        account_roles={OTHER: ROLE},
        retry_initial_ms=10,
        retry_max_ms=20,
        **extra,  # type: ignore[arg-type]
    )


def budgets() -> RateBudgets:
    return RateBudgets(rate_cap=1000.0, burst_cap=1000, quota_per_s=None, quota_burst=1)


async def test_a_failing_assume_role_is_tried_once_per_attempt(ecs: LocalEcsEndpoint) -> None:
    sts = BrokenSts(hang=False)
    await sts.start()
    try:
        settings = settings_for(ecs, sts, max_attempts=2)
        async with EcsClients(settings, routes_of(settings)) as clients:
            submitter = Submitter(clients, settings, metrics=Metrics(), budgets=budgets())
            result = await submitter.submit(submission(task_arn(OTHER, "eu-west-1")))
    finally:
        await sts.stop()
    assert (result.result, result.attempts, result.error_code) == ("failed", 2, "InternalFailure")
    assert sts.requests == 2  # botocore's STS client retried nothing: the worker's two attempts
    assert ecs.state()["calls"] == 0


async def test_an_account_whose_sts_hangs_holds_back_no_other_account(ecs: LocalEcsEndpoint) -> None:
    sts = BrokenSts(hang=True)
    await sts.start()
    try:
        settings = settings_for(ecs, sts, concurrency=1, max_attempts=1)
        async with EcsClients(settings, routes_of(settings)) as clients:
            submitter = Submitter(clients, settings, metrics=Metrics(), budgets=budgets())
            stuck = asyncio.create_task(submitter.submit(submission(task_arn(OTHER, "eu-west-1"))))
            await asyncio.wait_for(sts.asked.wait(), 20)
            home = await asyncio.wait_for(submitter.submit(submission(task_arn(HOME, "eu-west-1"))), 20)
            assert home.result == "acknowledged"
            assert not stuck.done()
            stuck.cancel()
            await asyncio.gather(stuck, return_exceptions=True)
    finally:
        await sts.stop()
    scopes = ecs.state()["scopes"]
    assert {scope: view["tasks"] for scope, view in scopes.items()} == {
        f"{HOME}/eu-west-1": {task_arn(HOME, "eu-west-1"): "RUNNING"}
    }
