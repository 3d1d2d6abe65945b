"""Topic creation, producing a fleet and reading back, for the demo, the benchmark and the tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from devkit.fleet import Fleet, Format
from schemas.records import Outcome
from worker.repartition import parse_source

__all__ = [
    "committed_offsets",
    "create_topics",
    "end_offsets",
    "outcome_latencies_ms",
    "partitions_of",
    "produce_fleet",
    "read_all",
    "repartition_origins",
    "round_robin",
]


def round_robin(partitions: list[int], index: int) -> dict[str, Any]:
    """``send`` arguments of the ``index``-th unkeyed record: no key, the partitions in turn."""
    return {"key": None, "partition": partitions[index % len(partitions)]}


async def create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    """Create ``name -> partitions`` topics; existing ones are kept."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name, partitions in topics.items():
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def partitions_of(bootstrap: str, topic: str) -> list[int]:
    """The partition numbers of ``topic`` (none when it does not exist), from a Metadata request
    naming it: a consumer's own metadata names no topic on Apache Kafka until it subscribes."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(
        part["partition"]
        for found in described
        if found["topic"] == topic and found["error_code"] == 0
        for part in found["partitions"]
    )


async def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """``group``'s committed offset of each of ``topic``'s ``partitions``, as the broker has it
    (0 where it committed none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in partitions}
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    tps = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps) if tps else {}
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str, *, idle_s: float = 1.0, timeout_s: float = 30.0) -> list[Any]:
    """Every record of ``topic`` from the beginning up to its end offsets, asked again once they are
    reached (Tansu's can lag by a record) and read on to the new ones once, so that a topic still
    written to (the repartition topic's progress markers) ends there too, not at ``timeout_s``;
    ``idle_s``: the longest wait of one poll."""
    ends = await end_offsets(bootstrap, topic)
    if not any(ends.values()):
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = asyncio.get_running_loop().time() + timeout_s
        asked_again = False
        while asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=10_000)
            for batch in batches.values():
                records.extend(batch)
            positions = {tp.partition: await consumer.position(tp) for tp in tps}
            if all(positions[p] >= end for p, end in ends.items()):
                if asked_again:
                    break
                asked_again = True
                ends = {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
                if all(positions[p] >= end for p, end in ends.items()):
                    break
        return records
    finally:
        await consumer.stop()


async def produce_fleet(
    bootstrap: str,
    topic: str,
    fleet: Fleet,
    *,
    fmt: Format | None = None,
    pace: float | None = 1.0,
    interleave: Mapping[int, tuple[bytes, bytes]] | None = None,
    produced_at: dict[tuple[int, int], int] | None = None,
    unkeyed: bool = False,
) -> dict[int, int]:
    """Send a launched fleet's steps keyed by task ARN; return each partition's end offset as the
    broker's acknowledgements give it (Tansu's ListOffsets can lag by a record).

    ``unkeyed``: no key, the partitions taken in turn (round-robin, as an unkeyed stream with a
    round-robin partitioner): a task's consecutive events land on different partitions.

    ``pace`` scales the schedule into wall time (0.05: twenty times faster); ``None`` sends
    everything at once. Either way events are stamped on the schedule's clock from now
    (``Fleet.observed_ns``). ``interleave`` maps a step index to a (key, value) record sent right
    after that step. ``produced_at``, when given, receives each record's (partition, offset) ->
    wall-clock time (ns) it was sent. Raises ``ValueError`` for a fleet not launched
    (``devkit.fleet.launch``): no endpoint would know its tasks.
    """
    if not fleet.launched:
        raise ValueError("launch the fleet first (devkit.fleet.launch): ECS must know its tasks")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=262_144)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        start, base = time.monotonic(), time.time_ns()
        sent: list[tuple[int, asyncio.Future[Any]]] = []
        for index, step in enumerate(fleet.steps):
            if pace is not None and (delay := start + step.at_s * pace - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            value = fleet.render(step, fleet.observed_ns(step, base), fmt)
            where = round_robin(partitions, index) if unkeyed else {"key": step.task.encode()}
            sent.append((time.time_ns(), await producer.send(topic, value, **where)))
            if interleave and index in interleave:
                key, value = interleave[index]
                sent.append((time.time_ns(), await producer.send(topic, value, key=key)))
        ends: dict[int, int] = {}
        metas = await asyncio.gather(*(future for _, future in sent))
        for (at, _), meta in zip(sent, metas, strict=True):
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
            if produced_at is not None:
                produced_at[(meta.partition, meta.offset)] = at
        return ends
    finally:
        await producer.stop()


def repartition_origins(records: Iterable[Any], topic: str) -> dict[tuple[int, int], tuple[int, int]]:
    """(partition, offset) of each repartition record -> (partition, offset) of the record of
    input ``topic`` it came from (its ``source`` header, ``worker.repartition``)."""
    origins: dict[tuple[int, int], tuple[int, int]] = {}
    for record in records:
        source = parse_source(record.headers or ())
        if source is not None and source[0] == topic:
            origins[(record.partition, record.offset)] = (source[1], source[2])
    return origins


def outcome_latencies_ms(
    outcomes: Iterable[Outcome],
    produced_at: Mapping[tuple[int, int], int],
    topic: str,
    origins: Mapping[tuple[int, int], tuple[int, int]] | None = None,
) -> list[float]:
    """Production-to-acknowledgement latency (ms) of each acknowledged outcome: from the sending
    of the oldest input record it covers (its ``sources`` in ``topic``, or traced back through
    ``origins`` with ``input_keying = any``) to its ``completedAt``. The worker's own
    ``latencyMs`` counts from the events' observation times, which run ahead of the wall clock
    when a fleet is sent faster than real time."""
    latencies: list[float] = []
    for outcome in outcomes:
        inputs = [
            (source.partition, offset)
            if source.topic == topic
            else (origins or {}).get((source.partition, offset))
            for source in outcome.sources
            for offset in source.offsets
        ]
        sent = [produced_at[at] for at in inputs if at is not None and at in produced_at]
        if outcome.result == "acknowledged" and sent:
            latencies.append((outcome.completedAt.timestamp() * 1e9 - min(sent)) / 1e6)
    return latencies
