"""Checks made before the worker starts: what it cannot run without fails here, as one line.

``check_start`` resolves the AWS region, checks the TLS files, finds AWS credentials and reaches
the brokers (the input topic included), in that order; the first failure raises
``StartCheckFailed`` whose message names what to set. Reaching the brokers is retried with a
capped exponential backoff for ``start_timeout_ms``: a broker that is restarting, or a pod that
starts before its network is up, is waited for; a wrong address fails once that time is spent
(the process then exits 3, see ``worker.serve``). The addresses themselves are validated
earlier, with the settings (``worker.setting_checks``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping

import msgspec
from aiobotocore.session import get_session
from aiokafka.client import AIOKafkaClient
from botocore.exceptions import BotoCoreError

from worker.broker_checks import MissingTopicError, check_topic, missing_topics
from worker.config import Settings, env_name
from worker.kafka_clients import kafka_security
from worker.log_filters import quiet_clients
from worker.routing import role_partition_problems

__all__ = ["StartCheckFailed", "check_start", "resolve_region", "wait_for_brokers"]

log = logging.getLogger(__name__)

_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 5.0
_CREDENTIALS_HELP = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a shared credentials "
    "file, or AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE (IAM roles for service accounts), or "
    "run where the instance or container metadata service gives a role"
)


class StartCheckFailed(Exception):
    """A start check failed; the message is the one line to print (it names what to set)."""


def resolve_region(settings: Settings, env: Mapping[str, str] | None = None) -> str:
    """The AWS region: the ``region`` setting, else the SDK's own resolution (``AWS_REGION``, then
    botocore's ``AWS_DEFAULT_REGION`` and the profile's ``region``). botocore reads no
    ``AWS_REGION``, the other AWS SDKs do, so it is read here. Raises ``StartCheckFailed`` if
    none is set, or if botocore cannot read its configuration (e.g. ``ProfileNotFound``)."""
    env = os.environ if env is None else env
    try:
        region = settings.region or env.get("AWS_REGION") or get_session().get_config_variable("region")
    except BotoCoreError as exc:
        raise _unusable_aws_setup(exc) from None
    if not region:
        raise StartCheckFailed(
            f"no AWS region: set {env_name('region')} (or --region), AWS_REGION, AWS_DEFAULT_REGION "
            "or a region in the AWS profile"
        )
    return str(region)


def _check_files(settings: Settings) -> None:
    """The TLS files named by the settings are readable; raises ``StartCheckFailed`` naming the
    setting otherwise."""
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(settings, name)
        if path is not None and not os.access(path, os.R_OK):
            raise StartCheckFailed(f"{name} ({env_name(name)}): {path!r} is not a readable file")


async def _check_credentials() -> str:
    """The name of the credential provider that answered (botocore's chain, through aiobotocore's
    session: environment, shared files, web identity, container and instance metadata). Raises
    ``StartCheckFailed`` when the chain finds nothing, or fails on what it finds: any
    ``botocore.exceptions.BotoCoreError`` (``PartialCredentialsError``, ``ProfileNotFound``,
    ``InvalidConfigError``, ``CredentialRetrievalError``...)."""
    try:
        credentials = await get_session().get_credentials()
    except BotoCoreError as exc:
        raise _unusable_aws_setup(exc) from None
    if credentials is None:
        raise StartCheckFailed(f"no AWS credentials found: {_CREDENTIALS_HELP}")
    return str(getattr(credentials, "method", "unknown"))


def _unusable_aws_setup(exc: BotoCoreError) -> StartCheckFailed:
    """The one line for a botocore configuration or credential error met while resolving."""
    return StartCheckFailed(
        f"the AWS configuration cannot be used: {exc} ({type(exc).__name__}): fix it, or {_CREDENTIALS_HELP}"
    )


async def _probe_brokers(settings: Settings, timeout_s: float) -> None:
    """One bootstrap of a metadata-only client; raises on failure (``ConnectionError`` family,
    ``TimeoutError``) or ``MissingTopicError`` when the input topic does not exist (it is never
    created here, whatever the brokers' ``auto.create.topics.enable``)."""
    client = AIOKafkaClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id=settings.client_id,
        request_timeout_ms=max(1_000, int(timeout_s * 1000)),
        **kafka_security(settings),
    )
    try:
        async with asyncio.timeout(timeout_s):
            with quiet_clients():  # its failure is reported in one line: see wait_for_brokers
                await client.bootstrap()
            node = client.get_random_node()
        await check_topic(client, node, settings.input_topic)  # MissingTopicError: not retried
        if not settings.dry_run:
            outputs = [settings.outcome_topic, settings.dlq_topic]
            _warn_missing_outputs(settings, await missing_topics(client, node, outputs))
    finally:
        await client.close()


def _warn_missing_outputs(settings: Settings, missing: list[str]) -> None:
    """The outcome and dead-letter topics are written, not read: a broker that creates topics on
    first use makes them then, so a missing one is a warning, not a failure."""
    for name in ("outcome_topic", "dlq_topic"):
        topic = getattr(settings, name)
        if topic in missing:
            log.warning(
                "topic %r (%s) does not exist yet: writes to it wait until the broker creates it "
                "(auto.create.topics.enable) or it is created",
                topic,
                env_name(name),
                extra={"setting": name},
            )


async def wait_for_brokers(settings: Settings) -> None:
    """Reach the brokers and find the input topic, retrying with backoff (0.5 s doubling up to
    5 s) for ``start_timeout_ms``; one line per failed attempt. Raises ``StartCheckFailed``
    naming ``bootstrap_servers`` and the last error when the time is spent."""
    deadline = time.monotonic() + settings.start_timeout_ms / 1000
    backoff = _BACKOFF_FIRST_S
    while True:
        remaining = deadline - time.monotonic()
        try:
            await _probe_brokers(settings, max(0.5, min(remaining, 10.0)))
            return
        except MissingTopicError as exc:  # the brokers answered: waiting would not create it
            raise StartCheckFailed(f"{exc} ({env_name('input_topic')})") from None
        except Exception as exc:  # OSError, TimeoutError, LookupError and aiokafka's own errors
            problem = str(exc) or type(exc).__name__
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StartCheckFailed(
                f"cannot reach the Kafka brokers {settings.bootstrap_servers} "
                f"({env_name('bootstrap_servers')}) within {settings.start_timeout_ms} ms "
                f"(start_timeout_ms): {problem}"
            )
        log.warning("brokers not reachable yet, retrying in %.1f s: %s", min(backoff, remaining), problem)
        await asyncio.sleep(min(backoff, remaining))
        backoff = min(backoff * 2, _BACKOFF_MAX_S)


async def check_start(settings: Settings) -> Settings:
    """Every check that can be made before starting; returns ``settings`` with the region
    resolved. Raises ``StartCheckFailed`` (one line) on the first failure."""
    _check_files(settings)
    if settings.dry_run:  # no ECS call: neither a region nor credentials are needed
        region, method = settings.region, "not needed (dry run)"
    else:
        region, method = resolve_region(settings), await _check_credentials()
        for problem in role_partition_problems(region, settings.account_roles):
            raise StartCheckFailed(f"account_roles ({env_name('account_roles')}): {problem}")
    await wait_for_brokers(settings)
    log.info("start checks passed", extra={"region": region, "credentials": method})
    return msgspec.structs.replace(settings, region=region)
