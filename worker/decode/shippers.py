"""Docker events as shipped by Fluent Bit (``docker_events`` input) and Metricbeat (``docker.event``).

Fluent Bit's ``docker_events`` input reads the Docker socket and emits one record per read, the raw
text in ``message``; one read may hold several events, newline separated (the 8 events of a
``docker run`` arrived in one record). Its Kafka output adds ``@timestamp`` (a double, or a string
with ``timestamp_format iso8601``). Each event in ``message`` is decoded as a Docker event
(``worker.decode.docker``); ``@timestamp`` is used only for an event without ``timeNano``/``time``.
A bad event inside ``message`` is one bad item with the record item's index.

Metricbeat's ``docker.event`` metricset ships ``docker.event.{type,action,status,id,from}`` and
``docker.event.actor.{id,attributes}``, with label keys de-dotted by default
(``com_amazonaws_ecs_task-arn``); ``@timestamp`` is the Docker event's ``time`` (whole seconds).
The action is ``docker.event.action``, else ``docker.event.status``, else ``event.action``; a
missing ``docker.event.type`` (older Metricbeat) means a container event. The Docker action
mapping then applies unchanged.
"""

from __future__ import annotations

import msgspec

from worker.decode.bad_items import EMPTY_RECORD, InvalidItem, bad_item_for
from worker.decode.docker import apply_container_event, apply_docker_event, docker_event_decoder
from worker.decode.format_contract import JsonFormat
from worker.decode.framing import split_items
from worker.decode.result import DecodeResult
from worker.decode.timeparse import rfc3339_ns, seconds_ns

__all__ = [
    "FluentBitFormat",
    "FluentBitRecord",
    "MetricbeatDocument",
    "MetricbeatFormat",
]


class FluentBitRecord(msgspec.Struct, kw_only=True):
    """A Fluent Bit ``docker_events`` record: the raw events and when Fluent Bit read them."""

    message: str
    timestamp: float | str | None = msgspec.field(default=None, name="@timestamp")


class FluentBitFormat(JsonFormat[FluentBitRecord]):
    """Fluent Bit records; each event of the message is decoded as a Docker event."""

    document = FluentBitRecord

    def apply(self, doc: FluentBitRecord, index: int, into: DecodeResult) -> None:
        if doc.timestamp is None:
            fallback: int | None = None
        elif isinstance(doc.timestamp, str):
            fallback = rfc3339_ns(doc.timestamp)
        else:
            fallback = seconds_ns(doc.timestamp)
        events = split_items(doc.message.encode())
        if not events:
            raise InvalidItem("Fluent Bit record with an empty message", EMPTY_RECORD)
        known = self.context.known
        for event in events:
            try:
                apply_docker_event(docker_event_decoder.decode(event), into, known, fallback)
            except Exception as exc:  # each event of the message is judged on its own
                into.bad.append(bad_item_for(exc, index, "docker"))


class MetricbeatActor(msgspec.Struct, kw_only=True):
    """``docker.event.actor``: the container's id and its labels (keys de-dotted by default)."""

    id: str = ""
    attributes: dict[str, str] | None = None


class MetricbeatDockerEvent(msgspec.Struct, kw_only=True):
    """``docker.event``: the Docker event's members, in Metricbeat's spelling."""

    type: str = ""
    action: str = ""
    status: str = ""
    actor: MetricbeatActor | None = None


class MetricbeatDocker(msgspec.Struct, kw_only=True):
    """``docker``: only ``docker.event`` is read."""

    event: MetricbeatDockerEvent


class MetricbeatEcsEvent(msgspec.Struct, kw_only=True):
    """``event`` (Elastic Common Schema): its ``action`` when ``docker.event`` has none."""

    action: str = ""


class MetricbeatDocument(msgspec.Struct, kw_only=True):
    """A Metricbeat ``docker.event`` document."""

    docker: MetricbeatDocker
    timestamp: str = msgspec.field(name="@timestamp")
    event: MetricbeatEcsEvent | None = None


class MetricbeatFormat(JsonFormat[MetricbeatDocument]):
    """Metricbeat ``docker.event`` documents, mapped as Docker events."""

    document = MetricbeatDocument

    def apply(self, doc: MetricbeatDocument, index: int, into: DecodeResult) -> None:
        event = doc.docker.event
        action = event.action or event.status or (doc.event.action if doc.event else "")
        if not action:
            raise InvalidItem("Metricbeat docker.event without an action")
        actor = event.actor if event.actor is not None else MetricbeatActor()
        apply_container_event(
            event.type or "container",
            action,
            actor.id,
            actor.attributes if actor.attributes is not None else {},
            rfc3339_ns(doc.timestamp),
            into,
            self.context.known,
        )
