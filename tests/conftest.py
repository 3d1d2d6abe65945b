"""Shared fixtures: one embedded broker per test session, a local ECS endpoint per test, and
unique topic names per test so that tests sharing the broker never see each other's data.

The broker is Apache Kafka when Java 17+ and Maven are present (required under ``CI=true``), else
Tansu; ``TEST_BROKER=kafka|tansu`` chooses (``devkit.brokers.choose_broker``). pytest's header
says which. Tests marked ``tansu`` run only on Tansu, those marked ``kafka`` only on Apache Kafka.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from devkit.brokers import Broker, BrokerChoice, choose_broker, make_broker
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.kafka_artifacts import kafka_classpath
from devkit.topics import create_topics
from tests.ecs_support import ecs_client, running_endpoint
from worker.config import Settings

os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


BROKER: BrokerChoice = choose_broker(os.environ)


def pytest_report_header() -> str:
    return BROKER.describe()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Resolve Apache Kafka's artifacts before any test (a first run downloads them; no test's
    timeout should count that), failing the session with Maven's own message when it cannot."""
    if BROKER.kind == "kafka":
        kafka_classpath()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for only in ("tansu", "kafka"):
            if item.get_closest_marker(only) and BROKER.kind != only:
                item.add_marker(pytest.mark.skip(reason=f"needs {only}; the tests run on {BROKER.kind}"))


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    running = make_broker(BROKER.kind).start()
    try:
        yield running
    finally:
        # Killed, not shut down: its data goes with it, and Apache Kafka's controlled shutdown of
        # the suite's thousand-odd partitions took 7.7 s of the last test's teardown.
        running.stop(timeout_s=0)


@pytest_asyncio.fixture(loop_scope="function")
async def endpoint() -> AsyncIterator[LocalEcsEndpoint]:
    server = LocalEcsEndpoint(seed=11)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="function")
async def ep() -> AsyncIterator[LocalEcsEndpoint]:
    """A local ECS endpoint of its own, in us-west-2 (``tests.ecs_support``), for the endpoint's tests."""
    async with running_endpoint() as endpoint:
        yield endpoint


@pytest_asyncio.fixture(loop_scope="function")
async def ecs(ep: LocalEcsEndpoint) -> AsyncIterator[Any]:
    """An aiobotocore ECS client of ``ep``."""
    async with ecs_client(ep.url) as client:
        yield client


@dataclass(frozen=True)
class Topics:
    input: str
    outcome: str
    dlq: str
    group: str
    partitions: int


@pytest_asyncio.fixture(loop_scope="function")
async def topics(broker: Broker) -> Topics:
    suffix = uuid.uuid4().hex[:10]
    made = Topics(f"in-{suffix}", f"out-{suffix}", f"dlq-{suffix}", f"group-{suffix}", 3)
    await create_topics(broker.bootstrap, {made.input: made.partitions, made.outcome: 2, made.dlq: 1})
    return made


def worker_settings(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics, **overrides: object
) -> Settings:
    """Settings for a worker in a test: fast timers, no metrics port."""
    base: dict[str, object] = {
        "bootstrap_servers": broker.bootstrap,
        "ecs_endpoint_url": endpoint.url,
        "input_topic": topics.input,
        "outcome_topic": topics.outcome,
        "dlq_topic": topics.dlq,
        "group_id": topics.group,
        "metrics_port": 0,
        "linger_ms": 200,
        "commit_interval_ms": 200,
        "session_timeout_ms": 6_000,
        "rebalance_timeout_ms": 10_000,
        "drain_timeout_ms": 5_000,
        "retry_initial_ms": 20,
        "retry_max_ms": 200,
        "rate_limit_per_s": 2_000.0,
        "rate_limit_burst": 2_000,
        "describe_batch_ms": 20,
        "settle_ms": 2_000,
        "stop_linger_ms": 1_500,
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]
