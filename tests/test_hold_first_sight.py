"""An exit held for a restart on the task's first record still gets its settle time.

Found by review: a task first read through a container's exit (its start came before this
process read the task: the history is missed, ECS's view is asked for) holds that exit for a
restart (restart policy; the run time cannot be judged without the start). The settle timer of a
held exit was started only by the events after the first: with no other record of the task, the
exit was held for ever, and so was its record's claim: the partition's committed offset stopped
there for good.

Pure: a real ``Coalescer`` and ``OffsetBook`` (``tests.knowledge_rig``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.knowledge_rig import ARN, KEY, Rig, S, definition, ev, view

APP_METRICS: list[dict[str, Any]] = [
    {"name": "app"},
    {
        "name": "metrics",
        "essential": False,
        "restartPolicy": {"enabled": True, "ignoredExitCodes": [0], "restartAttemptPeriod": 60},
    },
]


def first_sight_rig(replayed: bool) -> Rig:
    """A 3 s settle time; ``replayed``: a new owner, the partition read again below offset 10."""
    rig = Rig(settle_ns=3 * S)
    rig.co.definitions.put(ARN, definition(APP_METRICS))
    if replayed:
        rig.book.note_replay_end("t", 0, 10)
    return rig


@pytest.mark.parametrize("replayed", [False, True], ids=["new", "replayed"])
def test_an_exit_held_on_the_first_record_is_final_after_the_settle_time(replayed: bool) -> None:
    """The task's only record: ``metrics`` exits (code 1, a restart for its policy); ECS shows
    the task RUNNING. No restart follows: once quiet for the settle time (3 s), the exit is final
    and reported, and the record is resolved."""
    rig = first_sight_rig(replayed)
    rig.feed(ev("metrics", "STOPPED", at=100, exit_code=1))
    assert rig.wanted()[1] == [KEY]
    running = view("RUNNING", {"app": ("RUNNING", None), "metrics": ("RUNNING", None)})
    rig.answer_views(running, at=100.1)
    assert rig.tick(102) == []  # held: a restart may come
    assert rig.committable() == 0
    for t in (103.1, 104):
        rig.tick(t)
    assert rig.statuses() == ["RUNNING app=RUNNING(None),metrics=STOPPED(1)"]
    assert rig.committable() == rig.offset
