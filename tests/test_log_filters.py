"""The client-line filter lowers the client lines every normal start logs at ERROR to INFO, and
leaves real errors at theirs. Records made as aiokafka makes them, through the filter itself."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    GroupCoordinatorNotAvailableError,
    KafkaConnectionError,
)

from worker.log_filters import RepeatFilter


def _record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.getLogger(name).makeRecord(name, level, __file__, 1, msg, args, None)


@pytest.mark.parametrize(
    "record",
    [
        _record(
            "aiokafka.consumer.group_coordinator",
            "Group Coordinator Request failed: %s",
            GroupCoordinatorNotAvailableError(),
        ),
        _record("aiokafka.cluster", "Topic %s not found in cluster metadata", "outcomes"),
    ],
)
def test_a_normal_starts_client_errors_are_lowered_to_info(record: logging.LogRecord) -> None:
    assert RepeatFilter().filter(record) is True  # kept, not dropped
    assert (record.levelno, record.levelname) == (logging.INFO, "INFO")
    assert getattr(record, "client_level", None) == "ERROR"


@pytest.mark.parametrize(
    "record",
    [
        _record(
            "aiokafka.consumer.group_coordinator",
            "Group Coordinator Request failed: %s",
            KafkaConnectionError("no route"),
        ),
        _record(
            "aiokafka.consumer.group_coordinator",
            "Group Coordinator Request failed: %s",
            GroupAuthorizationFailedError(),
        ),
        _record("aiokafka.cluster", "Topic %s is not authorized for this client", "outcomes"),
        _record("worker.pipeline", "Topic %s not found in cluster metadata", "outcomes"),
    ],
)
def test_other_errors_keep_their_level(record: logging.LogRecord) -> None:
    assert RepeatFilter().filter(record) is True
    assert (record.levelno, record.levelname) == (logging.ERROR, "ERROR")
    assert not hasattr(record, "client_level")


def test_a_lowered_line_still_has_its_repeats_counted() -> None:
    now = [0.0]
    repeats = RepeatFilter(window_s=60.0, clock=lambda: now[0])
    lines = [_record("aiokafka.cluster", "Topic %s not found in cluster metadata", "out") for _ in range(3)]
    assert [repeats.filter(line) for line in lines] == [True, False, False]
    now[0] = 61.0
    last = _record("aiokafka.cluster", "Topic %s not found in cluster metadata", "out")
    assert repeats.filter(last) is True
    assert (last.levelname, getattr(last, "repeated", None)) == ("INFO", 2)
