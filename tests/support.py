"""Helpers shared by the integration tests: waiting, reading the group's offsets, running a worker
in process or as a `python -m worker run` process, and synthetic fleets launched at the endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from devkit.brokers import Broker
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.fleet import Fleet, FleetShape, Format, flag_counts, launch, synthetic_fleet
from devkit.topics import committed_offsets
from tests.conftest import Topics
from worker.pipeline import Worker

__all__ = [
    "BURST",
    "FLEET_PACE",
    "ROOT",
    "flags",
    "group_committed",
    "launched_fleet",
    "reap",
    "running",
    "spawn_worker",
    "wait_for",
]

ROOT = Path(__file__).resolve().parents[1]
FLEET_PACE = 0.05
"""The tests produce fleets twenty times faster than real time (``devkit.topics.produce_fleet``)."""
BURST = FleetShape(spread_s=4.0, run_s=(2.0, 6.0), stop_gap_s=6.0, running_share=0.0)
"""A burst of short lifecycles, every task stopping: about two seconds of events at FLEET_PACE
(the default worker_settings' stop linger covers its compressed stop gap)."""


async def launched_fleet(
    endpoint: LocalEcsEndpoint, tasks: int, *, seed: int, shape: FleetShape = BURST, fmt: Format = "canonical"
) -> Fleet:
    """A synthetic fleet whose definitions are registered and tasks run at ``endpoint``."""
    return await launch(synthetic_fleet(tasks, seed=seed, fmt=fmt, shape=shape), endpoint.url)


def flags(endpoint: LocalEcsEndpoint) -> dict[str, int]:
    """The endpoint's flags as counts (all 0 when nothing an ECS user would see is wrong)."""
    return flag_counts(endpoint.state())


async def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def group_committed(bootstrap: str, topics: Topics) -> dict[int, int]:
    """The consumer group's committed offset of every input partition, as the broker has it."""
    return await committed_offsets(bootstrap, topics.group, topics.input, range(topics.partitions))


def reap(*processes: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL each of ``processes`` still running (None: never started) and wait for it."""
    for process in processes:
        if process is not None and process.poll() is None:
            process.kill()
        if process is not None:
            process.wait(10)


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run ``worker`` in process until the block ends, then stop it gracefully."""
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 30)
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)


def spawn_worker(
    broker: Broker,
    endpoint: LocalEcsEndpoint,
    topics: Topics,
    log: Path | None = None,
    **extra: str,
) -> subprocess.Popen[bytes]:
    """A ``python -m worker run`` process with fast timers; JSON logs to ``log`` when given."""
    env = {
        **os.environ,
        "WORKER_BOOTSTRAP_SERVERS": broker.bootstrap,
        "WORKER_ECS_ENDPOINT_URL": endpoint.url,
        "WORKER_INPUT_TOPIC": topics.input,
        "WORKER_OUTCOME_TOPIC": topics.outcome,
        "WORKER_DLQ_TOPIC": topics.dlq,
        "WORKER_GROUP_ID": topics.group,
        "WORKER_METRICS_PORT": "0",
        "WORKER_LINGER_MS": "200",
        "WORKER_COMMIT_INTERVAL_MS": "200",
        "WORKER_SESSION_TIMEOUT_MS": "6000",
        "WORKER_REBALANCE_TIMEOUT_MS": "10000",
        "WORKER_DRAIN_TIMEOUT_MS": "5000",
        "WORKER_RATE_LIMIT_PER_S": "2000",
        "WORKER_RATE_LIMIT_BURST": "2000",
        "WORKER_DESCRIBE_BATCH_MS": "20",
        "WORKER_SETTLE_MS": "2000",
        "WORKER_STOP_LINGER_MS": "1500",
        "WORKER_LOG_LEVEL": "INFO" if log else "WARNING",
        "WORKER_LOG_FORMAT": "json",
        **extra,
    }
    command = [sys.executable, "-m", "worker", "run"]
    if log is None:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    with log.open("ab") as output:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
        )
