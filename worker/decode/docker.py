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

from schemas.events import ContainerStatus
from worker.decode import reasons
from worker.decode.attribution import ContainerIndex
from worker.decode.emit import OOM_REASON, container_event
from worker.decode.errors import InvalidItem
from worker.decode.formats import ABSENT, JsonFormat, present
from worker.decode.labels import PAUSE_CONTAINER_NAME, ecs_container_from_labels
from worker.decode.result import DecodeResult
from worker.decode.timeparse import MAX_NS, unix_seconds_ns

__all__ = [
    "EXEC_ACTIONS",
    "NO_STATE_CHANGE",
    "STATUS_ACTIONS",
    "DockerActor",
    "DockerEvent",
    "DockerFormat",
    "apply_container_event",
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


class DockerActor(msgspec.Struct, kw_only=True):
    ID: str = ""
    Attributes: dict[str, str] | None = None


class DockerEvent(msgspec.Struct, kw_only=True):
    Type: str
    Action: str
    Actor: DockerActor
    time: Annotated[int, msgspec.Meta(ge=0, le=MAX_NS // 1_000_000_000)] | None = None
    timeNano: Annotated[int, msgspec.Meta(ge=0, le=MAX_NS)] | None = None
    # Markers: keys of formats detection ranks above Docker (worker.decode.detect).
    detail_type: msgspec.Raw = msgspec.field(default=ABSENT, name="detail-type")
    cluster: msgspec.Raw = ABSENT
    task: msgspec.Raw = ABSENT


def parse_exit_code(text: str) -> int:
    """An exit code attribute ("137") as an int32; ``InvalidItem`` when it is not one."""
    if _EXIT_CODE.fullmatch(text) is None:
        raise InvalidItem(f"docker: exit code {text[:32]!r} is not an integer")
    code = int(text)
    if not -(2**31) <= code < 2**31:
        raise InvalidItem(f"docker: exit code {code} is outside int32")
    return code


def _image_digest(attributes: dict[str, str]) -> str | None:
    image = attributes.get("image")
    if not image:
        return None
    at = image.rfind("@")
    if at < 0:
        return None
    digest = image[at + 1 :]
    return digest if _DIGEST.fullmatch(digest) else None


def apply_container_event(
    object_type: str,
    action: str,
    actor_id: str,
    attributes: dict[str, str],
    observed_at: int,
    into: DecodeResult,
    known: ContainerIndex,
) -> None:
    """Map one Docker-shaped event (from Docker, Podman, Fluent Bit or Metricbeat) onto ``into``."""
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
    verb = action.partition(": ")[0]
    status = STATUS_ACTIONS.get(verb)
    if status is not None:
        into.events.append(
            container_event(
                container,
                observed_at,
                runtime_id=actor_id,
                status=status,
                image_digest=_image_digest(attributes),
            )
        )
    elif verb in _DIE_ACTIONS:
        code = attributes.get("exitCode")
        if code is None:
            code = attributes.get("containerExitCode")
        into.events.append(
            container_event(
                container,
                observed_at,
                runtime_id=actor_id,
                status="STOPPED",
                exit_code=None if code is None else parse_exit_code(code),
                image_digest=_image_digest(attributes),
            )
        )
    elif verb == "oom":
        into.events.append(container_event(container, observed_at, runtime_id=actor_id, reason=OOM_REASON))
    elif verb == "kill":
        into.ignored.append(reasons.DOCKER_KILL)
    elif verb == "restart":
        into.ignored.append(reasons.DOCKER_RESTART)
    elif verb == "health_status":
        into.ignored.append(reasons.DOCKER_HEALTH)
    elif verb in EXEC_ACTIONS:
        into.ignored.append(reasons.DOCKER_EXEC)
    elif verb in NO_STATE_CHANGE:
        into.ignored.append(reasons.docker_no_state_change(verb))
    else:
        into.ignored.append(reasons.DOCKER_UNKNOWN_ACTION)


class DockerFormat(JsonFormat[DockerEvent]):
    """Docker and Podman events; the hot path."""

    name = "docker"
    label = "docker"

    def __init__(self, known: ContainerIndex) -> None:
        super().__init__(msgspec.json.Decoder(DockerEvent))
        self._known = known

    def claims(self, doc: DockerEvent) -> bool:
        return not (present(doc.detail_type) or (present(doc.cluster) and present(doc.task)))

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
        attributes = doc.Actor.Attributes
        apply_container_event(
            doc.Type,
            doc.Action,
            doc.Actor.ID,
            attributes if attributes is not None else {},
            observed_at,
            into,
            self._known,
        )
