"""Splitting one record's bytes into items: a JSON value, JSON lines, or RFC 7464 JSON text sequences."""

from __future__ import annotations

__all__ = ["split_items"]

_RS = b"\x1e"
# Tested as ints: ``bytes.__contains__`` tries its argument as an int first, so a bytes argument
# costs a TypeError raised and cleared each time.
_RS_BYTE = 0x1E
_NEWLINE = 0x0A


def split_items(value: bytes) -> list[bytes]:
    """Return the non-blank items of a record, in order.

    One record may carry several newline-separated JSON documents, or RFC 7464 records (each
    prefixed with 0x1E). A record holding one pretty-printed document is one item.
    """
    if _RS_BYTE in value:
        parts = value.split(_RS)
    else:
        stripped = value.strip()
        if not stripped:
            return []
        # Fast path: one compact document (the common case) needs no split.
        if _NEWLINE not in stripped:
            return [stripped]
        parts = stripped.split(b"\n")
        if _is_pretty_printed(parts[0]):
            return [stripped]
    return [p.strip() for p in parts if p.strip()]


def _is_pretty_printed(first_line: bytes) -> bool:
    """A multi-line document opens with a line that cannot be a whole JSON value on its own."""
    return first_line.rstrip().endswith((b"{", b"[", b",", b":"))
