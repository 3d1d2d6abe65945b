"""The pipeline end to end, on real parts: the embedded broker and the local ECS endpoint over
sockets, the real aiokafka and aiobotocore clients."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from devkit.brokers import Broker
from devkit.ecs_endpoint import Faults, LocalEcsEndpoint
from devkit.fleet import Fleet, FleetShape, check_final, final_state_mismatches
from devkit.topics import produce_fleet, read_all
from schemas.records import Outcome
from tests.conftest import Topics, worker_settings
from tests.support import FLEET_PACE, flags, group_committed, launched_fleet, running, spawn_worker, wait_for
from worker.pipeline import Worker

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[1]


async def produce(bootstrap: str, topic: str, fleet: Fleet, *, pace: float = FLEET_PACE) -> dict[int, int]:
    """Send the (launched) fleet's events in schedule order, ``pace`` times real time."""
    return await produce_fleet(bootstrap, topic, fleet, pace=pace)


async def test_fleet_reaches_final_states_with_coalescing_and_no_regression(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """60 tasks of 1-10 containers (init containers, health-gated and restarting ones), 10% kept
    running: every final state and exit code reaches ECS, two calls at most per lifecycle, and
    nothing an ECS user would see as wrong."""
    fleet = await launched_fleet(endpoint, 60, seed=3, shape=FleetShape(spread_s=40.0, run_s=(10.0, 90.0)))
    worker = Worker(worker_settings(broker, endpoint, topics, **fleet.worker_timers(FLEET_PACE)))
    async with running(worker):
        ends = await produce(broker.bootstrap, topics.input, fleet)
        events = sum(ends.values())
        await wait_for(
            lambda: not final_state_mismatches(fleet.expected, endpoint.state()), 60, "final states"
        )
        await wait_for(
            lambda: all(worker.committed_offsets().get((topics.input, p)) == e for p, e in ends.items() if e),
            30,
            "offsets committed",
        )
    state = endpoint.state()
    assert state["regressions"] == []
    assert flags(endpoint) == dict.fromkeys(flags(endpoint), 0), state["flags"]
    assert state["calls"] == state["accepted"]
    # Coalescing: far fewer calls than events (one call per event would be about `events`).
    assert state["calls"] <= 2 * len(fleet.expected) < events
    assert state["operations"]["DescribeTaskDefinition"]["calls"] == len(fleet.definitions)
    assert await check_final(fleet, endpoint.url) == []  # exit codes too
    outcomes = [
        msgspec.json.decode(r.value, type=Outcome) for r in await read_all(broker.bootstrap, topics.outcome)
    ]
    assert len(outcomes) == state["calls"], "one outcome record per submission"
    assert all(o.result == "acknowledged" and o.acknowledgment == "ACK" for o in outcomes)
    covered = {(s.partition, off) for o in outcomes for s in o.sources for off in s.offsets}
    assert covered, "outcome records name the source records they cover"
    committed = await group_committed(broker.bootstrap, topics)
    assert committed == {p: ends.get(p, 0) for p in range(topics.partitions)}


async def test_offsets_are_committed_only_after_their_outcomes(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    # Long enough for the checks below (a few Kafka round trips) to run while the calls are out.
    endpoint.set_faults(Faults(latency_ms=3000))
    fleet = await launched_fleet(endpoint, 5, seed=5)
    worker = Worker(worker_settings(broker, endpoint, topics, linger_ms=0))
    async with running(worker):
        ends = await produce(broker.bootstrap, topics.input, fleet)
        await wait_for(lambda: endpoint.state()["calls"] > 0, 20, "a call in flight")
        # The ECS calls are in flight: no outcome yet, so no offset may pass a record they carry
        # (records resolved without a call, e.g. a task's creations while it is PENDING, may be).
        await asyncio.sleep(0.6)  # several commit intervals
        carried = [source for call in worker.intake.coalescer.in_flight() for source in call.sources]
        committed = await group_committed(broker.bootstrap, topics)
        assert await read_all(broker.bootstrap, topics.outcome) == []
        assert carried
        assert all(committed[s.partition] <= s.offset for s in carried), (committed, carried)
        await wait_for(
            lambda: not final_state_mismatches(fleet.expected, endpoint.state()), 60, "final states"
        )
        await wait_for(lambda: worker.pending_work() == 0, 30, "all work resolved")
        await asyncio.sleep(0.5)
    assert await group_committed(broker.bootstrap, topics) == {
        p: ends.get(p, 0) for p in range(topics.partitions)
    }
    assert len(await read_all(broker.bootstrap, topics.outcome)) == endpoint.state()["accepted"]


async def test_poison_records_are_dead_lettered_and_the_stream_goes_on(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    fleet = await launched_fleet(endpoint, 4, seed=9)
    poison = [
        (b"k1", b"\xff\xfe garbage"),
        (b"k2", b'{"cluster":"c","task":"t","observedAt":"yesterday"}'),
        (
            b"k3",
            b'{"cluster":"c","task":"t","observedAt":1,"containers":[{"containerName":"a",'
            b'"networkBindings":[{"containerPortRange":"10-20"},{"containerPortRange":"15-30"}]}]}',
        ),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    for key, value in poison:
        await producer.send_and_wait(topics.input, value=value, key=key, partition=0)
    await producer.stop()
    worker = Worker(worker_settings(broker, endpoint, topics))
    async with running(worker):
        await produce(broker.bootstrap, topics.input, fleet)
        await wait_for(
            lambda: not final_state_mismatches(fleet.expected, endpoint.state()), 60, "final states"
        )
    letters = await read_all(broker.bootstrap, topics.dlq)
    assert sorted((r.key, r.value) for r in letters) == sorted(poison), "original key and bytes kept"
    by_key = {r.key: dict(r.headers) for r in letters}
    assert by_key[b"k1"]["__connect.errors.stage"] == b"VALUE_CONVERTER"
    assert by_key[b"k2"]["__connect.errors.exception.class.name"] == b"ValidationError"
    assert by_key[b"k3"]["__connect.errors.stage"] == b"TRANSFORMATION"
    assert b"overlap" in by_key[b"k3"]["__connect.errors.exception.message"]
    for headers in by_key.values():
        assert headers["__connect.errors.topic"] == topics.input.encode()
        assert headers["__connect.errors.partition"] == b"0"
        assert int(headers["__connect.errors.offset"]) in (0, 1, 2)


async def test_exhausted_and_rejected_submissions(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    endpoint.set_faults(Faults(error_rate=1.0))
    fleet = await launched_fleet(endpoint, 2, seed=13)
    worker = Worker(worker_settings(broker, endpoint, topics, max_attempts=3, linger_ms=0))
    async with running(worker):
        await produce(broker.bootstrap, topics.input, fleet)
        await wait_for(
            lambda: worker.metrics.totals().get("submissions_failed", 0) >= 2, 30, "failed submissions"
        )
        await wait_for(lambda: worker.pending_work() == 0, 30, "offsets released")
    outcomes = [
        msgspec.json.decode(r.value, type=Outcome) for r in await read_all(broker.bootstrap, topics.outcome)
    ]
    failed = [o for o in outcomes if o.result == "failed"]
    assert failed
    assert all(o.attempts == 3 and o.errorCode == "ServerException" for o in failed)
    letters = await read_all(broker.bootstrap, topics.dlq)
    assert len(letters) == len(failed)
    replay = msgspec.json.decode(letters[0].value)
    assert replay["task"] in fleet.expected
    assert dict(letters[0].headers)["__connect.errors.stage"] == b"TASK_PUT"
    assert endpoint.state()["errors"]["ServerException"] == 3 * len(failed)


async def test_a_worker_killed_mid_stream_loses_nothing(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """A crash mid-stream: the next worker reads from the last commit, asks ECS about the tasks
    it meets mid-life, and every final state reaches ECS, nothing flagged."""
    shape = FleetShape(spread_s=60.0, run_s=(10.0, 50.0), running_share=0.2)
    fleet = await launched_fleet(endpoint, 80, seed=21, shape=shape)
    timers = {f"WORKER_{k.upper()}": str(v) for k, v in fleet.worker_timers(FLEET_PACE).items()}
    first = spawn_worker(broker, endpoint, topics, None, **timers)
    try:
        producing = asyncio.create_task(produce(broker.bootstrap, topics.input, fleet))
        await wait_for(lambda: endpoint.state()["accepted"] >= 20, 60, "the first worker at work")
        first.send_signal(signal.SIGKILL)  # a crash: no drain, no commit, no leave
        first.wait(10)
        ends = await producing
        second = spawn_worker(broker, endpoint, topics, None, **timers)
        try:
            await wait_for(
                lambda: not final_state_mismatches(fleet.expected, endpoint.state()), 90, "final states"
            )
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, "a SIGTERM drains and exits cleanly"
        finally:
            if second.poll() is None:
                second.kill()
    finally:
        if first.poll() is None:
            first.kill()
    assert endpoint.state()["regressions"] == []
    assert flags(endpoint) == dict.fromkeys(flags(endpoint), 0), endpoint.state()["flags"]
    assert await group_committed(broker.bootstrap, topics) == {
        p: ends.get(p, 0) for p in range(topics.partitions)
    }
