"""Rebalances and graceful stops, on real parts: the embedded broker, the local ECS endpoint, the real
aiokafka and aiobotocore clients over sockets. Workers run in-process (observed by subclassing) or as
``python -m worker run`` subprocesses (for real signals)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from devkit.brokers import Broker
from devkit.ecs_endpoint import Faults, LocalEcsEndpoint
from devkit.fleet import FleetShape, final_state_mismatches
from devkit.harness.workers import wait_exit
from devkit.proxy import TcpProxy
from devkit.topics import produce_fleet, read_all
from schemas.events import ContainerChange, TaskEvent
from schemas.records import Outcome
from tests.conftest import Topics, worker_settings
from tests.ecs_tasks import ecs_tasks
from tests.support import (
    BURST,
    FLEET_PACE,
    flags,
    group_committed,
    launched_fleet,
    reap,
    running,
    spawn_worker,
    wait_for,
)
from worker.config import Settings
from worker.offsets import TopicPartitionKey
from worker.partitions import Partitions
from worker.pipeline import Worker

pytestmark = pytest.mark.timeout(150)
ROOT = Path(__file__).resolve().parents[1]


# -- helpers ----------------------------------------------------------------------------------------


async def send_events(bootstrap: str, topic: str, events: list[TaskEvent]) -> dict[int, int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        ends: dict[int, int] = {}
        for event in events:
            meta = await producer.send_and_wait(topic, msgspec.json.encode(event), key=event.task.encode())
            ends[meta.partition] = meta.offset + 1
        return ends
    finally:
        await producer.stop()


async def outcomes(bootstrap: str, topics: Topics) -> list[Outcome]:
    return [msgspec.json.decode(r.value, type=Outcome) for r in await read_all(bootstrap, topics.outcome)]


def coverage(records: list[Outcome]) -> Counter[tuple[int, int]]:
    """How many outcome records name each input record (partition, offset) among their sources."""
    covered: Counter[tuple[int, int]] = Counter()
    for outcome in records:
        for source in outcome.sources:
            covered.update((source.partition, offset) for offset in source.offsets)
    return covered


def in_flight_at(endpoint: LocalEcsEndpoint) -> int:
    """Calls the endpoint has begun and not yet answered."""
    state = endpoint.state()
    answered = state["accepted"] + state["dropped"] + sum(state["errors"].values())
    return int(state["calls"] - answered)


@dataclass
class Revocation:
    partitions: set[TopicPartitionKey]
    unresolved_before: int
    in_flight_before: int
    unresolved_after_drain: int = -1
    waiting_after_drain: int = -1
    """Of those, records held by tasks that wait (never reported yet): given up, read again."""
    given_up_from: dict[int, int] | None = None
    """Per partition, the lowest offset of those: the next owner reads again from there."""
    uncommitted_after_commit: dict[TopicPartitionKey, int] | None = None
    seconds: float = 0.0


class ObservedPartitions(Partitions):
    """The real ``Partitions`` of a worker, noting what it held when partitions were revoked, what
    was left after the drain, and what was left uncommitted after the revocation's commit."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(worker.partitions.book, worker.metrics)
        self._coalescer = worker.intake.coalescer
        self.revocations: list[Revocation] = []
        self.assignments: list[list[TopicPartitionKey]] = []

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.assignments.append(sorted((tp.topic, tp.partition) for tp in assigned))
        await super().on_partitions_assigned(assigned)

    async def revoke(self, partitions: list[TopicPartitionKey]) -> None:
        revoked = set(partitions)
        record = Revocation(
            revoked,
            unresolved_before=sum(n for tp, n in self.book.incomplete().items() if tp in revoked),
            in_flight_before=sum(
                1
                for s in self._coalescer.in_flight()
                if any((x.topic, x.partition) in revoked for x in s.sources)
            ),
        )
        self.revocations.append(record)
        started = time.monotonic()
        await super().revoke(partitions)
        record.seconds = time.monotonic() - started

    async def commit(self, partitions: Any = None) -> None:
        if partitions is not None and self.revocations:  # the revocation's commit, after its drain
            left = self.book.incomplete()
            self.revocations[-1].unresolved_after_drain = sum(left.get(tp, 0) for tp in partitions)
            waiting = {(t, p, o) for t, p, o in self._coalescer.pinned() if (t, p) in partitions}
            self.revocations[-1].waiting_after_drain = len(waiting)
            lowest: dict[int, int] = {}
            for _, partition, offset in waiting:
                lowest[partition] = min(offset, lowest.get(partition, offset))
            self.revocations[-1].given_up_from = lowest
        await super().commit(partitions)
        if partitions is not None and self.revocations:
            self.revocations[-1].uncommitted_after_commit = self.book.to_commit()


class ObservedWorker(Worker):
    """A real ``Worker`` whose partitions are ``ObservedPartitions``."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.partitions = self.observed = ObservedPartitions(self)

    @property
    def revocations(self) -> list[Revocation]:
        return self.observed.revocations

    @property
    def assignments(self) -> list[list[TopicPartitionKey]]:
        return self.observed.assignments


def log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(raw))
    return lines


# -- revocation: drain, then commit, then give up ----------------------------------------------------


async def test_revoked_partitions_are_drained_and_committed_before_they_are_given_up(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    endpoint.set_faults(Faults(latency_ms=1000))  # every call is in flight for a second
    shape = FleetShape(spread_s=100.0, run_s=(10.0, 40.0), running_share=0.0)
    fleet = await launched_fleet(endpoint, 40, seed=31, shape=shape)
    timers = fleet.worker_timers(FLEET_PACE)
    first = ObservedWorker(worker_settings(broker, endpoint, topics, client_id="rebalance-a", **timers))
    second = ObservedWorker(worker_settings(broker, endpoint, topics, client_id="rebalance-b", **timers))
    async with running(first):
        producing = asyncio.create_task(produce_fleet(broker.bootstrap, topics.input, fleet, pace=FLEET_PACE))
        await wait_for(lambda: in_flight_at(endpoint) > 0 and first.pending_work() > 0, 30, "calls in flight")
        async with running(second):
            await wait_for(lambda: any(r.partitions for r in first.revocations), 30, "a revocation")
            ends = await producing
            await wait_for(
                lambda: not final_state_mismatches(fleet.expected, endpoint.state()), 60, "final states"
            )
            await wait_for(lambda: first.pending_work() == second.pending_work() == 0, 30, "work resolved")
            committed: dict[int, int] = {}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                committed = await group_committed(broker.bootstrap, topics)
                if committed == {p: ends.get(p, 0) for p in range(topics.partitions)}:
                    break
                await asyncio.sleep(0.3)
    revocation = next(r for r in first.revocations if r.partitions)
    # It held work on the revoked partitions, drained it all, and committed what that resolved.
    assert revocation.unresolved_before > 0, revocation
    assert revocation.unresolved_after_drain == revocation.waiting_after_drain, revocation
    assert revocation.uncommitted_after_commit is not None
    assert not {tp for tp in revocation.uncommitted_after_commit if tp in revocation.partitions}, revocation
    assert revocation.seconds < 5.0 + 1.0, "within the drain deadline"
    state = endpoint.state()
    assert state["regressions"] == []
    assert flags(endpoint) == dict.fromkeys(flags(endpoint), 0), state["flags"]  # no STOPPED too early
    assert committed == {p: ends.get(p, 0) for p in range(topics.partitions)}
    records = await outcomes(broker.bootstrap, topics)
    assert {o.worker for o in records} == {"rebalance-a", "rebalance-b"}, "both did work"
    assert len(records) == state["accepted"], "one outcome per acknowledged call"
    twice = [source for source, n in coverage(records).items() if n > 1]
    # Re-read by the next owner, only from the first record a waiting (never reported) task held.
    given_up_from = revocation.given_up_from or {}
    early = [(p, o) for p, o in twice if o < given_up_from.get(p, o + 1)]
    assert early == [], "a record re-read by the next owner: its first owner gave it up uncommitted"


# -- SIGTERM: drain in-flight submissions, record, commit, exit 0 -------------------------------------


async def test_sigterm_drains_in_flight_submissions_then_commits_and_exits_cleanly(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics, tmp_path: Path
) -> None:
    endpoint.set_faults(Faults(latency_ms=1000))
    fleet = await launched_fleet(endpoint, 30, seed=37)
    ends = await produce_fleet(broker.bootstrap, topics.input, fleet, pace=FLEET_PACE)
    worker = spawn_worker(broker, endpoint, topics, tmp_path / "worker.log", WORKER_CLIENT_ID="sigterm-a")
    try:
        await wait_for(lambda: in_flight_at(endpoint) >= 5, 60, "submissions in flight")
        began = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = await wait_exit(worker, 30)
        took = time.monotonic() - began
    finally:
        reap(worker)
    assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert took < 5.0 + 3.0, f"SIGTERM to exit took {took:.1f}s (drain deadline 5s)"
    state = endpoint.state()
    assert in_flight_at(endpoint) == 0
    assert state["accepted"] > 0
    records = await outcomes(broker.bootstrap, topics)
    acknowledged = [o for o in records if o.result == "acknowledged"]
    assert len(acknowledged) == state["accepted"], "every acknowledged call, in flight at SIGTERM, recorded"
    committed = await group_committed(broker.bootstrap, topics)
    for partition, offset in coverage(records):
        assert offset < committed[partition], "recorded work committed before exit"
    # A second worker finishes from there: nothing re-read, nothing lost, nothing regressed.
    async with running(Worker(worker_settings(broker, endpoint, topics, client_id="sigterm-b"))) as second:
        await wait_for(
            lambda: not final_state_mismatches(fleet.expected, endpoint.state()), 60, "final states"
        )
        await wait_for(lambda: second.pending_work() == 0, 30, "work resolved")
        await asyncio.sleep(0.5)  # a commit interval or two
    assert endpoint.state()["regressions"] == []
    assert await group_committed(broker.bootstrap, topics) == {
        p: ends.get(p, 0) for p in range(topics.partitions)
    }
    assert max(coverage(await outcomes(broker.bootstrap, topics)).values()) == 1


# -- a new owner's partial view -------------------------------------------------------------------------


def _base_event(task: str, container: str, status: str, at: int) -> TaskEvent:
    change = ContainerChange(containerName=container, runtimeId=f"id-{container}", status=status)  # type: ignore[arg-type]
    return TaskEvent(cluster="c", task=task, observedAt=at, containers=(change,))


async def test_a_new_owner_reports_the_containers_its_partial_view_missed(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """End to end: the first owner reports a two-container task RUNNING and commits; the next owner
    reads only the exits, one at a time. It asks ECS for what it missed, so the first exit alone
    does not make the task STOPPED, and the second exit still reaches ECS."""
    async with ecs_tasks(endpoint.url) as ecs:
        definition = await ecs.register("handover", [{"name": "app-0"}, {"name": "app-1"}])
        (launched,) = await ecs.run("c", definition)
    task = launched.arn

    def _event(task: str, container: str, status: str, at: int) -> TaskEvent:
        return msgspec.structs.replace(_base_event(task, container, status, at), taskDefinitionArn=definition)

    settings = worker_settings(broker, endpoint, topics, linger_ms=0)
    async with running(Worker(settings)) as first:
        await send_events(
            broker.bootstrap,
            topics.input,
            [
                _event(task, "app-0", "CREATED", 0),
                _event(task, "app-0", "RUNNING", 1),
                _event(task, "app-1", "RUNNING", 2),
            ],
        )
        await wait_for(
            lambda: endpoint.state()["tasks"].get(task, {}).get("status") == "RUNNING", 30, "RUNNING"
        )
        await wait_for(lambda: first.pending_work() == 0, 30, "resolved")
    async with running(Worker(settings)) as second:
        await send_events(broker.bootstrap, topics.input, [_event(task, "app-0", "STOPPED", 3)])
        await wait_for(
            lambda: endpoint.state()["tasks"][task]["containers"]["app-0"] == "STOPPED", 30, "app-0 STOPPED"
        )
        await wait_for(lambda: second.pending_work() == 0, 30, "resolved")
        assert endpoint.state()["tasks"][task]["status"] == "RUNNING"  # app-1 still runs
        ends = await send_events(broker.bootstrap, topics.input, [_event(task, "app-1", "STOPPED", 4)])
        await wait_for(lambda: endpoint.state()["tasks"][task]["status"] == "STOPPED", 30, "STOPPED")
        await wait_for(lambda: second.pending_work() == 0, 30, "resolved")
        await wait_for(
            lambda: all(second.committed_offsets().get((topics.input, p)) == e for p, e in ends.items()),
            30,
            "committed",
        )
    state = endpoint.state()
    assert state["tasks"][task]["containers"] == {"app-0": "STOPPED", "app-1": "STOPPED"}
    *before, last = state["tasks"][task]["history"]
    assert last == "STOPPED"
    assert set(before) == {"RUNNING"}  # how many RUNNING calls depends on timing (linger 0)
    assert state["regressions"] == []
    assert not any(tally["count"] for tally in state["flags"].values()), state["flags"]


# -- static membership -------------------------------------------------------------------------------

OBSERVE_S = 12.0
"""A session timeout (6 s) and a few heartbeats (2 s) after the restarted member is assigned."""
# How aiokafka words the group errors a broker answers (Kafka protocol error codes).
GROUP_ERRORS = {
    "because it is rebalancing": "REBALANCE_IN_PROGRESS (27)",
    "local member_id was not recognized": "UNKNOWN_MEMBER_ID (25)",
    "generation id is not  current": "ILLEGAL_GENERATION (22)",
    "UnknownMemberIdError": "UNKNOWN_MEMBER_ID (25)",
    "IllegalGenerationError": "ILLEGAL_GENERATION (22)",
    "FencedInstanceIdError": "FENCED_INSTANCE_ID (82)",
}


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def broker_errors(messages: list[str]) -> list[str]:
    """``"ERROR_NAME (code): message"`` for each group error found in aiokafka's log messages."""
    return [
        f"{code}: {message.strip()}"
        for message in messages
        for words, code in GROUP_ERRORS.items()
        if words in message
    ]


async def test_a_static_member_restarted_with_its_instance_id_rejoins_without_a_rebalance(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics, tmp_path: Path
) -> None:
    settings = worker_settings(broker, endpoint, topics, group_instance_id="static-b", client_id="static-b")
    stayer = ObservedWorker(settings)
    first: subprocess.Popen[bytes] | None = None
    restarted: subprocess.Popen[bytes] | None = None
    instance = {"WORKER_GROUP_INSTANCE_ID": "static-a", "WORKER_CLIENT_ID": "static-a"}
    seen = _Warnings()
    coordinator_log = logging.getLogger("aiokafka.consumer.group_coordinator")
    try:
        async with running(stayer):
            first = spawn_worker(broker, endpoint, topics, tmp_path / "a1.log", **instance)
            # The other member has joined once the stayer holds only part of the partitions.
            await wait_for(
                lambda: bool(stayer.assignments) and 0 < len(stayer.assignments[-1]) < topics.partitions,
                60,
                "the group shared between the two members",
            )
            held = stayer.assignments[-1]
            revocations = len(stayer.revocations)
            coordinator_log.addHandler(seen)
            first.send_signal(signal.SIGKILL)  # a crash: a static member is then awaited, not replaced
            await wait_exit(first, 10)
            log = tmp_path / "a2.log"
            restarted = spawn_worker(broker, endpoint, topics, log, **instance)
            await wait_for(
                lambda: log.exists() and any("partitions assigned" in ln["message"] for ln in log_lines(log)),
                60,
                "the restarted member assigned",
            )
            await asyncio.sleep(OBSERVE_S)
            moved = [r for r in stayer.revocations[revocations:] if r.partitions]
            if moved:
                other = broker_errors(seen.messages)
                own = broker_errors([ln["message"] for ln in log_lines(log) if ln["level"] != "INFO"])
                if not other and not own:
                    pytest.fail(f"the restart caused {len(moved)} revocations and no broker error was seen")
                found = [f"to the other member {other[0]!r} ({len(other)} times)"] if other else []
                found += [f"to the restarted member {own[0]!r} ({len(own)} times)"] if own else []
                if broker.kind != "tansu":
                    pytest.fail(f"a static member's restart revoked the other member {len(moved)} times")
                pytest.skip(
                    f"the embedded broker (Tansu) accepts group.instance.id but "
                    f"does not keep a restarted static member: the other member was revoked "
                    f"{len(moved)} times within {OBSERVE_S:.0f}s of the restart; the broker answered "
                    f"heartbeats {'; '.join(found)}"
                )
            assert stayer.assignments[-1] == held
            # And the pair works on: a small fleet reaches its final states.
            fleet = await launched_fleet(endpoint, 10, seed=41)
            await produce_fleet(broker.bootstrap, topics.input, fleet, pace=FLEET_PACE)
            await wait_for(lambda: not final_state_mismatches(fleet.expected, endpoint.state()), 60, "final")
    finally:
        coordinator_log.removeHandler(seen)
        reap(first, restarted)


# -- shutdown cannot hang ----------------------------------------------------------------------------


async def test_offset_reporting_honours_cancellation_so_a_stop_cannot_hang(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """The commit loop reports offsets between commits; stopping cancels it. A cancel() landing as
    a call inside completes was dropped by Python 3.11's asyncio.wait_for, and the loop then ran on
    forever: SIGTERM never finished. Cancel the report at every step of the event loop."""
    fleet = await launched_fleet(
        endpoint, 6, seed=43, shape=msgspec.structs.replace(BURST, running_share=1.0)
    )
    async with running(Worker(worker_settings(broker, endpoint, topics))) as worker:
        await produce_fleet(broker.bootstrap, topics.input, fleet, pace=FLEET_PACE)
        await wait_for(lambda: not final_state_mismatches(fleet.expected, endpoint.state()), 30, "final")
        swallowed = cancelled = 0
        for ticks in range(40):
            report = asyncio.create_task(worker.partitions.report_offsets())
            for _ in range(ticks):
                await asyncio.sleep(0)
            if not report.cancel():
                continue  # it had finished before the cancel
            cancelled += 1
            (outcome,) = await asyncio.gather(report, return_exceptions=True)
            if not isinstance(outcome, asyncio.CancelledError):
                swallowed += 1
        assert cancelled >= 1
        assert swallowed == 0, f"{swallowed} of {cancelled} cancels dropped"


async def test_a_stop_requested_while_starting_is_honoured_at_once(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """The clients' start can wait a long time: the consumer's for the group's first assignment (a
    stalled rebalance holds it back), both for a broker that does not answer. A SIGTERM then must
    not wait for it: there is nothing to drain yet."""
    async with TcpProxy(target_port=broker.port) as proxy:
        proxy.cut("blackhole")  # connections accepted, never answered
        worker = Worker(worker_settings(broker, endpoint, topics, bootstrap_servers=proxy.address))
        running_worker = asyncio.create_task(worker.run())
        await wait_for(lambda: proxy.stats.refused > 0, 10, "the worker connecting")
        await asyncio.sleep(0.5)
        began = time.monotonic()
        worker.request_stop()
        await asyncio.wait_for(running_worker, 10)
        assert time.monotonic() - began < 3.0
        assert not worker.ready.is_set()
