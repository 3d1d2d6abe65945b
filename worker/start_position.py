"""Where a partition without a committed offset starts: ``start_time`` when set, through Kafka's
``offsets_for_times`` (ListOffsets by timestamp), else the consumer's ``auto_offset_reset``. A
partition with no record at or after ``start_time`` starts at its end, as
``kafka-consumer-groups --reset-offsets --to-datetime`` does (Kafka's
``ConsumerGroupCommand``: a timestamp lookup without an answer resets to the log end offset):
what it held is all older than ``start_time``, not to be replayed.

Committed offsets always win: a group that has committed resumes where it was, whatever these
settings say. Called from the rebalance listener on assignment, before the first fetch.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition

__all__ = ["seek_to_start_time"]

log = logging.getLogger(__name__)


async def seek_to_start_time(
    consumer: Any, partitions: list[TopicPartition], start_time: datetime
) -> dict[TopicPartition, int]:
    """Seek each of ``partitions`` that has no committed offset to its first record at or after
    ``start_time``, or to its end where it has none that late; return the offsets sought
    (partition -> offset). The ends are asked for first: a record written between the two
    requests is then at or after the end, or found by the timestamp lookup, never skipped.
    Raises what aiokafka raises when the broker cannot answer."""
    fresh = [tp for tp in partitions if await consumer.committed(tp) is None]
    if not fresh:
        return {}
    ends: dict[TopicPartition, int] = await consumer.end_offsets(fresh)
    wanted = int(start_time.timestamp() * 1000)
    found = await consumer.offsets_for_times(dict.fromkeys(fresh, wanted))
    sought: dict[TopicPartition, int] = {}
    at_end: list[TopicPartition] = []
    for tp in fresh:
        answer = found.get(tp)
        if answer is None:
            at_end.append(tp)
        sought[tp] = ends[tp] if answer is None else answer.offset
        consumer.seek(tp, sought[tp])
    log.info(
        "start position from start_time %s for %d partitions without a committed offset: "
        "%d at a record at or after it, %d at their end (no record that late)",
        start_time.isoformat(),
        len(fresh),
        len(fresh) - len(at_end),
        len(at_end),
        extra={
            "sought": sorted((tp.topic, tp.partition, sought[tp]) for tp in fresh if tp not in at_end),
            "at_end": sorted((tp.topic, tp.partition, sought[tp]) for tp in at_end),
        },
    )
    return sought
