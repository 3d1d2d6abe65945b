"""Stage 4, submit: one ``SubmitTaskStateChange`` submission, retried with tenacity.

A submission goes to the account and Region of its task's ARN (``worker.routing``), through that
route's client (``worker.ecs_clients``) and within that route's rate budget
(``worker.ratelimit.RateBudgets``); a task whose account has no route is ``rejected`` without a
call. Each client's connection pool is sized to the concurrency limit and botocore's own retries
are off, so that retries do not stack. Parameter validation is off too: the
request is a msgspec struct that mirrors the model, validated when it was built. A concurrency slot
is held only for the call itself, never while waiting out a backoff, so one task's trouble never
blocks the others.

``Submitter.submit`` is the one way a request reaches ECS (the dispatcher, and any resubmission).
The dispatcher takes the route's token itself before it builds the request (``token_held``) and
asks for a throttled first attempt back unsent (``Throttled``) so that the task's next request,
built when the next token comes, carries everything that arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

import aiobotocore
import botocore
import msgspec
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from schemas.ecs import SubmitTaskStateChangeRequest
from worker import __version__
from worker.config import Settings
from worker.errors import classify
from worker.fence import StallFence
from worker.metrics import Metrics, code_label
from worker.ratelimit import AsyncRateLimiter, RateBudgets
from worker.retrying import retry_after_first
from worker.routing import NO_ROUTE, NoRoute, Route, Routes
from worker.work import Submission, SubmitResult, TaskKey

__all__ = [
    "USER_AGENT",
    "ClientSource",
    "EcsClient",
    "Submitter",
    "Throttled",
    "client_config",
    "open_ecs_client",
    "request_params",
]

log = logging.getLogger(__name__)

USER_AGENT = (
    f"ecs-state-worker/{__version__} aiobotocore/{aiobotocore.__version__} "
    f"botocore/{botocore.__version__} Python/{platform.python_version()}"
)


class EcsClient(Protocol):
    async def submit_task_state_change(self, **params: Any) -> dict[str, Any]: ...


class ClientSource(Protocol):
    """The clients by route (``worker.ecs_clients.EcsClients``)."""

    routes: Routes

    async def client_for(self, route: Route) -> Any: ...

    async def credentials_ready(self, route: Route) -> None: ...


class Throttled(Exception):
    """ECS throttled the first attempt of a submission made with ``requeue_throttled``: nothing
    was sent, the caller gives the submission back (``Coalescer.requeue``)."""


def request_params(request: SubmitTaskStateChangeRequest) -> dict[str, Any]:
    """The request as botocore keyword arguments (timestamps stay datetimes)."""
    params: dict[str, Any] = msgspec.to_builtins(request, builtin_types=(datetime,))
    return params


def client_config(settings: Settings, *, region: str | None = None) -> AioConfig:
    """The botocore configuration of the worker's ECS clients (``open_ecs_client``); the
    benchmark's bare loop uses it too, so that both sides call ECS alike."""
    return AioConfig(
        # None: the SDK's region; AWS_REGION first, which botocore alone does not read
        # (``worker.start_checks.resolve_region`` fills the setting before a ``run``).
        region_name=region or settings.region or os.environ.get("AWS_REGION"),
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=settings.concurrency,
        connect_timeout=settings.call_timeout_ms / 1000,
        read_timeout=settings.call_timeout_ms / 1000,
        # The requests are msgspec structs that mirror the model (``schemas.ecs``), validated
        # when they are built: botocore's validation would walk each one again.
        parameter_validation=False,
        tcp_keepalive=True,
        # A fixed User-Agent: botocore otherwise rebuilds it from a dozen components on every
        # request, a sixth of a call's CPU here.
        user_agent=USER_AGENT,
    )


def open_ecs_client(
    settings: Settings, *, region: str | None = None, session: Any = None
) -> AbstractAsyncContextManager[Any]:
    """An aiobotocore ECS client of ``region`` (default ``settings.region``) from ``session``
    (default: a new one, with the SDK's default credential chain), configured by
    ``client_config``."""
    client: AbstractAsyncContextManager[Any] = (session or get_session()).create_client(
        "ecs", endpoint_url=settings.ecs_endpoint_url, config=client_config(settings, region=region)
    )
    return client


class _Retryable(Exception):
    def __init__(self, code: str, message: str, *, throttled: bool = False) -> None:
        super().__init__(message)
        self.code, self.message, self.throttled = code, message, throttled


class Submitter:
    """Sends submissions: ``clients`` by route, ``budgets`` one rate budget per route; with
    ``fence``, no attempt starts while it is closed (``worker.fence``)."""

    def __init__(
        self,
        clients: ClientSource,
        settings: Settings,
        *,
        metrics: Metrics,
        budgets: RateBudgets,
        fence: StallFence | None = None,
    ) -> None:
        self._clients = clients
        self._fence = fence
        self.routes = clients.routes
        self.budgets = budgets
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._metrics = metrics
        self.max_attempts = self._max_attempts = settings.max_attempts
        self._deadline_s = settings.retry_deadline_ms / 1000
        self._wait = wait_exponential_jitter(
            multiplier=settings.retry_initial_ms / 1000,
            max=settings.retry_max_ms / 1000,
            jitter=settings.retry_initial_ms / 1000,
        )
        metrics.rate_limit.set(budgets.limits()[0])

    def route_of(self, key: TaskKey) -> Route:
        return self.routes.route_of(*key)

    def no_route(self, route: Route) -> str | None:
        """Why ``route`` may not be called, or None."""
        try:
            self.routes.role_for(route)
        except NoRoute as exc:
            return exc.reason
        return None

    async def submit(
        self, submission: Submission, *, token_held: bool = False, requeue_throttled: bool = False
    ) -> SubmitResult:
        """Send ``submission`` to its route, with retries; never raises but ``Throttled``.

        ``token_held``: the caller took the first attempt's token of the route's budget;
        ``requeue_throttled``: a throttled first attempt raises ``Throttled`` instead of retrying.
        Returns ``acknowledged``, ``rejected`` (a terminal answer, or no route: ``NO_ROUTE``) or
        ``failed`` (retries exhausted)."""
        route = self.route_of(submission.key)
        try:
            client = await self._clients.client_for(route)
        except NoRoute as exc:
            return SubmitResult("rejected", 0, time.time_ns(), None, NO_ROUTE, exc.reason)
        except Exception as exc:  # no client (no credentials to assume a role with): sorted by classify()
            verdict = classify(exc)
            return SubmitResult("failed", 0, time.time_ns(), None, verdict.code, verdict.message)
        limiter = self.budgets.for_route(route)
        params = request_params(submission.request)
        attempts = 0

        async def attempt(number: int) -> dict[str, Any]:
            nonlocal attempts
            attempts = number
            if number > 1 or not token_held:
                await limiter.acquire()
            await self._credentials(route)
            return await self._call(client, limiter, params)

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, _Retryable) and not (requeue_throttled and exc.throttled and attempts == 1)

        def retrying() -> AsyncRetrying:
            return AsyncRetrying(
                stop=stop_after_attempt(self._max_attempts) | stop_before_delay(self._deadline_s),
                wait=self._wait,
                retry=retry_if_exception(retryable),
                before_sleep=self._before_sleep,
                reraise=True,
            )

        try:
            answer = await retry_after_first(attempt, retrying)
            return SubmitResult(
                "acknowledged",
                attempts,
                time.time_ns(),
                acknowledgment=answer.get("acknowledgment"),
            )
        except _Retryable as exhausted:
            if requeue_throttled and exhausted.throttled and attempts == 1:
                raise Throttled(exhausted.message) from exhausted
            return SubmitResult("failed", attempts, time.time_ns(), None, exhausted.code, exhausted.message)
        except _Terminal as rejected:
            return SubmitResult("rejected", attempts, time.time_ns(), None, rejected.code, rejected.message)

    async def _credentials(self, route: Route) -> None:
        """The route's role assumed when due, before a concurrency slot is taken (a slow or
        failing STS holds back no other account); a failure is sorted as a call's, not counted as
        an ECS call, and never slows the route's ECS rate."""
        try:
            await self._clients.credentials_ready(route)
        except Exception as exc:  # sorted by classify(); nothing is swallowed
            verdict = classify(exc)
            message = f"assuming the role of account {route.account}: {verdict.message}"
            if verdict.retryable:
                raise _Retryable(verdict.code, message) from exc
            raise _Terminal(verdict.code, message) from exc

    async def _call(
        self, client: EcsClient, limiter: AsyncRateLimiter, params: dict[str, Any]
    ) -> dict[str, Any]:
        async with self._slots:
            # Not after a stall, until the group confirms this member: checked once the slot is
            # held, since a call that waited for one may have waited through the stall.
            if self._fence is not None:
                await self._fence.wait_open()
            self._metrics.in_flight.inc()
            started = time.perf_counter()
            try:
                answer = await client.submit_task_state_change(**params)
            except Exception as exc:  # sorted by classify(); nothing is swallowed
                verdict = classify(exc)
                self._metrics.calls.labels(code_label(verdict.code)).inc()
                if verdict.throttled:
                    self._metrics.throttles.labels(code_label(verdict.code)).inc()
                    limiter.on_throttled()
                    self._metrics.rate_limit.set(limiter.bucket.rate)
                if verdict.retryable:
                    raise _Retryable(verdict.code, verdict.message, throttled=verdict.throttled) from exc
                raise _Terminal(verdict.code, verdict.message) from exc
            finally:
                self._metrics.in_flight.dec()
                self._metrics.call_seconds.observe(time.perf_counter() - started)
        self._metrics.calls.labels("OK").inc()
        limiter.on_success()
        self._metrics.rate_limit.set(limiter.bucket.rate)
        return answer

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        code = exc.code if isinstance(exc, _Retryable) else "unknown"
        self._metrics.retries.labels(code_label(code)).inc()
        log.debug("retrying ECS call", extra={"code": code, "attempt": state.attempt_number})


class _Terminal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message
