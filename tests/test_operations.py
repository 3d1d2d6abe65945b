"""Operations: /metrics, /healthz and /readyz of a running worker; per-task bounds; JSON logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import aiohttp
import msgspec
from aiokafka import AIOKafkaProducer

from devkit.brokers import Broker
from devkit.ecs_endpoint import Faults, LocalEcsEndpoint
from devkit.fleet import final_state_mismatches
from devkit.topics import read_all
from schemas.events import ContainerChange, TaskEvent
from tests.conftest import Topics, worker_settings
from tests.ecs_tasks import ecs_tasks
from tests.support import launched_fleet, running, wait_for
from tests.test_pipeline import produce
from worker.health import HealthServer
from worker.logs import configure_logging
from worker.pipeline import Worker


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        return answer.status, await answer.text()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, label_text = key.partition("{")
        found = dict(pair.split("=", 1) for pair in label_text.rstrip("}").split(",") if pair)
        if sample == name and {k: v.strip('"') for k, v in found.items()} == labels:
            return float(value)
    return 0.0


async def test_metrics_and_health_of_a_running_worker(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    # The account quota is set: the only member takes all of it (3 of 3 partitions), under its own cap.
    settings = msgspec.structs.replace(worker_settings(broker, endpoint, topics), account_quota_per_s=1500.0)
    worker = Worker(settings)
    health = HealthServer(worker, port=0, host="127.0.0.1")
    await health.start()
    base = f"http://127.0.0.1:{health.port}"
    try:
        assert (await get(f"{base}/readyz"))[0] == 503, "not ready before joining the group"
        fleet = await launched_fleet(endpoint, 10, seed=31)
        async with running(worker):
            assert (await get(f"{base}/readyz"))[0] == 200
            await produce(broker.bootstrap, topics.input, fleet)
            await wait_for(
                lambda: not final_state_mismatches(fleet.expected, endpoint.state()), 60, "final states"
            )
            await wait_for(lambda: worker.pending_work() == 0, 30, "work resolved")
            await asyncio.sleep(0.5)  # a commit interval or two, for the offset gauges
            status, body = await get(f"{base}/healthz")
            assert status == 200
            assert json.loads(body)["healthy"] is True
            status, text = await get(f"{base}/metrics")
        assert status == 200
        p = "ecs_state_worker_"
        consumed = sum(
            metric(text, p + "records_consumed_total", topic=topics.input, partition=str(i))
            for i in range(topics.partitions)
        )
        assert consumed == len(fleet.steps)
        assert metric(text, p + "submissions_total", result="acknowledged") == endpoint.state()["accepted"]
        assert metric(text, p + "ecs_calls_total", code="OK") == endpoint.state()["accepted"]
        assert metric(text, p + "event_to_ack_seconds_count") == endpoint.state()["accepted"]
        assert metric(text, p + "events_decoded_total", format="canonical") > 0
        assert metric(text, p + "rate_limit_per_second") == 1500.0
        assert metric(text, p + "quota_share") == 1.0
        assert metric(text, p + "ecs_calls_in_flight") == 0
        committed = [
            metric(text, p + "committed_offset", topic=topics.input, partition=str(i)) for i in range(3)
        ]
        assert sum(committed) == len(fleet.steps)
        lags = [metric(text, p + "consumer_lag", topic=topics.input, partition=str(i)) for i in range(3)]
        assert lags == [0.0, 0.0, 0.0]
        assert f'{p}consumer_lag{{partition="0",topic="{topics.input}"}}' in text
    finally:
        await health.stop()


async def test_liveness_fails_when_work_makes_no_progress(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    endpoint.set_faults(Faults(latency_ms=4000))  # every ECS call hangs for 4 s
    worker = Worker(worker_settings(broker, endpoint, topics, linger_ms=0, call_timeout_ms=20_000))
    health = HealthServer(worker, port=0, host="127.0.0.1", stall_after_s=1.0)
    await health.start()
    try:
        async with running(worker):
            await produce(broker.bootstrap, topics.input, await launched_fleet(endpoint, 2, seed=1))
            await wait_for(lambda: endpoint.state()["calls"] > 0, 20, "a call in flight")
            await asyncio.sleep(1.5)
            status, body = await get(f"http://127.0.0.1:{health.port}/healthz")
            assert status == 503
            assert json.loads(body)["pending"] > 0
            endpoint.set_faults(Faults())
    finally:
        await health.stop()


async def test_events_beyond_the_per_task_bounds_are_dead_lettered(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    async with ecs_tasks(endpoint.url) as ecs:  # a task ECS knows, of three containers
        definition = await ecs.register("bounded", [{"name": f"app-{i}"} for i in range(3)])
        (task,) = await ecs.run("c", definition)
    arn = task.arn
    events = [
        TaskEvent(
            cluster="c",
            task=arn,
            observedAt=1_000 + i,
            containers=(ContainerChange(containerName=f"app-{i}", status="RUNNING"),),
        )
        for i in range(4)
    ]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    for event in events:
        await producer.send_and_wait(topics.input, msgspec.json.encode(event), key=arn.encode(), partition=0)
    await producer.stop()
    worker = Worker(worker_settings(broker, endpoint, topics, max_containers_per_task=3))
    async with running(worker):
        await wait_for(lambda: worker.metrics.totals().get("dead_lettered") == 1, 30, "a dead letter")
        await wait_for(lambda: endpoint.state()["tasks"][arn]["status"] == "RUNNING", 30, "RUNNING")
        await wait_for(lambda: worker.pending_work() == 0, 30, "work resolved")
    letters = await read_all(broker.bootstrap, topics.dlq)
    headers = dict(letters[0].headers)
    assert headers["__connect.errors.stage"] == b"TRANSFORMATION"
    assert b"more than max_containers_per_task=3" in headers["__connect.errors.exception.message"]
    assert msgspec.json.decode(letters[0].value, type=TaskEvent) == events[3]
    reported = endpoint.state()["tasks"][arn]["containers"]
    assert reported == {"app-0": "RUNNING", "app-1": "RUNNING", "app-2": "RUNNING"}


def test_json_logs_carry_context_and_never_the_password() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json")
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    settings = worker_settings_for_logs()
    logging.getLogger("worker.test").info(
        "submission rejected",
        extra={"task": "arn:aws:ecs:x:1:task/c/1", "partition": 3, "settings": settings},
    )
    line: dict[str, Any] = json.loads(stream.getvalue().splitlines()[-1])
    assert line["message"] == "submission rejected"
    assert line["level"] == "INFO"
    assert line["task"] == "arn:aws:ecs:x:1:task/c/1"
    assert line["partition"] == 3
    assert "s3cret" not in stream.getvalue()
    assert line["settings"]["sasl_password"] == "***"


def worker_settings_for_logs() -> dict[str, Any]:
    from worker.config import Settings

    return Settings(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="s3cret"
    ).redacted()
