"""What the worker asks the brokers at start (``worker.broker_checks``): its input topic exists, and
whether its producer is idempotent (``enable_idempotence``), against real brokers: the session's,
an Apache Kafka without topic auto-creation, and Tansu (which grants no producer id)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.broker import EmbeddedBroker
from devkit.brokers import Broker
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.kafka_broker import KafkaBroker
from devkit.topics import create_topics, partitions_of
from tests.conftest import Topics, worker_settings
from tests.support import running
from tests.test_start_checks import _bare_env, _errors, _run
from worker.broker_checks import MissingTopicError, check_brokers
from worker.config import ConfigError
from worker.pipeline import Worker
from worker.start_checks import StartCheckFailed, wait_for_brokers

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tansu() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture(scope="module")
def no_auto_create() -> Iterator[KafkaBroker]:
    with KafkaBroker(auto_create_topics=False) as broker:
        yield broker


def missing_topics() -> Topics:
    suffix = uuid.uuid4().hex[:10]
    return Topics(f"absent-{suffix}", f"out-{suffix}", f"dlq-{suffix}", f"group-{suffix}", 1)


@pytest.mark.kafka
async def test_the_idempotent_producer_is_on_by_default_on_apache_kafka(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    facts = await check_brokers(worker_settings(broker, endpoint, topics))
    assert facts.idempotent is True


async def test_auto_leaves_idempotence_off_without_acks_all(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    facts = await check_brokers(worker_settings(broker, endpoint, topics, acks="1"))
    assert facts.idempotent is False


async def test_auto_turns_idempotence_off_on_tansu_and_the_worker_runs(
    tansu: EmbeddedBroker, endpoint: LocalEcsEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    topics = missing_topics()
    await create_topics(tansu.bootstrap, {topics.input: 1})
    settings = worker_settings(tansu, endpoint, topics)
    assert settings.enable_idempotence == "auto"
    assert (await check_brokers(settings)).idempotent is False
    assert "grant no producer id" in caplog.text
    async with running(Worker(settings)) as worker:
        assert worker.ready.is_set()


async def test_idempotence_true_fails_at_start_on_a_broker_granting_no_producer_id(
    tansu: EmbeddedBroker, endpoint: LocalEcsEndpoint
) -> None:
    topics = missing_topics()
    await create_topics(tansu.bootstrap, {topics.input: 1})
    settings = worker_settings(tansu, endpoint, topics, enable_idempotence=True)
    with pytest.raises(ConfigError, match=r"enable_idempotence: true, but the brokers grant no producer id"):
        await asyncio.wait_for(Worker(settings).run(), 60)


@pytest.mark.kafka
async def test_a_missing_input_topic_without_auto_creation_fails_at_start_naming_it(
    no_auto_create: KafkaBroker, endpoint: LocalEcsEndpoint
) -> None:
    topics = missing_topics()
    began = time.monotonic()
    with pytest.raises(MissingTopicError, match=rf"input topic '{topics.input}' does not exist"):
        await asyncio.wait_for(Worker(worker_settings(no_auto_create, endpoint, topics)).run(), 60)
    assert time.monotonic() - began < 10.0  # at once, not after a session timeout
    assert await partitions_of(no_auto_create.bootstrap, topics.input) == []


@pytest.mark.kafka
async def test_a_missing_input_topic_fails_at_start_even_where_the_brokers_create_topics(
    broker: Broker, endpoint: LocalEcsEndpoint
) -> None:
    topics = missing_topics()  # the broker fixture runs with auto.create.topics.enable=true
    with pytest.raises(MissingTopicError, match=rf"input topic '{topics.input}' does not exist"):
        await asyncio.wait_for(Worker(worker_settings(broker, endpoint, topics)).run(), 60)
    assert await partitions_of(broker.bootstrap, topics.input) == []  # not created either


@pytest.mark.kafka
async def test_the_start_check_names_a_misspelt_topic_where_the_brokers_create_topics(
    broker: Broker, endpoint: LocalEcsEndpoint
) -> None:
    topics = missing_topics()
    settings = worker_settings(broker, endpoint, topics, start_timeout_ms=0)
    with pytest.raises(StartCheckFailed, match=rf"'{topics.input}' does not exist.*\(WORKER_INPUT_TOPIC\)"):
        await wait_for_brokers(settings)
    assert await partitions_of(broker.bootstrap, topics.input) == []


@pytest.mark.kafka
def test_a_worker_process_without_its_input_topic_exits_3_with_one_line(
    no_auto_create: KafkaBroker, tmp_path: Path
) -> None:
    env = _bare_env(
        tmp_path,
        AWS_REGION="eu-west-1",
        AWS_ACCESS_KEY_ID="k",
        AWS_SECRET_ACCESS_KEY="s",
        WORKER_BOOTSTRAP_SERVERS=no_auto_create.bootstrap,
        WORKER_INPUT_TOPIC="no-such-topic-here",
        WORKER_START_TIMEOUT_MS="0",
    )
    result = _run(env)
    assert result.returncode == 3, result.stderr
    (error,) = _errors(result.stderr)
    assert "input topic 'no-such-topic-here' does not exist" in str(error["message"])
    assert "(WORKER_INPUT_TOPIC)" in str(error["message"])
