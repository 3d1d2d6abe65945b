"""Resolve: fetch what the coalescer waits for, in batches, without stalling other tasks.

- **Definitions** (``DescribeTaskDefinition``): one call per revision, cached by the coalescer's
  ``DefinitionCache``; concurrent wants of one revision make one call.
- **ECS's view** (``DescribeTasks``): the tasks wanted within ``describe_batch_ms`` are asked
  together, up to 100 per call and cluster (ECS's limit). A task ECS does not know (``MISSING``:
  stopped longer ago than ECS keeps tasks, or another account's) is retired without a call.

Describe calls have their own rate limit and retry policy (throttling and server errors retried
with backoff until ``describe_deadline_ms``): they never take a submission's slot or token. When
an answer cannot be had (denied, throttled past the deadline, failing), the coalescer is told so
and the task falls back to what was seen (``worker.knowledge``); each cause is logged once and
counted in ``ecs_state_worker_knowledge_fallbacks_total``. Each call goes to the account and Region
of the ARN it asks about (``worker.routing``): a definition's own ARN, the tasks' ARNs (batches
never mix routes); a task of an account with no route is neither asked about nor waited for
(``KnowledgeMixin.learn_unroutable``): it goes as seen at once, to its rejection, and is no
fallback. IAM:
``ecs:DescribeTasks`` and ``ecs:DescribeTaskDefinition``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception, stop_before_delay, wait_exponential_jitter

from worker.coalesce import Coalescer
from worker.decode import reasons
from worker.decode.reasons import reason_code
from worker.errors import classify
from worker.metrics import Metrics, code_label
from worker.ratelimit import AsyncRateLimiter
from worker.routing import NO_ROUTE, NoRoute, Route
from worker.submit import ClientSource
from worker.task_definition import EcsTaskView, definition_from_botocore, view_from_botocore
from worker.work import SourceRef, TaskKey

__all__ = ["DESCRIBE_TASKS_LIMIT", "Resolver"]

log = logging.getLogger(__name__)

DESCRIBE_TASKS_LIMIT = 100
"""Tasks per ``DescribeTasks`` call (ECS's limit)."""
_MISSING = "MISSING"


class _Retry(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _Unanswered(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Resolver:
    """Runs the fetches the coalescer wants; ``release`` takes the sources an answer resolves and
    ``wake`` tells the dispatcher that tasks may be due."""

    def __init__(
        self,
        clients: ClientSource,
        coalescer: Coalescer,
        *,
        metrics: Metrics,
        batch_ms: int,
        rate_per_s: float,
        deadline_ms: int,
        release: Callable[[Iterable[SourceRef]], None],
        wake: Callable[[], None],
    ) -> None:
        self._clients = clients
        self._coalescer = coalescer
        self._metrics = metrics
        self._batch_s = batch_ms / 1000
        self._limiter = AsyncRateLimiter(rate=rate_per_s, burst=max(1, int(rate_per_s)))
        self._deadline_s = deadline_ms / 1000
        self._release = release
        self._wake_dispatcher = wake
        self._wanted = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._logged: set[str] = set()

    def wake(self) -> None:
        """Something may be wanted: called after each batch of records is admitted."""
        self._wanted.set()

    async def run(self) -> None:
        try:
            while True:
                await self._wanted.wait()
                self._wanted.clear()
                if self._batch_s:
                    await asyncio.sleep(self._batch_s)
                self.fetch_wanted()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def fetch_wanted(self) -> None:
        """Start the fetches for everything wanted now."""
        arns, keys = self._coalescer.take_wants()
        for arn in arns:
            self._spawn(self._definition(arn))
        by_cluster: dict[tuple[Route, str], list[TaskKey]] = defaultdict(list)
        for key in keys:
            by_cluster[self._clients.routes.route_of(*key), key[0]].append(key)
        for (route, cluster), wanted in by_cluster.items():
            for start in range(0, len(wanted), DESCRIBE_TASKS_LIMIT):
                self._spawn(self._describe(route, cluster, wanted[start : start + DESCRIBE_TASKS_LIMIT]))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a describe failed unexpectedly", exc_info=task.exception())

    def _answered(self) -> None:
        """After an answer: the dispatcher may have due tasks, and what was learnt may want more
        (a definition's tasks may need ECS's view) even if no record arrives."""
        self._wake_dispatcher()
        if self._coalescer.wants_pending():
            self._wanted.set()

    async def _definition(self, arn: str) -> None:
        try:
            route = self._clients.routes.route_of("", arn)
            answer = await self._call(route, "DescribeTaskDefinition", taskDefinition=arn)
            definition = definition_from_botocore(answer)
        except Exception as exc:  # every failure is an answer: the tasks must not wait for ever
            if _code(exc) == NO_ROUTE:
                self._no_route(route)
            else:
                self._fell_back("DescribeTaskDefinition", _code(exc), arn)
            definition = None
        self._release(self._coalescer.learn_definition(arn, definition, time.monotonic_ns()))
        self._metrics.definitions_cached.set(len(self._coalescer.definitions))
        self._answered()

    async def _describe(self, route: Route, cluster: str, keys: list[TaskKey]) -> None:
        views: dict[str, EcsTaskView | str] = {}
        try:
            tasks = [task for _, task in keys]
            answer = await self._call(route, "DescribeTasks", cluster=cluster, tasks=tasks)
            views = _views(answer)
        except Exception as exc:  # every failure is an answer: the tasks must not wait for ever
            if _code(exc) == NO_ROUTE:  # nothing to wait for: rejected at once, without a call
                self._no_route(route)
                self._release(
                    [s for key in keys for s in self._coalescer.learn_unroutable(key, time.monotonic_ns())]
                )
                self._answered()
                return
            self._fell_back("DescribeTasks", _code(exc), cluster)
        now = time.monotonic_ns()
        for key in keys:
            view = views.get(key[1]) or views.get(key[1].rsplit("/", 1)[-1])
            if view == _MISSING:
                self._metrics.ignored.labels(reason_code(reasons.ECS_TASK_MISSING)).inc()
                self._once(
                    f"missing:{cluster}",
                    "ECS does not know tasks of cluster %s (DescribeTasks: MISSING): they are not "
                    "reported (stopped longer ago than ECS keeps tasks, or another account or Region)",
                    cluster,
                )
                self._release(self._coalescer.learn_missing(key))
            else:
                self._release(
                    self._coalescer.learn_view(key, view if isinstance(view, EcsTaskView) else None, now)
                )
        self._answered()

    async def _call(self, route: Route, operation: str, **params: Any) -> dict[str, Any]:
        try:
            client = await self._clients.client_for(route)
        except NoRoute as exc:
            raise _Unanswered(NO_ROUTE) from exc
        method = getattr(client, _snake(operation))
        retrying = AsyncRetrying(
            stop=stop_before_delay(self._deadline_s),
            wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2),
            retry=retry_if_exception(lambda exc: isinstance(exc, _Retry)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._limiter.acquire()
                    try:
                        answer: dict[str, Any] = await method(**params)
                    except Exception as exc:  # sorted by classify(); nothing is swallowed
                        verdict = classify(exc)
                        self._metrics.describe_calls.labels(operation, code_label(verdict.code)).inc()
                        if verdict.throttled:
                            self._limiter.on_throttled()
                        if verdict.retryable:
                            raise _Retry(verdict.code) from exc
                        raise _Unanswered(verdict.code) from exc
                    self._metrics.describe_calls.labels(operation, "OK").inc()
                    self._limiter.on_success()
                    return answer
        except _Retry as exhausted:
            raise _Unanswered(exhausted.code) from exhausted
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _no_route(self, route: Route) -> None:
        """A task of an account this process may not call: not a fallback (nothing is missing
        that a permission would give), said once per account and partition (and once more for
        its ARNs that cannot be read or disagree)."""
        reason = self._clients.routes.reason(route) or ""
        self._once(
            f"no-route:{route.partition}:{route.account}:{bool(route.problem)}",
            "%s: such tasks are rejected (NoRouteForAccount) without a call",
            reason,
        )

    def _fell_back(self, operation: str, code: str, subject: str) -> None:
        self._metrics.knowledge_fallbacks.labels(operation, code_label(code)).inc()
        self._once(
            f"{operation}:{code}",
            "%s failed (%s), first for %s: falling back to the events seen (see settle_ms)",
            operation,
            code,
            subject,
        )

    def _once(self, cause: str, message: str, *args: object) -> None:
        """Log a warning once per cause: a denied role says it once, not per task."""
        if cause not in self._logged:
            self._logged.add(cause)
            log.warning(message, *args, extra={"cause": cause})


def _views(answer: dict[str, Any]) -> dict[str, EcsTaskView | str]:
    """ECS's views by task ARN (and by task id), and ``MISSING`` for the tasks it does not know."""
    views: dict[str, EcsTaskView | str] = {}
    for task in answer.get("tasks") or ():
        view = view_from_botocore(task)
        views[view.taskArn] = view
        views[view.taskArn.rsplit("/", 1)[-1]] = view
    for failure in answer.get("failures") or ():
        if failure.get("reason") == _MISSING and failure.get("arn"):
            views.setdefault(failure["arn"], _MISSING)
            views.setdefault(failure["arn"].rsplit("/", 1)[-1], _MISSING)
    return views


def _code(exc: Exception) -> str:
    if isinstance(exc, _Unanswered):
        return exc.code
    return "Malformed" if isinstance(exc, ValueError) else type(exc).__name__


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
