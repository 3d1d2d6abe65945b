"""Where a group without committed offsets starts (auto_offset_reset, start_time), and what the
log says between start and assignment; on the embedded broker, with an in-process worker."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from devkit.broker import EmbeddedBroker
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.topics import read_all
from tests.conftest import Topics, worker_settings
from tests.support import group_committed, running, wait_for
from worker.group_log import log_until_assigned
from worker.pipeline import Worker


async def _poison(bootstrap: str, topic: str, keys: list[bytes]) -> None:
    """Undecodable records (dead-lettered by the worker), one per key, all in partition 0."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key in keys:
            await producer.send_and_wait(topic, value=b"\xff not an event", key=key, partition=0)
    finally:
        await producer.stop()


async def _dead_lettered_keys(
    broker: EmbeddedBroker, topics: Topics, worker: Worker, ends: int
) -> list[bytes]:
    """Keys dead-lettered once the worker committed partition 0 up to ``ends``."""

    async def committed() -> int:
        return (await group_committed(broker.bootstrap, topics))[0]

    deadline = asyncio.get_running_loop().time() + 30
    while await committed() < ends:
        assert asyncio.get_running_loop().time() < deadline, "partition 0 not committed"
        await asyncio.sleep(0.2)
    return sorted(r.key for r in await read_all(broker.bootstrap, topics.dlq))


@pytest.mark.parametrize(("reset", "expected"), [("earliest", [b"new", b"old"]), ("latest", [b"new"])])
async def test_auto_offset_reset_decides_where_a_new_group_starts(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics, reset: str, expected: list[bytes]
) -> None:
    await _poison(broker.bootstrap, topics.input, [b"old"])
    worker = Worker(worker_settings(broker, endpoint, topics, auto_offset_reset=reset))
    async with running(worker):
        await asyncio.sleep(0.5)  # the fetch position is set (latest: the end) before "new" arrives
        await _poison(broker.bootstrap, topics.input, [b"new"])
        assert await _dead_lettered_keys(broker, topics, worker, 2) == expected


async def test_start_time_skips_what_came_before_it(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    await _poison(broker.bootstrap, topics.input, [b"before-1", b"before-2"])
    await asyncio.sleep(0.1)
    start = datetime.now(UTC)
    await asyncio.sleep(0.1)
    await _poison(broker.bootstrap, topics.input, [b"after-1", b"after-2"])
    worker = Worker(worker_settings(broker, endpoint, topics, start_time=start))
    async with running(worker):
        assert await _dead_lettered_keys(broker, topics, worker, 4) == [b"after-1", b"after-2"]


async def test_start_time_never_overrides_a_committed_offset(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    await _poison(broker.bootstrap, topics.input, [b"first"])
    async with running(Worker(worker_settings(broker, endpoint, topics))) as first:
        assert await _dead_lettered_keys(broker, topics, first, 1) == [b"first"]
    await _poison(broker.bootstrap, topics.input, [b"second"])
    await asyncio.sleep(0.1)
    later = datetime.now(UTC)  # after "second": were it applied over the commit, "second" is skipped
    async with running(Worker(worker_settings(broker, endpoint, topics, start_time=later))) as second:
        assert await _dead_lettered_keys(broker, topics, second, 2) == [b"first", b"second"]


async def test_the_join_and_the_assignment_are_logged_and_no_empty_revocation(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker")
    async with running(Worker(worker_settings(broker, endpoint, topics))):
        pass
    messages = [r.getMessage() for r in caplog.records]
    (join,) = [r for r in caplog.records if r.getMessage().startswith("joining consumer group")]
    assert (join.group, join.topic) == (topics.group, topics.input)  # type: ignore[attr-defined]
    (assigned,) = [r for r in caplog.records if r.getMessage().startswith("partitions assigned")]
    expected = ", ".join(f"{topics.input}[{p}]" for p in range(topics.partitions))
    assert assigned.getMessage() == f"partitions assigned: {expected}"
    assert str(assigned.member_id).startswith("ecs-state-worker")  # type: ignore[attr-defined]
    assert isinstance(assigned.generation, int)  # type: ignore[attr-defined]
    assert not [m for m in messages if "revoked" in m]


async def test_waiting_for_an_assignment_is_logged_until_it_comes(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker.group")
    assigned = asyncio.Event()
    waiting = asyncio.create_task(
        log_until_assigned(worker_settings(broker, endpoint, topics), assigned, interval_s=0.2)
    )
    await wait_for(lambda: len(caplog.records) >= 2, 5, "two waiting lines")
    assigned.set()
    await asyncio.wait_for(waiting, 1)
    lines = len(caplog.records)
    await asyncio.sleep(0.5)
    assert len(caplog.records) == lines  # no more once assigned
    assert all(r.getMessage().startswith("waiting for partition assignment") for r in caplog.records)
    assert [r.group for r in caplog.records] == [topics.group] * lines  # type: ignore[attr-defined]
    assert caplog.records[0].waited_s < caplog.records[1].waited_s  # type: ignore[attr-defined]


async def test_start_time_after_every_record_starts_at_the_end_not_the_beginning(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker.start_position")
    await _poison(broker.bootstrap, topics.input, [b"before-1", b"before-2"])
    await asyncio.sleep(0.1)
    start = datetime.now(UTC)  # after every record: partition 0 has none that late, 1 and 2 none
    worker = Worker(worker_settings(broker, endpoint, topics, start_time=start, auto_offset_reset="earliest"))
    async with running(worker):

        def positioned() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "worker.start_position"]

        await wait_for(lambda: bool(positioned()), 30, "the start position")
        await _poison(broker.bootstrap, topics.input, [b"after"])
        assert await _dead_lettered_keys(broker, topics, worker, 3) == [b"after"]
    (line,) = positioned()
    assert getattr(line, "at_end", None) == [(topics.input, 0, 2), (topics.input, 1, 0), (topics.input, 2, 0)]
    assert getattr(line, "sought", None) == []
