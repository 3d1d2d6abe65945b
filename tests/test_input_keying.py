"""Input keying end to end: unkeyed input (round-robin over the partitions) re-keyed by task through
the repartition topic (``input_keying = any``), and the warning of ``task`` mode when a task's
events arrive on more than one partition. Real parts: the broker fixture, the local ECS endpoint
(tasks started with RunTask first), real aiokafka and aiobotocore clients over sockets.

Each ``any`` test ends with every task final and right at ECS, the endpoint's flags at 0, and every
input record accounted for: its events (decoded offline by the worker's own decoder) are in the
repartition topic under its ``source`` header, or it is dead-lettered, and the group's committed
offsets reached the end of both topics."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from devkit.broker import EmbeddedBroker
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.fleet import check_final, final_state_mismatches
from devkit.harness.workers import wait_exit
from devkit.topics import committed_offsets, end_offsets, partitions_of, produce_fleet, read_all
from schemas.records import split_dead_letter_headers
from tests.conftest import Topics, worker_settings
from tests.ecs_tasks import DockerTask, ecs_tasks
from tests.support import FLEET_PACE, flags, launched_fleet, reap, running, spawn_worker, wait_for
from worker.config import repartition_topic
from worker.decode import RecordDecoder
from worker.pipeline import Worker
from worker.repartition import parse_source, task_key
from worker.repartition_topic import RepartitionTopic
from worker.watermarks import PROGRESS_HEADER

pytestmark = pytest.mark.timeout(150)

ANY = {"WORKER_INPUT_KEYING": "any", "WORKER_REPARTITION_PURGE_INTERVAL_MS": "0"}
"""Subprocess workers re-keying; no purge, so that the test can read the repartition topic back."""


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset of every partition of ``topic`` (0 when none)."""
    # a consumer's metadata names no topic: the partitions from a Metadata request naming it
    return await committed_offsets(bootstrap, group, topic, await partitions_of(bootstrap, topic))


async def settled(
    bootstrap: str,
    group: str,
    topic: str,
    ends: dict[int, int],
    timeout_s: float = 30.0,
    *,
    growing: bool = False,
) -> None:
    """Wait until the group's committed offsets of ``topic`` reach ``ends`` (from the records
    themselves: the embedded broker's ListOffsets can lag); ``growing``: or pass them (the
    repartition topic, where running workers keep writing progress markers)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = {p: o for p, o in (await committed(bootstrap, group, topic)).items() if o or p in ends}
        if now == ends or (growing and all(now.get(p, 0) >= o for p, o in ends.items())):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{topic}: committed {await committed(bootstrap, group, topic)} != ends {ends}")


def is_progress(record: Any) -> bool:
    """Is a repartition record a progress marker (``worker.watermarks``), not an event?"""
    return any(name == PROGRESS_HEADER for name, _ in record.headers or ())


def ends_of(records: list[Any]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    return ends


async def account_for_every_input_record(
    bootstrap: str, topics: Topics, ends: dict[int, int]
) -> Counter[str]:
    """Check that every input record is accounted for and return how: ``forwarded`` (its events are
    in the repartition topic under its ``source`` header, each at least once, nothing else),
    ``dead-lettered``, ``ignored`` (no event: nothing to forward). ``ends``: the input's end
    offsets, as the producer's acknowledgements gave them."""
    rekeyed = repartition_topic(topics.group)
    await settled(bootstrap, topics.group, topics.input, ends)
    written = await read_all(bootstrap, rekeyed)
    await settled(bootstrap, topics.group, rekeyed, ends_of(written), growing=True)
    written = [record for record in written if not is_progress(record)]
    by_source: dict[tuple[str, int, int], set[bytes]] = defaultdict(set)
    for record in written:
        source = parse_source(record.headers)
        assert source is not None, record
        by_source[source].add(record.value)
    lettered = {
        (str(errors.partition), str(errors.offset))
        for errors, _ in (split_dead_letter_headers(r.headers) for r in await read_all(bootstrap, topics.dlq))
        if errors is not None and errors.topic == topics.input
    }
    decoder = RecordDecoder()
    tally: Counter[str] = Counter()
    inputs = await read_all(bootstrap, topics.input)
    assert ends_of(inputs) == ends
    for record in inputs:
        decoded = decoder.decode(
            record.value, record.headers, record_timestamp_ns=record.timestamp * 1_000_000
        )
        events = {msgspec.json.encode(e) for e in decoded.events}
        forwarded = by_source.pop((topics.input, record.partition, record.offset), set())
        assert forwarded == events, f"input record {record.partition}:{record.offset}"
        if decoded.bad:
            assert (str(record.partition), str(record.offset)) in lettered
        tally["forwarded" if events else "dead-lettered" if decoded.bad else "ignored"] += 1
    assert not by_source, f"repartition records of no input record: {list(by_source)[:3]}"
    assert sum(tally.values()) == len(inputs)
    return tally


async def one_partition_per_task(bootstrap: str, topic: str) -> dict[bytes, int]:
    """Each task's partition in the repartition topic: one, murmur2 of its key (the Java clients'
    default partitioner, aiokafka's too)."""
    partitions = sorted((await end_offsets(bootstrap, topic)).keys())
    seen: dict[bytes, set[int]] = defaultdict(set)
    for record in await read_all(bootstrap, topic):
        if not is_progress(record):
            seen[record.key].add(record.partition)
    murmur2 = DefaultPartitioner()
    for key, where in seen.items():
        assert where == {murmur2(key, partitions, partitions)}, (key, where)
    return {key: where.pop() for key, where in seen.items()}


# -- input_keying = any ------------------------------------------------------------------------------


async def test_unkeyed_input_three_workers_a_kill_and_rebalances_every_task_final_and_right(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics, tmp_path: Path
) -> None:
    """80 multi-container tasks, their Docker events sent round-robin over the partitions; one
    worker in process, a second one SIGKILLed mid-stream and a third joining: every task is final
    and right at ECS, none reported STOPPED early, no update after STOPPED, nothing lost."""
    fleet = await launched_fleet(endpoint, 80, seed=51, fmt="docker")
    settings = worker_settings(
        broker, endpoint, topics, input_keying="any", repartition_purge_interval_ms=0, client_id="any-a"
    )
    killed: subprocess.Popen[bytes] | None = None
    joined: subprocess.Popen[bytes] | None = None
    try:
        async with running(Worker(settings)) as first:
            killed = spawn_worker(
                broker, endpoint, topics, tmp_path / "b.log", WORKER_CLIENT_ID="any-b", **ANY
            )
            producing = asyncio.create_task(
                produce_fleet(broker.bootstrap, topics.input, fleet, pace=FLEET_PACE, unkeyed=True)
            )
            await wait_for(lambda: first.metrics.totals().get("repartitioned", 0) > 0, 30, "re-keying")
            await asyncio.sleep(1.0)
            killed.send_signal(signal.SIGKILL)
            assert await wait_exit(killed, 10) == -signal.SIGKILL
            joined = spawn_worker(
                broker, endpoint, topics, tmp_path / "c.log", WORKER_CLIENT_ID="any-c", **ANY
            )
            ends = await producing
            await wait_for(
                lambda: not final_state_mismatches(fleet.expected, endpoint.state()), 90, "final states"
            )
            tally = await account_for_every_input_record(broker.bootstrap, topics, ends)
    finally:
        reap(killed, joined)
    state = endpoint.state()
    assert flags(endpoint) == dict.fromkeys(flags(endpoint), 0), state["flags"]
    assert state["regressions"] == []
    assert await check_final(fleet, endpoint.url) == []  # exit codes too, as DescribeTasks shows them
    assert tally["forwarded"] > 0
    assert tally["dead-lettered"] == 0
    keys = await one_partition_per_task(broker.bootstrap, repartition_topic(topics.group))
    assert len(keys) == len(fleet.expected)


async def test_a_two_worker_handover_of_unkeyed_input_reports_each_task_once_per_status(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """The issue's case, small: three-container tasks whose events are spread over every
    partition, a second worker joining while they run, then they stop. Each task: RUNNING, then
    STOPPED with every container, never two owners reporting partial views."""
    names = ("app", "log", "sidecar")
    async with ecs_tasks(endpoint.url) as ecs:
        arn = await ecs.register(
            "web", [{"name": "app"}, *({"name": n, "essential": False} for n in names[1:])]
        )
        tasks: list[DockerTask] = []
        while len(tasks) < 30:
            tasks += await ecs.run("prod", arn, count=10)
    base = time.time_ns()
    starts = [
        t.event(n, a, 0.01 * i, base_ns=base)
        for i, t in enumerate(tasks)
        for n in names
        for a in ("create", "start")
    ]
    stops = [
        t.event(n, a, 60 + (0 if n == "app" else 1), exit_code=0 if n == "app" else 143, base_ns=base)
        for t in tasks
        for n in names
        for a in (("die",) if n == "app" else ("kill", "die"))
    ]
    settings = worker_settings(broker, endpoint, topics, input_keying="any", repartition_purge_interval_ms=0)
    async with running(Worker(settings)) as first:
        ends = await send_round_robin(broker.bootstrap, topics.input, starts)
        await wait_for(lambda: all(status(endpoint, t) == "RUNNING" for t in tasks), 30, "RUNNING")
        async with running(Worker(settings)) as second:
            await asyncio.sleep(1.0)
            ends = await send_round_robin(broker.bootstrap, topics.input, stops, ends)
            await wait_for(lambda: all(status(endpoint, t) == "STOPPED" for t in tasks), 60, "STOPPED")
            await wait_for(lambda: first.pending_work() == second.pending_work() == 0, 30, "resolved")
            tally = await account_for_every_input_record(broker.bootstrap, topics, ends)
    state = endpoint.state()
    assert flags(endpoint) == dict.fromkeys(flags(endpoint), 0), state["flags"]
    assert state["regressions"] == []
    for task in tasks:
        assert state["tasks"][task.arn]["history"] == ["RUNNING", "STOPPED"]
        assert state["tasks"][task.arn]["containers"] == dict.fromkeys(names, "STOPPED")
    assert tally == {"forwarded": len(starts) + len(stops)}


def status(endpoint: LocalEcsEndpoint, task: DockerTask) -> str | None:
    found: dict[str, Any] | None = endpoint.state()["tasks"].get(task.arn)
    return None if found is None else found.get("status")


async def send_round_robin(
    bootstrap: str, topic: str, values: list[bytes], ends: dict[int, int] | None = None
) -> dict[int, int]:
    """Send unkeyed records, the partitions in turn; each partition's end offset (``ends``: the
    earlier ones)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        ends = dict(ends or {})
        for index, value in enumerate(values):
            meta = await producer.send_and_wait(topic, value, partition=partitions[index % len(partitions)])
            ends[meta.partition] = meta.offset + 1
        return ends
    finally:
        await producer.stop()


async def test_a_bad_repartition_record_is_dead_lettered_and_the_stage_goes_on(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """Something else writes to the repartition topic: its record is dead-lettered (stage decode,
    naming the repartition record), never a crash; the tasks' own events still reach ECS."""
    async with ecs_tasks(endpoint.url) as ecs:
        (task,) = await ecs.run("prod", await ecs.register("one", [{"name": "app"}]))
    base = time.time_ns()
    settings = worker_settings(broker, endpoint, topics, input_keying="any", repartition_purge_interval_ms=0)
    rekeyed = repartition_topic(topics.group)
    async with running(Worker(settings)) as worker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(rekeyed, b'{"not": "an event"}', key=task_key("prod", task.arn))
        finally:
            await producer.stop()
        events = [
            task.event("app", a, t, exit_code=0, base_ns=base)
            for a, t in (("create", 0), ("start", 1), ("die", 5))
        ]
        await send_round_robin(broker.bootstrap, topics.input, events)
        await wait_for(lambda: status(endpoint, task) == "STOPPED", 30, "STOPPED")
        await wait_for(lambda: worker.pending_work() == 0, 30, "resolved")
        await settled(
            broker.bootstrap,
            topics.group,
            rekeyed,
            ends_of(await read_all(broker.bootstrap, rekeyed)),
            growing=True,
        )
    (letter,) = await read_all(broker.bootstrap, topics.dlq)
    errors, _ = split_dead_letter_headers(letter.headers)
    assert errors is not None
    assert errors.stage == "VALUE_CONVERTER"  # Kafka Connect's name of the decode stage
    assert errors.topic == rekeyed
    assert letter.value == b'{"not": "an event"}'
    reported = endpoint.state()["tasks"][task.arn]
    assert reported["history"][-1] == "STOPPED"
    assert reported["containers"] == {"app": "STOPPED"}


async def test_the_repartition_topic_is_created_from_the_input_topic_and_purged_when_the_broker_can(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """Created with the input topic's partition count (Streams' rule); purging deletes the records
    below an offset where the broker implements DeleteRecords (Apache Kafka does)."""
    settings = worker_settings(broker, endpoint, topics, input_keying="any")
    async with RepartitionTopic(settings) as topic:
        assert await topic.ensure() == topics.partitions
        assert await topic.ensure() == topics.partitions  # exists: used as it is
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            for n in range(5):
                await producer.send_and_wait(topic.name, b"{}", partition=0, key=b"%d" % n)
        finally:
            await producer.stop()
        lows = await topic.purge({0: 3})
    assert len(await end_offsets(broker.bootstrap, topic.name)) == topics.partitions
    if not lows:
        pytest.skip("the broker does not implement DeleteRecords (the embedded broker): retention only")
    assert lows == {0: 3}
    assert [r.offset for r in await read_all(broker.bootstrap, topic.name)] == [3, 4]


async def test_the_quota_share_counts_the_repartition_topics_partitions(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """With ``input_keying = any`` the ECS calls come from the repartition topic's records: a
    worker's share of the account quota is its share of that topic's partitions (2 here), not of
    both topics' (3 + 2: fifths)."""
    any_keying: dict[str, object] = {
        "input_keying": "any",
        "repartition_partitions": 2,
        "repartition_purge_interval_ms": 0,
    }
    rekeyed = repartition_topic(topics.group)

    def share(worker: Worker) -> float | None:
        return worker.metrics.registry.get_sample_value("ecs_state_worker_quota_share")

    def owned(worker: Worker) -> int:
        return sum(topic == rekeyed for topic, _ in worker.partitions.book.partitions())

    async with running(
        Worker(worker_settings(broker, endpoint, topics, client_id="share-a", **any_keying))
    ) as first:
        await wait_for(lambda: owned(first) == 2, 30, "both repartition partitions")
        assert share(first) == 1.0
        async with running(
            Worker(worker_settings(broker, endpoint, topics, client_id="share-b", **any_keying))
        ) as second:
            both = (first, second)
            await wait_for(
                lambda: sum(len(w.partitions.book.partitions()) for w in both) == topics.partitions + 2,
                30,
                "every partition of both topics assigned once",
            )
            await wait_for(lambda: owned(first) + owned(second) == 2, 30, "the repartition partitions")
            for worker in both:
                # owned / 2, a process with none keeping one partition's share (RateBudgets.set_share)
                assert share(worker) == max(1, owned(worker)) / 2


# -- input_keying = task: the warning ----------------------------------------------------------------


async def test_task_keying_counts_and_warns_once_when_tasks_span_partitions(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    """Five tasks whose create and start land on two partitions, three whose events stay on one:
    the metric counts the five, one warning line names one of them (rate-limited)."""
    async with ecs_tasks(endpoint.url) as ecs:
        arn = await ecs.register("solo", [{"name": "app"}])
        tasks = await ecs.run("prod", arn, count=8)
    base = time.time_ns()
    records: list[tuple[int, bytes]] = []
    for i, task in enumerate(tasks):
        split = i < 5
        records.append((0 if split else 2, task.event("app", "create", 0.0, base_ns=base)))
        records.append((1 if split else 2, task.event("app", "start", 0.1, base_ns=base)))
    caplog.set_level(logging.WARNING, logger="worker.keying")
    async with running(Worker(worker_settings(broker, endpoint, topics))) as worker:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            for partition, value in records:
                await producer.send_and_wait(topics.input, value, partition=partition)
        finally:
            await producer.stop()
        await wait_for(lambda: all(status(endpoint, t) == "RUNNING" for t in tasks), 30, "RUNNING")
        counted = worker.metrics.registry.get_sample_value("ecs_state_worker_tasks_split_total")
    assert counted == 5
    warnings = [r for r in caplog.records if r.name == "worker.keying"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "input_keying = any" in warnings[0].getMessage()
    assert warnings[0].__dict__["task"] in {t.arn for t in tasks[:5]}
