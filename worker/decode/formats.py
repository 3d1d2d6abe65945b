"""The contract between the record decoder and one JSON input format.

Each JSON format owns a typed ``msgspec.json.Decoder`` built once and reused. The record decoder
first tries the format that matched the previous item (``try_fast``); a typed decode that fails,
or that succeeds on a document which by ``worker.decode.detect`` belongs to a format of higher
precedence (``claims`` is false), falls back to detection. So the outcome for an item never
depends on what came before it, only the cost does.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

from worker.decode.errors import PARSE_ERRORS
from worker.decode.result import DecodeResult

__all__ = [
    "ABSENT",
    "BelowCanonical",
    "BelowDocker",
    "BelowFluentBit",
    "BelowMetricbeat",
    "JsonFormat",
    "present",
]

D = TypeVar("D")

ABSENT = msgspec.Raw()
"""Default of a marker field: a key of another format, kept raw and only tested for presence."""


def present(marker: msgspec.Raw) -> bool:
    return len(marker) > 0


def _is_json_string(raw: msgspec.Raw) -> bool:
    return len(raw) > 0 and memoryview(raw)[0] == 0x22


# The markers: keys of the formats that detection (worker.decode.detect) ranks above a format,
# kept raw and only tested for presence. Each format's document extends the class named for the
# format just above it, so the precedence order is written once, here.


class BelowCanonical(msgspec.Struct, kw_only=True, gc=False):
    """EventBridge (``detail-type``) and canonical (``cluster`` and ``task``) rank higher."""

    detail_type: msgspec.Raw = msgspec.field(default=ABSENT, name="detail-type")
    cluster: msgspec.Raw = ABSENT
    task: msgspec.Raw = ABSENT

    def outranked(self) -> bool:
        return present(self.detail_type) or (present(self.cluster) and present(self.task))


class BelowDocker(BelowCanonical, kw_only=True, gc=False):
    """... and Docker (``Type``, ``Action`` or ``Actor``)."""

    Type: msgspec.Raw = ABSENT
    Action: msgspec.Raw = ABSENT
    Actor: msgspec.Raw = ABSENT

    def outranked(self) -> bool:
        return super().outranked() or present(self.Type) or present(self.Action) or present(self.Actor)


class BelowMetricbeat(BelowDocker, kw_only=True, gc=False):
    """... and Metricbeat (``docker``)."""

    docker: msgspec.Raw = ABSENT

    def outranked(self) -> bool:
        return super().outranked() or present(self.docker)


class BelowFluentBit(BelowMetricbeat, kw_only=True, gc=False):
    """... and Fluent Bit (``message``, a string)."""

    message: msgspec.Raw = ABSENT

    def outranked(self) -> bool:
        return super().outranked() or _is_json_string(self.message)


class JsonFormat(Generic[D]):
    """One JSON input format: a typed decoder, a precedence check and the mapping to events."""

    name: str = "?"
    label: str = "?"
    """How bad-item reasons name the format (``invalid docker event: ...``)."""

    def __init__(self, decoder: msgspec.json.Decoder[D]) -> None:
        self._decoder = decoder

    def parse(self, item: bytes) -> D:
        return self._decoder.decode(item)

    def claims(self, doc: D) -> bool:
        """Whether detection would also pick this format for ``doc`` (see ``worker.decode.detect``)."""
        return True

    def apply(self, doc: D, index: int, into: DecodeResult) -> None:
        raise NotImplementedError

    def try_fast(self, item: bytes, index: int, into: DecodeResult) -> bool:
        """Decode ``item`` if it certainly is this format; False (nothing recorded) otherwise."""
        try:
            doc = self._decoder.decode(item)
        except PARSE_ERRORS:
            return False
        if not self.claims(doc):
            return False
        self.apply(doc, index, into)
        return True

    def decode(self, item: bytes, index: int, into: DecodeResult) -> None:
        """Decode ``item`` as this format; errors propagate (see ``worker.decode.errors``)."""
        self.apply(self._decoder.decode(item), index, into)
