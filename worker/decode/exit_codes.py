"""Exit codes as ECS takes them: an int32, wrapped the way the ECS agent wraps it.

The agent reads a container's exit code as a Go ``int`` (64 bits): ``strconv.Atoi`` of Docker's
``exitCode`` event attribute (``agent/dockerclient/dockerapi/docker_client.go``,
``setExitCodeFromEvent``) or the inspected ``State.ExitCode``. It converts it with ``int32(...)``
when it builds the request (``agent/api/statechange.go`` and
``ecs-agent/api/ecs/client/ecs_client.go``: ``exitCode := int32(aws.ToInt(change.ExitCode))``).
Go's conversion keeps the low 32 bits as two's complement, so a Windows NTSTATUS such as
3221225477 (0xC0000005) is reported as -1073741819, 2**32-1 as -1 and 2**31 as -2**31.

Every exit code of every input format goes through ``wrap_int32`` (integers) or
``parse_exit_code`` (attribute strings). What ``strconv.Atoi`` refuses is bad input here too: a
value that is not a base-10 integer, or one outside int64 (its range error).
"""

from __future__ import annotations

import re

from schemas.bounds import INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN
from worker.decode.bad_items import InvalidItem

__all__ = ["parse_exit_code", "wrap_int32"]

_UINT32 = 2**32
_ATOI = re.compile(r"[+-]?[0-9]{1,64}", re.ASCII)
"""What ``strconv.Atoi`` parses (leading zeros allowed); longer strings are never int64."""


def wrap_int32(code: int) -> int:
    """``code`` (an int64) as the int32 of its low 32 bits: Go's ``int32(code)``.

    Raises ``InvalidItem`` for a value outside int64, which the agent could not have read.
    """
    if INT32_MIN <= code <= INT32_MAX:
        return code
    if not INT64_MIN <= code <= INT64_MAX:
        raise InvalidItem(f"exit code {code} is outside int64")
    return (code - INT32_MIN) % _UINT32 + INT32_MIN


def parse_exit_code(text: str) -> int:
    """An exit code attribute ("137", "3221225477") as the int32 ECS takes (``wrap_int32``).

    Raises ``InvalidItem`` when ``text`` is not a base-10 integer in int64 (as ``strconv.Atoi``).
    """
    if _ATOI.fullmatch(text) is None:
        raise InvalidItem(f"exit code {text[:32]!r} is not an integer")
    return wrap_int32(int(text))
