"""Podman's native events: ``podman events --format json`` (and, through ``apply_podman_event``, its
default text lines, ``worker.decode.text_events``).

A JSON line reads ``{"ID", "Image", "Name", "Status", "Type", "time", "timeNano", "Attributes",
"ContainerExitCode", "OOMKilled", "PodID", "health_status"}`` (``cmd/podman/system/events.go`` in
containers/podman); Podman before 4 wrote ``"Time"`` as an RFC 3339 string instead of
``time``/``timeNano``. ``Attributes`` holds the container's labels, so the ECS agent's labels
attribute the event (``worker.decode.labels``). This is not the Docker-compatible shape of
Podman's socket (``Action``, ``Actor``), which ``worker.decode.docker`` reads.

The statuses are Podman's own (``libpod/events/config.go``), mapped as the ECS agent maps the
Docker events they stand for:

==================================  ===========================================================
Status                              Result
==================================  ===========================================================
create                              ``PENDING``
start                               ``RUNNING``
died (also ``exited``), remove      ``STOPPED`` with ``ContainerExitCode`` (wrapped to int32,
                                    ``worker.decode.exit_codes``; Podman sets it on both; a
                                    ``died`` without it exited 0: older Podman omitted a 0);
                                    ``OOMKilled`` true adds ECS's out-of-memory ``reason``
stop                                ``STOPPED``, no exit code
kill                                a stop was asked (``stopRequested``), no status
restart                             ignored, "podman: restart (a status never goes backwards)"
health_status                       ignored, "podman: health_status (not a task state change)"
exec, exec_died                     ignored, "podman: exec process event (not the container's
                                    state)"
attach, checkpoint, cleanup,        ignored, "podman: <status> (no container state change)"
commit, connect, copy, disconnect,
export, import, init, mount,
pause, prune, refresh, rename,
renumber, restore, sync, unmount,
unpause, update
anything else                       ignored, "podman: unknown container status"
==================================  ===========================================================

Other types (``pod``, ``image``, ``volume``...) are ignored, "podman: not a container event
(<type>)"; unlabelled containers and the agent's internal ones as for Docker.

The ``image_digest`` is that of an image pinned by digest, or, when the event carries Podman's
inspect data (``ContainerInspectData``), the resolved ``ImageDigest``; the inspect data also gives
the port bindings (``worker.decode.podman_inspect``). Nothing else tells either.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from schemas.bounds import MAX_NANOTIME
from schemas.events import ContainerStatus
from worker.decode import reasons
from worker.decode.attribution import ContainerIndex, attribute_labelled
from worker.decode.bad_items import InvalidItem
from worker.decode.event_builder import OOM_REASON, container_event, image_digest
from worker.decode.exit_codes import wrap_int32
from worker.decode.format_contract import JsonFormat
from worker.decode.podman_inspect import InspectFacts, inspect_facts
from worker.decode.result import DecodeResult
from worker.decode.timeparse import MAX_SECONDS, rfc3339_ns, unix_seconds_ns

__all__ = [
    "PODMAN_NO_STATE_CHANGE",
    "PodmanChange",
    "PodmanEvent",
    "PodmanFormat",
    "apply_podman_event",
    "map_status",
]

_STATUSES: dict[str, ContainerStatus] = {
    "create": "PENDING",
    "start": "RUNNING",
    "stop": "STOPPED",
}
_ENDED = frozenset({"died", "exited", "remove"})
PODMAN_NO_STATE_CHANGE = frozenset(
    {
        "attach",
        "checkpoint",
        "cleanup",
        "commit",
        "connect",
        "copy",
        "disconnect",
        "export",
        "import",
        "init",
        "mount",
        "pause",
        "prune",
        "refresh",
        "rename",
        "renumber",
        "restore",
        "sync",
        "unmount",
        "unpause",
        "update",
    }
)
_IGNORED = {
    "restart": reasons.PODMAN_RESTART,
    "health_status": reasons.PODMAN_HEALTH,
    "exec": reasons.PODMAN_EXEC,
    "exec_died": reasons.PODMAN_EXEC,
}

PodmanChange = tuple["ContainerStatus | None", "int | None", "str | None", bool]
"""(status, exit code, reason, stop requested) of one container change."""


class PodmanEvent(msgspec.Struct, kw_only=True, gc=False):
    """The members of a ``podman events --format json`` line that the mapping reads."""

    Status: str
    Type: str = ""
    ID: str = ""
    Image: str = ""
    Attributes: dict[str, str] | None = None
    ContainerExitCode: int | None = None
    OOMKilled: bool | None = None
    time: Annotated[int, msgspec.Meta(ge=0, le=MAX_SECONDS)] | str | None = None
    timeNano: Annotated[int, msgspec.Meta(ge=0, le=MAX_NANOTIME)] | None = None
    Time: str | None = None
    ContainerInspectData: str | None = None


def map_status(status: str, exit_code: int | None, oom_killed: bool) -> PodmanChange | str:
    """The container change a Podman status means, or why it is ignored (a reason)."""
    known = _STATUSES.get(status)
    if known is not None:
        return known, None, None, False
    if status in _ENDED:
        code = None if exit_code is None else wrap_int32(exit_code)
        return "STOPPED", code, OOM_REASON if oom_killed else None, False
    if status == "kill":
        return None, None, None, True
    ignored = _IGNORED.get(status)
    if ignored is not None:
        return ignored
    if status in PODMAN_NO_STATE_CHANGE:
        return reasons.podman_no_state_change(status)
    return reasons.PODMAN_UNKNOWN_STATUS


def apply_podman_event(
    event: tuple[str, str, str, str],
    attributes: dict[str, str],
    exit_code: int | None,
    oom_killed: bool,
    observed_at: int,
    into: DecodeResult,
    known: ContainerIndex,
    inspected: InspectFacts = (None, None),
) -> None:
    """Map one Podman event, ``(type, status, container id, image)``, onto ``into``; ``exit_code``
    is ``ContainerExitCode`` (Podman's text lines have none), ``inspected`` what its inspect data
    gives. Raises ``InvalidItem`` for a value out of bounds."""
    object_type, status, runtime_id, image = event
    container = attribute_labelled(
        object_type,
        runtime_id,
        attributes,
        known,
        not_container=reasons.podman_not_container,
        no_labels=reasons.PODMAN_NO_LABELS,
    )
    if isinstance(container, str):
        into.ignored.append(container)
        return
    change = map_status(status, exit_code, oom_killed)
    if isinstance(change, str):
        into.ignored.append(change)
        return
    status_, code, reason, stop_requested = change
    into.events.append(
        container_event(
            container,
            observed_at,
            runtime_id=runtime_id,
            status=status_,
            exit_code=code,
            reason=reason,
            stop_requested=stop_requested,
            image_digest=inspected[0] or image_digest(image or attributes.get("image")),
            network_bindings=inspected[1],
        )
    )


_DIED = frozenset({"died", "exited"})


def _exit_code(doc: PodmanEvent) -> int | None:
    """``ContainerExitCode``; on a ``died`` without one, 0: Podman before 4.4 declared the field
    ``int`` with ``omitempty`` (``libpod/events/config.go``), so that an exit 0 was left out, and
    later Podman (``*int``) always writes it on ``died``."""
    if doc.ContainerExitCode is None and doc.Status in _DIED:
        return 0
    return doc.ContainerExitCode


def _observed_at(doc: PodmanEvent) -> int:
    if doc.timeNano:
        return doc.timeNano
    if isinstance(doc.time, int) and doc.time:
        return unix_seconds_ns(doc.time)
    text = doc.time if isinstance(doc.time, str) else doc.Time
    if text:
        return rfc3339_ns(text)
    raise InvalidItem("podman: event has neither timeNano, time nor Time")


class PodmanFormat(JsonFormat[PodmanEvent]):
    """``podman events --format json`` lines."""

    document = PodmanEvent

    def apply(self, doc: PodmanEvent, index: int, into: DecodeResult) -> None:
        inspected = inspect_facts(doc.ContainerInspectData) if doc.ContainerInspectData else (None, None)
        apply_podman_event(
            (doc.Type, doc.Status, doc.ID, doc.Image),
            doc.Attributes or {},
            _exit_code(doc),
            bool(doc.OOMKilled),
            _observed_at(doc),
            into,
            self.context.known,
            inspected,
        )
