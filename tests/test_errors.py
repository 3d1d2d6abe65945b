"""The error taxonomy (worker.errors.classify) on real botocore exceptions."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from worker.errors import THROTTLING_CODES, classify


def client_error(code: str, status: int, message: str = "boom") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "SubmitTaskStateChange",
    )


def test_throttling_is_retryable_and_throttled() -> None:
    verdict = classify(client_error("ThrottlingException", 400, "Rate exceeded"))
    assert (verdict.retryable, verdict.throttled) == (True, True)
    assert (verdict.code, verdict.message) == ("ThrottlingException", "Rate exceeded")


def test_http_429_is_throttling_whatever_the_code() -> None:
    verdict = classify(client_error("SomethingElse", 429))
    assert (verdict.retryable, verdict.throttled) == (True, True)


def test_throttling_codes_include_botocores() -> None:
    assert {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    } <= THROTTLING_CODES


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ServerException", 500),
        ("ServerException", 400),
        ("InternalFailure", 500),
        ("Whatever", 503),
        ("", 502),
    ],
)
def test_server_errors_are_retryable_not_throttled(code: str, status: int) -> None:
    verdict = classify(client_error(code, status))
    assert (verdict.retryable, verdict.throttled) == (True, False)


@pytest.mark.parametrize(
    "code",
    ["InvalidParameterException", "ClientException", "AccessDeniedException", "ClusterNotFoundException"],
)
def test_client_errors_are_terminal(code: str) -> None:
    verdict = classify(client_error(code, 400, "no"))
    assert (verdict.retryable, verdict.throttled) == (False, False)
    assert (verdict.code, verdict.message) == (code, "no")


def test_other_4xx_is_terminal() -> None:
    assert not classify(client_error("UnrecognizedClientException", 403)).retryable


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionClosedError(endpoint_url="https://ecs.us-east-1.amazonaws.com"),
        EndpointConnectionError(endpoint_url="https://ecs.us-east-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://ecs.us-east-1.amazonaws.com"),
        ConnectTimeoutError(endpoint_url="https://ecs.us-east-1.amazonaws.com"),
        CredentialRetrievalError(provider="container-role", error_msg="timed out"),
        TimeoutError(),
        ConnectionResetError("reset"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transport_failures_are_retryable(exc: Exception) -> None:
    verdict = classify(exc)
    assert (verdict.retryable, verdict.throttled) == (True, False)
    assert verdict.code == type(exc).__name__
    assert verdict.message


@pytest.mark.parametrize(
    "exc",
    [
        NoCredentialsError(),
        PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
        NoRegionError(),
        ProfileNotFound(profile="missing"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_configuration_errors_are_terminal(exc: Exception) -> None:
    verdict = classify(exc)
    assert (verdict.retryable, verdict.throttled, verdict.code) == (False, False, type(exc).__name__)


def test_other_failures_are_terminal() -> None:
    assert not classify(ParamValidationError(report="bad")).retryable
    verdict = classify(ValueError())
    assert (verdict.retryable, verdict.code, verdict.message) == (False, "ValueError", "ValueError")
