"""Building the canonical ``TaskEvent`` for one observed container change.

``msgspec.Struct`` constructors do not check ``Meta`` constraints, so the bounds of
``schemas.events`` (``schemas.bounds``) that runtime input could break are checked here.
"""

from __future__ import annotations

import re

from schemas.bounds import MAX_TEXT_LENGTH
from schemas.ecs import NetworkBinding
from schemas.events import ContainerChange, ContainerStatus, TaskEvent
from worker.decode.bad_items import InvalidItem
from worker.decode.exit_codes import wrap_int32
from worker.decode.labels import EcsContainer
from worker.decode.timeparse import check_ns

__all__ = ["OOM_REASON", "container_event", "image_digest"]

OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
"""The container reason the agent reports for an out-of-memory kill: ``OutOfMemoryError``'s name
and message (``agent/dockerclient/dockerapi/errors.go``, set from inspect's ``OOMKilled`` in
``docker_client.go``), joined as ``<name>: <message>`` by ``ecs-agent/api/errors/errors.go``."""

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)


def image_digest(image: str | None) -> str | None:
    """The digest of an image reference pinned by digest (``repo@sha256:<64 hex>``), else None:
    an image reference by tag does not say which digest it resolved to."""
    if not image:
        return None
    at = image.rfind("@")
    if at < 0:
        return None
    digest = image[at + 1 :]
    return digest if _DIGEST.fullmatch(digest) else None


def container_event(
    container: EcsContainer,
    observed_at: int,
    *,
    runtime_id: str | None,
    status: ContainerStatus | None = None,
    exit_code: int | None = None,
    reason: str | None = None,
    image_digest: str | None = None,
    stop_requested: bool = False,
    network_bindings: tuple[NetworkBinding, ...] | None = None,
) -> TaskEvent:
    """One task event holding one change of ``container`` (with its task's definition, if known);
    ``exit_code`` is wrapped to int32 (``worker.decode.exit_codes``). ``InvalidItem`` when a value
    is out of bounds."""
    check_ns(observed_at)
    if runtime_id is not None and len(runtime_id) > MAX_TEXT_LENGTH:
        raise InvalidItem(f"container id is longer than {MAX_TEXT_LENGTH} characters")
    if exit_code is not None:
        exit_code = wrap_int32(exit_code)
    change = ContainerChange(
        containerName=container.container_name,
        runtimeId=runtime_id or None,
        imageDigest=image_digest,
        status=status,
        exitCode=exit_code,
        reason=reason,
        stopRequested=stop_requested,
        networkBindings=network_bindings,
    )
    return TaskEvent(
        cluster=container.cluster,
        task=container.task,
        observedAt=observed_at,
        containers=(change,),
        taskDefinitionArn=container.task_definition,
    )
