"""Docker Engine events (``/events``, ``docker events --format '{{json .}}'``) and Podman's.

Both shapes are accepted: with the legacy ``status``/``id``/``from`` members (API < 1.52) and
without them (Docker 29+); only ``Type``, ``Action``, ``Actor.ID``, ``Actor.Attributes``,
``timeNano`` and ``time`` are read. ``timeNano`` is an int64 beyond 2**53 and is decoded as an int;
without it, ``time`` (seconds) is used. Every attribute value is a string. Podman's
Docker-compatible events are decoded here too (``containerExitCode``, ``died``, ``exec_died``,
``remove``).

An event is ignored unless it is a container event (``Type == "container"``; else "docker: not a
container event (<type>)") of a container carrying the ECS agent's labels (``worker.decode.labels``;
else "docker: container without ECS labels"), other than the agent's pause container
``~internal~ecs~pause`` ("docker: ECS agent pause container (not reported)"). An action with a
suffix (``health_status: healthy``, ``exec_create: /bin/sh -c ...``) is matched on the part before
``": "``. The mapping follows the ECS agent's own:

==============================  ===============================================================
Action                          Result
==============================  ===============================================================
create                          ``PENDING``
start                           ``RUNNING``
die (Podman: died)              ``STOPPED`` with ``exitCode`` from the ``exitCode`` attribute
                                (else Podman's ``containerExitCode``; neither: no exit code).
                                A non-numeric or out-of-int32 exit code makes the item bad.
stop                            ``STOPPED``, no exit code (the ``die`` before it carries it)
destroy (Podman: remove)        ``STOPPED``, no exit code (the container is gone)
oom                             a change with only ``reason`` = "OutOfMemoryError: Container
                                killed due to memory usage", no status: the ``die`` that
                                follows sets ``STOPPED`` and the coalescer merges both
kill                            ignored, "docker: kill (a signal; the die that follows carries
                                the exit code)"
restart                         ignored, "docker: restart (a status never goes backwards)"
health_status                   ignored, "docker: health_status (not a task state change)"
exec_create, exec_start,        ignored, "docker: exec process event (not the container's
exec_die, exec_died,            state)"
exec_detach, exec
attach, detach, pause,          ignored, "docker: <action> (no container state change)"; a
unpause, rename, update,        paused container is still RUNNING for ECS
commit, copy, export, top,
resize, archive-path,
extract-to-dir, prune, mount,
unmount, init, cleanup, sync,
checkpoint, restore
anything else                   ignored, "docker: unknown container action"
==============================  ===============================================================

The container's ``runtimeId`` is ``Actor.ID``. When the ``image`` attribute is pinned by digest
(``repo@sha256:<64 hex>``) that digest is the ``imageDigest``. Every labelled container event
also records ``Actor.ID`` in the decoder's container index, for containerd attribution.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from schemas.events import ContainerChange, ContainerStatus, TaskEvent
from worker.decode import reasons
from worker.decode.attribution import ContainerIndex
from worker.decode.emit import OOM_REASON, container_event
from worker.decode.errors import InvalidItem
from worker.decode.formats import BelowCanonical, JsonFormat
from worker.decode.labels import (
    CLUSTER_LABEL,
    CONTAINER_NAME_LABEL,
    PAUSE_CONTAINER_NAME,
    TASK_ARN_LABEL,
    ecs_container_from_labels,
)
from worker.decode.result import DecodeResult
from worker.decode.timeparse import MAX_NS, unix_seconds_ns

__all__ = [
    "EXEC_ACTIONS",
    "NO_STATE_CHANGE",
    "STATUS_ACTIONS",
    "DockerActor",
    "DockerAttributes",
    "DockerEvent",
    "DockerFormat",
    "apply_container_event",
    "map_action",
    "parse_exit_code",
]

STATUS_ACTIONS: dict[str, ContainerStatus] = {
    "create": "PENDING",
    "start": "RUNNING",
    "stop": "STOPPED",
    "destroy": "STOPPED",
    "remove": "STOPPED",
}
_DIE_ACTIONS = frozenset({"die", "died"})
EXEC_ACTIONS = frozenset({"exec_create", "exec_start", "exec_die", "exec_died", "exec_detach", "exec"})
NO_STATE_CHANGE = frozenset(
    {
        "attach",
        "detach",
        "pause",
        "unpause",
        "rename",
        "update",
        "commit",
        "copy",
        "export",
        "top",
        "resize",
        "archive-path",
        "extract-to-dir",
        "prune",
        "mount",
        "unmount",
        "init",
        "cleanup",
        "sync",
        "checkpoint",
        "restore",
    }
)
_EXIT_CODE = re.compile(r"-?[0-9]{1,10}", re.ASCII)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)


Label = Annotated[str, msgspec.Meta(max_length=2048)]  # schemas.events.Name


class DockerAttributes(msgspec.Struct, kw_only=True, gc=False):
    """The attributes this decoder reads; the others are skipped unparsed (the hot path)."""

    task: Label | None = msgspec.field(default=None, name=TASK_ARN_LABEL)
    cluster: Label | None = msgspec.field(default=None, name=CLUSTER_LABEL)
    container: Label | None = msgspec.field(default=None, name=CONTAINER_NAME_LABEL)
    exitCode: str | None = None
    containerExitCode: str | None = None
    image: str | None = None


class DockerActor(msgspec.Struct, kw_only=True, gc=False):
    ID: Annotated[str, msgspec.Meta(max_length=65536)] = ""
    Attributes: DockerAttributes | None = None


class DockerEvent(BelowCanonical, kw_only=True, gc=False):
    Type: str
    Action: str
    Actor: DockerActor
    time: Annotated[int, msgspec.Meta(ge=0, le=MAX_NS // 1_000_000_000)] | None = None
    timeNano: Annotated[int, msgspec.Meta(ge=0, le=MAX_NS)] | None = None


def parse_exit_code(text: str) -> int:
    """An exit code attribute ("137") as an int32; ``InvalidItem`` when it is not one."""
    if _EXIT_CODE.fullmatch(text) is None:
        raise InvalidItem(f"docker: exit code {text[:32]!r} is not an integer")
    code = int(text)
    if not -(2**31) <= code < 2**31:
        raise InvalidItem(f"docker: exit code {code} is outside int32")
    return code


def _image_digest(image: str | None) -> str | None:
    if not image:
        return None
    at = image.rfind("@")
    if at < 0:
        return None
    digest = image[at + 1 :]
    return digest if _DIGEST.fullmatch(digest) else None


Change = tuple["ContainerStatus | None", "int | None", "str | None"]
"""(status, exit code, reason) of one container change."""


def map_action(action: str, exit_code: str | None) -> Change | str:
    """The container change a container event's action means, or why it is ignored."""
    verb = action.partition(": ")[0] if ": " in action else action
    status = STATUS_ACTIONS.get(verb)
    if status is not None:
        return status, None, None
    if verb in _DIE_ACTIONS:
        return "STOPPED", None if exit_code is None else parse_exit_code(exit_code), None
    if verb == "oom":
        return None, None, OOM_REASON
    return _IGNORED.get(verb) or (
        reasons.docker_no_state_change(verb) if verb in NO_STATE_CHANGE else reasons.DOCKER_UNKNOWN_ACTION
    )


_IGNORED = {
    "kill": reasons.DOCKER_KILL,
    "restart": reasons.DOCKER_RESTART,
    "health_status": reasons.DOCKER_HEALTH,
    **dict.fromkeys(EXEC_ACTIONS, reasons.DOCKER_EXEC),
}


def apply_container_event(
    object_type: str,
    action: str,
    actor_id: str,
    attributes: dict[str, str],
    observed_at: int,
    into: DecodeResult,
    known: ContainerIndex,
) -> None:
    """Map one Docker-shaped event with its attributes as a dict (Metricbeat) onto ``into``."""
    if object_type != "container":
        into.ignored.append(reasons.docker_not_container(object_type))
        return
    container = ecs_container_from_labels(attributes)
    if container is None:
        into.ignored.append(reasons.DOCKER_NO_LABELS)
        return
    if container.container_name == PAUSE_CONTAINER_NAME:
        into.ignored.append(reasons.DOCKER_PAUSE_CONTAINER)
        return
    known.remember(actor_id, container)
    exit_code = attributes.get("exitCode")
    change = map_action(action, exit_code if exit_code is not None else attributes.get("containerExitCode"))
    if isinstance(change, str):
        into.ignored.append(change)
        return
    status, code, reason = change
    into.events.append(
        container_event(
            container,
            observed_at,
            runtime_id=actor_id,
            status=status,
            exit_code=code,
            reason=reason,
            image_digest=_image_digest(attributes.get("image")),
        )
    )


class DockerFormat(JsonFormat[DockerEvent]):
    """Docker and Podman events; the hot path."""

    name = "docker"
    label = "docker"

    def __init__(self, known: ContainerIndex) -> None:
        super().__init__(msgspec.json.Decoder(DockerEvent))
        self._known = known

    def claims(self, doc: DockerEvent) -> bool:
        return not doc.outranked()

    def apply(self, doc: DockerEvent, index: int, into: DecodeResult) -> None:
        self.apply_with_fallback(doc, into, None)

    def apply_with_fallback(self, doc: DockerEvent, into: DecodeResult, fallback_ns: int | None) -> None:
        """Apply ``doc``; ``fallback_ns`` (a shipper's timestamp) is used when it has no time."""
        if doc.timeNano:
            observed_at = doc.timeNano
        elif doc.time:
            observed_at = unix_seconds_ns(doc.time)
        elif fallback_ns is not None:
            observed_at = fallback_ns
        else:
            raise InvalidItem("docker: event has neither timeNano nor time")
        self._apply(doc, observed_at, into)

    def _apply(self, doc: DockerEvent, observed_at: int, into: DecodeResult) -> None:
        """``apply_container_event`` for the typed attributes, flattened: it runs per event."""
        if doc.Type != "container":
            into.ignored.append(reasons.docker_not_container(doc.Type))
            return
        labels = doc.Actor.Attributes
        if labels is None or not (labels.task and labels.cluster and labels.container):
            into.ignored.append(reasons.DOCKER_NO_LABELS)
            return
        if labels.container == PAUSE_CONTAINER_NAME:
            into.ignored.append(reasons.DOCKER_PAUSE_CONTAINER)
            return
        actor_id = doc.Actor.ID
        self._known.remember_labels(actor_id, labels.cluster, labels.task, labels.container)
        exit_code = labels.exitCode if labels.exitCode is not None else labels.containerExitCode
        change = map_action(doc.Action, exit_code)
        if isinstance(change, str):
            into.ignored.append(change)
            return
        status, code, reason = change
        container = ContainerChange(
            containerName=labels.container,
            runtimeId=actor_id or None,
            imageDigest=_image_digest(labels.image),
            status=status,
            exitCode=code,
            reason=reason,
        )
        into.events.append(
            TaskEvent(
                cluster=labels.cluster, task=labels.task, observedAt=observed_at, containers=(container,)
            )
        )
