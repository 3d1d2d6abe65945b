"""``make bench``: the worker's figures on one machine, in one run, as JSON and a table.

1. decode + coalesce in process: events per second, and the ratio to a bare msgspec decode of the
   same records;
2. end to end through one worker process (the embedded broker, the local ECS endpoint in its own
   process): events and submissions per second, and the ratio of submissions per second to a bare
   aiobotocore loop sending the same requests to the same endpoint at the same concurrency;
3. ECS calls per task lifecycle, on a paced standard mix (``devkit.fleet``: launched at the
   endpoint, produced twenty times faster than real time, the worker's stop linger scaled to
   match), with a rolling handover halfway (a second worker joins, the first is stopped with
   SIGTERM); the describe calls apart: DescribeTaskDefinition per definition revision and worker,
   DescribeTasks per rebalance; the endpoint's flags;
4. production-to-acknowledgement latency p50/p99 of that run, and p99 before the handover (RUNNING
   calls against the linger; STOPPED calls wait for the agent's stop of the other containers,
   compressed);
5. resident memory per 100,000 active tasks;
6. the cost of ``input_keying = any`` (the repartition stage): 2 and 4 again with the records
   produced unkeyed (round-robin) and re-keyed by the workers, beside the ``task`` figures.

Records are Docker-shaped (create, start, health_status, kill, oom, die, stop, restart, destroy,
with the ECS agent's labels), with a few percent duplicated and out-of-order. ``bench_inproc`` runs
1 and 5, ``bench_e2e`` the processes of 2-4; this module runs them all and reports.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
from pathlib import Path

import msgspec

from devkit.bench_e2e import (
    Paced,
    bench_bare_loop,
    paced_run,
    process,
    reset_endpoint,
    run_worker_on,
    span_per_s,
    wait_http,
)
from devkit.bench_inproc import bench_decode_coalesce, bench_memory_fresh, docker_records
from devkit.broker import EmbeddedBroker, free_port
from devkit.fleet import Fleet, FleetShape, flag_counts, launch, synthetic_fleet
from devkit.topics import create_topics, outcome_latencies_ms, produce_fleet
from schemas.records import Outcome
from worker.config import InputKeying
from worker.submit import request_params
from worker.task_definition import definition_from_botocore

__all__ = ["BenchReport", "machine", "run_bench"]

PACE = 0.05
"""The paced run's schedule runs twenty times faster than real time."""
LINGER_MS = 500


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
    """SubmitTaskStateChange calls per task of the paced run (describe calls apart)."""
    definition_revisions: int
    definition_calls_per_revision: float
    """DescribeTaskDefinition calls per definition revision and worker process (each fetches
    each revision once)."""
    rebalances: int
    describe_calls: int
    describe_calls_per_rebalance: float
    """DescribeTasks calls per rebalance: the new owners' batches for what they missed."""
    flags: dict[str, int]
    """The endpoint's flags after the paced run (all must be 0)."""
    paced_events_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    """Every call of the paced run, the handover's rebalances included."""
    steady_latency_p99_ms: float
    latency_running_p99_ms: float
    """Before the handover (one worker, no rebalance); the second of RUNNING calls only. From the
    production of the oldest record a call carries to ECS's answer."""
    linger_ms: int
    rss_bytes_per_active_task: float
    any_e2e_events_per_s: float
    """``input_keying = any``: end to end, one worker, the records unkeyed (until both topics are
    committed)."""
    any_latency_p50_ms: float
    any_latency_p99_ms: float
    any_steady_latency_p99_ms: float
    """``input_keying = any``: the paced run's latencies (unkeyed records, the same handover)."""
    any_flags: dict[str, int]
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
            (
                f"DescribeTaskDefinition per revision ({self.definition_revisions})",
                f"{self.definition_calls_per_revision:.2f}",
            ),
            (f"DescribeTasks per rebalance ({self.rebalances})", f"{self.describe_calls_per_rebalance:.1f}"),
            ("flags (target 0)", ", ".join(f"{k} {v}" for k, v in self.flags.items())),
            ("paced rate", f"{self.paced_events_per_s:,.0f} events/s"),
            ("latency p50", f"{self.latency_p50_ms:.0f} ms"),
            ("latency p99, the handover included", f"{self.latency_p99_ms:.0f} ms"),
            ("latency p99 before the handover", f"{self.steady_latency_p99_ms:.0f} ms"),
            (
                f"  RUNNING calls p99 (target <= {self.linger_ms + 100} ms)",
                f"{self.latency_running_p99_ms:.0f} ms",
            ),
            ("memory per active task (target <= 2048 B)", f"{self.rss_bytes_per_active_task:,.0f} B"),
            ("input_keying any (unkeyed input, re-keyed):", ""),
            ("  end to end, one worker", f"{self.any_e2e_events_per_s:,.0f} events/s"),
            ("  latency p50", f"{self.any_latency_p50_ms:.0f} ms"),
            ("  latency p99, the handover included", f"{self.any_latency_p99_ms:.0f} ms"),
            ("  latency p99 before the handover", f"{self.any_steady_latency_p99_ms:.0f} ms"),
            ("  flags (target 0)", ", ".join(f"{k} {v}" for k, v in self.any_flags.items())),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"  {k:<{width}}  {v}" for k, v in rows]
        met = ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in self.targets.items())
        return "\n".join([f"ecs-state-worker bench on {self.machine}", *lines, met])


def machine() -> str:
    """Cores, processor model and Python version of this machine."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model or platform.processor()}, Python {platform.python_version()}"


# -- 2-4. end to end -----------------------------------------------------------------------------


class _Saturated(msgspec.Struct):
    events_per_s: float
    submissions_per_s: float
    bare_calls_per_s: float
    events_per_task: float


async def _saturated(bootstrap: str, endpoint: str, scale: float, keying: InputKeying = "task") -> _Saturated:
    """Everything produced before the worker starts; then the bare loop replays its requests.
    ``keying`` any: produced unkeyed, re-keyed by the worker."""
    topic = "bench-saturated" if keying == "task" else "bench-saturated-any"
    fleet = await launch(synthetic_fleet(int(4000 * scale), seed=2, fmt="docker"), endpoint)
    await create_topics(bootstrap, {topic: 4, f"{topic}-outcomes": 4})
    ends = await produce_fleet(bootstrap, topic, fleet, pace=None, unkeyed=keying == "any")
    busy_s, outcomes = await run_worker_on(bootstrap, endpoint, topic, ends, keying=keying)
    await reset_endpoint(endpoint)
    bare_calls = 0.0
    if keying == "task":
        bare_calls = await bench_bare_loop(
            endpoint, [request_params(o.request) for o in outcomes], concurrency=64
        )
        await reset_endpoint(endpoint)
    return _Saturated(
        events_per_s=sum(ends.values()) / busy_s,
        submissions_per_s=span_per_s(outcomes),
        bare_calls_per_s=bare_calls,
        events_per_task=len(fleet.steps) / len(fleet.expected),
    )


async def _paced(
    bootstrap: str, endpoint: str, scale: float, saturated: _Saturated, keying: InputKeying = "task"
) -> tuple[Fleet, Paced]:
    """Realistic lifecycles at about half the saturated rate. Paced, a task costs about two calls
    (RUNNING, STOPPED) where all at once it cost one: the saturated rate in tasks per second is
    whichever of event decoding and calls binds first."""
    capacity_tasks_per_s = min(
        saturated.events_per_s / saturated.events_per_task, saturated.submissions_per_s / 2
    )
    spread = 20.0 * scale + 5  # wall seconds of task starts
    tasks = max(50, int(0.5 * capacity_tasks_per_s * spread))
    planned = synthetic_fleet(tasks, seed=3, fmt="docker", shape=FleetShape(spread_s=spread / PACE))
    fleet = await launch(planned, endpoint)
    topic = "bench-paced" if keying == "task" else "bench-paced-any"
    return fleet, await paced_run(bootstrap, endpoint, fleet, pace=PACE, topic=topic, keying=keying)


async def run_bench(*, quick: bool = False) -> BenchReport:
    scale = 0.25 if quick else 1.0
    decode_fleet = synthetic_fleet(int(6000 * scale), seed=1, fmt="docker")
    definitions = [definition_from_botocore(d.describe_answer()) for d in decode_fleet.definitions]
    ours, bare = bench_decode_coalesce(docker_records(decode_fleet), definitions)
    memory = await asyncio.to_thread(bench_memory_fresh, int(100_000 * scale))
    broker = EmbeddedBroker()
    await asyncio.to_thread(broker.start)
    endpoint_port = free_port()
    endpoint = f"http://127.0.0.1:{endpoint_port}"
    try:
        with process(["ecs-endpoint", "--port", str(endpoint_port)]):
            await wait_http(f"{endpoint}/_state")
            saturated = await _saturated(broker.bootstrap, endpoint, scale)
            fleet, paced = await _paced(broker.bootstrap, endpoint, scale, saturated)
            await reset_endpoint(endpoint)
            rekeyed = await _saturated(broker.bootstrap, endpoint, scale, "any")
            _, paced_any = await _paced(broker.bootstrap, endpoint, scale, saturated, "any")
    finally:
        broker.stop()
    report = _report(ours, bare, memory, saturated, fleet, paced)
    _add_any(report, rekeyed, paced_any)
    return report


def _add_any(report: BenchReport, saturated: _Saturated, paced: Paced) -> None:
    """The ``input_keying = any`` figures, beside the ``task`` ones."""
    latencies = outcome_latencies_ms(paced.outcomes, paced.produced_at, "bench-paced-any", paced.origins)
    before = paced.handover_at_ns
    steady = [
        o
        for o in paced.outcomes
        if all(
            paced.produced_at.get(paced.origins.get((src.partition, offset), (-1, -1)), before) < before
            for src in o.sources
            for offset in src.offsets
        )
    ]
    steady_latencies = outcome_latencies_ms(steady, paced.produced_at, "bench-paced-any", paced.origins)
    report.any_e2e_events_per_s = saturated.events_per_s
    report.any_latency_p50_ms = statistics.median(latencies) if latencies else 0.0
    report.any_latency_p99_ms = _percentile(latencies, 0.99)
    report.any_steady_latency_p99_ms = _percentile(steady_latencies, 0.99)
    report.any_flags = flag_counts(paced.state)


def _report(
    ours: float, bare: float, memory: float, saturated: _Saturated, fleet: Fleet, paced: Paced
) -> BenchReport:
    latencies = outcome_latencies_ms(paced.outcomes, paced.produced_at, "bench-paced")
    steady = _before_handover(paced)
    steady_p99 = _percentile(outcome_latencies_ms(steady, paced.produced_at, "bench-paced"), 0.99)
    running = [o for o in steady if o.request.status == "RUNNING"]
    running_p99 = _percentile(outcome_latencies_ms(running, paced.produced_at, "bench-paced"), 0.99)
    operations = paced.state["operations"]
    revisions = len(fleet.definitions)
    report = BenchReport(
        machine=machine(),
        decode_coalesce_events_per_s=ours,
        bare_decode_events_per_s=bare,
        decode_coalesce_ratio=ours / bare,
        e2e_events_per_s=saturated.events_per_s,
        e2e_submissions_per_s=saturated.submissions_per_s,
        bare_aiobotocore_calls_per_s=saturated.bare_calls_per_s,
        e2e_submission_ratio=saturated.submissions_per_s / saturated.bare_calls_per_s
        if saturated.bare_calls_per_s
        else 0.0,
        calls_per_task=paced.state["calls"] / max(1, len(fleet.expected)),
        definition_revisions=revisions,
        definition_calls_per_revision=operations["DescribeTaskDefinition"]["calls"] / (2 * revisions),
        rebalances=paced.rebalances,
        describe_calls=int(operations["DescribeTasks"]["calls"]),
        describe_calls_per_rebalance=operations["DescribeTasks"]["calls"] / max(1, paced.rebalances),
        flags=flag_counts(paced.state),
        paced_events_per_s=paced.events_per_s,
        latency_p50_ms=statistics.median(latencies) if latencies else 0.0,
        latency_p99_ms=_percentile(latencies, 0.99),
        steady_latency_p99_ms=steady_p99,
        latency_running_p99_ms=running_p99,
        linger_ms=LINGER_MS,
        rss_bytes_per_active_task=memory,
        any_e2e_events_per_s=0.0,
        any_latency_p50_ms=0.0,
        any_latency_p99_ms=0.0,
        any_steady_latency_p99_ms=0.0,
        any_flags={},
        targets={},
    )
    report.targets = {
        "decode ratio": report.decode_coalesce_ratio >= 0.35,
        "submission ratio": report.e2e_submission_ratio >= 1.0,
        "calls per task": report.calls_per_task <= 2.0,
        "flags": not any(report.flags.values()),
        "latency p99": running_p99 <= LINGER_MS + 100,
        "memory": memory <= 2048,
    }
    return report


def _before_handover(paced: Paced) -> list[Outcome]:
    """The outcomes whose records were all produced before the handover began."""
    return [
        o
        for o in paced.outcomes
        if all(
            paced.produced_at.get((s.partition, offset), paced.handover_at_ns) < paced.handover_at_ns
            for s in o.sources
            for offset in s.offsets
        )
    ]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0
