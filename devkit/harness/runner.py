"""``run_scenario``: one scenario on fresh parts (embedded broker behind a TCP proxy, recording
ECS endpoint, worker processes), from start to quiescence, then its report; or on a broker that
outlives it (``ProxiedBroker``: the tests run their scenarios one after the other on one)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devkit.broker import free_port
from devkit.brokers import Broker, BrokerKind, choose_broker, make_broker
from devkit.demo import POISON_RECORDS
from devkit.ecs_endpoint import Faults
from devkit.fleet import Fleet, check_final, final_state_mismatches, launch, synthetic_fleet
from devkit.harness.handover import handover_s, read_assignments
from devkit.harness.injector import Injector, RecordingEndpoint
from devkit.harness.report import Observed, Produced, Report, build_report
from devkit.harness.scenarios import Scenario
from devkit.harness.workers import Run, wait_ready
from devkit.proxy import TcpProxy
from devkit.topics import create_topics, read_all, round_robin
from worker.config import repartition_topic

__all__ = ["ProxiedBroker", "proxied_broker", "run_scenario"]


@dataclass(frozen=True)
class ProxiedBroker:
    """A broker (not started) whose advertised listener is ``127.0.0.1:proxy_port``, where each
    scenario run on it starts a proxy of its own; its owner starts and stops it. The scenarios run
    on it one at a time, each on topics and a group of its own."""

    broker: Broker
    proxy_port: int


def proxied_broker(kind: BrokerKind) -> ProxiedBroker:
    """A ``ProxiedBroker`` of ``kind`` on a free proxy port."""
    proxy_port = free_port()
    return ProxiedBroker(make_broker(kind, advertised=f"127.0.0.1:{proxy_port}"), proxy_port)


async def run_scenario(
    scenario: Scenario,
    *,
    keep_logs: bool = False,
    broker: BrokerKind | None = None,
    on: ProxiedBroker | None = None,
) -> Report:
    """Run one scenario on fresh parts and report; logs are kept (``Report.log_dir``) on failure.
    ``broker``: ``kafka`` or ``tansu``; by default ``devkit.brokers.choose_broker`` decides (Apache
    Kafka where Java 17+ and Maven are present). ``on``: a started broker to run on instead of a
    broker of its own (``broker`` is then not used)."""
    began = time.monotonic()
    log_dir = Path(tempfile.mkdtemp(prefix=f"faults-{scenario.name}-"))
    planned = synthetic_fleet(
        scenario.tasks, seed=scenario.seed, fmt=scenario.fmt, shape=scenario.fleet_shape()
    )
    base = Faults(quota_burst=scenario.quota_burst, quota_refill_per_s=scenario.quota_refill_per_s)
    owned = on is None
    if on is None:
        on = proxied_broker(broker or choose_broker(os.environ).kind)
    run, parts = _prepare(scenario, log_dir, base, on, owned=owned)
    report: Report | None = None
    try:
        await parts.start(run)
        fleet = await launch(planned, parts.endpoint.url)  # ECS knows every task, as in production
        report = await _exercise(run, parts, fleet, base)
        report.wall_s = round(time.monotonic() - began, 1)
        return report
    finally:
        await parts.stop(run)
        if report is not None and report.ok and not keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
        elif report is not None:
            report.log_dir = str(log_dir)


@dataclass
class _Parts:
    """The scenario's broker (its own when ``owned``), the proxy it advertises, the endpoint, a
    consumer of the group (to read its committed offsets) and the running fault injections."""

    broker: Broker
    proxy: TcpProxy
    endpoint: RecordingEndpoint
    owned: bool = True
    consumer: AIOKafkaConsumer | None = None
    injections: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, run: Run) -> None:
        await self.proxy.start()
        if self.owned:
            await asyncio.to_thread(self.broker.start)
        await self.endpoint.start()
        run.endpoint_url = self.endpoint.url
        await create_topics(
            run.bootstrap,
            {run.input_topic: run.scenario.partitions, run.outcome_topic: 3, run.dlq_topic: 1},
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=run.bootstrap, group_id=run.group, enable_auto_commit=False
        )
        await self.consumer.start()

    async def stop(self, run: Run) -> None:
        for task in self.injections:
            task.cancel()
        await asyncio.gather(*self.injections, return_exceptions=True)
        await run.kill_all()
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
        await self.endpoint.stop()
        await self.proxy.stop()
        if self.owned:
            await asyncio.to_thread(self.broker.stop)


def _prepare(
    scenario: Scenario, log_dir: Path, base: Faults, on: ProxiedBroker, *, owned: bool
) -> tuple[Run, _Parts]:
    """The scenario's run and parts on ``on``; on a broker it does not own (``owned`` False), its
    topics and group have a suffix of their own."""
    peak_workers = scenario.workers + sum(1 for f in scenario.faults if f.kind == "join")
    # (make_broker without log_file: EmbeddedBroker.start() leaves that file open, a ResourceWarning.)
    proxy = TcpProxy(target_port=on.broker.port, port=on.proxy_port)
    parts = _Parts(on.broker, proxy, RecordingEndpoint(faults=base, seed=scenario.seed), owned=owned)
    suffix = "" if owned else f"-{uuid.uuid4().hex[:8]}"
    run = Run(
        scenario=scenario,
        log_dir=log_dir,
        bootstrap=proxy.address,
        endpoint_url="",
        group=f"faults-{scenario.name}{suffix}",
        input_topic=f"container-events{suffix}",
        outcome_topic=f"ecs-state-outcomes{suffix}",
        dlq_topic=f"ecs-state-dlq{suffix}",
        per_worker_rate=scenario.quota_refill_per_s / peak_workers,
        per_worker_burst=max(1, scenario.quota_burst // peak_workers),
        rng=random.Random(scenario.seed),
    )
    return run, parts


async def _exercise(run: Run, parts: _Parts, fleet: Fleet, base: Faults) -> Report:
    """Start the workers, produce the fleet while the faults happen, wait for quiescence, stop the
    workers with SIGTERM, and report from what the broker and the endpoint recorded."""
    scenario = run.scenario
    consumer = parts.consumer
    assert consumer is not None, "the parts are not started"
    first = [run.spawn() for _ in range(scenario.workers)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        if not await wait_ready(session, first, 60):
            run.problems.append("the workers did not all become ready within 60s")
    run.t0 = time.monotonic()
    run.note(f"production starts: {len(fleet.steps)} events, {scenario.tasks} tasks")
    injector = Injector(run, parts.endpoint, parts.proxy, base)
    parts.injections.extend(asyncio.create_task(injector.inject(f)) for f in scenario.faults)
    produced = await _produce(run, fleet)
    run.note(f"production done: {produced.events} records")
    await asyncio.gather(*parts.injections)
    settled_at = time.monotonic()
    quiet = await _quiesce(run, parts.endpoint, fleet, produced.ends, consumer)
    drain_s = round(time.monotonic() - settled_at, 1) if quiet else None
    run.note("quiescent" if quiet else "not quiescent: timed out")
    await _stop_workers(run)
    report = await _observe(run, parts.endpoint, consumer, fleet, produced, drain_s)
    report.broker = parts.broker.kind
    return report


async def _stop_workers(run: Run) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for proc in run.live:  # /readyz: assigned partitions at least once
            if not await wait_ready(session, [proc], 1.0):
                run.problems.append(f"{proc.name} never received an assignment: its join never completed")
    for proc in list(run.live):
        await run.terminate(proc)


async def _observe(
    run: Run,
    endpoint: RecordingEndpoint,
    consumer: AIOKafkaConsumer,
    fleet: Fleet,
    produced: Produced,
    drain_s: float | None,
) -> Report:
    """Read the records back (only once the workers are stopped: every outcome and dead letter is
    written) and check the promises on them, exit codes by DescribeTasks (after the endpoint's
    state is taken, so that its counts hold only the workers' calls)."""
    state = endpoint.state()
    seen = Observed(
        scenario=run.scenario,
        expected=fleet.expected,
        input_topic=run.input_topic,
        produced=produced,
        endpoint_state=state,
        described_mismatches=await check_final(fleet, endpoint.url),
        accepted_requests=endpoint.accepted_requests,
        quota_refusals=endpoint.quota_refusals,
        outcome_records=await read_all(run.bootstrap, run.outcome_topic, timeout_s=60),
        repartitioned=(
            await read_all(run.bootstrap, repartition_topic(run.group), timeout_s=60)
            if run.scenario.input_keying == "any"
            else []
        ),
        letters=await read_all(run.bootstrap, run.dlq_topic, timeout_s=60),
        committed=await _committed(consumer, run.input_topic, run.scenario.partitions),
        timeline=run.records,
        problems=run.problems,
        unclean_exits=run.unclean_exits,
        max_exit_s=run.exit_s,
        drain_s=drain_s,
        handovers_s=_handovers(run),
    )
    return build_report(seen)


def _handovers(run: Run) -> list[float | None]:
    names = [p.name for p in (*run.live, *run.dead)]
    assignments = read_assignments(run.log_dir, names, run.input_topic)
    return [handover_s(assignments, victim, at) for victim, at in run.signalled]


async def _produce(run: Run, fleet: Fleet) -> Produced:
    """Send the fleet's steps on its schedule at the scenario's pace (keyed by task ARN, or unkeyed
    round-robin; stamped on the schedule's clock) and its poison records; end offsets come from the broker's
    acknowledgements (Tansu's ListOffsets can lag)."""
    scenario = run.scenario
    producer = AIOKafkaProducer(bootstrap_servers=run.bootstrap, linger_ms=5, request_timeout_ms=120_000)
    await producer.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        poison_futures: list[asyncio.Future[Any]] = []
        every = max(1, len(fleet.steps) // (scenario.poison + 1))
        base = time.time_ns()
        partitions = sorted(await producer.partitions_for(run.input_topic))
        for index, step in enumerate(fleet.steps):
            delay = run.t0 + step.at_s * scenario.pace - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            value = fleet.render(step, fleet.observed_ns(step, base))
            where = round_robin(partitions, index) if scenario.unkeyed else {"key": step.task.encode()}
            pending.append(await producer.send(run.input_topic, value=value, **where))
            if index % every == every - 1 and len(poison_futures) < scenario.poison:
                bad = POISON_RECORDS[len(poison_futures) % len(POISON_RECORDS)]
                key = f"poison-{len(poison_futures)}".encode()
                poison_futures.append(await producer.send(run.input_topic, value=bad, key=key))
        metas = await asyncio.gather(*pending, *poison_futures)
        ends: dict[int, int] = {}
        for meta in metas:
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        bad_at = [(m.partition, m.offset) for m in metas[len(pending) :]]
        return Produced(ends, bad_at, len(metas))
    finally:
        await producer.stop()


async def _committed(consumer: AIOKafkaConsumer, topic: str, partitions: int) -> dict[int, int]:
    result: dict[int, int] = {}
    for partition in range(partitions):
        offset = await consumer.committed(TopicPartition(topic, partition))
        result[partition] = offset or 0
    return result


async def _quiesce(
    run: Run, endpoint: RecordingEndpoint, fleet: Fleet, ends: dict[int, int], consumer: AIOKafkaConsumer
) -> bool:
    """Wait until every task is final at the endpoint and the group's committed offsets are at
    ``ends``; False when ``quiesce_timeout_s`` passes first."""
    deadline = time.monotonic() + run.scenario.quiesce_timeout_s
    want = {p: ends.get(p, 0) for p in range(run.scenario.partitions)}
    while time.monotonic() < deadline:
        if not final_state_mismatches(fleet.expected, endpoint.state()):
            with contextlib.suppress(Exception):  # the coordinator may be moving: ask again
                committed = await asyncio.wait_for(
                    _committed(consumer, run.input_topic, run.scenario.partitions), 10
                )
                if committed == want:
                    return True
        await asyncio.sleep(0.25)
    return False
