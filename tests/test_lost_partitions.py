"""Partitions lost (``group_log.membership_lost``): when the group has dropped this member,
aiokafka resets its member id and generation before it calls ``on_partitions_revoked`` to rejoin;
the worker then gives the partitions up without a drain (``Partitions.lose``). On the tests'
broker, with aiokafka's own coordinator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from devkit.brokers import Broker
from tests.conftest import Topics
from tests.support import wait_for
from worker.group_log import membership_lost

pytestmark = pytest.mark.timeout(90)


class Revocations(ConsumerRebalanceListener):  # type: ignore[misc]
    """Whether the membership was lost at each revocation of partitions, and the assignments."""

    def __init__(self) -> None:
        self.consumer: Any = None
        self.lost: list[bool] = []
        self.assignments = 0

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            self.lost.append(membership_lost(self.consumer))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.assignments += 1


def member(broker: Broker, topics: Topics, listener: Revocations) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=topics.group,
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=300,
    )
    consumer.subscribe([topics.input], listener=listener)
    listener.consumer = consumer
    return consumer


async def test_a_revocation_tells_a_dropped_member_from_an_ordinary_rebalance(
    broker: Broker, topics: Topics
) -> None:
    first = Revocations()
    consumer = member(broker, topics, first)
    assert not membership_lost(consumer)  # not started: no coordinator yet
    await consumer.start()
    second_consumer = None
    try:
        await wait_for(lambda: first.assignments == 1, 30, "the first assignment")
        assert not membership_lost(consumer)
        second = Revocations()
        second_consumer = member(broker, topics, second)
        await second_consumer.start()  # an ordinary rebalance: the first member drains
        await wait_for(lambda: first.lost == [False], 30, "an ordinary revocation")
        await wait_for(lambda: first.assignments == 2, 30, "the second assignment")
        # What aiokafka does when a heartbeat or a commit is answered UnknownMemberId (the
        # session expired): reset the membership, then rejoin.
        consumer._coordinator.reset_generation()
        consumer._coordinator.request_rejoin()
        await wait_for(lambda: first.lost == [False, True], 30, "the revocation of lost partitions")
        await wait_for(lambda: first.assignments == 3, 30, "the assignment after rejoining")
        assert not membership_lost(consumer)
    finally:
        await asyncio.gather(consumer.stop(), *([second_consumer.stop()] if second_consumer else []))
