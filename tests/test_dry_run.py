"""`run --dry-run`: consume, decode, coalesce and log the requests; no ECS call, no commit, no
outcome or dead-letter record, its own consumer group. The embedded broker and the local ECS
endpoint, an in-process worker."""

from __future__ import annotations

import logging

import pytest
from aiokafka import AIOKafkaProducer

from devkit.broker import EmbeddedBroker
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.topics import end_offsets, produce_fleet
from tests.conftest import Topics, worker_settings
from tests.support import group_committed, launched_fleet, running, wait_for
from worker.pipeline import Worker
from worker.start_checks import check_start


def _submitted(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The tasks of the requests the dry run logged."""
    submits = [r for r in caplog.records if r.getMessage().startswith("dry run: would submit")]
    return {r.request["task"] for r in submits}  # type: ignore[attr-defined]


async def test_a_dry_run_logs_the_requests_and_has_no_effect(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="worker")
    fleet = await launched_fleet(endpoint, 5, seed=21)
    before = endpoint.state()["operations"]
    await produce_fleet(broker.bootstrap, topics.input, fleet, pace=None)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    await producer.send_and_wait(topics.input, value=b"\xff poison", key=b"bad", partition=0)
    await producer.stop()
    records = sum((await end_offsets(broker.bootstrap, topics.input)).values())
    worker = Worker(worker_settings(broker, endpoint, topics, dry_run=True))
    assert worker.settings.group_id == f"{topics.group}-dry-run"
    async with running(worker):
        await wait_for(
            lambda: worker.metrics.totals().get("records_consumed", 0) >= records, 30, "every record read"
        )
        await wait_for(lambda: _submitted(caplog) == set(fleet.expected), 30, "every task's request")
        await wait_for(lambda: worker.pending_work() == 0, 30, "every record resolved")
    writes = [r for r in caplog.records if r.getMessage().startswith("dry run: would write")]
    assert {r.topic for r in writes} == {topics.outcome, topics.dlq}  # type: ignore[attr-defined]
    (letter,) = [r for r in writes if r.topic == topics.dlq]  # type: ignore[attr-defined]
    assert letter.dead_letter["__connect.errors.stage"] == "VALUE_CONVERTER"  # type: ignore[attr-defined]
    # no effect: no ECS call, no record written, no offset committed (either group)
    assert endpoint.state()["operations"] == before
    assert endpoint.state()["calls"] == 0
    assert await end_offsets(broker.bootstrap, topics.outcome) in ({}, {0: 0}, {0: 0, 1: 0})
    assert await end_offsets(broker.bootstrap, topics.dlq) in ({}, {0: 0})
    assert set((await group_committed(broker.bootstrap, topics)).values()) == {0}
    dry_group = Topics(topics.input, topics.outcome, topics.dlq, worker.settings.group_id, topics.partitions)
    assert set((await group_committed(broker.bootstrap, dry_group)).values()) == {0}


async def test_a_dry_run_needs_no_credentials_nor_region(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    checked = await check_start(worker_settings(broker, endpoint, topics, dry_run=True))
    assert checked.region is None
