"""AWS JSON 1.1 as ECS speaks it: which operation, who calls from where, bodies in and out.

A request is a POST with ``X-Amz-Target: AmazonEC2ContainerServiceV20141113.<Operation>``, a SigV4
``Authorization`` header (present and well formed, never verified) whose credential scope
``Credential=<key id>/<date>/<region>/<service>/aws4_request`` names the Region (and, through the
key id, the account: :mod:`devkit.ecs.sts`), and a JSON
object body. The body is validated against botocore's own ECS service model, and the endpoint is
stricter than ECS in three ways, to catch client bugs: unknown members, enum values outside the
model and non-numeric timestamps are rejected. Every answer is validated against the operation's
output shape before it is sent (timestamps go out as epoch seconds, as botocore expects), so a
body the endpoint sends is one botocore parses with its model.

Errors are :class:`ApiError`, answered as ``{"__type", "message"}`` with an ``x-amzn-ErrorType``
header, which botocore turns into ``ClientError`` with that code:

====  ====================================  ==========================================================
400   UnknownOperationException             ``X-Amz-Target`` missing or not a served operation
403   MissingAuthenticationTokenException   no ``AWS4-HMAC-SHA256`` ``Authorization`` header
403   IncompleteSignatureException          that header has no ``Credential=`` scope with a Region
400   SerializationException                the body is not a JSON object
400   InvalidParameterException             the body does not fit the operation's input shape
500   ServerException                       an answer that does not fit the model (an endpoint bug)
====  ====================================  ==========================================================
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import botocore.session
import msgspec
from aiohttp import web
from botocore.validate import ParamValidator

from devkit.ecs.arns import Scope

__all__ = [
    "JSON_11",
    "OPERATIONS",
    "TARGET",
    "TARGET_PREFIX",
    "ApiError",
    "Call",
    "api_response",
    "credential_of",
    "decode_request",
    "encode_output",
    "error_response",
    "load_model",
    "operation_of",
]

TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
TARGET = TARGET_PREFIX + "SubmitTaskStateChange"
OPERATIONS = (
    "SubmitTaskStateChange",
    "RegisterTaskDefinition",
    "DescribeTaskDefinition",
    "RunTask",
    "DescribeTasks",
)
JSON_11 = "application/x-amz-json-1.1"
# Members the model leaves optional that ECS requires all the same.
_ALSO_REQUIRED: dict[str, tuple[str, ...]] = {"SubmitTaskStateChange": ("cluster", "task")}
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")


class ApiError(Exception):
    """An ECS error answer: HTTP ``status``, error ``code`` (``__type``) and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True, slots=True)
class Call:
    """One decoded API call: the operation, its body as sent (JSON values: timestamps stay epoch
    numbers) and the caller's scope."""

    operation: str
    body: dict[str, Any]
    scope: Scope


@cache
def load_model() -> Any:
    """botocore's ECS service model (loaded once; the first load takes a moment)."""
    return botocore.session.get_session().get_service_model("ecs")


def operation_of(target: str | None) -> str | None:
    """The served operation an ``X-Amz-Target`` names, or None."""
    if target is None or not target.startswith(TARGET_PREFIX):
        return None
    name = target.removeprefix(TARGET_PREFIX)
    return name if name in OPERATIONS else None


def decode_request(
    operation: str | None, headers: Mapping[str, str], raw: bytes, account_of: Callable[[str], str]
) -> Call:
    """Check the protocol, then decode and validate the body of ``operation``.

    ``operation`` is :func:`operation_of` the request's target; ``account_of`` gives the account
    of the signing access key. Raises :class:`ApiError` (see the module docstring), in the
    table's order.
    """
    if operation is None:
        target = headers.get("X-Amz-Target")
        raise ApiError(400, "UnknownOperationException", f"Unknown operation: {target}")
    key, region = _credential(headers.get("Authorization", ""))
    scope = Scope(account=account_of(key), region=region)
    try:
        body = msgspec.json.decode(raw) if raw.strip() else {}
    except msgspec.DecodeError as exc:
        raise ApiError(400, "SerializationException", f"Malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "SerializationException", "Request body must be a JSON object")
    _validate_input(operation, body)
    return Call(operation, body, scope)


def credential_of(authorization: str) -> tuple[str, str] | None:
    """(access key id, Region) of a SigV4 ``Authorization`` header, or None if it has none."""
    scope = _CREDENTIAL.search(authorization)
    return None if scope is None else (scope.group(1), scope.group(3))


def _credential(authorization: str) -> tuple[str, str]:
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        raise ApiError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    scope = _CREDENTIAL.search(authorization)
    if scope is None:
        raise ApiError(
            403,
            "IncompleteSignatureException",
            "Authorization header requires 'Credential' parameter with a scope "
            "<key>/<date>/<region>/<service>/aws4_request.",
        )
    return scope.group(1), scope.group(3)


def _validate_input(operation: str, body: dict[str, Any]) -> None:
    shape = load_model().operation_model(operation).input_shape
    problems: list[str] = []
    params = _from_wire(body, shape, "", problems)
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        problems.insert(0, str(report.generate_report()))
    for required in _ALSO_REQUIRED.get(operation, ()):
        if not body.get(required):
            problems.append(f"Missing required parameter in input: {required!r}")
    if problems:
        raise ApiError(400, "InvalidParameterException", "\n".join(problems))


def _from_wire(value: Any, shape: Any, path: str, problems: list[str]) -> Any:
    """JSON-wire values -> botocore parameter values (epoch numbers -> datetime), noting the
    wire errors that botocore's client-side validator does not check."""
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {
            k: _from_wire(v, shape.members[k], f"{path}.{k}" if path else k, problems)
            if k in shape.members else v
            for k, v in value.items()
        }  # fmt: skip
    if kind == "list" and isinstance(value, list):
        return [_from_wire(v, shape.member, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if kind == "map" and isinstance(value, dict):
        return {k: _from_wire(v, shape.value, f"{path}.{k}", problems) for k, v in value.items()}
    if kind == "timestamp" and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            problems.append(f"Invalid timestamp for parameter {path}, value: {value}")
            return None  # keep out-of-range numbers away from botocore's parser
    elif kind == "timestamp" and isinstance(value, str):
        problems.append(f"Invalid type for parameter {path}, value: {value}: expected epoch seconds")
    elif kind in ("integer", "long") and isinstance(value, bool):
        problems.append(f"Invalid type for parameter {path}, value: {value}: expected an integer")
    elif kind == "string" and isinstance(value, str) and shape.enum and value not in shape.enum:
        problems.append(
            f"Invalid value for parameter {path}, value: {value}, valid values: {', '.join(shape.enum)}"
        )
    return value


def encode_output(operation: str, payload: dict[str, Any]) -> bytes:
    """The JSON answer of ``operation``; ``payload`` holds timestamps as aware datetimes.

    Raises :class:`ApiError` 500 ``ServerException`` when the payload does not fit the output
    shape: an endpoint bug, made visible to the client instead of a body botocore misreads.
    """
    shape = load_model().operation_model(operation).output_shape
    report = ParamValidator().validate(payload, shape)
    if report.has_errors():
        raise ApiError(500, "ServerException", f"answer does not fit the model: {report.generate_report()}")
    return msgspec.json.encode(_to_wire(payload))


def _to_wire(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_wire(v) for v in value]
    if isinstance(value, datetime):
        return value.timestamp()
    return value


def api_response(status: int, body: bytes, code: str | None = None) -> web.Response:
    """An AWS JSON 1.1 answer with a fresh ``x-amzn-RequestId``."""
    headers = {"x-amzn-RequestId": str(uuid.uuid4())}
    if code is not None:
        headers["x-amzn-ErrorType"] = code
    return web.Response(status=status, body=body, headers=headers, content_type=JSON_11)


def error_response(error: ApiError) -> web.Response:
    """The answer for ``error``: ``{"__type", "message"}`` and ``x-amzn-ErrorType``."""
    payload = msgspec.json.encode({"__type": error.code, "message": error.message})
    return api_response(error.status, payload, error.code)
