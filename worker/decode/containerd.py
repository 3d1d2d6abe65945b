"""containerd events: ``ctr events`` text lines and their JSON bodies alone.

A ``ctr events`` line is ``<Go time.Time.String()> <namespace> <topic> <json(event)>``, e.g.
``2024-12-11 05:54:19.19 +0000 UTC moby /tasks/exit {"container_id": ...}``. A JSON body alone
has no topic; it is inferred from the body's members (``exited_at`` with ``id``: an exit;
``exited_at`` without ``id``: a task delete, which containerd publishes for the init process
only; ``exec_id``: an exec event; ``container_id`` + ``pid``: a task start; ``id`` + ``runtime``:
a container create). ``exited_at`` is an RFC 3339 string (containerd < 2) or ``{"seconds",
"nanos"}``; an omitted ``exit_status`` is 0 (proto3 omits zero values). ``exit_status`` is a
uint32, reported as the int32 ECS takes (``worker.decode.exit_codes``: 3221225477 is -1073741819).

containerd events carry no labels. An event is attributed to an ECS container only when its
container id is in the decoder's index (``worker.decode.attribution``), filled by labelled Docker
events of the same container seen earlier (Docker runs containers in the ``moby`` namespace with
the same ids); otherwise it is ignored ("containerd: container not attributed to an ECS task").

===============================  ===========================================================
Topic                            Result
===============================  ===========================================================
/tasks/exit, init process        ``STOPPED`` with ``exit_status``, at ``exited_at`` (else the
(``id`` == ``container_id``;     line's time)
no ``id`` on a ctr line)
/tasks/exit, other ``id``        ignored, "containerd: exec process exit (not the
                                 container's)"
/tasks/start                     ``RUNNING``, at the line's time
/containers/create               ``PENDING``, at the line's time
/tasks/oom                       a change with only ECS's out-of-memory ``reason``
/tasks/delete                    ignored, "containerd: task delete (the exit was already
                                 reported)"
/tasks/exec-added,               ignored, "containerd: exec process event"
/tasks/exec-started
/tasks/create, /tasks/paused,    ignored, "containerd: <topic> (no container state change)"
/tasks/resumed,
/tasks/checkpointed,
/containers/update,
/containers/delete
/images/*, /snapshot/*,          ignored, "containerd: not a container event"
/namespaces/*, /content/*,
/sandboxes/*
anything else                    ignored, "containerd: unknown topic"
===============================  ===========================================================

The mapped topics (exit, start, create, oom) need attribution first; an exit is checked for being
an exec process's before attribution.

A JSON body without a time of its own (all but exits and deletes) uses the record timestamp passed
to ``RecordDecoder.decode``; without one it is ignored ("containerd: event without a timestamp").
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from schemas.events import ContainerStatus
from worker.decode import reasons
from worker.decode.attribution import ContainerIndex
from worker.decode.bad_items import DECODE_ERROR, UNRECOGNISED, UNRECOGNISED_REASON, InvalidItem
from worker.decode.event_builder import OOM_REASON, container_event
from worker.decode.exit_codes import wrap_int32
from worker.decode.format_contract import ABSENT, DecodeContext, JsonFormat, present
from worker.decode.result import DecodeResult
from worker.decode.timeparse import MAX_SECONDS, go_time_ns, rfc3339_ns, unix_seconds_ns

__all__ = [
    "UNMAPPED_TOPICS",
    "ContainerdEvent",
    "ContainerdFormat",
    "CtrFormat",
    "ProtoTimestamp",
    "infer_topic",
    "parse_ctr_line",
]

UNMAPPED_TOPICS = frozenset(
    {
        "/tasks/create",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/checkpointed",
        "/containers/update",
        "/containers/delete",
    }
)
_EXEC_TOPICS = frozenset({"/tasks/exec-added", "/tasks/exec-started"})
_OTHER_OBJECTS = ("/images/", "/snapshot/", "/namespaces/", "/content/", "/sandboxes/")
_UINT32_MAX = 2**32 - 1


class ProtoTimestamp(msgspec.Struct, kw_only=True):
    """``google.protobuf.Timestamp`` as Go's encoding/json writes it (zero members omitted)."""

    seconds: Annotated[int, msgspec.Meta(ge=0, le=MAX_SECONDS)] = 0
    nanos: Annotated[int, msgspec.Meta(ge=0, le=999_999_999)] = 0


class ContainerdEvent(msgspec.Struct, kw_only=True, gc=False):
    """The members of containerd's task and container events that the mapping reads."""

    container_id: str = ""
    id: str = ""
    exec_id: str = ""
    exit_status: Annotated[int, msgspec.Meta(ge=0, le=_UINT32_MAX)] = 0
    exited_at: str | ProtoTimestamp | None = None
    pid: msgspec.Raw = ABSENT
    bundle: msgspec.Raw = ABSENT
    checkpoint: msgspec.Raw = ABSENT
    runtime: msgspec.Raw = ABSENT
    image: msgspec.Raw = ABSENT


def infer_topic(event: ContainerdEvent) -> str | None:
    """The topic of a JSON body alone, or None when its members do not tell."""
    if event.exited_at is not None:
        return "/tasks/exit" if event.id else "/tasks/delete"
    if event.exec_id:
        return "/tasks/exec-started"
    if event.container_id:
        if present(event.bundle):
            return "/tasks/create"
        if present(event.checkpoint):
            return "/tasks/checkpointed"
        if present(event.pid):
            return "/tasks/start"
        return None  # /tasks/oom, /tasks/paused and /tasks/resumed all read {"container_id"}
    if event.id:
        if present(event.runtime):
            return "/containers/create"
        return "/containers/update" if present(event.image) else "/containers/delete"
    return None


def _exited_at_ns(exited_at: str | ProtoTimestamp) -> int:
    if isinstance(exited_at, str):
        return rfc3339_ns(exited_at)
    return unix_seconds_ns(exited_at.seconds, exited_at.nanos)


def apply_topic(
    topic: str,
    event: ContainerdEvent,
    time_ns: int | None,
    into: DecodeResult,
    known: ContainerIndex,
) -> None:
    """Map one containerd event of ``topic`` onto ``into``; ``time_ns``: when it was published."""
    if topic == "/tasks/exit":
        if event.id and event.id != event.container_id:
            into.ignored.append(reasons.CONTAINERD_EXEC_EXIT)
            return
        container = known.lookup(event.container_id)
        if container is None:
            into.ignored.append(reasons.CONTAINERD_NOT_ATTRIBUTED)
            return
        if event.exited_at is not None:
            time_ns = _exited_at_ns(event.exited_at)
        if time_ns is None:
            into.ignored.append(reasons.CONTAINERD_NO_TIME)
            return
        into.events.append(
            container_event(
                container,
                time_ns,
                runtime_id=event.container_id,
                status="STOPPED",
                exit_code=wrap_int32(event.exit_status),
            )
        )
    elif topic in ("/tasks/start", "/tasks/oom", "/containers/create"):
        runtime_id = event.id if topic == "/containers/create" else event.container_id
        container = known.lookup(runtime_id)
        if container is None:
            into.ignored.append(reasons.CONTAINERD_NOT_ATTRIBUTED)
        elif time_ns is None:
            into.ignored.append(reasons.CONTAINERD_NO_TIME)
        elif topic == "/tasks/oom":
            into.events.append(container_event(container, time_ns, runtime_id=runtime_id, reason=OOM_REASON))
        else:
            status: ContainerStatus = "RUNNING" if topic == "/tasks/start" else "PENDING"
            into.events.append(container_event(container, time_ns, runtime_id=runtime_id, status=status))
    elif topic == "/tasks/delete":
        into.ignored.append(reasons.CONTAINERD_TASK_DELETE)
    elif topic in _EXEC_TOPICS:
        into.ignored.append(reasons.CONTAINERD_EXEC)
    elif topic in UNMAPPED_TOPICS:
        into.ignored.append(reasons.containerd_not_mapped(topic))
    elif topic.startswith(_OTHER_OBJECTS):
        into.ignored.append(reasons.CONTAINERD_NOT_CONTAINER)
    else:
        into.ignored.append(reasons.CONTAINERD_UNKNOWN_TOPIC)


_body_decoder = msgspec.json.Decoder(ContainerdEvent)


class ContainerdFormat(JsonFormat[ContainerdEvent]):
    """containerd event bodies alone (JSON, no topic); dated by the record when they have no time."""

    document = ContainerdEvent

    def apply(self, doc: ContainerdEvent, index: int, into: DecodeResult) -> None:
        topic = infer_topic(doc)
        if topic is not None:
            apply_topic(topic, doc, self.context.record_time_ns, into, self.context.known)
        elif doc.container_id:
            into.ignored.append(reasons.CONTAINERD_NOT_INFERABLE)
        else:
            raise InvalidItem(UNRECOGNISED_REASON, UNRECOGNISED)


def parse_ctr_line(line: bytes) -> tuple[int, str, bytes]:
    """Split a ``ctr events`` line into (time in ns, topic, JSON body)."""
    brace = line.find(b"{")
    head = line[:brace].split() if brace >= 0 else line.split()
    # date, clock, offset, zone abbreviation, [m=+monotonic], namespace, topic
    if brace < 0 or len(head) < 6 or not head[-1].startswith(b"/"):
        raise InvalidItem("ctr: malformed line (expected '<time> <namespace> <topic> <json>')", DECODE_ERROR)
    time_ns = go_time_ns(head[0], head[1], head[2])
    return time_ns, head[-1].decode("utf-8", "replace"), line[brace:]


class CtrFormat:
    """``ctr events`` text lines (a ``TextFormat``)."""

    def __init__(self, context: DecodeContext) -> None:
        self._context = context

    def decode(self, item: bytes, index: int, into: DecodeResult) -> None:
        """Decode one line; errors propagate (``worker.decode.bad_items``)."""
        time_ns, topic, body = parse_ctr_line(item)
        apply_topic(topic, _body_decoder.decode(body), time_ns, into, self._context.known)
