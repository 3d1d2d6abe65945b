"""Where a partition without a committed offset starts: ``start_time`` when set, through Kafka's
``offsets_for_times`` (ListOffsets by timestamp), else the consumer's ``auto_offset_reset``.

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
    ``start_time``; return the offsets sought. A partition with no record that late is left to
    ``auto_offset_reset``. Raises what aiokafka raises when the broker cannot answer."""
    fresh = [tp for tp in partitions if await consumer.committed(tp) is None]
    if not fresh:
        return {}
    wanted = int(start_time.timestamp() * 1000)
    found = await consumer.offsets_for_times(dict.fromkeys(fresh, wanted))
    sought: dict[TopicPartition, int] = {}
    for tp, answer in found.items():
        if answer is not None:
            consumer.seek(tp, answer.offset)
            sought[tp] = answer.offset
    log.info(
        "start position from start_time %s for partitions without a committed offset",
        start_time.isoformat(),
        extra={
            "sought": sorted((tp.topic, tp.partition, offset) for tp, offset in sought.items()),
            "left_to_auto_offset_reset": sorted((tp.topic, tp.partition) for tp in fresh if tp not in sought),
        },
    )
    return sought
