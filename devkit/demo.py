"""``make demo``: the whole pipeline on embedded parts — Tansu (or Apache Kafka: ``make demo
BROKER=kafka``), the local ECS endpoint and one worker — fed a synthetic fleet launched at the
endpoint (its definitions registered, its tasks run) and its Docker events, twenty times faster
than real time (with duplicates, reordering and a few poison records), run until everything is
processed, then summarised: calls per task, the describe calls, the endpoint's flags and every
task's final state (exit codes included)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import field

import msgspec

from devkit.brokers import Broker, BrokerKind, make_broker
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.fleet import (
    ExpectedTask,
    Fleet,
    Format,
    check_final,
    final_state_mismatches,
    flag_counts,
    launch,
    synthetic_fleet,
)
from devkit.topics import create_topics, outcome_latencies_ms, produce_fleet, read_all
from schemas.records import Outcome
from worker.config import Settings
from worker.pipeline import Worker

__all__ = ["DEMO_PACE", "POISON_RECORDS", "DemoSummary", "run_demo"]

DEMO_PACE = 0.05
"""The fleet's schedule runs twenty times faster than real time."""

POISON_RECORDS: tuple[bytes, ...] = (
    b"\x00\xffnot json at all",
    b'{"cluster":"c","task":"t","observedAt":1,"status":"HALF_RUNNING"}',
    b'{"cluster":"c","task":"t","observedAt":1,"containers":[{"containerName":"web",'
    b'"status":"RUNNING","networkBindings":[{"containerPortRange":"9000-8000"}]}]}',
)


class DemoSummary(msgspec.Struct, kw_only=True):
    events: int
    tasks: int
    definitions: int
    records_dead_lettered: int
    submissions: int
    acknowledged: int
    calls_per_task: float
    definition_calls: int
    """DescribeTaskDefinition calls (one per revision is the aim)."""
    describe_calls: int
    """DescribeTasks calls (none without a restart or a rebalance)."""
    latency_p50_ms: float
    latency_p99_ms: float
    """From a record's production to ECS's acknowledgement of the call that carried it."""
    regressions: int
    flags: dict[str, int]
    """The endpoint's flags: stopped_while_running, updates_after_stopped, running_incomplete."""
    mismatches: list[str]
    outcome_topic: str
    outcome_records: int
    dlq_topic: str
    seconds: float
    ok: bool = field(default=False)

    def render(self) -> str:
        rows = [
            ("events produced", f"{self.events}"),
            ("tasks (RunTask)", f"{self.tasks}"),
            ("task definitions", f"{self.definitions}"),
            ("poison records dead-lettered", f"{self.records_dead_lettered}"),
            ("ECS calls (submissions)", f"{self.submissions}"),
            ("acknowledged", f"{self.acknowledged}"),
            ("calls per task", f"{self.calls_per_task:.2f}"),
            ("DescribeTaskDefinition calls", f"{self.definition_calls}"),
            ("DescribeTasks calls", f"{self.describe_calls}"),
            ("produced-to-ack latency p50", f"{self.latency_p50_ms:.0f} ms"),
            ("produced-to-ack latency p99", f"{self.latency_p99_ms:.0f} ms"),
            ("regressions seen by ECS", f"{self.regressions}"),
            *((f"flag {name}", f"{count}") for name, count in self.flags.items()),
            ("tasks not in their final state", f"{len({m.split(': ')[0] for m in self.mismatches})}"),
            ("outcome records", f"{self.outcome_records} in topic {self.outcome_topic}"),
            ("dead-letter topic", self.dlq_topic),
            ("wall time", f"{self.seconds:.1f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"  {k:<{width}}  {v}" for k, v in rows]
        verdict = (
            "OK: every task's final state acknowledged, nothing lost, nothing flagged"
            if self.ok
            else "FAILED"
        )
        return "\n".join(["ecs-state-worker demo", *lines, verdict, *self.mismatches[:10]])


def _settings(broker: Broker, endpoint: LocalEcsEndpoint, fleet: Fleet) -> Settings:
    timers = fleet.worker_timers(DEMO_PACE)
    return Settings(
        bootstrap_servers=broker.bootstrap,
        ecs_endpoint_url=endpoint.url,
        region="us-east-1",  # the local endpoint answers in any region
        input_format="auto",
        metrics_port=0,
        group_id="demo",
        session_timeout_ms=10_000,
        rebalance_timeout_ms=20_000,
        drain_timeout_ms=10_000,
        rate_limit_per_s=1000.0,
        rate_limit_burst=1000,
        stop_linger_ms=timers["stop_linger_ms"],
        settle_ms=timers["settle_ms"],
    )


async def run_demo(
    *,
    tasks: int = 400,
    partitions: int = 4,
    seed: int = 7,
    fmt: Format = "docker",
    timeout_s: float = 120.0,
    broker_kind: BrokerKind = "tansu",
) -> DemoSummary:
    """The demo on ``broker_kind``: Tansu by default (no JVM to start), or Apache Kafka."""
    began = time.monotonic()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
    broker = make_broker(broker_kind)
    await asyncio.to_thread(broker.start)
    endpoint = LocalEcsEndpoint()
    await endpoint.start()
    try:
        fleet = await launch(synthetic_fleet(tasks, seed=seed, fmt=fmt), endpoint.url)
        settings = _settings(broker, endpoint, fleet)
        topics = {settings.input_topic: partitions, settings.outcome_topic: partitions, settings.dlq_topic: 1}
        await create_topics(broker.bootstrap, topics)
        summary = await _run(broker, endpoint, fleet, settings, timeout_s)
    finally:
        await endpoint.stop()
        broker.stop()
    summary.seconds = time.monotonic() - began
    return summary


async def _run(
    broker: Broker, endpoint: LocalEcsEndpoint, fleet: Fleet, settings: Settings, timeout_s: float
) -> DemoSummary:
    """Run one worker on the fleet's events until every final state is known and every offset
    committed; then read the outcomes, the dead letters and the endpoint back."""
    worker = Worker(settings)
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 30)
    poison = {97 * i: (b"poison", record) for i, record in enumerate(POISON_RECORDS)}
    produced_at: dict[tuple[int, int], int] = {}
    ends = await produce_fleet(
        broker.bootstrap,
        settings.input_topic,
        fleet,
        pace=DEMO_PACE,
        interleave=poison,
        produced_at=produced_at,
    )
    mismatches = await _await_processed(worker, endpoint, fleet.expected, ends, settings, timeout_s)
    worker.request_stop()
    await running
    state = endpoint.state()  # before check_final's own DescribeTasks calls
    mismatches = mismatches or await check_final(fleet, endpoint.url)
    outcomes = [
        msgspec.json.decode(r.value, type=Outcome)
        for r in await read_all(broker.bootstrap, settings.outcome_topic)
    ]
    latencies = sorted(outcome_latencies_ms(outcomes, produced_at, settings.input_topic))
    operations = state["operations"]
    summary = DemoSummary(
        events=len(fleet.steps),
        tasks=len(fleet.expected),
        definitions=len(fleet.definitions),
        records_dead_lettered=len(await read_all(broker.bootstrap, settings.dlq_topic)),
        submissions=int(state["calls"]),
        acknowledged=int(state["accepted"]),
        calls_per_task=state["calls"] / max(1, len(fleet.expected)),
        definition_calls=int(operations["DescribeTaskDefinition"]["calls"]),
        describe_calls=int(operations["DescribeTasks"]["calls"]),
        latency_p50_ms=statistics.median(latencies) if latencies else 0.0,
        latency_p99_ms=_percentile(latencies, 0.99),
        regressions=len(state["regressions"]),
        flags=flag_counts(state),
        mismatches=mismatches,
        outcome_topic=settings.outcome_topic,
        outcome_records=len(outcomes),
        dlq_topic=settings.dlq_topic,
        seconds=0.0,
    )
    summary.ok = (
        not mismatches
        and summary.regressions == 0
        and not any(summary.flags.values())
        and summary.records_dead_lettered == len(POISON_RECORDS)
    )
    return summary


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(share * len(values)))]


async def _await_processed(
    worker: Worker,
    endpoint: LocalEcsEndpoint,
    expected: dict[str, ExpectedTask],
    ends: dict[int, int],
    settings: Settings,
    timeout_s: float,
) -> list[str]:
    deadline = time.monotonic() + timeout_s
    mismatches: list[str] = []
    while time.monotonic() < deadline:
        mismatches = final_state_mismatches(expected, endpoint.state())
        committed = worker.committed_offsets()
        caught_up = all(committed.get((settings.input_topic, p), 0) >= end for p, end in ends.items())
        if not mismatches and caught_up:
            return []
        await asyncio.sleep(0.2)
    return mismatches or ["timed out before every offset was committed"]
