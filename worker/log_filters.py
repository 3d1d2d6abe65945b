"""Logging filters for the client libraries' lines (aiokafka, botocore).

During a broker outage aiokafka logs the same error for every connection attempt, thousands of
lines a minute, and the worker's own lines drown. ``RepeatFilter`` lets the first line of each
kind through (the kind: logger, level and message template, so that addresses and counts in the
arguments do not make lines distinct), drops its repeats for ``window_s``, and marks the next line
let through with how many were dropped (``repeated`` field, and a suffix to the message). The
worker itself says what is going on (``worker.broker_watch``: the outage and the recovery).

Some client lines are logged at ERROR on every normal start (``BENIGN_CLIENT_LINES``): a fresh
group's ``Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError`` while
the broker loads ``__consumer_offsets`` (aiokafka's ``consumer/group_coordinator.py``, retried),
and ``Topic X not found in cluster metadata`` on the first write to a topic the broker creates then
(aiokafka's ``cluster.py``). ``RepeatFilter`` lowers those to INFO (``client_level`` keeps the
client's level); any other line, and these with another error, keep their level.

``quiet_clients()`` drops the client libraries' lines entirely within a block, and in the tasks it
starts (a ``ContextVar``): the start checks' own probe reports its failures in one line each.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

__all__ = ["BENIGN_CLIENT_LINES", "CLIENT_LOGGERS", "RepeatFilter", "quiet_clients"]

CLIENT_LOGGERS = ("aiokafka", "botocore", "aiobotocore")
_COORDINATOR_LOADING = frozenset(
    {"GroupCoordinatorNotAvailableError", "GroupLoadInProgressError", "NotCoordinatorForGroupError"}
)
BENIGN_CLIENT_LINES: dict[tuple[str, str], Callable[[tuple[object, ...]], bool]] = {
    ("aiokafka.consumer.group_coordinator", "Group Coordinator Request failed: %s"): lambda args: (
        bool(args) and type(args[0]).__name__ in _COORDINATOR_LOADING
    ),
    ("aiokafka.cluster", "Topic %s not found in cluster metadata"): lambda args: True,
}
"""(logger, message template) -> whether the line, given its arguments, is a normal start's."""
_quiet: ContextVar[bool] = ContextVar("quiet_clients", default=False)


def _is_client(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in CLIENT_LOGGERS)


@contextlib.contextmanager
def quiet_clients() -> Iterator[None]:
    """Within the block (and tasks started in it), drop the client libraries' log lines."""
    token = _quiet.set(True)
    try:
        yield
    finally:
        _quiet.reset(token)


def _lower_if_benign(record: logging.LogRecord) -> None:
    """A line of ``BENIGN_CLIENT_LINES`` logged above INFO becomes INFO (``client_level``: the
    level the client gave it)."""
    benign = BENIGN_CLIENT_LINES.get((record.name, str(record.msg)))
    args = record.args if isinstance(record.args, tuple) else ()
    if benign is not None and record.levelno > logging.INFO and benign(args):
        record.client_level = record.levelname
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)


class RepeatFilter(logging.Filter):
    """A handler filter: client lines of one kind at most once per ``window_s`` (seconds), the
    next one let through carries the count of those dropped; the known-benign ones
    (``BENIGN_CLIENT_LINES``) lowered to INFO. Lines of other loggers pass as they are.
    ``clock`` returns seconds (monotonic)."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._window_s = window_s
        self._clock = clock
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not _is_client(record.name):
            return True
        if _quiet.get():
            return False
        _lower_if_benign(record)
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        shown_at, dropped = self._kinds.get(kind, (float("-inf"), 0))
        if now - shown_at < self._window_s:
            self._kinds[kind] = (shown_at, dropped + 1)
            return False
        if len(self._kinds) > 1_000:  # bounded: kinds are message templates, but be safe
            self._kinds.clear()
        self._kinds[kind] = (now, 0)
        if dropped:
            record.repeated = dropped
            record.msg = f"{record.msg} (and {dropped} more like it in the last {now - shown_at:.0f} s)"
        return True
