"""What the consumer group is doing, in the log, between start and the first assignment.

aiokafka says nothing at the worker's log level while it joins the group, and a join can take a
session timeout or more (a previous member of the same id still holds its partitions, a rebalance
waits for slow members): ``announce_join`` logs the join (group, topic, member), and
``log_until_assigned`` a "waiting for partition assignment" line every ``interval_s`` until the
assignment. ``member_of`` reads the coordinator's member id and generation, which aiokafka keeps
on a private object; absent, they are logged as None. ``membership_lost`` reads the same to tell
a revocation of partitions the group already gave to others (this member was dropped) from an
ordinary one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from worker.config import Settings

__all__ = ["WAIT_LOG_INTERVAL_S", "announce_join", "log_until_assigned", "member_of", "membership_lost"]

log = logging.getLogger("worker.group")

WAIT_LOG_INTERVAL_S = 10.0


def member_of(consumer: Any) -> dict[str, Any]:
    """``{"member_id": str | None, "generation": int | None}`` of the consumer's group membership."""
    coordinator = getattr(consumer, "_coordinator", None)
    return {
        "member_id": getattr(coordinator, "member_id", None) or None,
        "generation": getattr(coordinator, "generation", None),
    }


def membership_lost(consumer: Any) -> bool:
    """Whether the group dropped this member: aiokafka resets the member id to ``""`` (Kafka's
    UNKNOWN_MEMBER_ID) and the generation to -1 when a heartbeat, a commit or a sync is answered
    ``UnknownMemberId`` or ``IllegalGeneration`` (aiokafka: ``GroupCoordinator.reset_generation``),
    before it calls ``on_partitions_revoked`` to rejoin; the partitions revoked then were given to
    other members already (Kafka's Java client calls ``onPartitionsLost`` instead). False when
    there is no coordinator (not started) or it is a member."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None:
        return False
    return getattr(coordinator, "member_id", None) == "" and getattr(coordinator, "generation", None) == -1


def _group_fields(settings: Settings) -> dict[str, Any]:
    return {
        "group": settings.group_id,
        "topic": settings.input_topic,
        "client_id": settings.client_id,
        "group_instance_id": settings.group_instance_id,
    }


def announce_join(settings: Settings) -> None:
    """One line: the worker joins ``group_id`` for ``input_topic``."""
    log.info("joining consumer group %s for topic %s", settings.group_id, settings.input_topic,
             extra=_group_fields(settings))  # fmt: skip


async def log_until_assigned(
    settings: Settings, assigned: asyncio.Event, interval_s: float = WAIT_LOG_INTERVAL_S
) -> None:
    """Every ``interval_s`` seconds until ``assigned`` is set: one "waiting" line with the time
    waited so far (``waited_s``). Returns once assigned; cancel it to stop earlier."""
    began = time.monotonic()
    while True:
        try:
            async with asyncio.timeout(interval_s):
                await assigned.wait()
            return
        except TimeoutError:
            waited = time.monotonic() - began
            log.info(
                "waiting for partition assignment (%.0f s so far; the group may be waiting for "
                "other members or for an earlier member's session to expire)",
                waited,
                extra={**_group_fields(settings), "waited_s": round(waited, 1)},
            )
