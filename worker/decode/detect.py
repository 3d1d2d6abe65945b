"""Which format an item is: from the record's ``content-type`` header, else from its shape.

Header ``content-type`` (parameters such as ``; charset=utf-8`` ignored, case-insensitive):

========================================  =====================================================
content-type                              format
========================================  =====================================================
``application/vnd.docker.event+json``     ``docker`` (Docker and Podman events)
``application/x-ctr-events``              ``ctr`` (``ctr events`` text lines)
``text/plain``                            ``ctr``
``application/vnd.ecs-state.event+json``  ``canonical``
``application/json``,                     the configured ``input_format`` (``auto`` by
``application/x-ndjson``,                 default): generic JSON says nothing about the shape
``application/json-seq``
anything else, or no header               the configured ``input_format``
========================================  =====================================================

A specific content type wins over the configured ``input_format``: it is said by the producer of
the record.

Shape detection (``auto``), per item. An item that does not start with ``{`` but with a digit is a
``ctr events`` line (it starts with a date). A JSON object is, by the first rule that holds:

1. ``detail-type`` present: an EventBridge event (ECS's own output: ignored);
2. ``cluster`` and ``task`` present: ``canonical`` (``TaskEvent`` then requires ``observedAt``);
3. ``Type``, ``Action`` or ``Actor`` present: ``docker`` (Docker or Podman);
4. ``docker`` present: ``metricbeat`` (``docker.event``);
5. ``message`` is a string: ``fluentbit`` (``docker_events`` input);
6. ``container_id``, ``exited_at`` or ``exec_id`` present, or ``id`` with ``runtime``:
   ``containerd`` (an event body without its ``ctr`` line);
7. otherwise: bad, "unrecognised event format" (so is valid JSON that is not an object).

The typed decoder of the chosen format then validates the item; its errors make the item bad.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from worker.decode.formats import ABSENT, BelowFluentBit, present

__all__ = [
    "CONTENT_TYPES",
    "CONTENT_TYPE_FOLLOWS_SETTING",
    "Probe",
    "classify",
    "format_from_headers",
    "probe_decoder",
]

CONTENT_TYPES: dict[str, str] = {
    "application/vnd.docker.event+json": "docker",
    "application/x-ctr-events": "ctr",
    "text/plain": "ctr",
    "application/vnd.ecs-state.event+json": "canonical",
}
CONTENT_TYPE_FOLLOWS_SETTING = frozenset({"application/json", "application/x-ndjson", "application/json-seq"})


def format_from_headers(headers: Sequence[tuple[str, bytes | str | None]], default: str) -> str:
    """The format the record's (first) ``content-type`` header names, or ``default``."""
    for key, value in headers:
        if not value or key.lower() != "content-type":
            continue
        text = value if isinstance(value, str) else value.decode("latin-1")
        return CONTENT_TYPES.get(text.split(";", 1)[0].strip().lower(), default)
    return default


class Probe(BelowFluentBit, kw_only=True):
    """Every key detection looks at, kept raw: skimming a document costs one pass, no objects."""

    container_id: msgspec.Raw = ABSENT
    exited_at: msgspec.Raw = ABSENT
    exec_id: msgspec.Raw = ABSENT
    id: msgspec.Raw = ABSENT
    runtime: msgspec.Raw = ABSENT


probe_decoder = msgspec.json.Decoder(Probe)


def classify(probe: Probe) -> str | None:
    """The format of a JSON object by the keys it has (the rules above), or None."""
    if present(probe.detail_type):
        return "eventbridge"
    if present(probe.cluster) and present(probe.task):
        return "canonical"
    if present(probe.Type) or present(probe.Action) or present(probe.Actor):
        return "docker"
    if present(probe.docker):
        return "metricbeat"
    if present(probe.message) and memoryview(probe.message)[0] == 0x22:  # a JSON string
        return "fluentbit"
    if (
        present(probe.container_id)
        or present(probe.exited_at)
        or present(probe.exec_id)
        or (present(probe.id) and present(probe.runtime))
    ):
        return "containerd"
    return None
