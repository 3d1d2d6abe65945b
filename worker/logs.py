"""Logging: JSON lines (python-json-logger) or text, on stderr. Context such as the task ARN and
partition travels in ``extra``; secrets never reach a log line (``Settings.redacted``)."""

from __future__ import annotations

import logging
import sys
from types import TracebackType

from pythonjsonlogger.json import JsonFormatter

from worker.log_filters import RepeatFilter

__all__ = ["configure_logging"]


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("worker").critical("uncaught %s: %s", kind.__name__, value, exc_info=(kind, value, tb))


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter())  # a broker outage: one client line per kind a minute
    root = logging.getLogger()
    root.handlers[:] = [handler]
    if fmt == "json":  # a traceback that escapes goes into the line's exc_info field too
        sys.excepthook = _log_uncaught
    root.setLevel(level)
    # Client libraries are chatty at INFO (every rebalance step): keep their warnings only.
    for name in ("aiokafka", "botocore", "aiobotocore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
