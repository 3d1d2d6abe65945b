"""The fault harness: run the worker under scheduled faults on real parts, then check its promises.

A ``Scenario`` runs on its own embedded broker (Tansu) whose *advertised* listener is a
``TcpProxy`` in front of it, so that cutting the proxy cuts every client's broker connection; the
local ECS endpoint runs in-process with a token-bucket quota like ECS's. N worker processes
(``python -m worker run``) share one consumer group. A synthetic fleet is produced, paced and keyed
by task ARN, with a few poison records, while faults are injected at scheduled moments: SIGKILL or
SIGTERM of a worker and its restart, a worker joining or leaving, endpoint fault windows
(throttling, server errors, latency, dropped connections) and broker cuts.

Once production and faults are over, the harness waits for quiescence (every task final at the
endpoint and the group's committed offsets at the produced end offsets), stops the workers with
SIGTERM, and checks the invariants from the broker's and the endpoint's own records:

1. every task's final state is acknowledged by the endpoint;
2. the endpoint saw no status regression;
3. every input record is accounted for: the group's committed offsets reached the produced end
   offsets, every poison record is in the dead-letter topic (by its ``errors.*`` headers), and
   (1) holds. Records covered by outcome records' ``sources`` are counted apart from the others
   (resolved without a call: unchanged, duplicate, late or still-PENDING events);
4. submissions stay within bounds: a *duplicate* is an acknowledged call whose request equals the
   previous acknowledged one for that task (recorded by the endpoint). Without a group
   disruption there is none; each disruption (SIGKILL, SIGTERM, join, leave, restart, broker
   cut) may replay or forget a task's last state once, so a task may see at most one duplicate
   per disruption. Distinct requests per task: 2 per lifecycle (RUNNING, STOPPED) as a rule; at
   most one RUNNING plus one per container exit (exits further apart than the linger, with
   delivery jitter, are not coalesced), plus one per disruption (a drain flushes an
   intermediate state, a new owner reports from a partial view).

``python -m devkit.harness [--full] [--json]`` runs the scenarios and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devkit.broker import EmbeddedBroker, free_port
from devkit.demo import POISON_RECORDS
from devkit.ecs_endpoint import Faults, LocalEcsEndpoint
from devkit.fleet import Fleet, final_state_mismatches, synthetic_fleet
from devkit.proxy import CutMode, TcpProxy
from devkit.topics import create_topics, read_all
from schemas.records import Outcome

__all__ = [
    "FAST_SCENARIOS",
    "SLOW_SCENARIOS",
    "Fault",
    "FaultRecord",
    "Report",
    "Scenario",
    "render_table",
    "run_scenario",
]

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
FaultKind = Literal["kill", "term", "join", "leave", "endpoint", "broker_cut"]
DISRUPTIONS: frozenset[str] = frozenset({"kill", "term", "join", "leave", "broker_cut"})


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """One fault, ``at_s`` seconds after production starts.

    - ``kill`` / ``term``: SIGKILL / SIGTERM a worker (``worker`` index among the live ones, or a
      seeded random one), then start a replacement ``restart_after_s`` later (None: no restart);
    - ``join``: start one more worker; ``leave``: SIGTERM a worker for good;
    - ``endpoint``: apply ``endpoint`` faults (rates, latency; the quota is the scenario's) for
      ``duration_s``;
    - ``broker_cut``: cut every broker connection at the proxy for ``duration_s`` (``cut_mode``
      refuse: connections reset; blackhole: held open, unanswered).
    """

    at_s: float
    kind: FaultKind
    duration_s: float = 0.0
    restart_after_s: float | None = None
    worker: int | None = None
    endpoint: Faults | None = None
    cut_mode: CutMode = "refuse"


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    tasks: int = 120
    workers: int = 2
    spread_s: float = 6.0
    """Task starts are spread over this many seconds; each lifecycle then lasts up to ~4.5 s."""
    running_share: float = 0.1
    partitions: int = 6
    poison: int = 3
    faults: tuple[Fault, ...] = ()
    quota_burst: int = 100
    quota_refill_per_s: float = 60.0
    """The endpoint's token bucket (ECS: ~200 burst, ~120/s), shared by the workers: each gets a
    share of it as its own rate limit."""
    seed: int = 7
    quiesce_timeout_s: float = 90.0
    linger_ms: int = 200
    drain_timeout_ms: int = 5_000
    session_timeout_ms: int = 6_000
    rebalance_timeout_ms: int = 12_000


class FaultRecord(msgspec.Struct, frozen=True):
    at_s: float
    what: str


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    seed: int
    events: int
    """Input records produced (fleet events and poison records)."""
    tasks: int
    workers: int
    faults_injected: int
    faults: list[FaultRecord]
    """The timeline: each fault as injected, restarts, exits, production and quiescence."""
    lost: int
    """Tasks not in their final state at the endpoint, plus poison records missing from the DLQ."""
    regressions: int
    calls: int
    """Calls that reached the endpoint, retries included."""
    submissions: int
    """Acknowledged calls (the endpoint accepted and applied them)."""
    duplicate_submissions: int
    tasks_with_duplicates: int
    max_duplicates_per_task: int
    duplicate_bound_per_task: int
    max_distinct_per_task: int
    tasks_over_distinct_bound: int
    """Tasks with more distinct requests than 1 + containers + disruptions (must be 0)."""
    tasks_by_distinct: dict[int, int]
    """How many tasks had 1, 2, 3... distinct acknowledged requests (2 per lifecycle as a rule)."""
    calls_per_task: float
    throttled: int
    """Calls answered ThrottlingException (injected and quota)."""
    quota_throttled: int
    """Of which by the quota: the workers' rate limits were not respected."""
    server_errors: int
    dropped: int
    outcome_records: int
    records_covered: int
    """Input records named in an outcome record's ``sources``."""
    records_replayed: int
    """Input records named in more than one outcome record (re-read after a crash or a cut)."""
    records_dead_lettered: int
    records_other: int
    """Resolved without a call: unchanged, duplicate, late or still-PENDING events."""
    uncommitted: int
    """Records at or past the group's committed offsets at the end (must be 0)."""
    unclean_exits: int
    """Workers that crashed, or did not exit 0 on SIGTERM within the drain deadline plus the
    rebalance timeout (aiokafka's leave waits for a join in progress) plus 3 s."""
    max_exit_s: float
    """The longest time from SIGTERM to a worker's exit."""
    drain_s: float | None
    """From the end of production and faults to quiescence; None: never quiescent."""
    wall_s: float
    ok: bool = False
    problems: list[str] = msgspec.field(default_factory=list)
    log_dir: str | None = None
    """Kept only when the scenario failed: every worker's log."""


# -- the endpoint, recording what it accepts ------------------------------------------------------


class _RecordingEndpoint(LocalEcsEndpoint):
    """The local endpoint, also recording each accepted request per task (to count duplicates)
    and each quota refusal; fault windows keep the quota bucket's level instead of refilling it."""

    def __init__(self, *, faults: Faults, seed: int) -> None:
        self.accepted_requests: dict[tuple[str, str], list[bytes]] = defaultdict(list)
        self.quota_refusals = 0
        super().__init__(faults=faults, seed=seed)

    def set_faults(self, faults: Faults) -> None:
        previous: Faults | None = getattr(self, "_faults", None)
        tokens: float | None = getattr(self, "_tokens", None)
        refilled_at: float | None = getattr(self, "_refilled_at", None)
        super().set_faults(faults)
        quota = (faults.quota_burst, faults.quota_refill_per_s)
        same = previous is not None and (previous.quota_burst, previous.quota_refill_per_s) == quota
        if same and tokens is not None and refilled_at is not None:
            self._tokens, self._refilled_at = tokens, refilled_at

    def _take_token(self) -> bool:
        taken = super()._take_token()
        if not taken:
            self.quota_refusals += 1
        return taken

    def _apply(self, body: dict[str, Any]) -> None:
        super()._apply(body)
        key = (str(body["cluster"]), str(body["task"]))
        self.accepted_requests[key].append(msgspec.json.encode(body, order="sorted"))


# -- worker processes -----------------------------------------------------------------------------


@dataclass
class _Proc:
    name: str
    process: subprocess.Popen[bytes]
    health_port: int
    started_at: float
    stopping: bool = False


@dataclass
class _Run:
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
    live: list[_Proc] = field(default_factory=list)
    dead: list[_Proc] = field(default_factory=list)
    records: list[FaultRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    spawned: int = 0
    unclean_exits: int = 0
    exit_s: float = 0.0

    def note(self, what: str) -> None:
        at = round(time.monotonic() - self.t0, 1) if self.t0 else 0.0
        self.records.append(FaultRecord(at, what))
        log.info("[%s] %.1fs %s", self.scenario.name, at, what)

    def spawn(self) -> _Proc:
        s = self.scenario
        name = f"w{self.spawned}"
        self.spawned += 1
        port = free_port()
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "harness"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "harness"),
            "WORKER_BOOTSTRAP_SERVERS": self.bootstrap,
            "WORKER_ECS_ENDPOINT_URL": self.endpoint_url,
            "WORKER_INPUT_TOPIC": self.input_topic,
            "WORKER_OUTCOME_TOPIC": self.outcome_topic,
            "WORKER_DLQ_TOPIC": self.dlq_topic,
            "WORKER_GROUP_ID": self.group,
            "WORKER_CLIENT_ID": f"{s.name}-{name}",
            "WORKER_METRICS_PORT": str(port),
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
            "WORKER_LOG_LEVEL": "INFO",
            "WORKER_LOG_FORMAT": "json",
        }
        env.pop("WORKER_CONFIG", None)
        env.pop("WORKER_GROUP_INSTANCE_ID", None)
        with open(self.log_dir / f"{name}.log", "ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "worker", "run"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        proc = _Proc(name, process, port, time.monotonic())
        self.live.append(proc)
        return proc

    def pick(self, index: int | None) -> _Proc | None:
        candidates = [p for p in self.live if not p.stopping]
        if not candidates:
            return None
        if index is not None:
            return candidates[index % len(candidates)]
        return self.rng.choice(candidates)

    async def terminate(self, proc: _Proc, *, kill: bool = False) -> int | None:
        """SIGTERM (drain) or SIGKILL one worker and wait for it; return its exit code."""
        proc.stopping = True
        early = proc.process.poll()
        if early is not None:  # it died on its own: a crash the harness did not cause
            self.problems.append(f"{proc.name} had exited on its own with code {early}")
            self.unclean_exits += 1
        else:
            proc.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        began = time.monotonic()
        code = await _wait_exit(proc.process, 10.0 if kill else 60.0)
        took = time.monotonic() - began
        if code is None:
            self.problems.append(f"{proc.name} did not exit within {took:.0f}s of SIGTERM: killed")
            proc.process.kill()
            code = await _wait_exit(proc.process, 10.0)
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
            await _wait_exit(proc.process, 10.0)


async def _wait_exit(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.05)
    return process.poll()


async def _wait_ready(session: aiohttp.ClientSession, procs: Sequence[_Proc], timeout_s: float) -> bool:
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


# -- faults ---------------------------------------------------------------------------------------


def _combine(base: Faults, windows: Sequence[Faults]) -> Faults:
    return Faults(
        throttle_rate=max([base.throttle_rate, *(w.throttle_rate for w in windows)]),
        error_rate=max([base.error_rate, *(w.error_rate for w in windows)]),
        latency_ms=max([base.latency_ms, *(w.latency_ms for w in windows)]),
        drop_rate=max([base.drop_rate, *(w.drop_rate for w in windows)]),
        quota_burst=base.quota_burst,
        quota_refill_per_s=base.quota_refill_per_s,
    )


def _describe(faults: Faults) -> str:
    parts = [
        f"{name} {value:g}"
        for name, value in (
            ("throttle", faults.throttle_rate),
            ("errors", faults.error_rate),
            ("latency_ms", faults.latency_ms),
            ("drops", faults.drop_rate),
        )
        if value
    ]
    return ", ".join(parts) or "none"


class _Injector:
    def __init__(self, run: _Run, endpoint: _RecordingEndpoint, proxy: TcpProxy, base: Faults) -> None:
        self._run = run
        self._endpoint = endpoint
        self._proxy = proxy
        self._base = base
        self._windows: list[Faults] = []

    async def inject(self, fault: Fault) -> None:
        run = self._run
        await asyncio.sleep(max(0.0, run.t0 + fault.at_s - time.monotonic()))
        if fault.kind in ("kill", "term", "leave"):
            victim = run.pick(fault.worker)
            if victim is None:
                run.note(f"{fault.kind}: no live worker")
                return
            kill = fault.kind == "kill"
            run.note(f"{'SIGKILL' if kill else 'SIGTERM'} {victim.name} (pid {victim.process.pid})")
            await run.terminate(victim, kill=kill)
            if fault.kind != "leave" and fault.restart_after_s is not None:
                await asyncio.sleep(fault.restart_after_s)
                run.note(f"restart: {run.spawn().name} replaces {victim.name}")
        elif fault.kind == "join":
            run.note(f"join: {run.spawn().name}")
        elif fault.kind == "endpoint":
            window = fault.endpoint or Faults()
            self._windows.append(window)
            self._endpoint.set_faults(_combine(self._base, self._windows))
            run.note(f"endpoint faults for {fault.duration_s:g}s: {_describe(window)}")
            await asyncio.sleep(fault.duration_s)
            self._windows.remove(window)
            self._endpoint.set_faults(_combine(self._base, self._windows))
            run.note(f"endpoint faults over: {_describe(window)}")
        elif fault.kind == "broker_cut":
            aborted = self._proxy.cut(fault.cut_mode)
            run.note(f"broker cut ({fault.cut_mode}) for {fault.duration_s:g}s: {aborted} connections")
            await asyncio.sleep(fault.duration_s)
            self._proxy.restore()
            run.note("broker connections restored")


# -- production and observation -------------------------------------------------------------------


@dataclass
class _Produced:
    ends: dict[int, int]
    poison: list[tuple[int, int]]
    """(partition, offset) of each poison record."""
    events: int


async def _produce(bootstrap: str, topic: str, fleet: Fleet, poison: int, t0: float) -> _Produced:
    """Send the fleet's steps on its schedule (keyed by task ARN) and ``poison`` poison records;
    end offsets come from the broker's acknowledgements (Tansu's ListOffsets can lag)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, request_timeout_ms=120_000)
    await producer.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        poison_futures: list[asyncio.Future[Any]] = []
        every = max(1, len(fleet.steps) // (poison + 1))
        for index, step in enumerate(fleet.steps):
            delay = t0 + step.at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            value = fleet.render(step, time.time_ns())
            pending.append(await producer.send(topic, value=value, key=step.task.encode()))
            if index % every == every - 1 and len(poison_futures) < poison:
                bad = POISON_RECORDS[len(poison_futures) % len(POISON_RECORDS)]
                key = f"poison-{len(poison_futures)}".encode()
                poison_futures.append(await producer.send(topic, value=bad, key=key))
        metas = await asyncio.gather(*pending, *poison_futures)
        ends: dict[int, int] = {}
        for meta in metas:
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        bad_at = [(m.partition, m.offset) for m in metas[len(pending) :]]
        return _Produced(ends, bad_at, len(metas))
    finally:
        await producer.stop()


async def _committed(consumer: AIOKafkaConsumer, topic: str, partitions: int) -> dict[int, int]:
    result: dict[int, int] = {}
    for partition in range(partitions):
        offset = await consumer.committed(TopicPartition(topic, partition))
        result[partition] = offset or 0
    return result


async def _quiesce(
    run: _Run, endpoint: LocalEcsEndpoint, fleet: Fleet, ends: dict[int, int], consumer: AIOKafkaConsumer
) -> tuple[bool, dict[int, int]]:
    deadline = time.monotonic() + run.scenario.quiesce_timeout_s
    want = {p: ends.get(p, 0) for p in range(run.scenario.partitions)}
    committed: dict[int, int] = {}
    while time.monotonic() < deadline:
        if not final_state_mismatches(fleet.expected, endpoint.state()):
            with contextlib.suppress(Exception):  # the coordinator may be moving: ask again
                committed = await asyncio.wait_for(
                    _committed(consumer, run.input_topic, run.scenario.partitions), 10
                )
            if committed == want:
                return True, committed
        await asyncio.sleep(0.25)
    return False, committed


# -- the scenario ---------------------------------------------------------------------------------


async def run_scenario(scenario: Scenario, *, keep_logs: bool = False) -> Report:
    """Run one scenario on fresh parts and report; logs are kept (``Report.log_dir``) on failure."""
    began = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix=f"faults-{scenario.name}-"))
    fleet = synthetic_fleet(
        scenario.tasks, seed=scenario.seed, spread_s=scenario.spread_s, running_share=scenario.running_share
    )
    base = Faults(quota_burst=scenario.quota_burst, quota_refill_per_s=scenario.quota_refill_per_s)
    peak_workers = scenario.workers + sum(1 for f in scenario.faults if f.kind == "join")
    proxy_port = free_port()
    # No log_file: EmbeddedBroker.start() leaves that file open (a ResourceWarning).
    broker = EmbeddedBroker(advertised=f"127.0.0.1:{proxy_port}")
    proxy = TcpProxy(target_port=broker.port, port=proxy_port)
    endpoint = _RecordingEndpoint(faults=base, seed=scenario.seed)
    run = _Run(
        scenario=scenario,
        log_dir=log_dir,
        bootstrap=proxy.address,
        endpoint_url="",
        group=f"faults-{scenario.name}",
        input_topic="container-events",
        outcome_topic="ecs-state-outcomes",
        dlq_topic="ecs-state-dlq",
        per_worker_rate=scenario.quota_refill_per_s / peak_workers,
        per_worker_burst=max(1, scenario.quota_burst // peak_workers),
        rng=random.Random(scenario.seed),
    )
    injections: list[asyncio.Task[None]] = []
    consumer: AIOKafkaConsumer | None = None
    report: Report | None = None
    try:
        await proxy.start()
        await asyncio.to_thread(broker.start)
        await endpoint.start()
        run.endpoint_url = endpoint.url
        await create_topics(
            run.bootstrap,
            {run.input_topic: scenario.partitions, run.outcome_topic: 3, run.dlq_topic: 1},
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=run.bootstrap, group_id=run.group, enable_auto_commit=False
        )
        await consumer.start()
        first = [run.spawn() for _ in range(scenario.workers)]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            if not await _wait_ready(session, first, 60):
                run.problems.append("the workers did not all become ready within 60s")
        run.t0 = time.monotonic()
        run.note(f"production starts: {len(fleet.steps)} events, {scenario.tasks} tasks")
        injector = _Injector(run, endpoint, proxy, base)
        injections = [asyncio.create_task(injector.inject(f)) for f in scenario.faults]
        produced = await _produce(run.bootstrap, run.input_topic, fleet, scenario.poison, run.t0)
        run.note(f"production done: {produced.events} records")
        await asyncio.gather(*injections)
        settled_at = time.monotonic()
        quiet, committed = await _quiesce(run, endpoint, fleet, produced.ends, consumer)
        drain_s = round(time.monotonic() - settled_at, 1) if quiet else None
        run.note("quiescent" if quiet else "not quiescent: timed out")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            for proc in run.live:  # /readyz: assigned partitions at least once
                if not await _wait_ready(session, [proc], 1.0):
                    run.problems.append(f"{proc.name} never received an assignment: its join never completed")
        for proc in list(run.live):
            await run.terminate(proc)
        # Read the records back only now: every outcome and dead letter is written.
        outcome_records = await read_all(run.bootstrap, run.outcome_topic, timeout_s=60)
        letters = await read_all(run.bootstrap, run.dlq_topic, timeout_s=60)
        committed = await _committed(consumer, run.input_topic, scenario.partitions)
        report = _report(run, fleet, produced, endpoint, outcome_records, letters, committed, drain_s)
        report.wall_s = round(time.monotonic() - began, 1)
        return report
    finally:
        for task in injections:
            task.cancel()
        await asyncio.gather(*injections, return_exceptions=True)
        await run.kill_all()
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        await endpoint.stop()
        await proxy.stop()
        await asyncio.to_thread(broker.stop)
        if report is not None and report.ok and not keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
        elif report is not None:
            report.log_dir = str(log_dir)


def _report(
    run: _Run,
    fleet: Fleet,
    produced: _Produced,
    endpoint: _RecordingEndpoint,
    outcome_records: list[Any],
    letters: list[Any],
    committed: dict[int, int],
    drain_s: float | None,
) -> Report:
    scenario = run.scenario
    state = endpoint.state()
    problems = list(run.problems)
    mismatches = final_state_mismatches(fleet.expected, state)
    problems.extend(mismatches[:10])

    # Poison records: each must be in the DLQ, found by its errors.* headers.
    lettered: set[tuple[int, int]] = set()
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers or ()}
        if headers.get("errors.topic") == run.input_topic and "errors.offset" in headers:
            lettered.add((int(headers["errors.partition"]), int(headers["errors.offset"])))
    missing_poison = [p for p in produced.poison if p not in lettered]
    problems.extend(f"poison record {p} not dead-lettered" for p in missing_poison)

    # Records covered by outcomes; records covered more than once were replayed.
    outcomes = [msgspec.json.decode(r.value, type=Outcome) for r in outcome_records]
    coverage: Counter[tuple[int, int]] = Counter()
    for outcome in outcomes:
        for source in outcome.sources:
            if source.topic == run.input_topic:
                coverage.update((source.partition, offset) for offset in source.offsets)
    total = sum(produced.ends.values())
    covered = set(coverage)
    other = total - len(covered | lettered)

    want = {p: produced.ends.get(p, 0) for p in range(scenario.partitions)}
    uncommitted = sum(max(0, want[p] - committed.get(p, 0)) for p in want)
    if uncommitted:
        problems.append(f"committed offsets {committed} short of the end offsets {want}")

    # Duplicates: an accepted request equal to the previous accepted one for the task.
    dup_per_task: dict[tuple[str, str], int] = {}
    distinct_per_task: dict[tuple[str, str], int] = {}
    for key, requests in endpoint.accepted_requests.items():
        dup_per_task[key] = sum(1 for a, b in itertools.pairwise(requests) if a == b)
        distinct_per_task[key] = len(set(requests))
    disruptions = sum(1 for f in scenario.faults if f.kind in DISRUPTIONS) + sum(
        1 for f in scenario.faults if f.kind in ("kill", "term") and f.restart_after_s is not None
    )
    dup_bound = disruptions
    max_dup = max(dup_per_task.values(), default=0)
    max_distinct = max(distinct_per_task.values(), default=0)
    if max_dup > dup_bound:
        problems.append(f"a task had {max_dup} duplicate submissions (bound {dup_bound})")
    over_distinct = [
        (key, n)
        for key, n in distinct_per_task.items()
        if key[1] in fleet.expected and n > 1 + len(fleet.expected[key[1]].containers) + disruptions
    ]
    problems.extend(f"{key[1]}: {n} distinct submissions, over its bound" for key, n in over_distinct[:5])

    errors: dict[str, int] = state["errors"]
    regressions = len(state["regressions"])
    if regressions:
        problems.extend(f"regression: {r}" for r in state["regressions"][:5])
    # Mismatches read "<task ARN>: ..." (an ARN holds colons, never ": ").
    lost = len({m.split(": ")[0] for m in mismatches}) + len(missing_poison)
    accepted = int(state["accepted"])
    report = Report(
        scenario=scenario.name,
        seed=scenario.seed,
        events=produced.events,
        tasks=len(fleet.expected),
        workers=scenario.workers,
        faults_injected=len(scenario.faults),
        faults=run.records,
        lost=lost,
        regressions=regressions,
        calls=int(state["calls"]),
        submissions=accepted,
        duplicate_submissions=sum(dup_per_task.values()),
        tasks_with_duplicates=sum(1 for n in dup_per_task.values() if n),
        max_duplicates_per_task=max_dup,
        duplicate_bound_per_task=dup_bound,
        max_distinct_per_task=max_distinct,
        tasks_over_distinct_bound=len(over_distinct),
        tasks_by_distinct=dict(sorted(Counter(distinct_per_task.values()).items())),
        calls_per_task=round(accepted / max(1, len(fleet.expected)), 2),
        throttled=int(errors.get("ThrottlingException", 0)),
        quota_throttled=endpoint.quota_refusals,
        server_errors=int(errors.get("ServerException", 0)),
        dropped=int(state["dropped"]),
        outcome_records=len(outcomes),
        records_covered=len(covered),
        records_replayed=sum(1 for n in coverage.values() if n > 1),
        records_dead_lettered=len(lettered),
        records_other=other,
        uncommitted=uncommitted,
        unclean_exits=run.unclean_exits,
        max_exit_s=round(run.exit_s, 1),
        drain_s=drain_s,
        wall_s=0.0,
        problems=problems,
    )
    report.ok = (
        lost == 0
        and regressions == 0
        and uncommitted == 0
        and drain_s is not None
        and max_dup <= dup_bound
        and not over_distinct
        and run.unclean_exits == 0
    )
    return report


# -- scenarios ------------------------------------------------------------------------------------


def _window(at_s: float, duration_s: float, **faults: float) -> Fault:
    return Fault(at_s=at_s, kind="endpoint", duration_s=duration_s, endpoint=Faults(**faults))  # type: ignore[arg-type]


FAST_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="sigkill-restart",
        tasks=120,
        workers=2,
        faults=(Fault(at_s=3.0, kind="kill", restart_after_s=2.0),),
    ),
    Scenario(
        name="sigterm-join-leave",
        tasks=120,
        workers=2,
        spread_s=12.0,
        # Each membership change once the previous rebalance is over (Tansu takes 3-6 s). With
        # them overlapping, Tansu 0.6.0 was seen to leave a group wedged: a generation of three
        # formed, one member got its assignment, the two joiners never did. "everything" (slow)
        # overlaps them.
        faults=(
            Fault(at_s=1.0, kind="term", restart_after_s=0.5),
            Fault(at_s=8.0, kind="join"),
            Fault(at_s=14.0, kind="leave"),
        ),
    ),
    Scenario(
        name="endpoint-faults",
        tasks=120,
        workers=2,
        spread_s=8.0,
        faults=(
            _window(1.0, 2.5, throttle_rate=0.5),
            _window(3.5, 2.5, error_rate=0.3),
            _window(6.0, 2.0, latency_ms=700),
            _window(8.0, 2.5, drop_rate=0.25),
        ),
    ),
    Scenario(
        name="broker-cut",
        tasks=120,
        workers=2,
        faults=(Fault(at_s=3.0, kind="broker_cut", duration_s=8.0),),
    ),
)

SLOW_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="kill-storm",
        tasks=400,
        workers=3,
        spread_s=15.0,
        quota_burst=150,
        quota_refill_per_s=90.0,
        faults=(
            Fault(at_s=3.0, kind="kill", restart_after_s=1.0),
            Fault(at_s=9.0, kind="kill", restart_after_s=3.0),
            Fault(at_s=14.0, kind="kill", restart_after_s=0.5),
        ),
    ),
    Scenario(
        name="blackhole-cut",
        tasks=300,
        workers=3,
        spread_s=12.0,
        quota_burst=150,
        quota_refill_per_s=90.0,
        faults=(Fault(at_s=4.0, kind="broker_cut", duration_s=12.0, cut_mode="blackhole"),),
    ),
    Scenario(
        name="tight-quota",
        tasks=400,
        workers=3,
        spread_s=8.0,
        running_share=0.0,
        quota_burst=40,
        quota_refill_per_s=30.0,
        quiesce_timeout_s=120.0,
    ),
    Scenario(
        name="rolling-restart",
        tasks=400,
        workers=3,
        spread_s=16.0,
        quota_burst=150,
        quota_refill_per_s=90.0,
        faults=(
            Fault(at_s=2.0, kind="term", worker=0, restart_after_s=0.5),
            Fault(at_s=7.0, kind="term", worker=1, restart_after_s=0.5),
            Fault(at_s=12.0, kind="term", worker=2, restart_after_s=0.5),
        ),
    ),
    Scenario(
        name="everything",
        tasks=500,
        workers=3,
        spread_s=20.0,
        quota_burst=150,
        quota_refill_per_s=90.0,
        quiesce_timeout_s=120.0,
        faults=(
            _window(1.0, 3.0, throttle_rate=0.4, latency_ms=200),
            Fault(at_s=3.0, kind="kill", restart_after_s=2.0),
            Fault(at_s=7.0, kind="join"),
            _window(8.0, 3.0, error_rate=0.3, drop_rate=0.1),
            Fault(at_s=10.0, kind="broker_cut", duration_s=7.0),
            Fault(at_s=18.0, kind="term", restart_after_s=1.0),
            Fault(at_s=21.0, kind="leave"),
        ),
    ),
)


# -- rendering and the command line ---------------------------------------------------------------

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("scenario", "scenario"),
    ("events", "events"),
    ("tasks", "tasks"),
    ("workers", "workers"),
    ("faults", "faults_injected"),
    ("lost", "lost"),
    ("regr", "regressions"),
    ("subm", "submissions"),
    ("dup", "duplicate_submissions"),
    ("dup/task", "max_duplicates_per_task"),
    ("req/task", "max_distinct_per_task"),
    (">2 req", "tasks_over_two"),
    ("calls/task", "calls_per_task"),
    ("throttled", "throttled"),
    ("quota thr", "quota_throttled"),
    ("covered", "records_covered"),
    ("dlq", "records_dead_lettered"),
    ("other", "records_other"),
    ("replayed", "records_replayed"),
    ("exit s", "max_exit_s"),
    ("drain s", "drain_s"),
    ("wall s", "wall_s"),
    ("ok", "ok"),
)


def render_table(reports: Sequence[Report]) -> str:
    """A plain-text table, one scenario a row, then each scenario's faults and problems."""

    def cell(report: Report, name: str) -> str:
        if name == "tasks_over_two":
            return str(sum(count for n, count in report.tasks_by_distinct.items() if n > 2))
        value = getattr(report, name)
        if name == "ok":
            return "OK" if value else "FAIL"
        if name == "max_duplicates_per_task":
            return f"{value}/{report.duplicate_bound_per_task}"
        if value is None:
            return "-"
        return f"{value:g}" if isinstance(value, float) else str(value)

    rows = [[title for title, _ in _COLUMNS]]
    rows.extend([cell(r, name) for _, name in _COLUMNS] for r in reports)
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for report in reports:
        lines.append("")
        lines.append(f"{report.scenario}:")
        spread = ", ".join(f"{n}: {count}" for n, count in report.tasks_by_distinct.items())
        lines.append(f"  tasks by distinct acknowledged requests: {spread}")
        lines.extend(f"  {r.at_s:6.1f}s  {r.what}" for r in report.faults)
        lines.extend(f"  PROBLEM: {p}" for p in report.problems)
        if report.log_dir:
            lines.append(f"  logs: {report.log_dir}")
    return "\n".join(lines)


async def _run_all(scenarios: Sequence[Scenario], keep_logs: bool) -> list[Report]:
    reports = []
    for scenario in scenarios:
        print(f"running {scenario.name} ...", file=sys.stderr, flush=True)
        reports.append(await run_scenario(scenario, keep_logs=keep_logs))
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.harness", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--full", action="store_true", help="also the long scenarios")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument("--only", action="append", default=[], help="run only this scenario (repeatable)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs of passing scenarios too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("aiokafka", "botocore", "aiobotocore", "aiohttp.server", "devkit.proxy"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    scenarios = [*FAST_SCENARIOS, *(SLOW_SCENARIOS if args.full else ())]
    if args.only:
        known = {s.name: s for s in [*FAST_SCENARIOS, *SLOW_SCENARIOS]}
        unknown = [n for n in args.only if n not in known]
        if unknown:
            parser.error(f"unknown scenario {unknown[0]!r}; known: {', '.join(known)}")
        scenarios = [known[n] for n in args.only]
    reports = asyncio.run(_run_all(scenarios, args.keep_logs))
    if args.json:
        print(msgspec.json.encode(reports).decode())
    else:
        print(render_table(reports))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
