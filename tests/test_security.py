"""Kafka TLS settings, verified over a real TLS handshake, for runs on Tansu (marked ``tansu``):
on Apache Kafka, ``test_kafka_security`` uses the broker's own TLS and SASL listeners instead.

Tansu 0.6 cannot serve TLS itself, so a TLS terminator (asyncio, a certificate authority made by
trustme, client certificates required) stands in front of a broker that advertises it: the worker
then speaks TLS to every broker connection, as it would to a TLS-only Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme

from devkit.broker import EmbeddedBroker, free_port
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.fleet import Fleet, final_state_mismatches
from tests.conftest import Topics
from tests.support import launched_fleet, running, wait_for
from tests.tls_support import tls_files
from worker.config import Settings
from worker.kafka_clients import kafka_security
from worker.pipeline import Worker

pytestmark = pytest.mark.tansu


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def tls_terminator(authority: trustme.CA, port: int, target: tuple[str, int]) -> AsyncIterator[None]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    authority.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the worker must show its certificate

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*target)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", port, ssl=context)
    try:
        yield
    finally:
        server.close()


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[tuple[EmbeddedBroker, int]]:
    tls_port = free_port()
    with EmbeddedBroker(advertised=f"127.0.0.1:{tls_port}") as broker:
        yield broker, tls_port


def tls_settings(port: int, endpoint: LocalEcsEndpoint, topics: Topics, tls: dict[str, str]) -> Settings:
    return Settings(
        bootstrap_servers=f"127.0.0.1:{port}",
        security_protocol="SSL",
        ecs_endpoint_url=endpoint.url,
        input_topic=topics.input,
        outcome_topic=topics.outcome,
        dlq_topic=topics.dlq,
        group_id=topics.group,
        metrics_port=0,
        linger_ms=100,
        commit_interval_ms=200,
        session_timeout_ms=6_000,
        rebalance_timeout_ms=10_000,
        drain_timeout_ms=5_000,
        **tls,  # type: ignore[arg-type]
    )


async def test_worker_runs_over_mutual_tls(
    authority: trustme.CA, tls_broker: tuple[EmbeddedBroker, int], endpoint: LocalEcsEndpoint, tmp_path: Path
) -> None:
    broker, tls_port = tls_broker
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(f"in-{suffix}", f"out-{suffix}", f"dlq-{suffix}", f"g-{suffix}", 2)
    async with tls_terminator(authority, tls_port, (broker.host, broker.port)):
        # The broker advertises only the TLS address: the test's own clients speak TLS too.
        await create_topics_tls(tls_port, authority, tmp_path, topics)
        fleet = await launched_fleet(endpoint, 6, seed=2)
        worker = Worker(tls_settings(tls_port, endpoint, topics, tls_files(authority, tmp_path, client=True)))
        async with running(worker):
            await produce_tls(tls_port, authority, tmp_path, topics, fleet)
            await wait_for(
                lambda: not final_state_mismatches(fleet.expected, endpoint.state()), 60, "final states"
            )


async def test_worker_refuses_a_broker_it_cannot_verify(
    tls_broker: tuple[EmbeddedBroker, int], endpoint: LocalEcsEndpoint, tmp_path: Path
) -> None:
    _, tls_port = tls_broker
    stranger, ours = trustme.CA(), trustme.CA()
    topics = Topics("in-x", "out-x", "dlq-x", "g-x", 1)
    async with tls_terminator(stranger, tls_port, ("127.0.0.1", 9)):
        worker = Worker(tls_settings(tls_port, endpoint, topics, tls_files(ours, tmp_path, client=True)))
        with pytest.raises(Exception, match=r"(?i)bootstrap|connect"):
            await asyncio.wait_for(worker.run(), 60)


def client_context(authority: trustme.CA, where: Path) -> ssl.SSLContext:
    """The test's own clients' TLS context, built from the same files and the same code as the
    worker's (``worker.read.kafka_security``)."""
    tls = tls_files(authority, where, client=True)
    settings = Settings(security_protocol="SSL", **tls)  # type: ignore[arg-type]
    context: ssl.SSLContext = kafka_security(settings)["ssl_context"]
    return context


async def create_topics_tls(port: int, authority: trustme.CA, where: Path, topics: Topics) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    context = client_context(authority, where)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SSL", ssl_context=context
    )
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(topics.input, topics.partitions, 1),
                NewTopic(topics.outcome, 1, 1),
                NewTopic(topics.dlq, 1, 1),
            ]
        )
    finally:
        await admin.close()


async def produce_tls(port: int, authority: trustme.CA, where: Path, topics: Topics, fleet: Fleet) -> None:
    from aiokafka import AIOKafkaProducer

    context = client_context(authority, where)
    producer = AIOKafkaProducer(
        bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SSL", ssl_context=context
    )
    await producer.start()
    try:
        base = time.time_ns()  # all at once, stamped on the schedule's clock
        for step in fleet.steps:
            value = fleet.render(step, fleet.observed_ns(step, base))
            await producer.send(topics.input, value, key=step.task.encode())
        await producer.flush()
    finally:
        await producer.stop()
