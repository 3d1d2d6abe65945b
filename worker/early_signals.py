"""Stop signals that arrive while ``python -m worker run`` is still starting.

Importing the clients takes a few hundred milliseconds before the event loop installs its own
handlers; a SIGTERM in that window (a pod deleted as it starts, a rolling restart that moves on
quickly) would otherwise kill the process by the signal's default action, without its clean
stop. ``catch`` records such signals from the interpreter's first moments; ``take`` hands them
to the loop's handler, which then stops the worker as if they had just arrived.
"""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["catch", "take"]

_pending: list[int] = []


def _record(signum: int, _frame: FrameType | None) -> None:
    _pending.append(signum)


def catch() -> None:
    """Record SIGTERM and SIGINT until the event loop's handlers replace these."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _record)


def take() -> list[int]:
    """The signals recorded so far; recording stops mattering once the loop's handlers are set."""
    taken = list(_pending)
    _pending.clear()
    return taken
