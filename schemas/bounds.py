"""Structural bounds of the canonical event, defined once.

``schemas.events`` uses them in its ``msgspec.Meta`` annotations; the decoders in
``worker.decode`` use them to check values before they build an event (``msgspec.Struct``
constructors do not check ``Meta`` constraints). They are generous on purpose, so that one hostile
record cannot allocate without limit: the tighter limits are ECS's (``worker.ecs_rules``) and the
configurable per-task ones (``worker.coalesce``).
"""

from __future__ import annotations

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_ITEMS",
    "MAX_NAME_LENGTH",
    "MAX_NANOTIME",
    "MAX_TEXT_LENGTH",
]

MAX_NAME_LENGTH = 2048
"""Longest name or ARN (cluster, task, container name, task definition, attachment ARN)."""

MAX_TEXT_LENGTH = 65536
"""Longest free text or runtime value (reason, runtime id, image digest)."""

MAX_ITEMS = 1024
"""Most containers, attachments, managed agents or network bindings in one event."""

MAX_NANOTIME = 2**63 - 1
"""Latest time in nanoseconds since the Unix epoch (int64: 2262-04-11)."""

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
"""The range of exit codes (ECS's ``exitCode`` is an int32)."""

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
"""The range of exit codes an input may carry: a Go ``int`` on the ECS agent's 64-bit hosts. The
worker reports them wrapped to int32, as the agent does (``worker.decode.exit_codes``)."""
