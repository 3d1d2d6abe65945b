"""The Kafka clients (aiokafka consumer and producer), built from the settings. The Kafka edge.

Offsets are never auto-committed: ``worker.partitions`` commits explicit offsets from the offset
book once everything below them is resolved, and is the consumer's rebalance listener.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from worker.config import Settings

__all__ = [
    "CLOSE_TIMEOUT_S",
    "close_client",
    "kafka_security",
    "make_admin",
    "make_consumer",
    "make_producer",
]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 4.0
"""Bound on one Kafka client's stop: after a broker outage aiokafka can wait out its 40 s request
timeout. The worker closes both clients at once, so a stop takes at most the drain, one commit
and one close: 25 s + 3 s + 4 s by default, within the 35 s grace period of the deployment."""


def kafka_security(settings: Settings) -> dict[str, Any]:
    """aiokafka's security options for both clients: TLS context, then SASL (``AWS_MSK_IAM``
    becomes ``OAUTHBEARER`` with ``worker.msk_iam``'s token provider)."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile
        )
        options["ssl_context"] = context
    if settings.sasl_mechanism == "AWS_MSK_IAM":
        options.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=_msk_iam(settings))
    elif settings.security_protocol.startswith("SASL"):
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password,
        )
    return options


def _msk_iam(settings: Settings) -> Any:
    """The OAUTHBEARER token provider of MSK IAM, signing for the ECS client's Region (MSK and ECS
    in one Region, as the worker's role is; resolved as for ECS, ``AWS_REGION`` included). Imported
    here: boto3 loads only when used."""
    from worker.msk_iam import MskIamTokenProvider
    from worker.start_checks import resolve_region

    return MskIamTokenProvider(resolve_region(settings))


def make_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.group_id,
        group_instance_id=settings.group_instance_id,
        client_id=settings.client_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        max_poll_records=settings.max_poll_records,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(100, settings.session_timeout_ms // 3),
        rebalance_timeout_ms=settings.rebalance_timeout_ms,
        max_partition_fetch_bytes=max(1_048_576, settings.max_record_bytes + 65_536),
        fetch_max_bytes=max(52_428_800, settings.max_record_bytes + 65_536),
        **kafka_security(settings),
    )


def make_producer(settings: Settings, *, idempotent: bool | None = None) -> AIOKafkaProducer:
    """The outcome and dead-letter producer; ``idempotent`` is ``enable_idempotence`` resolved
    against the brokers (``worker.broker_checks``, as the worker does). None (the one-shot tools:
    ``dlq replay``, ``produce``): idempotent only where the setting says ``true``; ``auto`` would
    cost them a probe of the brokers for records that are sent once."""
    if idempotent is None:
        idempotent = settings.enable_idempotence is True
    acks: int | str = settings.acks if settings.acks == "all" else int(settings.acks)
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        acks=acks,
        enable_idempotence=idempotent,
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


async def close_client(client: AIOKafkaConsumer | AIOKafkaProducer, name: str) -> None:
    """Stop a Kafka client within ``CLOSE_TIMEOUT_S``, never raising, and log how it went (the
    ``client`` field is ``name``). By then the work is drained and committed (or left to be
    re-read), so a failing close must not turn a clean stop into a crash. During a broker outage
    the consumer's fetcher hands the ``CancelledError`` of its own cancelled fetch tasks back to
    ``stop()``: that is swallowed too, unless this task itself is being cancelled."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await client.stop()
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        log.warning(
            "Kafka %s closed (its close was interrupted by its own cancelled requests)",
            name,
            extra={"client": name},
        )
    except TimeoutError:
        log.warning(
            "Kafka %s abandoned: its close took over %.0f s", name, CLOSE_TIMEOUT_S, extra={"client": name}
        )
    except Exception as exc:
        log.warning(
            "Kafka %s closed with an error: %s",
            name,
            exc,
            extra={"client": name, "error_class": type(exc).__name__},
        )
    else:
        log.info("Kafka %s closed", name, extra={"client": name})
