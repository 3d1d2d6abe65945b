"""ECS field rules, applied as the ECS agent applies them before it calls SubmitTaskStateChange.

- Reasons are cut to 1024 bytes, runtime ids and image digests to 255, at a UTF-8 character
  boundary (the agent trims; ECS rejects longer values).
- Exit codes are int32: wrapped as the agent wraps them when they are decoded
  (``worker.decode.exit_codes``).
- Network bindings follow the port-range rules of the API reference: ports 1-65535, a range's
  first port below its last, no overlapping ranges or ports per container and protocol, at most
  100 ranges per container. A binding that breaks them is bad input: the event is dead-lettered
  with the rule it broke, never silently "fixed".
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

from schemas.ecs import NetworkBinding
from schemas.events import TaskEvent

__all__ = [
    "MAX_ID_BYTES",
    "MAX_PORT_RANGES",
    "MAX_REASON_BYTES",
    "check_event",
    "check_network_bindings",
    "truncate_utf8",
]

MAX_REASON_BYTES = 1024
MAX_ID_BYTES = 255
MAX_PORT_RANGES = 100
_MIN_PORT, _MAX_PORT = 1, 65535


def truncate_utf8(text: str | None, limit: int) -> str | None:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes without splitting a character."""
    if text is None or len(text) * 4 <= limit:
        return text
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


def check_event(event: TaskEvent) -> str | None:
    """Return the first ECS rule the event breaks, or ``None`` when it may be applied."""
    for container in event.containers:
        if container.networkBindings:
            broken = check_network_bindings(container.networkBindings)
            if broken:
                return f"container {container.containerName!r}: {broken}"
    return None


def check_network_bindings(bindings: Iterable[NetworkBinding]) -> str | None:
    """Return the first port rule the bindings of one container break, or ``None``."""
    spans: dict[str, list[tuple[int, int, str]]] = {}
    ranges = 0
    for binding in bindings:
        for field, port in (
            ("containerPort", binding.containerPort),
            ("hostPort", binding.hostPort),
        ):
            if port is not None and not _MIN_PORT <= port <= _MAX_PORT:
                return f"{field} {port} is outside {_MIN_PORT}-{_MAX_PORT}"
        if binding.hostPortRange is not None:
            _, broken = _parse_range(binding.hostPortRange, "hostPortRange")
            if broken:
                return broken
        protocol = binding.protocol or "tcp"
        if binding.containerPortRange is not None:
            ranges += 1
            if ranges > MAX_PORT_RANGES:
                return f"more than {MAX_PORT_RANGES} port ranges in one container"
            span, broken = _parse_range(binding.containerPortRange, "containerPortRange")
            if broken:
                return broken
            assert span is not None
            spans.setdefault(protocol, []).append((*span, binding.containerPortRange))
        elif binding.containerPort is not None:
            port = binding.containerPort
            spans.setdefault(protocol, []).append((port, port, str(port)))
    return _first_overlap(spans)


def _parse_range(text: str, field: str) -> tuple[tuple[int, int] | None, str | None]:
    first, sep, last = text.partition("-")
    first, last = first.strip(), last.strip()
    if not sep or not _is_ascii_number(first) or not _is_ascii_number(last):
        return None, f"{field} {text!r} is not of the form FIRST-LAST"
    low, high = int(first), int(last)
    if not (_MIN_PORT <= low <= _MAX_PORT and _MIN_PORT <= high <= _MAX_PORT):
        return None, f"{field} {text!r} is outside {_MIN_PORT}-{_MAX_PORT}"
    if low >= high:
        return None, f"{field} {text!r}: the first port must be less than the last"
    return (low, high), None


def _first_overlap(spans: dict[str, list[tuple[int, int, str]]]) -> str | None:
    for protocol, items in spans.items():
        items.sort()
        for (_, prev_high, prev), (low, _, cur) in pairwise(items):
            if low <= prev_high:
                # Exact duplicates of one single-port binding (several bindIPs) are one mapping.
                if prev == cur and "-" not in cur:
                    continue
                return f"{protocol} ports {prev} and {cur} overlap"
    return None


def _is_ascii_number(text: str) -> bool:
    # str.isdigit() alone accepts "²" and other Unicode digits that int() rejects or ECS would.
    return text.isascii() and text.isdigit() and len(text) <= len(str(_MAX_PORT))
