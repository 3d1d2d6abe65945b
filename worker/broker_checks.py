"""What the worker asks the brokers once at start, before its clients start: does the input topic
exist (a consumer subscribed to a missing topic would wait silently forever), and do the brokers
grant producer ids (the idempotent producer needs them). The Kafka edge, like ``kafka_clients``.

Both are plain Kafka requests over one bootstrap connection: Metadata for the input topic
(auto-creation not allowed: the worker reads a stream that exists, and a misspelt name must fail
rather than be created empty, whatever the brokers' ``auto.create.topics.enable``), and
InitProducerId without a transactional id, which is what an idempotent producer sends first.
ApiVersions alone cannot tell: Tansu lists InitProducerId and answers it with an error.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.transaction import InitProducerIdRequest

from worker.config import ConfigError, Settings
from worker.kafka_clients import kafka_security

__all__ = ["BrokerFacts", "MissingTopicError", "check_brokers", "check_topic", "missing_topics"]

log = logging.getLogger(__name__)

UNKNOWN_TOPIC_OR_PARTITION = 3
TOPIC_AUTHORIZATION_FAILED = 29
PROBE_ATTEMPTS = 20
TOPIC_ATTEMPTS = 12
PROBE_BACKOFF_S = 0.25
PROBE_TRANSACTION_TIMEOUT_MS = 60_000  # ignored without a transactional id; the field is required


class MissingTopicError(RuntimeError):
    """The input topic does not exist (it is never created at start), or is denied to us."""


@dataclass(frozen=True)
class BrokerFacts:
    """``idempotent``: whether the producer is to be idempotent (``enable_idempotence`` resolved)."""

    idempotent: bool


async def check_brokers(settings: Settings) -> BrokerFacts:
    """Check the input topic and resolve ``enable_idempotence`` against the brokers.

    Raises ``MissingTopicError`` naming the topic when it does not exist (whatever the brokers'
    ``auto.create.topics.enable``: it is not created) or access to it is denied,
    ``ConfigError`` naming ``enable_idempotence`` when it is ``true`` and the brokers grant no
    producer id, and aiokafka's ``KafkaConnectionError`` when no bootstrap server answers.
    ``enable_idempotence = "auto"`` turns idempotence off (with a warning) where the brokers grant
    no producer id, and when ``acks`` is not ``all``."""
    client = AIOKafkaClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        **kafka_security(settings),
    )
    try:
        await client.bootstrap()
        node = client.get_random_node()
        await check_topic(client, node, settings.input_topic)
        return BrokerFacts(idempotent=await _idempotence(client, node, settings))
    finally:
        await client.close()


async def check_topic(client: AIOKafkaClient, node: Any, topic: str) -> None:
    """Ask for the topic's metadata, never letting the brokers create it, until it exists,
    ``TOPIC_ATTEMPTS`` times ``PROBE_BACKOFF_S`` apart: a topic created a moment ago may not have
    reached this broker's metadata yet (KRaft propagates it from the controller). Raises
    ``MissingTopicError`` naming the topic when it is still unknown, or denied to this client."""
    for _ in range(TOPIC_ATTEMPTS):
        response = await client.send(node, MetadataRequest([topic], allow_auto_topic_creation=False))
        errors = [error_code for error_code, name, *_ in response.topics if name == topic]
        if TOPIC_AUTHORIZATION_FAILED in errors:
            raise MissingTopicError(f"input topic {topic!r}: the brokers deny this client access to it")
        if UNKNOWN_TOPIC_OR_PARTITION not in errors:
            return
        await asyncio.sleep(PROBE_BACKOFF_S)
    raise MissingTopicError(
        f"input topic {topic!r} does not exist (the worker does not create it, whatever the "
        "brokers' auto.create.topics.enable): create it, or fix the input_topic setting"
    )


async def missing_topics(client: AIOKafkaClient, node: Any, topics: list[str]) -> list[str]:
    """Those of ``topics`` the brokers do not know (one Metadata request, no auto-creation)."""
    response = await client.send(node, MetadataRequest(topics, allow_auto_topic_creation=False))
    return [name for error_code, name, *_ in response.topics if error_code == UNKNOWN_TOPIC_OR_PARTITION]


async def _idempotence(client: AIOKafkaClient, node: Any, settings: Settings) -> bool:
    wanted = settings.enable_idempotence
    if wanted is False or (wanted == "auto" and settings.acks != "all"):
        return False
    refusal = await _producer_id_refusal(client, node)
    if refusal is None:
        return True
    if wanted is True:
        raise ConfigError(
            f"invalid setting enable_idempotence: true, but the brokers grant no producer id "
            f"(InitProducerId: {refusal}); set it to auto or false"
        )
    log.warning(
        "the brokers grant no producer id: the producer is not idempotent",
        extra={"enable_idempotence": "auto", "init_producer_id": refusal},
    )
    return False


async def _producer_id_refusal(client: AIOKafkaClient, node: Any) -> str | None:
    """``None`` when the brokers grant a producer id, else why not. Retriable answers (a fresh
    cluster's COORDINATOR_LOAD_IN_PROGRESS while the controller hands out the first block of ids)
    are asked again, ``PROBE_ATTEMPTS`` times ``PROBE_BACKOFF_S`` apart."""
    refused = "no answer"
    for _ in range(PROBE_ATTEMPTS):
        try:
            request = InitProducerIdRequest(
                transactional_id=None, transaction_timeout_ms=PROBE_TRANSACTION_TIMEOUT_MS
            )
            response = await client.send(node, request)
        except KafkaError as exc:  # e.g. UnsupportedVersion from a broker without the request
            if not exc.retriable:
                return f"{type(exc).__name__}: {exc}"
            refused = type(exc).__name__
        else:
            if response.error_code == 0:
                return None
            error = for_code(response.error_code)
            refused = str(error.__name__)
            if not error.retriable:
                return refused
        await asyncio.sleep(PROBE_BACKOFF_S)
    return refused
