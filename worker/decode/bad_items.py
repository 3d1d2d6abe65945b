"""Why input is refused: the error classes of bad items, ``InvalidItem``, and ``bad_item_for``.

Decoders raise (``InvalidItem`` for a value they refuse, msgspec's errors for malformed or
mistyped JSON); ``worker.decode.decoder`` catches and turns each error into one ``BadItem`` for
the dead-letter topic, so ``RecordDecoder.decode`` itself never raises. The ``error_class``
values a well-behaved decoder produces are the members of ``BAD_ITEM_CLASSES``; anything else is
the class name of an unexpected exception caught by the last-resort handler (a bug to fix).
(``worker.errors`` is another taxonomy: the failures of ECS calls.)
"""

from __future__ import annotations

import msgspec

from worker.decode.result import BadItem

__all__ = [
    "BAD_ITEM_CLASSES",
    "DECODE_ERROR",
    "EMPTY_RECORD",
    "FORMAT_MISMATCH",
    "PARSE_ERRORS",
    "RECORD_TOO_LARGE",
    "RECURSION_ERROR",
    "UNRECOGNISED",
    "UNRECOGNISED_REASON",
    "VALIDATION_ERROR",
    "InvalidItem",
    "bad_item_for",
]

EMPTY_RECORD = "EmptyRecord"
RECORD_TOO_LARGE = "RecordTooLarge"
DECODE_ERROR = "DecodeError"
VALIDATION_ERROR = "ValidationError"
UNRECOGNISED = "UnrecognisedFormat"
RECURSION_ERROR = "RecursionError"
FORMAT_MISMATCH = "FormatMismatch"
"""An item of another format than the one forced by ``input_format`` or the ``content-type``."""

UNRECOGNISED_REASON = "unrecognised event format"

_MAX_BUG_REASON = 1024
"""Characters of an unexpected exception's repr kept in its reason (it may quote the input)."""

BAD_ITEM_CLASSES = frozenset(
    {
        EMPTY_RECORD,
        RECORD_TOO_LARGE,
        DECODE_ERROR,
        VALIDATION_ERROR,
        UNRECOGNISED,
        RECURSION_ERROR,
        FORMAT_MISMATCH,
    }
)
"""Every ``error_class`` the decoders produce on purpose."""


PARSE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError)
"""What a typed ``msgspec`` decode raises on bad input (invalid UTF-8 in a string raises
``UnicodeDecodeError``, nesting beyond the interpreter's limit ``RecursionError``)."""


class InvalidItem(Exception):
    """An item that parsed but carries an invalid value (a non-numeric exit code, a bad time...)."""

    def __init__(self, reason: str, error_class: str = VALIDATION_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_class = error_class


def bad_item_for(exc: Exception, index: int, what: str) -> BadItem:
    """The ``BadItem`` for an error raised while decoding item ``index`` as ``what`` (a format)."""
    if isinstance(exc, InvalidItem):
        return BadItem(exc.reason, exc.error_class, index)
    if isinstance(exc, msgspec.ValidationError):
        return BadItem(f"invalid {what} event: {exc}", VALIDATION_ERROR, index)
    if isinstance(exc, msgspec.DecodeError):
        return BadItem(f"malformed JSON: {exc}", DECODE_ERROR, index)
    if isinstance(exc, UnicodeDecodeError):
        return BadItem(f"malformed JSON: invalid UTF-8 ({exc.reason})", DECODE_ERROR, index)
    if isinstance(exc, RecursionError):
        return BadItem("malformed JSON: nested too deeply", RECURSION_ERROR, index)
    # Last resort: a bug in a decoder. Still a BadItem, so one record cannot stop the pipeline.
    return BadItem(f"internal decoder error: {exc!r}"[:_MAX_BUG_REASON], type(exc).__name__, index)
