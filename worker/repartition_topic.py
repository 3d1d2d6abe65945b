"""The repartition topic's administration (``input_keying = any``): created at start, purged as it
is consumed. The Kafka admin edge.

- **Created at start**, as Kafka Streams creates its internal topics: ``<group_id>-repartition``
  with ``repartition_partitions`` partitions (0: as many as the input topic, Streams' rule),
  ``repartition_replication_factor`` replicas (0: the input topic's), ``cleanup.policy=delete``
  and ``retention.ms=repartition_retention_ms``. An existing topic is used as it is (a record's
  partition is the producer's choice on the topic's actual partition count); a partition count
  other than the setting's is logged.
- **Purged** every ``repartition_purge_interval_ms``: the records below the committed offsets of
  the partitions this process owns are deleted (``DeleteRecords``), as Streams purges its
  repartition topics once their records are committed; they are never read again. A broker that
  refuses three times in a row (the embedded development broker does not implement it) is left
  alone: the topic's time retention remains, and must then outlast the longest the coalescing
  stage may stay behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic, RecordsToDelete

from worker.config import Settings, env_name, repartition_topic
from worker.kafka_clients import make_admin
from worker.offsets import TopicPartitionKey
from worker.start_checks import StartCheckFailed

__all__ = ["RepartitionTopic", "TopicError"]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36
"""Kafka protocol error code ``TOPIC_ALREADY_EXISTS``."""
_ADMIN_TIMEOUT_S = 10.0
_PURGE_FAILURES_TOLERATED = 3


class TopicError(StartCheckFailed):
    """The repartition topic cannot be created or sized; the message names the settings to check.
    A start check (nothing is consumed before it): ``python -m worker run`` exits 3 with one line."""


class RepartitionTopic:
    """``async with RepartitionTopic(settings) as topic: await topic.ensure()``, then
    ``run_purges(committed)`` as a loop of the pipeline."""

    def __init__(self, settings: Settings) -> None:
        self.name = repartition_topic(settings.group_id)
        self._settings = settings
        self._admin: Any = make_admin(settings)
        self._purged: dict[int, int] = {}
        self._failures = 0

    async def __aenter__(self) -> RepartitionTopic:
        async with asyncio.timeout(_ADMIN_TIMEOUT_S * 3):
            await self._admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            async with asyncio.timeout(_ADMIN_TIMEOUT_S):
                await self._admin.close()
        except Exception as error:
            log.warning("closing the Kafka admin client failed: %s", error)

    async def ensure(self) -> int:
        """Create the topic unless it exists; return its partition count. Raises ``TopicError``."""
        s = self._settings
        partitions, replicas = s.repartition_partitions, s.repartition_replication_factor
        if not partitions or not replicas:
            input_partitions, input_replicas = await self._shape(s.input_topic)
            if input_partitions == 0:
                raise TopicError(
                    f"input topic {s.input_topic!r} not found: it sizes the repartition topic "
                    "(or set repartition_partitions and repartition_replication_factor)"
                )
            partitions, replicas = partitions or input_partitions, replicas or input_replicas
        configs = {"cleanup.policy": "delete", "retention.ms": str(s.repartition_retention_ms)}
        async with asyncio.timeout(_ADMIN_TIMEOUT_S):
            answer = await self._admin.create_topics(
                [NewTopic(self.name, partitions, replicas, topic_configs=configs)]
            )
        (_, code, message, *_) = answer.topic_errors[0]
        if code == 0:
            log.info(
                "repartition topic created",
                extra={"topic": self.name, "partitions": partitions, "replication_factor": replicas},
            )
            return partitions
        if code != _TOPIC_ALREADY_EXISTS:
            raise TopicError(
                f"cannot create the repartition topic {self.name!r} with {partitions} partitions and "
                f"replication factor {replicas} (repartition_partitions, "
                f"{env_name('repartition_partitions')}; "
                f"repartition_replication_factor, {env_name('repartition_replication_factor')}; "
                f"or create it beforehand): error {code}: {message}"
            )
        existing, _ = await self._shape(self.name)
        if existing != partitions:
            log.warning(
                "the repartition topic exists with %d partitions, not %d: used as it is",
                existing,
                partitions,
                extra={"topic": self.name},
            )
        return existing

    async def _shape(self, topic: str) -> tuple[int, int]:
        """(partitions, replicas of partition 0) of ``topic``; (0, 0) when it does not exist."""
        async with asyncio.timeout(_ADMIN_TIMEOUT_S):
            (described,) = await self._admin.describe_topics([topic])
        found = described.get("partitions") or []
        if described.get("error_code") or not found:
            return 0, 0
        return len(found), max(1, len(found[0].get("replicas") or ()))

    async def run_purges(
        self, interval_s: float, committed: Callable[[], dict[TopicPartitionKey, int]]
    ) -> None:
        """Every ``interval_s``: delete the records below ``committed()`` offsets of this topic.
        Runs until cancelled; purges no more once the broker has refused too often."""
        while True:
            await asyncio.sleep(interval_s)
            if self._failures < _PURGE_FAILURES_TOLERATED:
                await self.purge({p: o for (t, p), o in committed().items() if t == self.name})
                if self._failures == _PURGE_FAILURES_TOLERATED:
                    log.warning(
                        "the broker does not delete records (DeleteRecords failed %d times): the "
                        "repartition topic is left to its retention (repartition_retention_ms)",
                        self._failures,
                        extra={"topic": self.name},
                    )

    async def purge(self, below: dict[int, int]) -> dict[int, int]:
        """Delete the records of each partition below its offset in ``below``; return the new low
        watermarks (nothing when the call failed: logged, counted towards giving up)."""
        moved = {p: o for p, o in below.items() if o > self._purged.get(p, 0)}
        if not moved:
            return {}
        request = {TopicPartition(self.name, p): RecordsToDelete(o) for p, o in moved.items()}
        try:
            async with asyncio.timeout(_ADMIN_TIMEOUT_S):
                answer = await self._admin.delete_records(request)
        except Exception as error:
            self._failures += 1
            log.info("purging the repartition topic failed: %s", error, extra={"topic": self.name})
            return {}
        self._failures = 0
        self._purged.update(moved)
        return {tp.partition: low for tp, low in answer.items()}
