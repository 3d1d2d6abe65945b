"""``RecordDecoder``: one Kafka record's bytes -> canonical events, ignored items and bad items.

A record is split into items (``worker.decode.framing``); each item is decoded on its own, by the
format the ``content-type`` header or the ``input_format`` setting names, or else by detection
(``worker.decode.registry``). In ``auto`` mode the format that matched the previous JSON item is
tried first with its typed decoder, so a stream of one format costs one typed decode per item.

``decode`` never raises: every item ends as events, as ignored (with a reason from
``worker.decode.reasons``) or as bad (with a reason and an error class for the dead-letter topic).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.decode.attribution import DEFAULT_CAPACITY, ContainerIndex
from worker.decode.bad_items import (
    EMPTY_RECORD,
    FORMAT_MISMATCH,
    PARSE_ERRORS,
    RECORD_TOO_LARGE,
    UNRECOGNISED,
    UNRECOGNISED_REASON,
    InvalidItem,
    bad_item_for,
)
from worker.decode.format_contract import DecodeContext, JsonFormat
from worker.decode.framing import split_items
from worker.decode.registry import FORMATS, FormatSet, detect, format_from_headers, label, shape
from worker.decode.result import BadItem, DecodeResult

__all__ = ["RecordDecoder"]

_OPEN_BRACE = 0x7B
_NEWLINE = 0x0A
"""An int, not ``b"\\n"``: ``bytes.__contains__`` tries its argument as an int first, and a bytes
argument costs it a TypeError raised and cleared per record."""
_FIRST_GUESS = "docker"
"""The format the fast path tries before any item was decoded: the most common one."""


class RecordDecoder:
    """Decodes records of one input topic. Keep one per process: it is reused for every record.

    ``input_format``: one of ``FORMATS`` (``auto``: detect it per item). ``max_record_bytes``:
    larger records are bad. ``known_containers_cap`` bounds the index of labelled container ids
    used to attribute containerd events to ECS tasks (0 disables attribution).
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
        self._context = DecodeContext(self.known_containers)
        self._formats = FormatSet(self._context)
        self._last: JsonFormat[Any] = self._formats.json[_FIRST_GUESS]

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
            self._context.record_time_ns = record_timestamp_ns
            try:
                if (
                    _NEWLINE not in value
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
        forced_by = "input_format" if fmt == self._format else "content-type"
        try:
            self._decode(value, fmt, forced_by, record_timestamp_ns, result)
        except Exception as exc:  # last resort: a decoder bug must not stop the pipeline
            result.bad.append(bad_item_for(exc, 0, "record"))
        return result

    def _decode(
        self, value: bytes | None, fmt: str, forced_by: str, timestamp_ns: int | None, result: DecodeResult
    ) -> None:
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
        self._context.record_time_ns = timestamp_ns
        for index, item in enumerate(items):
            try:
                if fmt == "auto":
                    name = self._decode_item(item, index, result)
                else:
                    name = self._decode_forced(item, index, fmt, forced_by, result)
            except Exception as exc:  # msgspec errors and InvalidItem; anything else is a bug
                name = None
                result.bad.append(bad_item_for(exc, index, self._label(item, fmt)))
            if name is not None:
                _note_format(result, name)

    def _decode_item(self, item: bytes, index: int, into: DecodeResult) -> str | None:
        """Decode one item by detection; return the name of the format it was decoded as."""
        last = self._last
        if item[0] == _OPEN_BRACE and last.try_fast(item, index, into):
            return last.name
        detected = detect(item)
        if detected is None:
            into.bad.append(BadItem(UNRECOGNISED_REASON, UNRECOGNISED, index))
            return None
        self._formats.by_name[detected].decode(item, index, into)
        self._last = self._formats.json.get(detected, last)
        return detected

    def _decode_forced(self, item: bytes, index: int, fmt: str, forced_by: str, into: DecodeResult) -> str:
        """Decode one item as the forced format ``fmt``. An item that detection gives to another
        format is bad (``FormatMismatch``), never decoded as ``fmt``: a format's decoder may read
        a foreign document as one of its own ignored kinds, and a misconfigured worker would then
        drop a whole stream without an error. Items no format claims are left to ``fmt``."""
        forced = self._formats.by_name[fmt]
        if item[0] == _OPEN_BRACE and isinstance(forced, JsonFormat) and forced.try_fast(item, index, into):
            return fmt  # claimed by its typed decoder: detection would say the same
        try:
            detected = detect(item)
        except PARSE_ERRORS:  # malformed JSON: the forced format's decoder says why
            detected = None
        if detected is not None and detected != fmt:
            fix = f"auto or {detected}" if detected in FORMATS else "auto"
            raise InvalidItem(
                f"{forced_by} names {label(fmt)} ({fmt}), but the item is a {label(detected)} "
                f"event ({shape(detected)}): not decoded; set input_format to {fix}",
                FORMAT_MISMATCH,
            )
        forced.decode(item, index, into)
        return fmt

    def _label(self, item: bytes, fmt: str) -> str:
        """How a bad-item reason names the format an item failed to decode as."""
        if fmt != "auto":
            return label(fmt)
        try:
            detected = detect(item)
        except PARSE_ERRORS:
            return "JSON"
        return "JSON" if detected is None else label(detected)


def _note_format(result: DecodeResult, name: str) -> None:
    if result.format == "unknown":
        result.format = name
    elif result.format != name:
        result.format = "mixed"
