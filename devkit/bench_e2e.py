"""The benchmark's end-to-end parts: worker and endpoint processes, the saturated run, the paced
run with a rolling handover, and the bare aiobotocore loop (see ``devkit.bench``)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiobotocore.session import get_session

from devkit.broker import free_port
from devkit.fleet import Fleet
from devkit.topics import committed_offsets, create_topics, produce_fleet, read_all, repartition_origins
from schemas.records import Outcome
from worker.config import InputKeying, Settings, repartition_topic
from worker.submit import client_config

__all__ = [
    "ROOT",
    "Paced",
    "await_committed",
    "bench_bare_loop",
    "endpoint_state",
    "paced_run",
    "process",
    "reset_endpoint",
    "run_worker_on",
    "span_per_s",
    "stop_process",
    "wait_http",
    "worker_env",
]

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: the working directory of the worker processes (``devkit`` importable)."""
_GROUP_TIMEOUTS = {
    "WORKER_SESSION_TIMEOUT_MS": "6000",
    "WORKER_REBALANCE_TIMEOUT_MS": "12000",
    "WORKER_DRAIN_TIMEOUT_MS": "5000",
}
"""The fault harness's: with the defaults (45 s, 60 s) the embedded broker takes some 20 s to form
the group at each membership change, and the handover's pause would be all the run measures."""


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A ``python -m worker ARGS`` process, stopped with SIGTERM (then SIGKILL) at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", *args], cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_http(url: str, timeout_s: float = 30) -> None:
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


async def endpoint_state(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/_state") as answer:
        state: dict[str, Any] = await answer.json(content_type=None)
        return state


async def reset_endpoint(url: str) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{url}/_reset") as answer:
        answer.raise_for_status()


async def await_committed(
    bootstrap: str, group: str, topic: str, ends: dict[int, int], timeout_s: float
) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        committed = await committed_offsets(bootstrap, group, topic, list(ends))
        if all(committed[p] >= end for p, end in ends.items()):
            return time.monotonic()
        await asyncio.sleep(0.1)
    raise RuntimeError("the worker did not commit every offset in time")


def worker_env(
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
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    env.update(extra)
    return env


def _ends(records: list[Any]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends


async def run_worker_on(
    bootstrap: str,
    endpoint: str,
    topic: str,
    ends: dict[int, int],
    *,
    timeout_s: float = 240,
    keying: InputKeying = "task",
) -> tuple[float, list[Outcome]]:
    """Start a worker on ``topic``; return its busy time (with ``any``: until the repartition
    topic is committed too) and the outcome records."""
    port = free_port()
    group = f"bench-{topic}"
    env = worker_env(bootstrap, endpoint, topic, group, port, WORKER_INPUT_KEYING=keying)
    with process(["run"], env):
        await wait_http(f"http://127.0.0.1:{port}/readyz")
        began = time.monotonic()
        done = await await_committed(bootstrap, group, topic, ends, timeout_s)
        if keying == "any":
            rekeyed = repartition_topic(group)
            written = _ends(await read_all(bootstrap, rekeyed))
            done = await await_committed(bootstrap, group, rekeyed, written, timeout_s)
    outcomes = [
        msgspec.json.decode(r.value, type=Outcome) for r in await read_all(bootstrap, f"{topic}-outcomes")
    ]
    return done - began, outcomes


async def bench_bare_loop(endpoint: str, requests: list[dict[str, Any]], concurrency: int) -> float:
    """Calls per second of a plain aiobotocore loop sending ``requests`` at ``concurrency``.

    Fair to both sides: the client is configured as the worker's (``worker.submit.client_config``:
    the pool sized to the concurrency, botocore's retries off, no parameter validation, a fixed
    User-Agent), and the benchmark's own objects (the fleet, the outcome records) are frozen out of
    the garbage collector's way (``gc.freeze``) during the loop, as in a process of its own."""
    settings = Settings(concurrency=concurrency, ecs_endpoint_url=endpoint, region="us-east-1")
    async with get_session().create_client(
        "ecs", endpoint_url=endpoint, config=client_config(settings),
        aws_access_key_id="bench", aws_secret_access_key="bench",
    ) as client:  # fmt: skip
        slots = asyncio.Semaphore(concurrency)

        async def call(params: dict[str, Any]) -> None:
            async with slots:
                await client.submit_task_state_change(**params)

        await asyncio.gather(*(call(p) for p in requests[: min(50, len(requests))]))  # warm the pool
        gc.collect()
        gc.freeze()
        try:
            started = time.perf_counter()
            await asyncio.gather(*(call(p) for p in requests))
            return len(requests) / (time.perf_counter() - started)
        finally:
            gc.unfreeze()


def span_per_s(outcomes: list[Outcome]) -> float:
    times = sorted(o.completedAt.timestamp() for o in outcomes)
    if len(times) < 2 or times[-1] == times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


@dataclass
class Paced:
    """What the paced run left: the endpoint's ``/_state``, the outcome records, each input
    record's production time ((partition, offset) -> wall ns), the production rate, the
    rebalances the rolling handover made and when it began (wall ns)."""

    state: dict[str, Any]
    outcomes: list[Outcome]
    produced_at: dict[tuple[int, int], int]
    events_per_s: float
    rebalances: int
    handover_at_ns: int
    origins: dict[tuple[int, int], tuple[int, int]]
    """With ``input_keying = any``: each repartition record's input record."""


async def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int | None:
    """SIGTERM ``proc`` and wait for it without blocking the event loop (the producer runs on)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout_s)
    except TimeoutError:
        proc.kill()
        return proc.wait()


async def paced_run(
    bootstrap: str, endpoint: str, fleet: Fleet, *, pace: float, topic: str, keying: InputKeying = "task"
) -> Paced:
    """One worker takes ``fleet`` (launched) produced at ``pace``; halfway through production a
    second worker joins and the first is stopped with SIGTERM, as a rolling deploy does (two
    rebalances). Ends once every offset is committed. ``keying`` any: produced unkeyed
    (round-robin), re-keyed by the workers."""
    await create_topics(bootstrap, {topic: 4, f"{topic}-outcomes": 4})
    timers = fleet.worker_timers(pace)
    extra = {
        "WORKER_STOP_LINGER_MS": str(timers["stop_linger_ms"]),
        "WORKER_SETTLE_MS": str(timers["settle_ms"]),
        "WORKER_INPUT_KEYING": keying,
        "WORKER_REPARTITION_PURGE_INTERVAL_MS": "0",
        **_GROUP_TIMEOUTS,
    }
    ports = [free_port(), free_port()]
    env = [worker_env(bootstrap, endpoint, topic, topic, port, **extra) for port in ports]
    produced_at: dict[tuple[int, int], int] = {}
    with process(["run"], env[0]) as first:
        await wait_http(f"http://127.0.0.1:{ports[0]}/readyz")
        began = time.monotonic()
        producing = asyncio.create_task(
            produce_fleet(
                bootstrap, topic, fleet, pace=pace, produced_at=produced_at, unkeyed=keying == "any"
            )
        )
        await asyncio.sleep(fleet.duration_s * pace / 2)
        handover_at_ns = time.time_ns()
        with process(["run"], env[1]):
            await wait_http(f"http://127.0.0.1:{ports[1]}/readyz", timeout_s=60)
            await stop_process(first)
            ends = await producing
            events_per_s = sum(ends.values()) / (time.monotonic() - began)
            await await_committed(bootstrap, topic, topic, ends, 240)
            origins: dict[tuple[int, int], tuple[int, int]] = {}
            if keying == "any":
                written = await read_all(bootstrap, repartition_topic(topic))
                await await_committed(bootstrap, topic, repartition_topic(topic), _ends(written), 240)
                origins = repartition_origins(written, topic)
    outcomes = [
        msgspec.json.decode(r.value, type=Outcome) for r in await read_all(bootstrap, f"{topic}-outcomes")
    ]
    state = await endpoint_state(endpoint)
    return Paced(state, outcomes, produced_at, events_per_s, 2, handover_at_ns, origins)
