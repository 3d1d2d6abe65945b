"""Reading the dead-letter topic, and the outcome topic, for ``python -m worker dlq``. A Kafka edge.

The reader is a consumer without a group: it assigns itself every partition of the topic, reads
from the start (or from the first record at or after ``since``) up to the end it found when it
started, and commits nothing, so that reading never moves any group's offsets and can be done as
often as wanted, by the worker's own group or anyone else.

A ``Letter`` is one dead-letter record with its error headers parsed
(``schemas.records.DeadLetter``, Kafka Connect's names) and the input record's own headers apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.records import (
    CONNECT_STAGES,
    DEAD_LETTER_HEADER_NAMES,
    STAGE_CLASSES,
    DeadLetter,
    Stage,
    split_dead_letter_headers,
)
from worker.config import Settings
from worker.kafka_clients import kafka_security

__all__ = ["Letter", "LetterFilter", "letter_of", "make_reader", "read_letter", "read_letters", "read_topic"]

log = logging.getLogger(__name__)
_EARLIER_PREFIX = "errors."

_IDLE_POLL_MS = 500
"""A poll this long with nothing new ends a read once the end offsets are reached (the embedded
broker's end offsets can lag by a record, so the end is confirmed by an empty poll)."""


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead-letter record: where it is, when it was written (ms since the epoch), its key and
    value, its error headers (None when it has none this worker can read) and the input record's
    own headers."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    errors: DeadLetter | None
    headers: list[tuple[str, bytes]]

    @property
    def stage(self) -> Stage | None:
        return None if self.errors is None else self.errors.pipeline_stage

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which letters to take: any of ``stages`` and any of ``error_classes`` (empty: all), written
    at or after ``since_ms`` and before ``until_ms`` (ms since the epoch; None: unbounded)."""

    stages: Collection[Stage] = ()
    error_classes: Collection[str] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    positions: Collection[tuple[int, int]] = ()
    """``(partition, offset)`` of the letters to take (empty: any), as ``dlq list`` prints them."""

    def matches(self, letter: Letter) -> bool:
        if self.positions and (letter.partition, letter.offset) not in self.positions:
            return False
        if self.since_ms is not None and letter.timestamp_ms < self.since_ms:
            return False
        if self.until_ms is not None and letter.timestamp_ms >= self.until_ms:
            return False
        if self.stages and letter.stage not in self.stages:
            return False
        error_class = None if letter.errors is None else letter.errors.errorClass
        return not self.error_classes or error_class in self.error_classes


def letter_of(record: Any) -> Letter:
    """A ``Letter`` from an aiokafka ``ConsumerRecord`` of the dead-letter topic; letters written
    before the worker used Kafka Connect's header names (``errors.<member>``) are read too."""
    errors, headers = split_dead_letter_headers(record.headers or ())
    if errors is None:
        errors, headers = _earlier_headers(headers, record.key)
    return Letter(
        record.partition, record.offset, record.timestamp, record.key, record.value, errors, headers
    )


def _earlier_headers(
    headers: list[tuple[str, bytes]], key: bytes | None
) -> tuple[DeadLetter | None, list[tuple[str, bytes]]]:
    """Error headers of the earlier form (``errors.stage`` = ``decode``, ``errors.errorClass``,
    ``errors.message``, ``errors.topic``...), which kept none of the input record's headers."""
    if not any(name.startswith(_EARLIER_PREFIX) for name, _ in headers):
        return None, headers
    earlier = {
        name.removeprefix(_EARLIER_PREFIX): value.decode("utf-8", "replace") for name, value in headers
    }
    stage = earlier.get("stage")
    if stage not in ("decode", "validate", "submit"):
        return None, headers
    fields: dict[str, Any] = {
        "stage": CONNECT_STAGES[stage],  # type: ignore[index]  # one of the three, checked above
        "className": STAGE_CLASSES[stage],  # type: ignore[index]
        "errorClass": earlier.get("errorClass", "Unknown"),
        "message": earlier.get("message", ""),
        "connector": "",
        "worker": earlier.get("worker", ""),
        **{name: earlier[name] for name in ("topic", "partition", "offset", "item") if name in earlier},
    }
    if stage == "submit" and key:
        fields["task"] = key.decode("utf-8", "replace")
    named = {DEAD_LETTER_HEADER_NAMES[member]: value for member, value in fields.items()}
    try:
        return msgspec.convert(named, DeadLetter, strict=False), []
    except msgspec.ValidationError:
        return None, headers


def make_reader(settings: Settings) -> AIOKafkaConsumer:
    """A consumer of the settings' brokers and security that belongs to no group and commits
    nothing."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=f"{settings.client_id}-dlq",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=max(1_048_576, 2 * settings.max_record_bytes + 65_536),
        **kafka_security(settings),
    )


async def read_topic(consumer: Any, topic: str, *, since_ms: int | None = None) -> AsyncIterator[Any]:
    """Every record of ``topic`` (each partition in offset order) from the first written at or
    after ``since_ms`` (from the start when None) to the end found on entry. Raises ``LookupError``
    when the brokers do not know the topic."""
    partitions = await _partitions_of(consumer, topic)
    if not partitions:
        raise LookupError(f"topic {topic!r} does not exist")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    ends: dict[Any, int] = await consumer.end_offsets(tps)
    await _seek_start(consumer, tps, since_ms)
    while True:
        batches = await consumer.getmany(timeout_ms=_IDLE_POLL_MS, max_records=10_000)
        for tp in sorted(batches, key=lambda tp: tp.partition):
            for record in batches[tp]:
                yield record
        if not batches and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
            return


async def _partitions_of(consumer: Any, topic: str) -> set[int]:
    """The partitions of ``topic`` (none when it does not exist), from metadata of every topic:
    what ``consumer.topics()`` asks for, whose answer aiokafka keeps apart from the consumer's own
    metadata (which, on Apache Kafka, names only the topics it subscribed to: none here)."""
    cluster = await consumer._client.fetch_all_metadata()
    return set(cluster.partitions_for_topic(topic) or ())


async def _seek_start(consumer: Any, tps: list[TopicPartition], since_ms: int | None) -> None:
    """Seek to the first record at or after ``since_ms``; to the start when it is None or the
    broker cannot answer by time (the records before are then filtered by the caller)."""
    if since_ms is not None:
        with contextlib.suppress(Exception):
            found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, found[tp].offset if found.get(tp) is not None else ends[tp])
            return
        log.info("the broker cannot look offsets up by time: reading from the start")
    await consumer.seek_to_beginning(*tps)


async def read_letters(
    settings: Settings, selected: LetterFilter, *, topic: str | None = None
) -> AsyncIterator[Letter]:
    """The letters of the dead-letter topic (``topic``, else ``settings.dlq_topic``) that
    ``selected`` matches, oldest first within each partition."""
    consumer = make_reader(settings)
    try:
        await consumer.start()
        async for record in read_topic(consumer, topic or settings.dlq_topic, since_ms=selected.since_ms):
            letter = letter_of(record)
            if selected.matches(letter):
                yield letter
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await consumer.stop()


async def read_letter(settings: Settings, partition: int, offset: int) -> Letter | None:
    """The record at ``partition``:``offset`` of the dead-letter topic, or None when there is none
    (past the end, or removed by retention). Raises ``LookupError`` when the topic or the
    partition does not exist."""
    consumer = make_reader(settings)
    try:
        await consumer.start()
        if partition not in await _partitions_of(consumer, settings.dlq_topic):
            raise LookupError(f"topic {settings.dlq_topic!r} has no partition {partition}")
        tp = TopicPartition(settings.dlq_topic, partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, offset)
        while await consumer.position(tp) <= max(offset, end):
            batches = await consumer.getmany(tp, timeout_ms=_IDLE_POLL_MS, max_records=1)
            for record in batches.get(tp, ()):
                return letter_of(record) if record.offset == offset else None
            if not batches:
                return None
        return None
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await consumer.stop()
