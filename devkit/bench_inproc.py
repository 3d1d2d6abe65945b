"""The benchmark's in-process parts (see ``devkit.bench``): decode + coalesce against a bare msgspec
decode of the same records, and resident memory per active task."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from devkit.fleet import Fleet
from schemas.events import ContainerChange, TaskEvent
from worker.coalesce import Coalescer
from worker.config import Settings
from worker.intake import Intake
from worker.offsets import OffsetBook
from worker.task_definition import TaskDefinition
from worker.work import SourceRef

__all__ = ["bench_decode_coalesce", "bench_memory", "bench_memory_fresh", "docker_records"]


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


def bench_memory_fresh(tasks: int = 100_000) -> float:
    """``bench_memory`` in a fresh interpreter: what ran before in this process (freed but still
    resident heap, reused by the tasks) would make the figure look smaller than a worker's."""
    code = f"from devkit.bench_inproc import bench_memory; print(bench_memory({int(tasks)}))"
    root = Path(__file__).resolve().parent.parent
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return float(done.stdout.strip())


def bench_memory(tasks: int = 100_000) -> float:
    """Resident bytes per active task: RUNNING tasks of 1-4 containers, acknowledged (clean).
    Measured in this process: see ``bench_memory_fresh``."""
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
