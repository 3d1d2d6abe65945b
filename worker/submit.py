"""Stage 4, submit: one ``SubmitTaskStateChange`` submission, retried with tenacity.

One aiobotocore ECS client per process, its connection pool sized to the concurrency limit and
botocore's own retries off, so that retries do not stack. Parameter validation is off too: the
request is a msgspec struct that mirrors the model, validated when it was built. A concurrency slot
is held only for the call itself, never while waiting out a backoff, so one task's trouble never
blocks the others.
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
from worker.metrics import Metrics, code_label
from worker.ratelimit import AsyncRateLimiter
from worker.work import Submission, SubmitResult

__all__ = ["USER_AGENT", "EcsClient", "Submitter", "open_ecs_client", "request_params"]

log = logging.getLogger(__name__)

USER_AGENT = (
    f"ecs-state-worker/{__version__} aiobotocore/{aiobotocore.__version__} "
    f"botocore/{botocore.__version__} Python/{platform.python_version()}"
)


class EcsClient(Protocol):
    async def submit_task_state_change(self, **params: Any) -> dict[str, Any]: ...


def request_params(request: SubmitTaskStateChangeRequest) -> dict[str, Any]:
    """The request as botocore keyword arguments (timestamps stay datetimes)."""
    params: dict[str, Any] = msgspec.to_builtins(request, builtin_types=(datetime,))
    return params


def open_ecs_client(settings: Settings) -> AbstractAsyncContextManager[Any]:
    config = AioConfig(
        # None: the SDK's region; AWS_REGION first, which botocore alone does not read
        # (``worker.start_checks.resolve_region`` fills the setting before a ``run``).
        region_name=settings.region or os.environ.get("AWS_REGION"),
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=settings.concurrency,
        connect_timeout=settings.call_timeout_ms / 1000,
        read_timeout=settings.call_timeout_ms / 1000,
        parameter_validation=False,
        tcp_keepalive=True,
        # A fixed User-Agent: botocore otherwise rebuilds it from a dozen components on every
        # request, a sixth of a call's CPU here.
        user_agent=USER_AGENT,
    )
    client: AbstractAsyncContextManager[Any] = get_session().create_client(
        "ecs", endpoint_url=settings.ecs_endpoint_url, config=config
    )
    return client


class _Retryable(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Submitter:
    def __init__(
        self, client: EcsClient, settings: Settings, *, metrics: Metrics, limiter: AsyncRateLimiter
    ) -> None:
        self._client = client
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._limiter = limiter
        self._metrics = metrics
        self._max_attempts = settings.max_attempts
        self._deadline_s = settings.retry_deadline_ms / 1000
        self._wait = wait_exponential_jitter(
            multiplier=settings.retry_initial_ms / 1000,
            max=settings.retry_max_ms / 1000,
            jitter=settings.retry_initial_ms / 1000,
        )
        metrics.rate_limit.set(limiter.bucket.rate)

    async def submit(self, submission: Submission) -> SubmitResult:
        params = request_params(submission.request)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts) | stop_before_delay(self._deadline_s),
            wait=self._wait,
            retry=retry_if_exception(lambda exc: isinstance(exc, _Retryable)),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    answer = await self._call(params)
            return SubmitResult(
                "acknowledged",
                attempts,
                time.time_ns(),
                acknowledgment=answer.get("acknowledgment"),
            )
        except _Retryable as exhausted:
            return SubmitResult("failed", attempts, time.time_ns(), None, exhausted.code, exhausted.message)
        except _Terminal as rejected:
            return SubmitResult("rejected", attempts, time.time_ns(), None, rejected.code, rejected.message)

    async def _call(self, params: dict[str, Any]) -> dict[str, Any]:
        await self._limiter.acquire()
        async with self._slots:
            self._metrics.in_flight.inc()
            started = time.perf_counter()
            try:
                answer = await self._client.submit_task_state_change(**params)
            except Exception as exc:  # sorted by classify(); nothing is swallowed
                verdict = classify(exc)
                self._metrics.calls.labels(code_label(verdict.code)).inc()
                if verdict.throttled:
                    self._metrics.throttles.labels(code_label(verdict.code)).inc()
                    self._limiter.on_throttled()
                    self._metrics.rate_limit.set(self._limiter.bucket.rate)
                if verdict.retryable:
                    raise _Retryable(verdict.code, verdict.message) from exc
                raise _Terminal(verdict.code, verdict.message) from exc
            finally:
                self._metrics.in_flight.dec()
                self._metrics.call_seconds.observe(time.perf_counter() - started)
        self._metrics.calls.labels("OK").inc()
        self._limiter.on_success()
        self._metrics.rate_limit.set(self._limiter.bucket.rate)
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
