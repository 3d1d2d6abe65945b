"""``python -m worker bench --quota`` (and a section of ``make bench``): a deployment burst against
the local ECS endpoint enforcing ECS's quota, reported side by side for three reporters.

The workload is ``devkit.bench_quota_burst`` (3,000 tasks of 1-10 containers starting within
10 s, a third stopping within a minute; ``--quota-tasks`` scales it). The endpoint runs in
process with ECS's quota for SubmitTaskStateChange (``EcsQuota``: 120 calls per second, a burst
of 200, per account and Region; a call beyond it is answered 400 ``ThrottlingException``).
Each reporter runs alone on a fresh endpoint state, fed the burst's changes in real time:

* **worker**: the worker's own stages (``Coalescer``, ``Dispatcher``, ``Submitter`` with its
  routed clients and rate budget), fed canonical events; outcome records go to a sink that
  drops them. Its account budget (``account_quota_per_s``, ``account_quota_burst``) is
  ``WORKER_MARGIN`` 95 % of ECS's: two buckets with the same figures drift apart by the calls'
  latency;
* **agent-like** and **naive**: ``devkit.bench_quota_reporters``.

Per reporter: calls (as the endpoint counts them, throttled ones included), throttled answers (all,
and after the first second), calls per task, and the convergence time: from the burst's start
until the endpoint's view of every task (its status and each container's) equals the truth; the
floor is the calls accepted ÷ the refill rate (a throttled call takes no token), and the bound
also counts the burst and the last change: ``max(last change, (accepted - burst) / refill)``. A
reporter that has not converged by ``deadline_s`` is reported with the tasks still wrong.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from aiobotocore.session import AioSession, get_session

from devkit.bench_quota_burst import CLUSTER, Burst, BurstShape, make_burst
from devkit.bench_quota_reporters import NAIVE_BACKOFF, NAIVE_IN_FLIGHT, FifoReporter, per_host
from devkit.ecs.arns import DEFAULT_ACCOUNT, Scope
from devkit.ecs_endpoint import Faults, LocalEcsEndpoint
from schemas.events import ContainerChange, TaskEvent
from worker.coalesce import Coalescer
from worker.config import Settings
from worker.dispatch import Dispatcher
from worker.ecs_clients import EcsClients
from worker.metrics import Metrics
from worker.offsets import OffsetBook
from worker.publish import Publisher
from worker.ratelimit import RateBudgets
from worker.routing import Routes
from worker.submit import Submitter, open_ecs_client

__all__ = ["WORKER_MARGIN", "BurstShape", "EcsQuota", "QuotaReport", "ReporterFigures", "run_quota_bench"]

WORKER_MARGIN = 0.95
REGION = "us-east-1"
_POLL_S = 0.1
_TOPIC = "container-events"


class EcsQuota(msgspec.Struct, kw_only=True, frozen=True):
    """ECS's SubmitTaskStateChange quota per account and Region, as the endpoint enforces it."""

    refill_per_s: float = 120.0
    burst: int = 200


class ReporterFigures(msgspec.Struct, kw_only=True):
    reporter: str
    calls: int
    throttled: int
    throttled_after_first_s: int
    calls_per_task: float
    convergence_s: float | None
    """None: not converged by the deadline (see ``tasks_wrong``)."""
    tasks_wrong: int
    floor_s: float
    """calls accepted / refill rate."""
    bound_s: float
    """max(last change, (calls accepted - burst) / refill rate)."""
    ratio_to_floor: float | None
    ratio_to_bound: float | None


class _NullSink:
    """Outcome and dead-letter records of the benchmark's worker: counted, then dropped."""

    def __init__(self) -> None:
        self.records = 0

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> None:
        self.records += 1


class _Run:
    """One reporter's run: the endpoint reset, the clock started, the view watched."""

    def __init__(self, endpoint: LocalEcsEndpoint, burst: Burst, quota: EcsQuota) -> None:
        self.endpoint, self.burst, self.quota = endpoint, burst, quota
        self.scope = Scope(DEFAULT_ACCOUNT, REGION)
        endpoint.reset()
        self.t0 = time.monotonic()
        self.refused_first_s: int | None = None

    def arn(self, task: int) -> str:
        return self.burst.task_arn(DEFAULT_ACCOUNT, REGION, task)

    async def at(self, offset_s: float) -> None:
        delay = self.t0 + offset_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self._note_first_second()

    def _note_first_second(self) -> None:
        if self.refused_first_s is None and time.monotonic() - self.t0 >= 1.0:
            self.refused_first_s = self.endpoint.quota.refusals.get(self.scope, 0)

    def wrong(self) -> int:
        """Tasks whose view at the endpoint is not yet the truth."""
        tasks = self.endpoint.ecs(self.scope).tasks
        wrong = 0
        for number, truth in enumerate(self.burst.truths):
            task = tasks.get((CLUSTER, f"{number:032x}"))
            status, containers = truth.final
            if (
                task is None
                or task.status != status
                or any(
                    task.containers.get(n) is None or task.containers[n].status != s
                    for n, s in containers.items()
                )
            ):
                wrong += 1
        return wrong

    async def converge(self, deadline_s: float) -> tuple[float | None, int]:
        """Seconds from the start until every task's view is the truth (None past the deadline)."""
        await self.at(self.burst.last_change_at)
        while True:
            self._note_first_second()
            wrong = self.wrong()
            elapsed = time.monotonic() - self.t0
            if wrong == 0:
                return elapsed, 0
            if elapsed >= deadline_s:
                return None, wrong
            await asyncio.sleep(_POLL_S)

    def figures(self, reporter: str, converged: tuple[float | None, int]) -> ReporterFigures:
        counts = self.endpoint.state()["scopes"].get(f"{self.scope.account}/{self.scope.region}", {})
        calls = int(counts.get("calls", 0))
        throttled = int(counts.get("errors", {}).get("ThrottlingException", 0))
        refused = self.endpoint.quota.refusals.get(self.scope, 0)
        convergence, wrong = converged
        accepted = calls - throttled
        floor = accepted / self.quota.refill_per_s
        bound = max(self.burst.last_change_at, (accepted - self.quota.burst) / self.quota.refill_per_s)
        return ReporterFigures(
            reporter=reporter,
            calls=calls,
            throttled=throttled,
            throttled_after_first_s=refused - (self.refused_first_s or 0),
            calls_per_task=calls / max(1, len(self.burst.truths)),
            convergence_s=None if convergence is None else round(convergence, 2),
            tasks_wrong=wrong,
            floor_s=round(floor, 2),
            bound_s=round(bound, 2),
            ratio_to_floor=None if convergence is None else round(convergence / floor, 3),
            ratio_to_bound=None if convergence is None else round(convergence / bound, 3),
        )


# -- the worker ----------------------------------------------------------------------------------


def _session() -> AioSession:
    """A session with the local endpoint's credentials (any key acts in its default account)."""
    session = get_session()
    session.set_credentials("bench", "bench")
    return session


def _worker_settings(run: _Run, url: str) -> Settings:
    return Settings(
        ecs_endpoint_url=url,
        region=REGION,
        account_quota_per_s=run.quota.refill_per_s * WORKER_MARGIN,
        account_quota_burst=max(1, int(run.quota.burst * WORKER_MARGIN)),
        rate_limit_per_s=10_000.0,
        rate_limit_burst=10_000,
    )


async def _drive_worker(run: _Run, url: str) -> None:
    """Feed the burst to the worker's stages and let them send, until cancelled."""
    settings = _worker_settings(run, url)
    coalescer = Coalescer(
        linger_ns=settings.linger_ms * 1_000_000,
        max_active_tasks=1_000_000,
        retired_cap=1_000_000,
        describe=False,
    )
    book = OffsetBook()
    book.assign([(_TOPIC, 0)])
    metrics = Metrics()
    budgets = RateBudgets(
        rate_cap=settings.rate_limit_per_s,
        burst_cap=settings.rate_limit_burst,
        quota_per_s=settings.account_quota_per_s,
        quota_burst=settings.account_quota_burst,
    )
    routes = Routes(region=REGION, home_account=None, account_roles={})
    async with EcsClients(settings, routes, session=_session()) as clients:
        dispatcher = Dispatcher(
            coalescer=coalescer,
            book=book,
            submitter=Submitter(clients, settings, metrics=metrics, budgets=budgets),
            publisher=Publisher(
                _NullSink(), outcome_topic="o", dlq_topic="d", worker="bench", metrics=metrics
            ),
            metrics=metrics,
            linger_ms=settings.linger_ms,
            drain_timeout_ms=settings.drain_timeout_ms,
            on_progress=lambda: None,
        )
        loop = asyncio.create_task(dispatcher.run())
        try:
            await _feed_worker(run, coalescer, book, dispatcher)
            await asyncio.Event().wait()
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            await dispatcher.cancel_all()


async def _feed_worker(run: _Run, coalescer: Coalescer, book: OffsetBook, dispatcher: Dispatcher) -> None:
    for offset, change in enumerate(run.burst.changes):
        await run.at(change.at)
        source = book.track(_TOPIC, 0, offset, 1)
        assert source is not None
        change_of = ContainerChange(
            containerName=change.container,
            status=change.status,  # type: ignore[arg-type]
            exitCode=0 if change.status == "STOPPED" else None,
        )
        event = TaskEvent(
            cluster=CLUSTER, task=run.arn(change.task), observedAt=time.time_ns(), containers=(change_of,)
        )
        _, resolved = coalescer.apply(event, source, time.monotonic_ns())
        for done in resolved:
            book.release(done)
        dispatcher.wake()


# -- the reference reporters ---------------------------------------------------------------------


def _request(run: _Run, task: int, status: str, containers: dict[str, str]) -> dict[str, Any]:
    return {
        "cluster": CLUSTER,
        "task": run.arn(task),
        "status": status,
        "containers": [
            {"containerName": name, "status": s, **({"exitCode": 0} if s == "STOPPED" else {})}
            for name, s in containers.items()
        ],
    }


async def _drive_agent_like(run: _Run, url: str) -> None:
    """One call per task status change, from one reporter per host, until cancelled."""
    transitions = sorted(
        [(t.running_at, n, "RUNNING") for n, t in enumerate(run.burst.truths)]
        + [(t.stopped_at, n, "STOPPED") for n, t in enumerate(run.burst.truths) if t.stopped_at is not None]
    )
    hosts = max(t.host for t in run.burst.truths) + 1
    async with open_ecs_client(_worker_settings(run, url), session=_session()) as client:
        reporters, reporter_of = per_host(client, hosts, run.burst.shape.seed)
        try:
            for at, number, status in transitions:
                await run.at(at)
                truth = run.burst.truths[number]
                request = _request(run, number, status, dict.fromkeys(truth.containers, status))
                reporter_of(truth.host).send(request["task"], request)
            await asyncio.Event().wait()
        finally:
            await asyncio.gather(*(r.close() for r in reporters))


async def _drive_naive(run: _Run, url: str) -> None:
    """One call per container event, until cancelled."""
    seen: dict[int, dict[str, str]] = {}
    async with open_ecs_client(_worker_settings(run, url), session=_session()) as client:
        reporter = FifoReporter(
            client, in_flight=NAIVE_IN_FLIGHT, backoff=NAIVE_BACKOFF, seed=run.burst.shape.seed
        )
        try:
            for change in run.burst.changes:
                await run.at(change.at)
                view = seen.setdefault(
                    change.task, dict.fromkeys(run.burst.truths[change.task].containers, "PENDING")
                )
                view[change.container] = change.status
                statuses = set(view.values())
                status = (
                    statuses.pop()
                    if len(statuses) == 1
                    else "PENDING"
                    if "PENDING" in statuses
                    else "RUNNING"
                )
                request = _request(run, change.task, status, {change.container: change.status})
                reporter.send(request["task"], request)
            await asyncio.Event().wait()
        finally:
            await reporter.close()


# -- the run ---------------------------------------------------------------------------------------

Driver = Callable[[_Run, str], Coroutine[Any, Any, None]]
REPORTERS: dict[str, Driver] = {
    "worker": _drive_worker,
    "agent-like": _drive_agent_like,
    "naive": _drive_naive,
}


class QuotaReport(msgspec.Struct, kw_only=True):
    machine: str
    shape: BurstShape
    quota: EcsQuota
    last_change_s: float
    reporters: list[ReporterFigures]
    targets: dict[str, bool]

    def render(self) -> str:
        head = (
            "reporter",
            "calls",
            "throttled",
            "thr>1s",
            "calls/task",
            "converged s",
            "floor s",
            "ratio",
            "bound s",
            "ratio",
        )
        rows = [
            (
                f.reporter,
                f"{f.calls:,}",
                f"{f.throttled:,}",
                f"{f.throttled_after_first_s:,}",
                f"{f.calls_per_task:.2f}",
                "-" if f.convergence_s is None else f"{f.convergence_s:.1f}",
                f"{f.floor_s:.1f}",
                "-" if f.ratio_to_floor is None else f"{f.ratio_to_floor:.2f}",
                f"{f.bound_s:.1f}",
                "-" if f.ratio_to_bound is None else f"{f.ratio_to_bound:.2f}",
            )
            for f in self.reporters
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        lines = [
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in [head, *rows]
        ]
        s = self.shape
        title = (
            f"quota bench on {self.machine}: {s.tasks:,} tasks of 1-{s.max_containers} containers "
            f"starting within {s.start_window_s:g} s, {s.stop_share:.0%} stopping within "
            f"{s.stop_window_s:g} s (last change at {self.last_change_s:.1f} s); "
            f"ECS quota {self.quota.refill_per_s:g}/s, burst {self.quota.burst}"
        )
        wrong = [
            f"{f.reporter}: {f.tasks_wrong} tasks wrong at the deadline"
            for f in self.reporters
            if f.convergence_s is None
        ]
        met = ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in self.targets.items())
        return "\n".join([title, *lines, *wrong, met])


async def run_quota_bench(
    shape: BurstShape,
    *,
    machine: str,
    quota: EcsQuota | None = None,
    deadline_s: float = 300.0,
    only: list[str] | None = None,
) -> QuotaReport:
    """Run each reporter (``only``: a subset of ``REPORTERS``) on the burst of ``shape``, one after
    the other on a fresh endpoint state enforcing ``quota`` (default ECS's); ``deadline_s``: the
    longest a reporter may take. Raises what makes a reporter fail."""
    quota = quota or EcsQuota()
    burst = make_burst(shape)
    faults = Faults(quota_burst=quota.burst, quota_refill_per_s=quota.refill_per_s)
    endpoint = LocalEcsEndpoint(seed=shape.seed, faults=faults)
    await endpoint.start()
    figures = []
    try:
        for name in only or list(REPORTERS):
            run = _Run(endpoint, burst, quota)
            converged = await _converge(run, REPORTERS[name](run, endpoint.url), deadline_s)
            figures.append(run.figures(name, converged))
    finally:
        await endpoint.stop()
    return QuotaReport(
        machine=machine,
        shape=shape,
        quota=quota,
        last_change_s=round(burst.last_change_at, 2),
        reporters=figures,
        targets=_targets(figures),
    )


async def _converge(
    run: _Run, drive: Coroutine[Any, Any, None], deadline_s: float
) -> tuple[float | None, int]:
    """Drive a reporter until the view converges or the deadline passes; a reporter that fails
    fails the benchmark."""
    driving = asyncio.create_task(drive)
    watching = asyncio.create_task(run.converge(deadline_s))
    try:
        await asyncio.wait([driving, watching], return_when=asyncio.FIRST_COMPLETED)
        if driving.done():
            driving.result()  # raises what stopped the reporter
        return await watching
    finally:
        for task in (driving, watching):
            task.cancel()
        await asyncio.gather(driving, watching, return_exceptions=True)


def _targets(figures: list[ReporterFigures]) -> dict[str, bool]:
    by = {f.reporter: f for f in figures}
    worker = by.get("worker")
    if worker is None:
        return {}
    targets = {
        "convergence <= 1.15 x floor": worker.ratio_to_floor is not None and worker.ratio_to_floor <= 1.15,
        "convergence <= 1.15 x bound": worker.ratio_to_bound is not None and worker.ratio_to_bound <= 1.15,
        "throttled after 1 s <= 1% of calls": worker.throttled_after_first_s <= 0.01 * worker.calls,
    }
    if "agent-like" in by:
        targets["fewer calls than agent-like"] = worker.calls < by["agent-like"].calls
    return targets
