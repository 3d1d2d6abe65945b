"""The Kafka clients (aiokafka consumer and producer), built from the settings. The Kafka edge.

Offsets are never auto-committed: ``worker.partitions`` commits explicit offsets from the offset
book once everything below them is resolved, and is the consumer's rebalance listener.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from worker.config import Settings

__all__ = ["kafka_security", "make_admin", "make_consumer", "make_producer"]


def kafka_security(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile
        )
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password,
        )
    return options


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.group_id,
        group_instance_id=settings.group_instance_id,
        client_id=settings.client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.max_poll_records,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(100, settings.session_timeout_ms // 3),
        rebalance_timeout_ms=settings.rebalance_timeout_ms,
        max_partition_fetch_bytes=max(1_048_576, settings.max_record_bytes + 65_536),
        fetch_max_bytes=max(52_428_800, settings.max_record_bytes + 65_536),
        **kafka_security(settings),
    )


def make_producer(settings: Settings) -> AIOKafkaProducer:
    acks: int | str = settings.acks if settings.acks == "all" else int(settings.acks)
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        acks=acks,
        enable_idempotence=settings.enable_idempotence,
        compression_type=None if settings.compression_type == "none" else settings.compression_type,
        linger_ms=5,
        max_request_size=max(1_048_576, settings.max_record_bytes * 2 + 65_536),
        request_timeout_ms=30_000,
        **kafka_security(settings),
    )


def make_admin(settings: Settings) -> AIOKafkaAdminClient:
    """The admin client of the repartition topic (``worker.repartition_topic``)."""
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        request_timeout_ms=10_000,
        **kafka_security(settings),
    )
