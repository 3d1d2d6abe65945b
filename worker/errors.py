"""The worker's error taxonomy: what is retried, what is terminal, what is bad input.

Failure
├── bad input ─────────────── dead-letter topic (stage decode/validate), offset released
│   ├── RecordTooLarge, EmptyRecord, DecodeError (malformed bytes, unknown format)
│   ├── FormatMismatch (an item of another format than the forced one)
│   ├── ValidationError (wrong types, unknown enum values, bounds)
│   └── EcsRuleViolation (port ranges, ...: the rule broken is the message)
├── submission, retryable ───── retried with backoff and jitter (tenacity), bounded by
│   │                           attempts and by a deadline; when exhausted: outcome
│   │                           ``failed`` + dead-letter of the request (stage submit)
│   ├── throttling (ThrottlingException & botocore's other throttling codes)
│   │     └── also slows the process's ECS rate limit (``ratelimit``)
│   ├── ServerException, any HTTP 5xx
│   └── timeouts, connection errors, credential refresh failures (CredentialRetrievalError)
├── submission, terminal ────── outcome ``rejected``, no retry
│   ├── InvalidParameterException, ClientException, AccessDeniedException,
│   │   ClusterNotFoundException, any other 4xx
│   └── configuration: NoCredentialsError, PartialCredentialsError, NoRegionError,
│       ProfileNotFound (retrying cannot help; ``worker.start_checks`` catches them at start)
└── infrastructure (Kafka produce/commit) ── retried until it succeeds or the worker drains;
                                             offsets stay uncommitted: at-least-once holds
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

__all__ = ["CONFIGURATION_ERRORS", "THROTTLING_CODES", "Classified", "classify"]

CONFIGURATION_ERRORS = (NoCredentialsError, PartialCredentialsError, NoRegionError, ProfileNotFound)
"""botocore's errors of a missing or wrong AWS configuration: terminal, never retried."""

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
_RETRYABLE_CODES = frozenset({"ServerException", "InternalFailure", "ServiceUnavailable"})


@dataclass(frozen=True, slots=True)
class Classified:
    retryable: bool
    throttled: bool
    code: str
    message: str


def classify(exc: BaseException) -> Classified:
    """Sort one failed ECS call into the taxonomy above."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", exc))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in THROTTLING_CODES or status == 429:
            return Classified(True, True, code, message)
        return Classified(code in _RETRYABLE_CODES or status >= 500, False, code, message)
    if isinstance(exc, CONFIGURATION_ERRORS):
        return Classified(False, False, type(exc).__name__, str(exc))
    if isinstance(exc, HTTPClientError | BotoConnectionError | CredentialRetrievalError):
        return Classified(True, False, type(exc).__name__, str(exc))
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | OSError):
        return Classified(True, False, type(exc).__name__, str(exc) or type(exc).__name__)
    if isinstance(exc, BotoCoreError):
        return Classified(False, False, type(exc).__name__, str(exc))
    return Classified(False, False, type(exc).__name__, str(exc) or type(exc).__name__)
