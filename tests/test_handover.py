"""``devkit.harness.handover``: the rolling-restart figure read from the workers' JSON logs, written
here by the worker's own formatter (``worker.logs``) so that a change of its format shows."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.harness.handover import handover_s, read_assignments
from worker.logs import configure_logging

TOPIC = "container-events"


def write_log(path: Path, lines: list[tuple[float, list[int]]]) -> None:
    """``partitions assigned`` lines at the given epoch seconds, as ``worker.partitions`` logs them."""
    configure_logging("INFO", "json")
    handler = logging.getLogger().handlers[0]
    with path.open("w") as out:
        for at, partitions in lines:
            record = logging.LogRecord(
                "worker.partitions", logging.INFO, __file__, 1, "partitions assigned", (), None
            )
            record.created, record.msecs = at, (at % 1) * 1000
            record.partitions = [(TOPIC, p, 1) for p in partitions] + [("other-topic", 9, 1)]
            out.write(handler.format(record) + "\n")
        out.write("Traceback (most recent call last): not JSON\n")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_handover_is_the_time_until_every_partition_held_is_assigned_again(tmp_path: Path) -> None:
    t = float(int(time.time()))
    write_log(tmp_path / "w0.log", [(t, [0, 1, 2]), (t + 10, [0, 1, 2])])
    write_log(
        tmp_path / "w1.log", [(t, [3, 4, 5]), (t + 10.5, [3, 4, 5, 0]), (t + 12.25, [0, 1, 2, 3, 4, 5])]
    )
    assignments = read_assignments(tmp_path, ["w0", "w1", "w9"], TOPIC)
    assert [(a.worker, a.at - t) for a in assignments] == [
        ("w0", 0.0), ("w1", 0.0), ("w0", 10.0), ("w1", 10.5), ("w1", 12.25)
    ]  # fmt: skip
    assert assignments[0].partitions == {0, 1, 2}
    # w0 signalled at t+11: it held 0-2 (its assignment at t+10); w1 holds them all at t+12.25.
    assert handover_s(assignments, "w0", t + 11) == 1.25
    # Signalled before its assignment at t+10: its earlier one counts, the t+10.5 one is partial.
    assert handover_s(assignments, "w0", t + 5) == 7.25


def test_no_handover_when_a_partition_never_comes_back_and_zero_when_nothing_was_held(tmp_path: Path) -> None:
    t = float(int(time.time()))
    write_log(tmp_path / "w0.log", [(t, [0, 1])])
    write_log(tmp_path / "w1.log", [(t + 2, [0])])
    assignments = read_assignments(tmp_path, ["w0", "w1"], TOPIC)
    assert handover_s(assignments, "w0", t + 1) is None
    assert handover_s(assignments, "w1", t + 1) == 0.0
