"""The contract between the record decoder and one input format.

Each format is built once per ``RecordDecoder`` from its entry in ``worker.decode.registry`` and is
given the decoder's ``DecodeContext``. A text format (``TextFormat``) decodes an item itself. A
JSON format (``JsonFormat``) names the msgspec Struct its items decode to (``document``) and maps
a decoded document onto a ``DecodeResult`` (``apply``); the registry derives from the order of the
formats the typed decoder it is given and its ``claims`` check.

The record decoder first tries the JSON format that matched the previous item (``try_fast``). A
typed decode that fails, or that succeeds on a document which detection might give to another
format (``claims`` is false), falls back to detection. So the outcome for an item never depends on
what came before it, only the cost does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

import msgspec

from worker.decode.attribution import ContainerIndex
from worker.decode.bad_items import PARSE_ERRORS
from worker.decode.result import DecodeResult

__all__ = ["ABSENT", "Claims", "DecodeContext", "JsonFormat", "TextFormat", "present"]

D = TypeVar("D")

ABSENT = msgspec.Raw()
"""Default of a member kept raw: decoded as a ``msgspec.Raw`` only when the key is present."""


def present(raw: msgspec.Raw) -> bool:
    """Whether a raw member (default ``ABSENT``) was in the document."""
    return len(raw) > 0


class DecodeContext:
    """What the formats of one ``RecordDecoder`` share.

    ``known``: the index of labelled containers (containerd attribution). ``record_time_ns``: the
    timestamp of the record being decoded (set per record), for items without a time of their own.
    """

    __slots__ = ("known", "record_time_ns")

    def __init__(self, known: ContainerIndex) -> None:
        self.known = known
        self.record_time_ns: int | None = None


class TextFormat(Protocol):
    """A format whose items are text lines; detected by their first byte."""

    def decode(self, item: bytes, index: int, into: DecodeResult) -> None:
        """Decode ``item``; errors propagate (``worker.decode.bad_items``)."""


class Claims(NamedTuple):
    """How the fast path tells that a decoded document surely is its format (the registry's
    ``claims`` check): ``markers`` reads the members that keep, raw, the keys of the formats ranked
    above (None: there are none), which must all be ``absent``; ``own`` checks the format's own
    keys (None: a successful decode says so already). Data rather than one function, so that the
    check costs no Python call on the hot path."""

    markers: Callable[[Any], object] | None
    absent: object
    own: Callable[[Any], bool] | None


class JsonFormat(Generic[D]):
    """One JSON input format: a typed decoder, a precedence check and the mapping to events.

    Subclasses set ``document`` and implement ``apply``; the registry constructs them.
    """

    document: ClassVar[type[msgspec.Struct]]
    """The Struct items decode to (``D``). Members this format does not read are best left out:
    msgspec skips unknown members without building them."""

    def __init__(
        self,
        name: str,
        context: DecodeContext,
        decoder: msgspec.json.Decoder[Any],
        claims: Claims,
    ) -> None:
        self.name = name
        self.context = context
        self._decoder = decoder
        self._markers, self._absent, self._own = claims

    def apply(self, doc: D, index: int, into: DecodeResult) -> None:
        """Record what ``doc`` (item ``index`` of the record) means: events, ignored or bad items."""
        raise NotImplementedError

    def try_fast(self, item: bytes, index: int, into: DecodeResult) -> bool:
        """Decode ``item`` if it certainly is this format; False (nothing recorded) otherwise."""
        try:
            doc = self._decoder.decode(item)
        except PARSE_ERRORS:
            return False
        markers = self._markers
        if markers is not None and markers(doc) != self._absent:
            return False  # a key of a format ranked above
        own = self._own
        if own is not None and not own(doc):
            return False
        self.apply(doc, index, into)
        return True

    def decode(self, item: bytes, index: int, into: DecodeResult) -> None:
        """Decode ``item`` as this format; errors propagate (``worker.decode.bad_items``)."""
        self.apply(self._decoder.decode(item), index, into)
