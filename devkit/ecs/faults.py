"""Injected failures: which operations they touch, in which order, and how describes fail.

Two independent sets share one :class:`Faults` value:

* the submit path -- ``SubmitTaskStateChange`` and requests that name no served operation -- in
  this order: drop (close the connection without an answer), latency, the token-bucket quota,
  ``throttle_rate`` (both 400 ``ThrottlingException``), ``error_rate`` (500 ``ServerException``);
* the describe calls -- ``DescribeTasks`` and ``DescribeTaskDefinition`` -- in this order:
  ``describe_latency_ms``, ``describe_deny_rate`` (400 ``AccessDeniedException``, as an IAM denial
  reaches botocore), ``describe_throttle_rate`` (400 ``ThrottlingException``),
  ``describe_error_rate`` (500 ``ServerException``).

``RegisterTaskDefinition`` and ``RunTask`` set up fixtures and are never faulted. Faults come
before the protocol checks and never change state. Each faulted call makes three draws from its
own ``random.Random`` (one for the submit path, one for describes, both from the endpoint's seed),
so the submit path's outcomes do not depend on how many describes were made.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from devkit.ecs.wire import ApiError

__all__ = ["DESCRIBE_OPERATIONS", "SETUP_OPERATIONS", "Faults", "describe_fault"]

DESCRIBE_OPERATIONS = frozenset({"DescribeTasks", "DescribeTaskDefinition"})
SETUP_OPERATIONS = frozenset({"RegisterTaskDefinition", "RunTask"})

Rate = Annotated[float, msgspec.Meta(ge=0, le=1)]
Millis = Annotated[float, msgspec.Meta(ge=0)]


class Faults(msgspec.Struct, kw_only=True):
    """Injected failures. Rates are fractions of calls in [0, 1]; quota None = unlimited.

    The first six apply to the submit path, the ``describe_*`` ones to the describe calls (see
    the module docstring for the order). ``POST /_faults`` takes this as a JSON object; members
    left out take these defaults.
    """

    throttle_rate: Rate = 0.0
    error_rate: Rate = 0.0
    latency_ms: Millis = 0.0
    drop_rate: Rate = 0.0
    quota_burst: Annotated[int, msgspec.Meta(ge=0)] | None = None
    quota_refill_per_s: Annotated[float, msgspec.Meta(ge=0)] | None = None
    describe_deny_rate: Rate = 0.0
    describe_throttle_rate: Rate = 0.0
    describe_error_rate: Rate = 0.0
    describe_latency_ms: Millis = 0.0


def describe_fault(
    faults: Faults, operation: str, account: str, draws: tuple[float, float, float]
) -> ApiError | None:
    """The injected error for one describe call given its three draws in [0, 1), or None."""
    deny, throttle, error = draws
    if deny < faults.describe_deny_rate:
        return ApiError(
            400,
            "AccessDeniedException",
            f"User: arn:aws:iam::{account}:user/local is not authorized to perform: ecs:{operation} "
            f"on resource: * because no identity-based policy allows the ecs:{operation} action",
        )
    if throttle < faults.describe_throttle_rate:
        return ApiError(400, "ThrottlingException", "Rate exceeded")
    if error < faults.describe_error_rate:
        return ApiError(500, "ServerException", "Service unavailable (injected)")
    return None
