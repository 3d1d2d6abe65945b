"""``RecordDecoder``: one Kafka record's bytes -> canonical events, ignored items and bad items.

A record is split into items (``worker.decode.framing``); each item is decoded on its own, by the
format the ``content-type`` header or the ``input_format`` setting names, or else by detection
(``worker.decode.detect``). In ``auto`` mode the format that matched the previous JSON item is
tried first with its typed decoder, so a stream of one format costs one typed decode per item.

``decode`` never raises: every item ends as events, as ignored (with a reason from
``worker.decode.reasons``) or as bad (with a reason and an error class for the dead-letter topic).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from worker.decode.attribution import DEFAULT_CAPACITY, ContainerIndex
from worker.decode.canonical import CanonicalFormat
from worker.decode.containerd import ContainerdFormat, CtrFormat
from worker.decode.detect import classify, format_from_headers, probe_decoder
from worker.decode.docker import DockerFormat
from worker.decode.errors import (
    EMPTY_RECORD,
    PARSE_ERRORS,
    RECORD_TOO_LARGE,
    UNRECOGNISED,
    UNRECOGNISED_REASON,
    bad_item_for,
)
from worker.decode.eventbridge import EventBridgeFormat
from worker.decode.formats import JsonFormat
from worker.decode.framing import split_items
from worker.decode.result import BadItem, DecodeResult
from worker.decode.shippers import FluentBitFormat, MetricbeatFormat

__all__ = ["FORMATS", "RecordDecoder"]

FORMATS = ("auto", "canonical", "docker", "fluentbit", "metricbeat", "containerd", "ctr")
"""The accepted ``input_format`` names (Podman's events are ``docker``)."""

_DIGITS = frozenset(b"0123456789")
_OPEN_BRACE = 0x7B


class RecordDecoder:
    """Decodes records of one input topic. Keep one per process: it is reused for every record.

    ``known_containers_cap`` bounds the index of labelled container ids used to attribute
    containerd events to ECS tasks (0 disables attribution).
    """

    def __init__(
        self,
        *,
        input_format: str = "auto",
        max_record_bytes: int = 1_048_576,
        known_containers_cap: int = DEFAULT_CAPACITY,
    ) -> None:
        if input_format not in FORMATS:
            raise ValueError(f"unknown input format {input_format!r}; expected one of {FORMATS}")
        self._format = input_format
        self._max_record_bytes = max_record_bytes
        self.known_containers = ContainerIndex(known_containers_cap)
        known = self.known_containers
        docker = DockerFormat(known)
        self._containerd = ContainerdFormat(known)
        self._ctr = CtrFormat(known)
        self._json: dict[str, JsonFormat[Any]] = {
            f.name: f
            for f in (
                docker,
                CanonicalFormat(),
                EventBridgeFormat(),
                MetricbeatFormat(known),
                FluentBitFormat(docker),
                self._containerd,
            )
        }
        self._last: JsonFormat[Any] = docker

    @property
    def input_format(self) -> str:
        return self._format

    def decode(
        self,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | str | None]] = (),
        *,
        record_timestamp_ns: int | None = None,
    ) -> DecodeResult:
        """Decode one record. ``record_timestamp_ns`` (the Kafka record's timestamp) dates the
        containerd JSON bodies that carry no time of their own."""
        if not headers and self._format == "auto" and value and value[0] == _OPEN_BRACE:
            # The hot path: one compact JSON document of the format of the previous record.
            # Anything unusual (several items, an error, another format) takes the full path.
            fast = DecodeResult(format=self._last.name)
            self._containerd.record_time_ns = record_timestamp_ns
            try:
                if (
                    b"\n" not in value
                    and len(value) <= self._max_record_bytes
                    and self._last.try_fast(value, 0, fast)
                ):
                    return fast
            except Exception:  # decoded again below, where errors are sorted out
                pass
        try:
            fmt = format_from_headers(headers, self._format)
        except Exception:  # a header value of the wrong type
            fmt = self._format
        result = DecodeResult(format="unknown" if fmt == "auto" else fmt)
        try:
            self._decode(value, fmt, record_timestamp_ns, result)
        except Exception as exc:  # last resort: a decoder bug must not stop the pipeline
            result.bad.append(bad_item_for(exc, 0, "record"))
        return result

    def _decode(self, value: bytes | None, fmt: str, timestamp_ns: int | None, result: DecodeResult) -> None:
        if value is None:
            result.bad.append(BadItem("record has no value (tombstone)", EMPTY_RECORD))
            return
        if not isinstance(value, bytes):
            value = bytes(value)
        if len(value) > self._max_record_bytes:
            result.bad.append(
                BadItem(
                    f"record of {len(value)} bytes exceeds max_record_bytes={self._max_record_bytes}",
                    RECORD_TOO_LARGE,
                )
            )
            return
        items = split_items(value)
        if not items:
            result.bad.append(BadItem("record is empty or blank", EMPTY_RECORD))
            return
        self._containerd.record_time_ns = timestamp_ns
        for index, item in enumerate(items):
            try:
                name = self._decode_item(item, index, fmt, result)
            except Exception as exc:  # msgspec errors and InvalidItem; anything else is a bug
                name = None
                result.bad.append(bad_item_for(exc, index, self._label(item, fmt)))
            if name is not None:
                _note_format(result, name)

    def _decode_item(self, item: bytes, index: int, fmt: str, into: DecodeResult) -> str | None:
        """Decode one item; return the name of the format it was decoded as."""
        if fmt == "ctr":
            self._ctr.decode(item, index, into)
            return "ctr"
        if fmt != "auto":
            self._json[fmt].decode(item, index, into)
            return fmt
        if item[0] == _OPEN_BRACE:
            last = self._last
            if last.try_fast(item, index, into):
                return last.name
        elif item[0] in _DIGITS:
            self._ctr.decode(item, index, into)
            return "ctr"
        try:
            probe = probe_decoder.decode(item)
        except msgspec.ValidationError:  # valid JSON, but not an object
            probe = None
        name = None if probe is None else classify(probe)
        if name is None:
            into.bad.append(BadItem(UNRECOGNISED_REASON, UNRECOGNISED, index))
            return None
        chosen = self._json[name]
        chosen.decode(item, index, into)
        self._last = chosen
        return name

    def _label(self, item: bytes, fmt: str) -> str:
        """How a bad-item reason names the format an item failed to decode as."""
        if fmt == "ctr":
            return "containerd"
        if fmt != "auto":
            return self._json[fmt].label
        try:
            name = classify(probe_decoder.decode(item))
        except PARSE_ERRORS:
            return "JSON"
        return "JSON" if name is None else self._json[name].label


def _note_format(result: DecodeResult, name: str) -> None:
    if result.format == "unknown":
        result.format = name
    elif result.format != name:
        result.format = "mixed"
