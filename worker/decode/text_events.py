"""The default text lines of ``docker events`` and ``podman events`` (without ``--format``).

Docker's CLI (``cli/command/system/events.go``, ``prettyPrintEvent``) prints::

    2024-01-02T03:04:05.123456789Z container die 3f2a…64 hex (exitCode=137, image=nginx, name=web)

the time as RFC 3339 with nine fraction digits in the client's zone, the type, the action (which
may hold spaces: ``exec_create: /bin/sh -c …``, ``health_status: healthy``), the actor's id and,
when there are any, the attributes as ``key=value`` joined by ``", "`` **in key order**, in
parentheses. Podman (``libpod/events/events.go``, ``ToHumanReadable``) prints::

    2024-01-02 03:04:05.123456789 +0000 UTC container died 3f2a… (image=nginx, name=web, k=v…)

the time as Go's ``time.Time.String()`` (as ``ctr events`` does), the type, the status, the id
(64 hex, or 12 with truncation), then ``image``, ``name``, ``pod_id``, the health members and the
labels in no order. Podman's line carries no exit code (``podman events --format json`` does).

Values are printed raw, so they may hold ``", "``, ``=`` and parentheses. The attributes run
from the ``" ("`` after the id to the line's last ``")"``; they are split at ``", <key>="``
where ``<key>`` has no space, ``=``, ``,`` or parenthesis and, for Docker, does not sort before
the key before it (Docker sorts them): a value holding ``", b=c"`` with ``b`` sorting earlier
stays whole. A value holding ``", <later key>=…"`` cannot be told from two attributes by anyone.

Docker lines are then mapped as Docker events (``worker.decode.docker``), Podman lines as
Podman's (``worker.decode.podman``).
"""

from __future__ import annotations

import re

from worker.decode.bad_items import DECODE_ERROR, InvalidItem
from worker.decode.docker import apply_container_event
from worker.decode.format_contract import DecodeContext
from worker.decode.podman import apply_podman_event
from worker.decode.reasons import podman_not_container
from worker.decode.result import DecodeResult
from worker.decode.timeparse import go_time_ns, rfc3339_ns

__all__ = [
    "DockerTextFormat",
    "PodmanTextFormat",
    "is_docker_line",
    "is_podman_line",
    "parse_attributes",
]

_DOCKER_TIME = re.compile(rb"\d{4}-\d{2}-\d{2}T")
_PODMAN_TYPES = frozenset(
    {b"container", b"pod", b"image", b"volume", b"network", b"system", b"machine", b"secret", b"artifact"}
)
_FIRST_KEY = re.compile(r"([^\s=,()]+)=")
_NEXT_KEY = re.compile(r", ([^\s=,()]+)=")
_CONTAINER_ID = re.compile(r"(?:^|(?<= ))([0-9a-f]{64}|[0-9a-f]{12})(?= \(|$)", re.ASCII)


def is_docker_line(item: bytes) -> bool:
    """Whether ``item`` opens as a ``docker events`` line: an RFC 3339 time with its ``T``."""
    return _DOCKER_TIME.match(item) is not None


def _go_time_words(words: list[bytes]) -> int:
    """How many of ``words`` Go's ``time.Time.String()`` took: date, clock, offset, zone and,
    for a time read from the clock, the monotonic reading (``m=+0.1``)."""
    return 5 if len(words) > 4 and words[4].startswith(b"m=") else 4


def is_podman_line(item: bytes) -> bool:
    """Whether ``item`` is a ``podman events`` line: Go's time, then a Podman object type and a
    status (where a ``ctr events`` line has a namespace and a ``/topic``)."""
    words = item.split(b" ", 8)
    at = _go_time_words(words)
    return len(words) > at + 1 and words[at] in _PODMAN_TYPES and not words[at + 1].startswith(b"/")


def parse_attributes(text: str, *, sorted_keys: bool) -> dict[str, str]:
    """``k1=v1, k2=v2`` as a dict; ``sorted_keys``: the keys were printed in order (Docker).

    Raises ``InvalidItem`` when ``text`` does not open with a key.
    """
    first = _FIRST_KEY.match(text)
    if first is None:
        raise InvalidItem(f"events line: attributes {text[:64]!r} do not open with key=value", DECODE_ERROR)
    attributes: dict[str, str] = {}
    key, start = first.group(1), first.end()
    for match in _NEXT_KEY.finditer(text, start):
        candidate = match.group(1)
        if sorted_keys and candidate < key:
            continue  # ", b=c" inside a value: Docker printed b before it
        attributes[key] = text[start : match.start()]
        key, start = candidate, match.end()
    attributes[key] = text[start:]
    return attributes


def _decode_line(item: bytes, what: str) -> str:
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidItem(f"{what} line: invalid UTF-8", DECODE_ERROR) from None


def _id_and_attributes(rest: str, what: str, *, sorted_keys: bool) -> tuple[str, str, dict[str, str]]:
    """``<action> <id> (<attributes>)`` of a container event: (action, id, attributes)."""
    found = _CONTAINER_ID.search(rest)
    if found is None:
        raise InvalidItem(f"{what} line: no container id after the action", DECODE_ERROR)
    action, tail = rest[: found.start()].rstrip(" "), rest[found.end() :]
    if not tail:
        return action, found.group(1), {}
    if not tail.endswith(")"):
        raise InvalidItem(f"{what} line: attributes not closed by ')'", DECODE_ERROR)
    return action, found.group(1), parse_attributes(tail[2:-1], sorted_keys=sorted_keys)


class DockerTextFormat:
    """``docker events`` lines (a ``TextFormat``)."""

    def __init__(self, context: DecodeContext) -> None:
        self._context = context

    def decode(self, item: bytes, index: int, into: DecodeResult) -> None:
        """Decode one line; errors propagate (``worker.decode.bad_items``)."""
        when, _, rest = _decode_line(item, "docker events").partition(" ")
        observed_at = rfc3339_ns(when)
        object_type, _, rest = rest.partition(" ")
        if object_type != "container":
            apply_container_event(object_type, "", "", {}, observed_at, into, self._context.known)
            return
        action, runtime_id, attributes = _id_and_attributes(rest, "docker events", sorted_keys=True)
        apply_container_event(
            object_type, action, runtime_id, attributes, observed_at, into, self._context.known
        )


class PodmanTextFormat:
    """``podman events`` lines (a ``TextFormat``)."""

    def __init__(self, context: DecodeContext) -> None:
        self._context = context

    def decode(self, item: bytes, index: int, into: DecodeResult) -> None:
        """Decode one line; errors propagate (``worker.decode.bad_items``)."""
        words = item.split(b" ", 8)
        at = _go_time_words(words)
        if len(words) <= at + 1:
            raise InvalidItem(
                "podman events line: malformed (expected '<time> <type> <status> ...')", DECODE_ERROR
            )
        observed_at = go_time_ns(words[0], words[1], words[2])
        text = _decode_line(b" ".join(words[at:]), "podman events")
        object_type, _, rest = text.partition(" ")
        if object_type != "container":
            into.ignored.append(podman_not_container(object_type))
            return
        status, runtime_id, attributes = _id_and_attributes(rest, "podman events", sorted_keys=False)
        event = (object_type, status, runtime_id, attributes.get("image", ""))
        apply_podman_event(event, attributes, None, False, observed_at, into, self._context.known)
