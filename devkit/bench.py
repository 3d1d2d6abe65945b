"""``make bench``: the worker's figures on one machine, in one run, as JSON and a table.

1. decode + coalesce in process: events per second, and the ratio to a bare msgspec decode of the
   same records;
2. end to end through one worker process (the embedded broker, the local ECS endpoint in its own
   process): events and submissions per second, and the ratio of submissions per second to a bare
   aiobotocore loop sending the same requests to the same endpoint at the same concurrency;
3. ECS calls per task lifecycle, on a paced standard mix;
4. event-to-acknowledgement latency p50/p99 at about half the saturated event rate;
5. resident memory per 100,000 active tasks.

Records are Docker-shaped (create, start, health_status, kill, die, stop, destroy, with the ECS
agent's labels), with a few percent duplicated and out-of-order.
"""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiokafka import AIOKafkaConsumer, TopicPartition

from devkit.broker import EmbeddedBroker, free_port
from devkit.fleet import Fleet, synthetic_fleet
from devkit.topics import create_topics, produce_fleet, read_all
from schemas.events import ContainerChange, TaskEvent
from schemas.records import Outcome
from worker.coalesce import Coalescer
from worker.config import Settings
from worker.intake import Intake
from worker.offsets import OffsetBook
from worker.submit import request_params
from worker.work import SourceRef

__all__ = ["BenchReport", "run_bench"]

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: the working directory of the worker processes (``devkit`` importable)."""
NS_PER_MS = 1_000_000


class BenchReport(msgspec.Struct, kw_only=True):
    machine: str
    decode_coalesce_events_per_s: float
    bare_decode_events_per_s: float
    decode_coalesce_ratio: float
    e2e_events_per_s: float
    e2e_submissions_per_s: float
    bare_aiobotocore_calls_per_s: float
    e2e_submission_ratio: float
    calls_per_task: float
    paced_events_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    linger_ms: int
    rss_bytes_per_active_task: float
    targets: dict[str, bool]

    def render(self) -> str:
        rows = [
            ("decode + coalesce", f"{self.decode_coalesce_events_per_s:,.0f} events/s"),
            ("bare msgspec decode", f"{self.bare_decode_events_per_s:,.0f} events/s"),
            ("  ratio (target >= 0.35)", f"{self.decode_coalesce_ratio:.2f}"),
            ("end to end, one worker", f"{self.e2e_events_per_s:,.0f} events/s"),
            ("  submissions", f"{self.e2e_submissions_per_s:,.0f} calls/s"),
            ("bare aiobotocore loop", f"{self.bare_aiobotocore_calls_per_s:,.0f} calls/s"),
            ("  ratio (target >= 1.0, stretch 1.3)", f"{self.e2e_submission_ratio:.2f}"),
            ("calls per task lifecycle (target <= 2.0)", f"{self.calls_per_task:.2f}"),
            ("paced rate", f"{self.paced_events_per_s:,.0f} events/s"),
            ("latency p50", f"{self.latency_p50_ms:.0f} ms"),
            (f"latency p99 (target <= {self.linger_ms + 100} ms)", f"{self.latency_p99_ms:.0f} ms"),
            ("memory per active task (target <= 2048 B)", f"{self.rss_bytes_per_active_task:,.0f} B"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"  {k:<{width}}  {v}" for k, v in rows]
        met = ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in self.targets.items())
        return "\n".join([f"ecs-state-worker bench on {self.machine}", *lines, met])


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model or platform.processor()}, Python {platform.python_version()}"


# -- 1. decode + coalesce in process -------------------------------------------------------------


def docker_records(fleet: Fleet) -> list[bytes]:
    """The fleet's records, stamped on its schedule's clock from now."""
    base = time.time_ns()
    return [fleet.render(step, fleet.observed_ns(step, base), "docker") for step in fleet.steps]


def bench_decode_coalesce(
    records: list[bytes], definitions: list[TaskDefinition], rounds: int = 3
) -> tuple[float, float]:
    """Best-of-``rounds`` events per second: (decode + validate + coalesce, bare msgspec decode).
    The coalescer knows ``definitions`` (as after one DescribeTaskDefinition per revision)."""
    bare = min(_timed(lambda: _bare_decode(records)) for _ in range(rounds))
    ours = min(_timed(lambda: _decode_and_coalesce(records, definitions)) for _ in range(rounds))
    return len(records) / ours, len(records) / bare


def _timed(work: Any) -> float:
    gc.collect()
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _bare_decode(records: list[bytes]) -> None:
    decode = msgspec.json.decode
    for record in records:
        decode(record)


def _decode_and_coalesce(records: list[bytes], definitions: list[TaskDefinition]) -> None:
    """The worker's own intake (``worker.intake``) over ``records``, acknowledging due submissions
    every 256 records."""
    settings = Settings(max_active_tasks=1_000_000, retired_cache=1_000_000)
    intake = Intake.from_settings(settings, OffsetBook())
    for definition in definitions:
        intake.coalescer.definitions.put(definition.arn, definition)
    intake.book.assign([("bench", 0)])
    release = intake.book.release
    now = 0
    for offset, record in enumerate(records):
        now += 10_000
        batch = intake.read("bench", 0, offset, record)
        assert batch is not None
        intake.admit(batch, now, now)
        if offset % 256 == 0:
            ready, resolved = intake.coalescer.due(now)
            for source in resolved:
                release(source)
            for submission in ready:
                for source in intake.coalescer.complete(submission, "acknowledged", now):
                    release(source)


# -- 5. memory -----------------------------------------------------------------------------------


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_memory(tasks: int = 100_000) -> float:
    """Resident bytes per active task: RUNNING tasks of 1-4 containers, acknowledged (clean)."""
    gc.collect()
    before = _rss_bytes()
    coalescer = Coalescer(
        linger_ns=0, max_active_tasks=tasks * 2, retired_cap=16, describe=False, settle_ns=0
    )
    for number in range(tasks):
        arn = f"arn:aws:ecs:us-east-1:111122223333:task/bench/{number:032x}"
        containers = tuple(
            ContainerChange(containerName=f"app-{i}", runtimeId=f"{number:060x}{i:04x}", status="RUNNING")
            for i in range(1 + number % 4)
        )
        event = TaskEvent(cluster="bench", task=arn, observedAt=number, containers=containers)
        coalescer.apply(event, SourceRef("bench", 0, number, 1), number)
        ready, _ = coalescer.due(number)
        for submission in ready:
            coalescer.complete(submission, "acknowledged", number)
    gc.collect()
    used = _rss_bytes() - before
    assert coalescer.active_count == tasks
    return used / tasks


# -- 2-4. end to end -----------------------------------------------------------------------------


@contextmanager
def _process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", *args], cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s")


async def _endpoint_state(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/_state") as answer:
        state: dict[str, Any] = await answer.json(content_type=None)
        return state


async def _reset_endpoint(url: str) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{url}/_reset") as answer:
        answer.raise_for_status()


async def _committed(bootstrap: str, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in partitions}
    finally:
        await consumer.stop()


async def _await_committed(
    bootstrap: str, group: str, topic: str, ends: dict[int, int], timeout_s: float
) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        committed = await _committed(bootstrap, group, topic, list(ends))
        if all(committed[p] >= end for p, end in ends.items()):
            return time.monotonic()
        await asyncio.sleep(0.1)
    raise RuntimeError("the worker did not commit every offset in time")


def _worker_env(
    bootstrap: str, endpoint: str, topic: str, group: str, metrics_port: int, **extra: str
) -> dict[str, str]:
    env = {
        "WORKER_BOOTSTRAP_SERVERS": bootstrap,
        "WORKER_ECS_ENDPOINT_URL": endpoint,
        "WORKER_INPUT_TOPIC": topic,
        "WORKER_OUTCOME_TOPIC": f"{topic}-outcomes",
        "WORKER_DLQ_TOPIC": f"{topic}-dlq",
        "WORKER_GROUP_ID": group,
        "WORKER_METRICS_PORT": str(metrics_port),
        "WORKER_RATE_LIMIT_PER_S": "100000",
        "WORKER_RATE_LIMIT_BURST": "100000",
        "WORKER_COMMIT_INTERVAL_MS": "200",
        "WORKER_LOG_LEVEL": "WARNING",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "bench"),
    }
    env.update(extra)
    return env


async def _run_worker_on(
    bootstrap: str, endpoint: str, topic: str, ends: dict[int, int], *, timeout_s: float = 240
) -> tuple[float, list[Outcome]]:
    """Start a worker on ``topic``; return its busy time and the outcome records."""
    port = free_port()
    env = _worker_env(bootstrap, endpoint, topic, f"bench-{topic}", port)
    with _process(["run"], env):
        await _wait_http(f"http://127.0.0.1:{port}/readyz")
        began = time.monotonic()
        done = await _await_committed(bootstrap, f"bench-{topic}", topic, ends, timeout_s)
    outcomes = [
        msgspec.json.decode(r.value, type=Outcome) for r in await read_all(bootstrap, f"{topic}-outcomes")
    ]
    return done - began, outcomes


async def bench_bare_loop(endpoint: str, requests: list[dict[str, Any]], concurrency: int) -> float:
    """Calls per second of a plain aiobotocore loop sending ``requests`` at ``concurrency``."""
    config = AioConfig(retries={"total_max_attempts": 1}, max_pool_connections=concurrency)
    async with get_session().create_client(
        "ecs", region_name="us-east-1", endpoint_url=endpoint, config=config,
        aws_access_key_id="bench", aws_secret_access_key="bench",
    ) as client:  # fmt: skip
        slots = asyncio.Semaphore(concurrency)

        async def call(params: dict[str, Any]) -> None:
            async with slots:
                await client.submit_task_state_change(**params)

        await asyncio.gather(*(call(p) for p in requests[: min(50, len(requests))]))  # warm the pool
        started = time.perf_counter()
        await asyncio.gather(*(call(p) for p in requests))
        return len(requests) / (time.perf_counter() - started)


def _span_per_s(outcomes: list[Outcome]) -> float:
    times = sorted(o.completedAt.timestamp() for o in outcomes)
    if len(times) < 2 or times[-1] == times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


async def run_bench(*, quick: bool = False) -> BenchReport:
    scale = 0.25 if quick else 1.0
    decode_fleet = synthetic_fleet(int(6000 * scale), seed=1, fmt="docker", spread_s=60)
    records = docker_records(decode_fleet)
    ours, bare = bench_decode_coalesce(records)
    memory = bench_memory(int(100_000 * scale))

    broker = EmbeddedBroker()
    await asyncio.to_thread(broker.start)
    endpoint_port = free_port()
    endpoint = f"http://127.0.0.1:{endpoint_port}"
    try:
        with _process(["ecs-endpoint", "--port", str(endpoint_port)]):
            await _wait_http(f"{endpoint}/_state")
            # 2. saturated: everything produced before the worker starts.
            saturated_fleet = synthetic_fleet(int(4000 * scale), seed=2, fmt="docker", spread_s=30)
            await create_topics(broker.bootstrap, {"bench-saturated": 4, "bench-saturated-outcomes": 4})
            ends = await produce_fleet(
                broker.bootstrap, "bench-saturated", saturated_fleet, fmt="docker", pace=None
            )
            busy_s, outcomes = await _run_worker_on(broker.bootstrap, endpoint, "bench-saturated", ends)
            events_per_s = sum(ends.values()) / busy_s
            submissions_per_s = _span_per_s(outcomes)
            await _reset_endpoint(endpoint)
            requests = [request_params(o.request) for o in outcomes]
            bare_calls = await bench_bare_loop(endpoint, requests, concurrency=64)
            await _reset_endpoint(endpoint)
            # 3-4. paced at about half the saturated rate, realistic lifecycles. Paced, a task costs
            # about two calls (RUNNING, STOPPED) where all-at-once it cost one: the saturated rate
            # in tasks per second is whichever of event decoding and calls binds first.
            events_per_task = len(saturated_fleet.steps) / len(saturated_fleet.expected)
            capacity_tasks_per_s = min(events_per_s / events_per_task, submissions_per_s / 2)
            spread = 20.0 * scale + 5
            tasks = max(50, int(0.5 * capacity_tasks_per_s * spread))
            paced_fleet = synthetic_fleet(tasks, seed=3, fmt="docker", spread_s=spread)
            await create_topics(broker.bootstrap, {"bench-paced": 4, "bench-paced-outcomes": 4})
            port = free_port()
            env = _worker_env(broker.bootstrap, endpoint, "bench-paced", "bench-paced", port)
            with _process(["run"], env):
                await _wait_http(f"http://127.0.0.1:{port}/readyz")
                produce_began = time.monotonic()
                paced_ends = await produce_fleet(broker.bootstrap, "bench-paced", paced_fleet, fmt="docker")
                produced_rate = sum(paced_ends.values()) / (time.monotonic() - produce_began)
                await _await_committed(broker.bootstrap, "bench-paced", "bench-paced", paced_ends, 240)
            state = await _endpoint_state(endpoint)
            paced_outcomes = [
                msgspec.json.decode(r.value, type=Outcome)
                for r in await read_all(broker.bootstrap, "bench-paced-outcomes")
            ]
    finally:
        broker.stop()
    latencies = [o.latencyMs for o in paced_outcomes if o.result == "acknowledged"]
    calls_per_task = state["calls"] / max(1, len(paced_fleet.expected))
    p99 = _percentile(latencies, 0.99)
    report = BenchReport(
        machine=_machine(),
        decode_coalesce_events_per_s=ours,
        bare_decode_events_per_s=bare,
        decode_coalesce_ratio=ours / bare,
        e2e_events_per_s=events_per_s,
        e2e_submissions_per_s=submissions_per_s,
        bare_aiobotocore_calls_per_s=bare_calls,
        e2e_submission_ratio=submissions_per_s / bare_calls if bare_calls else 0.0,
        calls_per_task=calls_per_task,
        paced_events_per_s=produced_rate,
        latency_p50_ms=statistics.median(latencies) if latencies else 0.0,
        latency_p99_ms=p99,
        linger_ms=500,
        rss_bytes_per_active_task=memory,
        targets={},
    )
    report.targets = {
        "decode ratio": report.decode_coalesce_ratio >= 0.35,
        "submission ratio": report.e2e_submission_ratio >= 1.0,
        "calls per task": calls_per_task <= 2.0,
        "latency p99": p99 <= 600,
        "memory": memory <= 2048,
    }
    return report
