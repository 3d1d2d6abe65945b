"""A refused commit (``Partitions.commit_failed``): the group dropped this member, or the brokers
did not answer. Logged once per cause, clearly, until a commit succeeds again; never raised."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

from worker.metrics import Metrics
from worker.offsets import OffsetBook
from worker.partitions import Partitions


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "worker.partitions" and r.levelno == logging.WARNING]


def test_a_dropped_member_says_so_once_for_every_group_error(caplog: pytest.LogCaptureFixture) -> None:
    partitions = Partitions(OffsetBook(), Metrics())
    caplog.set_level(logging.INFO, "worker.partitions")
    for exc in (
        CommitFailedError("Commit cannot be completed since the group has already\n rebalanced"),
        UnknownMemberIdError(),
        IllegalGenerationError(),
        RebalanceInProgressError(),
        CommitFailedError(),
    ):
        partitions.commit_failed(exc)
    [line] = warnings(caplog)
    message = line.getMessage()
    assert message.startswith("offset commit refused: this member is no longer in the group's generation")
    assert "(CommitFailedError: " in message
    assert "\n" not in message
    assert "read again by their next owner" in message
    assert line.__dict__["cause"] == "membership"


def test_another_cause_is_said_once_too(caplog: pytest.LogCaptureFixture) -> None:
    partitions = Partitions(OffsetBook(), Metrics())
    caplog.set_level(logging.INFO, "worker.partitions")
    partitions.commit_failed(TimeoutError())
    partitions.commit_failed(TimeoutError())
    partitions.commit_failed(UnknownMemberIdError())
    partitions.commit_failed(UnknownMemberIdError())
    partitions.commit_failed(TimeoutError())  # the cause changed: said again
    lines = [r.getMessage() for r in warnings(caplog)]
    assert [line.split(" (")[0] for line in lines] == [
        "offset commit failed",
        "offset commit refused: this member is no longer in the group's generation",
        "offset commit failed",
    ]
    assert lines[0].startswith("offset commit failed (TimeoutError): retried at the next commit")
