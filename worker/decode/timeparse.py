"""Timestamps as integer nanoseconds since the Unix epoch, without losing precision.

``datetime`` keeps microseconds only, so the fraction of a second is parsed separately. Every
parser raises ``InvalidItem`` on malformed input or on a time outside ``schemas.events.NanoTime``
(0 .. ``schemas.bounds.MAX_NANOTIME`` ns, i.e. 1970-01-01 .. 2262-04-11).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone

from schemas.bounds import MAX_NANOTIME
from worker.decode.bad_items import DECODE_ERROR, InvalidItem

__all__ = ["MAX_SECONDS", "check_ns", "go_time_ns", "rfc3339_ns", "seconds_ns", "unix_seconds_ns"]

_NS_PER_S = 1_000_000_000
MAX_SECONDS = MAX_NANOTIME // _NS_PER_S
"""The latest whole second since the epoch that is a valid time."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
# Go's time.Time.String(): "2006-01-02 15:04:05.999999999 -0700" (then " MST", maybe " m=+0.1").
_GO_DATE = re.compile(rb"(\d{4})-(\d{2})-(\d{2})")
_GO_CLOCK = re.compile(rb"(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?")
_GO_OFFSET = re.compile(rb"([+-])(\d{2})(\d{2})")


def check_ns(ns: int) -> int:
    """``ns`` itself, or ``InvalidItem`` when it is outside ``schemas.events.NanoTime``."""
    if not 0 <= ns <= MAX_NANOTIME:
        raise InvalidItem(f"time {ns} ns is outside 1970-01-01..2262-04-11")
    return ns


def _to_ns(fields: tuple[int, ...], fraction: str | None, sign: str | None, oh: int, om: int) -> int:
    year, month, day, hour, minute, second = fields
    offset = timedelta(hours=oh, minutes=om)
    if sign == "-":
        offset = -offset
    try:
        when = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
        whole = (when - _EPOCH) // timedelta(seconds=1)
    except (ValueError, OverflowError) as exc:
        raise InvalidItem(f"invalid time: {exc}") from None
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    return check_ns(whole * _NS_PER_S + nanos)


def rfc3339_ns(text: str) -> int:
    """``2020-04-09T17:06:55.897861206Z`` or with an offset (``+02:00``)."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise InvalidItem(f"invalid RFC 3339 time {text[:64]!r}")
    fields = tuple(int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    oh = int(m.group(9)) if m.group(9) else 0
    om = int(m.group(10)) if m.group(10) else 0
    return _to_ns(fields, m.group(7), m.group(8), oh, om)


def go_time_ns(date: bytes, clock: bytes, offset: bytes) -> int:
    """The first three words of Go's ``time.Time.String()``: date, clock, ``-0700`` offset."""
    d = _GO_DATE.fullmatch(date)
    c = _GO_CLOCK.fullmatch(clock)
    o = _GO_OFFSET.fullmatch(offset)
    if d is None or c is None or o is None:
        raise InvalidItem("invalid Go time in a ctr or podman events line", DECODE_ERROR)
    fields = (int(d[1]), int(d[2]), int(d[3]), int(c[1]), int(c[2]), int(c[3]))
    fraction = c[4].decode("ascii") if c[4] else None
    return _to_ns(fields, fraction, o[1].decode("ascii"), int(o[2]), int(o[3]))


def unix_seconds_ns(seconds: int, nanos: int = 0) -> int:
    """Whole seconds (and nanoseconds) since the epoch, as Docker ``time`` and protobuf ``Timestamp``."""
    return check_ns(seconds * _NS_PER_S + nanos)


def seconds_ns(seconds: float) -> int:
    """Fractional seconds since the epoch (Fluent Bit's ``@timestamp`` double), to the microsecond."""
    if not math.isfinite(seconds):
        raise InvalidItem("time is not a finite number")
    return check_ns(round(seconds * 1_000_000) * 1000)
