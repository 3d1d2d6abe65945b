"""The worker's Kafka security settings against Apache Kafka's own listeners: TLS with the broker
verified, mutual TLS, and SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (users stored when the
storage is formatted). One broker for the module, its listeners side by side; certificates from a
certificate authority made by trustme (keys handed to Kafka as PEM, PKCS#8)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.fleet import final_state_mismatches
from devkit.kafka_broker import KafkaBroker, Listener
from devkit.topics import create_topics, produce_fleet
from tests.conftest import Topics, worker_settings
from tests.support import FLEET_PACE, launched_fleet, running, wait_for
from tests.tls_support import tls_files
from worker.pipeline import Worker

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(150)]

USERS = {"alice": "alice-secret", "bob": "bob-secret"}
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
PLAIN = 'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";'


def pkcs8(key_pem: bytes) -> str:
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def listener_properties(authority: trustme.CA) -> dict[str, str]:
    server = authority.issue_cert("127.0.0.1", "localhost")
    chain = "".join(pem.bytes().decode() for pem in server.cert_chain_pems)
    key = pkcs8(server.private_key_pem.bytes())
    properties: dict[str, str] = {}
    for name, client_auth in (("ssl", "none"), ("mtls", "required")):
        prefix = f"listener.name.{name}."
        properties |= {
            prefix + "ssl.keystore.type": "PEM",
            prefix + "ssl.keystore.certificate.chain": chain,
            prefix + "ssl.keystore.key": key,
            prefix + "ssl.truststore.type": "PEM",
            prefix + "ssl.truststore.certificates": authority.cert_pem.bytes().decode(),
            prefix + "ssl.client.auth": client_auth,
        }
    prefix = "listener.name.sasl."
    return properties | {
        prefix + "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        prefix + "plain.sasl.jaas.config": PLAIN,
        prefix + "scram-sha-256.sasl.jaas.config": SCRAM,
        prefix + "scram-sha-512.sasl.jaas.config": SCRAM,
    }


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def secured(authority: trustme.CA) -> Iterator[KafkaBroker]:
    listeners = [Listener("SSL", "SSL"), Listener("MTLS", "SSL"), Listener("SASL", "SASL_PLAINTEXT")]
    broker = KafkaBroker(listeners=listeners, properties=listener_properties(authority), scram_users=USERS)
    with broker:
        yield broker


async def fresh_topics(broker: KafkaBroker) -> Topics:
    suffix = uuid.uuid4().hex[:10]
    topics = Topics(f"in-{suffix}", f"out-{suffix}", f"dlq-{suffix}", f"group-{suffix}", 2)
    await create_topics(broker.bootstrap, {topics.input: 2, topics.outcome: 1, topics.dlq: 1})
    return topics


async def works_through(
    broker: KafkaBroker, endpoint: LocalEcsEndpoint, listener: str, **security: str
) -> None:
    """A worker reaching ``listener`` with ``security`` settings carries a fleet to its final states
    (the fleet is produced over the plaintext listener: the same topics)."""
    topics = await fresh_topics(broker)
    settings = worker_settings(
        broker, endpoint, topics, bootstrap_servers=broker.address(listener), **security
    )
    fleet = await launched_fleet(endpoint, 6, seed=23)
    async with running(Worker(settings)):
        await produce_fleet(broker.bootstrap, topics.input, fleet, pace=FLEET_PACE)
        await wait_for(
            lambda: not final_state_mismatches(fleet.expected, endpoint.state()), 60, "final states"
        )


async def refused(broker: KafkaBroker, endpoint: LocalEcsEndpoint, listener: str, **security: str) -> str:
    """The error a worker stops with when the listener refuses it."""
    topics = await fresh_topics(broker)
    settings = worker_settings(
        broker, endpoint, topics, bootstrap_servers=broker.address(listener), **security
    )
    with pytest.raises(Exception) as info:  # noqa: PT011 - the kind varies with the refusal; the text is checked
        await asyncio.wait_for(Worker(settings).run(), 60)
    return f"{type(info.value).__name__}: {info.value}"


async def test_tls_with_the_broker_verified(
    secured: KafkaBroker, endpoint: LocalEcsEndpoint, authority: trustme.CA, tmp_path: Path
) -> None:
    await works_through(
        secured, endpoint, "SSL", security_protocol="SSL", **tls_files(authority, tmp_path, client=False)
    )


async def test_tls_refuses_a_broker_signed_by_another_authority(
    secured: KafkaBroker, endpoint: LocalEcsEndpoint, tmp_path: Path
) -> None:
    stranger = tls_files(trustme.CA(), tmp_path, client=False)
    error = await refused(secured, endpoint, "SSL", security_protocol="SSL", **stranger)
    assert "bootstrap" in error.lower() or "connect" in error.lower(), error


async def test_mutual_tls(
    secured: KafkaBroker, endpoint: LocalEcsEndpoint, authority: trustme.CA, tmp_path: Path
) -> None:
    await works_through(
        secured, endpoint, "MTLS", security_protocol="SSL", **tls_files(authority, tmp_path, client=True)
    )


async def test_mutual_tls_refuses_a_worker_without_a_certificate(
    secured: KafkaBroker, endpoint: LocalEcsEndpoint, authority: trustme.CA, tmp_path: Path
) -> None:
    anonymous = tls_files(authority, tmp_path, client=False)
    error = await refused(secured, endpoint, "MTLS", security_protocol="SSL", **anonymous)
    assert "bootstrap" in error.lower() or "connect" in error.lower(), error


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl(secured: KafkaBroker, endpoint: LocalEcsEndpoint, mechanism: str) -> None:
    await works_through(
        secured,
        endpoint,
        "SASL",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username="alice",
        sasl_password=USERS["alice"],
    )


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_sasl_refuses_a_wrong_password(
    secured: KafkaBroker, endpoint: LocalEcsEndpoint, mechanism: str
) -> None:
    error = await refused(
        secured,
        endpoint,
        "SASL",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username="alice",
        sasl_password="not-alice-secret",
    )
    assert "authentication" in error.lower() or "bootstrap" in error.lower(), error
