"""The worker processes of a scenario (``python -m worker run``, one consumer group) and the
scenario's running state: the parts' addresses, the live and stopped workers, the timeline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from devkit.broker import free_port
from devkit.fleet import worker_timers
from devkit.harness.report import FaultRecord
from devkit.harness.scenarios import Scenario

__all__ = ["Run", "WorkerProcess", "wait_exit", "wait_ready"]

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
"""The repository root (this is devkit/harness/workers.py): the workers' working directory."""


@dataclass
class WorkerProcess:
    """One ``python -m worker run``; ``health_port`` serves its ``/readyz``."""

    name: str
    process: subprocess.Popen[bytes]
    health_port: int
    started_at: float
    stopping: bool = False


@dataclass
class Run:
    """A running scenario: where its parts are, its workers (live, then dead), its timeline
    (``note``) and the problems seen on the way."""

    scenario: Scenario
    log_dir: Path
    bootstrap: str
    endpoint_url: str
    group: str
    input_topic: str
    outcome_topic: str
    dlq_topic: str
    per_worker_rate: float
    per_worker_burst: int
    rng: random.Random
    t0: float = 0.0
    live: list[WorkerProcess] = field(default_factory=list)
    dead: list[WorkerProcess] = field(default_factory=list)
    records: list[FaultRecord] = field(default_factory=list)
    signalled: list[tuple[str, float]] = field(default_factory=list)
    """(worker, wall-clock time) of each SIGTERM a fault sent (``devkit.harness.handover``)."""
    problems: list[str] = field(default_factory=list)
    spawned: int = 0
    unclean_exits: int = 0
    exit_s: float = 0.0

    def note(self, what: str) -> None:
        at = round(time.monotonic() - self.t0, 1) if self.t0 else 0.0
        self.records.append(FaultRecord(at, what))
        log.info("[%s] %.1fs %s", self.scenario.name, at, what)

    def spawn(self) -> WorkerProcess:
        """Start one more worker; its output goes to ``log_dir/NAME.log``."""
        name = f"w{self.spawned}"
        self.spawned += 1
        port = free_port()
        with open(self.log_dir / f"{name}.log", "ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker", "run"],
                cwd=ROOT,
                env=self._environment(name, port),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        proc = WorkerProcess(name, process, port, time.monotonic())
        self.live.append(proc)
        return proc

    def _environment(self, name: str, health_port: int) -> dict[str, str]:
        """The harness's environment with the worker's settings: this scenario's parts and timeouts,
        and a stop linger and settle time scaled to the fleet's pace."""
        s = self.scenario
        timers = worker_timers(s.pace, s.shape.stop_gap_s)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "harness"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "harness"),
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            "WORKER_BOOTSTRAP_SERVERS": self.bootstrap,
            "WORKER_ECS_ENDPOINT_URL": self.endpoint_url,
            "WORKER_INPUT_TOPIC": self.input_topic,
            "WORKER_OUTCOME_TOPIC": self.outcome_topic,
            "WORKER_DLQ_TOPIC": self.dlq_topic,
            "WORKER_GROUP_ID": self.group,
            "WORKER_CLIENT_ID": f"{s.name}-{name}",
            "WORKER_METRICS_PORT": str(health_port),
            "WORKER_LINGER_MS": str(s.linger_ms),
            "WORKER_COMMIT_INTERVAL_MS": "200",
            "WORKER_SESSION_TIMEOUT_MS": str(s.session_timeout_ms),
            "WORKER_REBALANCE_TIMEOUT_MS": str(s.rebalance_timeout_ms),
            "WORKER_DRAIN_TIMEOUT_MS": str(s.drain_timeout_ms),
            "WORKER_CALL_TIMEOUT_MS": "5000",
            "WORKER_MAX_ATTEMPTS": "40",
            "WORKER_RETRY_DEADLINE_MS": "60000",
            "WORKER_RETRY_INITIAL_MS": "50",
            "WORKER_RETRY_MAX_MS": "1000",
            "WORKER_RATE_LIMIT_PER_S": f"{self.per_worker_rate:.3f}",
            "WORKER_RATE_LIMIT_BURST": str(self.per_worker_burst),
            "WORKER_STOP_LINGER_MS": str(timers["stop_linger_ms"]),
            "WORKER_SETTLE_MS": str(timers["settle_ms"]),
            "WORKER_INPUT_KEYING": s.input_keying,
            "WORKER_REPARTITION_REORDER_MS": str(s.reorder_ms),
            # Not purged: the report reads the repartition topic back to account for every record.
            "WORKER_REPARTITION_PURGE_INTERVAL_MS": "0",
            "WORKER_LOG_LEVEL": "INFO",
            "WORKER_LOG_FORMAT": "json",
        }
        env.pop("WORKER_CONFIG", None)
        env.pop("WORKER_GROUP_INSTANCE_ID", None)
        return env

    def pick(self, index: int | None) -> WorkerProcess | None:
        candidates = [p for p in self.live if not p.stopping]
        if not candidates:
            return None
        if index is not None:
            return candidates[index % len(candidates)]
        return self.rng.choice(candidates)

    async def terminate(self, proc: WorkerProcess, *, kill: bool = False) -> int | None:
        """SIGTERM (drain) or SIGKILL one worker and wait for it; return its exit code."""
        proc.stopping = True
        early = proc.process.poll()
        if early is not None:  # it died on its own: a crash the harness did not cause
            self.problems.append(f"{proc.name} had exited on its own with code {early}")
            self.unclean_exits += 1
        else:
            proc.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        began = time.monotonic()
        code = await wait_exit(proc.process, 10.0 if kill else 60.0)
        took = time.monotonic() - began
        if code is None:
            self.problems.append(f"{proc.name} did not exit within {took:.0f}s of SIGTERM: killed")
            proc.process.kill()
            code = await wait_exit(proc.process, 10.0)
            self.unclean_exits += 1
        elif not kill and early is None:
            self.exit_s = max(self.exit_s, took)
            # The drain, then aiokafka's leave, which waits for a join in progress.
            allowed = (self.scenario.drain_timeout_ms + self.scenario.rebalance_timeout_ms) / 1000 + 3.0
            if code != 0 or took > allowed:
                self.problems.append(
                    f"{proc.name} exited {code} {took:.1f}s after SIGTERM ({allowed:g}s allowed)"
                )
                self.unclean_exits += 1
        if proc in self.live:
            self.live.remove(proc)
        self.dead.append(proc)
        if not kill:
            self.note(f"{proc.name} exited {code} after {time.monotonic() - began:.1f}s")
        return code

    async def kill_all(self) -> None:
        for proc in [*self.live, *self.dead]:
            if proc.process.poll() is None:
                proc.process.kill()
            await wait_exit(proc.process, 10.0)


async def wait_exit(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.05)
    return process.poll()


async def wait_ready(
    session: aiohttp.ClientSession, procs: Sequence[WorkerProcess], timeout_s: float
) -> bool:
    """Every worker's ``/readyz`` answers 200 (it has had a partition assignment)."""
    deadline = time.monotonic() + timeout_s
    waiting = list(procs)
    while waiting and time.monotonic() < deadline:
        for proc in list(waiting):
            if proc.process.poll() is not None:
                return False
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(f"http://127.0.0.1:{proc.health_port}/readyz") as answer:
                    if answer.status == 200:
                        waiting.remove(proc)
        if waiting:
            await asyncio.sleep(0.2)
    return not waiting
