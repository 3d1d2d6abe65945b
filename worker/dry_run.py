"""``python -m worker run --dry-run``: the whole pipeline but its effects.

What a dry run does: it joins its own consumer group, ``<group_id>-dry-run`` (so that it never
takes partitions from the running workers), and reads the input topic from where a new group
starts (``auto_offset_reset``, ``start_time``); it decodes, validates and coalesces exactly as
the worker does and logs each ``SubmitTaskStateChange`` request it would send ("dry run: would
submit", the request in the ``request`` field) and each record it would write ("dry run: would
write", with its topic and, for a dead letter, its reason headers).

What it does not do: no ECS call at all (``DryRunEcs`` answers the submissions itself; the
describe calls fail with ``DryRun``, so tasks fall back to what was seen, see ``settle_ms``), no
outcome or dead-letter record, no offset commit (every dry run starts at the same place), and it
needs no AWS credentials.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import msgspec
from botocore.exceptions import ClientError

from worker.config import Settings

__all__ = ["DRY_RUN_GROUP_SUFFIX", "DiscardSink", "DryRunEcs", "dry_run_settings"]

log = logging.getLogger("worker.dry_run")

DRY_RUN_GROUP_SUFFIX = "-dry-run"


def dry_run_settings(settings: Settings) -> Settings:
    """``settings`` with the dry run's own consumer group (unchanged when not a dry run)."""
    if not settings.dry_run or settings.group_id.endswith(DRY_RUN_GROUP_SUFFIX):
        return settings
    return msgspec.structs.replace(
        settings, group_id=settings.group_id + DRY_RUN_GROUP_SUFFIX, group_instance_id=None
    )


class DryRunEcs:
    """Stands for the aiobotocore ECS client: logs submissions, sends nothing."""

    async def submit_task_state_change(self, **params: Any) -> dict[str, Any]:
        request = msgspec.to_builtins(params, builtin_types=(datetime,))
        log.info(
            "dry run: would submit SubmitTaskStateChange %s %s",
            params.get("task"),
            params.get("status"),
            extra={"request": request},
        )
        return {"acknowledgment": "dry-run"}

    async def describe_tasks(self, **_params: Any) -> dict[str, Any]:
        raise _not_called("DescribeTasks")

    async def describe_task_definition(self, **_params: Any) -> dict[str, Any]:
        raise _not_called("DescribeTaskDefinition")


def _not_called(operation: str) -> ClientError:
    error = {"Code": "DryRun", "Message": "dry run: no ECS call"}
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 412}}, operation)


class DiscardSink:
    """A ``worker.publish.Sink`` that logs what it would write and writes nothing."""

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> None:
        reasons = {name: data.decode(errors="replace") for name, data in headers or [] if "errors." in name}
        log.info(
            "dry run: would write a record to %s",
            topic,
            extra={
                "topic": topic,
                "bytes": len(value or b""),
                **({"dead_letter": reasons} if reasons else {}),
            },
        )
