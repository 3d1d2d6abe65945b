"""Docker Engine events (``/events``, ``docker events --format '{{json .}}'``) and Podman's.

Both shapes are accepted: with the legacy ``status``/``id``/``from`` members (API < 1.52) and
without them (Docker 29+); only ``Type``, ``Action``, ``Actor.ID``, ``Actor.Attributes``,
``timeNano`` and ``time`` are read. ``timeNano`` is an int64 beyond 2**53 and is decoded as an int;
without it, ``time`` (seconds) is used. Every attribute value is a string. Podman's
Docker-compatible events are decoded here too (``containerExitCode``, ``died``, ``exec_died``,
``remove``; its ``kill`` is Docker's).

An event is ignored unless it is a container event (``Type == "container"``; else "docker: not a
container event (<type>)") of a container carrying the ECS agent's labels (``worker.decode.labels``;
else "docker: container without ECS labels"), other than the agent's internal containers and
tasks (``worker.decode.labels.internal_reason``: "ecs agent: internal container ..." and "ecs
agent: internal task ..."). An action with a suffix (``health_status: healthy``, ``exec_create:
/bin/sh -c ...``) is matched on the part before ``": "``. The mapping follows the ECS agent's own:

==============================  ===============================================================
Action                          Result
==============================  ===============================================================
create                          ``PENDING``
start                           ``RUNNING``
die (Podman: died)              ``STOPPED`` with ``exitCode`` from the ``exitCode`` attribute
                                (else Podman's ``containerExitCode``; neither: no exit code).
                                Wrapped to int32 as the agent wraps it
                                (``worker.decode.exit_codes``); a non-integer makes
                                the item bad.
stop                            ``STOPPED``, no exit code (the ``die`` before it carries it)
destroy (Podman: remove)        ``STOPPED``, no exit code (the container is gone)
oom                             a change with only ``reason`` = "OutOfMemoryError: Container
                                killed due to memory usage", no status: a fact of the
                                container's end, merged with its ``die`` in any order (the
                                ``oom`` of an exec'd process alone causes no call)
kill                            a change with only ``stopRequested``, no status: a stop was
                                asked (``docker stop``, ``docker kill``, the ECS agent), so the
                                ``die`` that follows is not a natural exit. The signal is not
                                kept (it is not ECS's ``reason``).
restart                         ignored, "docker: restart (a status never goes backwards)"
health_status                   ignored, "docker: health_status (not a task state change)"
exec_start of ECS Exec's agent  ``managedAgents`` ExecuteCommandAgent RUNNING
                                (``worker.decode.exec_agent``)
exec_create, exec_start,        ignored, "docker: exec process event (not the container's
exec_die, exec_died,            state)"; the managed agent's exec_create has its own reason
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
(``repo@sha256:<64 hex>``) that digest is the ``imageDigest``. The task definition labels give
the event's ``taskDefinitionArn`` (``worker.decode.labels.task_definition_arn``). Every labelled
container event also records ``Actor.ID`` in the decoder's container index, for containerd
attribution.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from schemas.bounds import MAX_NAME_LENGTH, MAX_NANOTIME, MAX_TEXT_LENGTH
from schemas.events import ContainerChange, ContainerStatus, TaskEvent
from worker.decode import reasons
from worker.decode.attribution import ContainerIndex, attribute_labelled
from worker.decode.bad_items import InvalidItem
from worker.decode.event_builder import OOM_REASON, container_event, image_digest
from worker.decode.exec_agent import apply_exec_event
from worker.decode.exit_codes import parse_exit_code
from worker.decode.format_contract import JsonFormat
from worker.decode.labels import (
    CLUSTER_LABEL,
    CONTAINER_NAME_LABEL,
    TASK_ARN_LABEL,
    TASK_DEFINITION_FAMILY_LABEL,
    TASK_DEFINITION_VERSION_LABEL,
)
from worker.decode.result import DecodeResult
from worker.decode.timeparse import MAX_SECONDS, unix_seconds_ns

__all__ = [
    "EXEC_ACTIONS",
    "NO_STATE_CHANGE",
    "STATUS_ACTIONS",
    "Change",
    "DockerActor",
    "DockerAttributes",
    "DockerEvent",
    "DockerFormat",
    "apply_container_event",
    "apply_docker_event",
    "docker_event_decoder",
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


Label = Annotated[str, msgspec.Meta(max_length=MAX_NAME_LENGTH)]
"""An ECS label value; an empty one counts as absent, a longer one than a name makes the item bad."""


class DockerAttributes(msgspec.Struct, kw_only=True, gc=False):
    """The attributes this decoder reads; the others are skipped unparsed (the hot path)."""

    task: Label | None = msgspec.field(default=None, name=TASK_ARN_LABEL)
    cluster: Label | None = msgspec.field(default=None, name=CLUSTER_LABEL)
    container: Label | None = msgspec.field(default=None, name=CONTAINER_NAME_LABEL)
    family: Label | None = msgspec.field(default=None, name=TASK_DEFINITION_FAMILY_LABEL)
    version: Label | None = msgspec.field(default=None, name=TASK_DEFINITION_VERSION_LABEL)
    exitCode: str | None = None
    containerExitCode: str | None = None
    image: str | None = None


class DockerActor(msgspec.Struct, kw_only=True, gc=False):
    """The container an event is about: its runtime id and its labels."""

    ID: Annotated[str, msgspec.Meta(max_length=MAX_TEXT_LENGTH)] = ""
    Attributes: DockerAttributes | None = None


class DockerEvent(msgspec.Struct, kw_only=True, gc=False):
    """The members of a Docker or Podman event that the mapping reads."""

    Type: str
    Action: str
    Actor: DockerActor
    time: Annotated[int, msgspec.Meta(ge=0, le=MAX_SECONDS)] | None = None
    timeNano: Annotated[int, msgspec.Meta(ge=0, le=MAX_NANOTIME)] | None = None


docker_event_decoder = msgspec.json.Decoder(DockerEvent)
"""Docker events inside another format's document (Fluent Bit's ``message``)."""


Change = tuple["ContainerStatus | None", "int | None", "str | None", bool]
"""(status, exit code, reason, stop requested) of one container change."""

_STATUS_CHANGES: dict[str, Change] = {
    verb: (status, None, None, False) for verb, status in STATUS_ACTIONS.items()
}
_OOM: Change = (None, None, OOM_REASON, False)
_STOP_REQUESTED: Change = (None, None, None, True)
_PLAIN_CHANGES: dict[str, Change] = {**_STATUS_CHANGES, "kill": _STOP_REQUESTED, "oom": _OOM}
"""The changes of the actions that read nothing else, looked up first (the common case)."""


def map_action(action: str, exit_code: str | None) -> Change | str:
    """The container change a container event's action means, or why it is ignored."""
    change = _PLAIN_CHANGES.get(action)
    if change is not None:
        return change
    verb = action.partition(": ")[0] if ": " in action else action
    change = _STATUS_CHANGES.get(verb)
    if change is not None:
        return change
    if verb in _DIE_ACTIONS:
        return "STOPPED", None if exit_code is None else parse_exit_code(exit_code), None, False
    if verb == "kill":
        return _STOP_REQUESTED
    if verb == "oom":
        return _OOM
    return _IGNORED.get(verb) or (
        reasons.docker_no_state_change(verb) if verb in NO_STATE_CHANGE else reasons.DOCKER_UNKNOWN_ACTION
    )


_IGNORED = {
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
    container = attribute_labelled(
        object_type,
        actor_id,
        attributes,
        known,
        not_container=reasons.docker_not_container,
        no_labels=reasons.DOCKER_NO_LABELS,
    )
    if isinstance(container, str):
        into.ignored.append(container)
        return
    exit_code = attributes.get("exitCode")
    change = map_action(action, exit_code if exit_code is not None else attributes.get("containerExitCode"))
    if isinstance(change, str):
        if change is reasons.DOCKER_EXEC:  # ECS Exec's managed agent, or a user's exec
            cluster, task, name, definition = container
            apply_exec_event(action, cluster, task, name, observed_at, definition, into)
        else:
            into.ignored.append(change)
        return
    status, code, reason, stop_requested = change
    into.events.append(
        container_event(
            container,
            observed_at,
            runtime_id=actor_id,
            status=status,
            exit_code=code,
            reason=reason,
            stop_requested=stop_requested,
            image_digest=image_digest(attributes.get("image")),
        )
    )


def apply_docker_event(
    doc: DockerEvent, into: DecodeResult, known: ContainerIndex, fallback_ns: int | None = None
) -> None:
    """Map one typed Docker event onto ``into``; ``fallback_ns`` (a shipper's timestamp) dates an
    event without a time of its own. ``apply_container_event`` flattened: it runs per event.

    Raises ``InvalidItem`` for an event without a time, a bad exit code or a task definition name
    too long (``worker.decode.labels.task_definition_arn``)."""
    observed_at = doc.timeNano or _observed_without_time_nano(doc, fallback_ns)
    if doc.Type != "container":
        into.ignored.append(reasons.docker_not_container(doc.Type))
        return
    actor = doc.Actor
    labels = actor.Attributes
    if labels is None:
        into.ignored.append(reasons.DOCKER_NO_LABELS)
        return
    task, cluster, name = labels.task, labels.cluster, labels.container
    if not (task and cluster and name):
        into.ignored.append(reasons.DOCKER_NO_LABELS)
        return
    actor_id = actor.ID
    container = known.remember_labels(actor_id, cluster, task, name, labels.family, labels.version)
    if isinstance(container, str):  # the agent's internal container or task
        into.ignored.append(container)
        return
    action = doc.Action
    exit_code = labels.exitCode
    change = map_action(action, labels.containerExitCode if exit_code is None else exit_code)
    if isinstance(change, str):
        if change is reasons.DOCKER_EXEC:  # ECS Exec's managed agent, or a user's exec
            apply_exec_event(action, cluster, task, name, observed_at, container.task_definition, into)
        else:
            into.ignored.append(change)
        return
    status, code, reason, stop_requested = change
    image = labels.image
    into.events.append(
        TaskEvent(
            cluster=cluster,
            task=task,
            observedAt=observed_at,
            containers=(
                ContainerChange(
                    containerName=name,
                    runtimeId=actor_id or None,
                    imageDigest=image_digest(image) if image and "@" in image else None,
                    status=status,
                    exitCode=code,
                    reason=reason,
                    stopRequested=stop_requested,
                ),
            ),
            taskDefinitionArn=container.task_definition,
        )
    )


def _observed_without_time_nano(doc: DockerEvent, fallback_ns: int | None) -> int:
    """When an event without ``timeNano`` (or with 0) was observed: ``time``, else ``fallback_ns``."""
    if doc.time:
        return unix_seconds_ns(doc.time)
    if fallback_ns is not None:
        return fallback_ns
    raise InvalidItem("docker: event has neither timeNano nor time")


class DockerFormat(JsonFormat[DockerEvent]):
    """Docker and Podman events; the hot path."""

    document = DockerEvent

    def apply(self, doc: DockerEvent, index: int, into: DecodeResult) -> None:
        apply_docker_event(doc, into, self.context.known)
