"""An exit observed at the very instant of the task's stop is one of a stopping task: final, not
held for a restart (agent: ``RestartTracker.ShouldRestart`` restarts nothing once the task's
desired status is STOPPED; ``TaskState._stopping_before`` counts an equal time as stopping).

Found by review: the comparison went through a float of seconds (``datetime.timestamp() *
1e9``), whose spacing at today's epoch is 256 ns, after ``executionStoppedAt`` was rounded to the
microsecond: an exit at the stop's own nanosecond, or within a microsecond after it, could read
as before the stop, and was held for a restart that never comes (the task's STOPPED waited for
the settle time, and its records stayed claimed meanwhile).

Pure: a real ``Coalescer`` and ``OffsetBook`` (``tests.knowledge_rig``).
"""

from __future__ import annotations

import pytest

from tests.knowledge_rig import APP_METRICS, ARN, KEY, Rig, S, at, definition, ev, replaying_rig, view


@pytest.mark.parametrize("stop_at", [70.123456789, 70.000000001, 70.5])
def test_an_exit_at_the_instant_of_the_observed_stop_is_final(stop_at: float) -> None:
    """The app (essential) and ``metrics`` (restart policy, up long enough for a restart) exit
    at the same nanosecond, the app's read first: the task is stopping, ``metrics``' exit is
    its end, and the task's STOPPED goes at once."""
    rig = Rig(settle_ns=45 * S)
    rig.co.definitions.put(ARN, definition(APP_METRICS))
    for event in (
        ev("app", "PENDING", at=0),
        ev("metrics", "PENDING", at=0),
        ev("app", "RUNNING", at=1),
        ev("metrics", "RUNNING", at=1),
    ):
        rig.feed(event)
    rig.tick(2)
    rig.feed(ev("app", "STOPPED", at=stop_at, exit_code=0))
    rig.feed(ev("metrics", "STOPPED", at=stop_at, exit_code=1))
    rig.tick(stop_at + 0.1)
    assert rig.statuses()[-1] == "STOPPED app=STOPPED(0),metrics=STOPPED(1)"
    assert rig.co.is_retired(KEY)
    assert rig.committable() == rig.offset


def test_an_exit_at_the_instant_ecs_was_told_is_final() -> None:
    """A new owner: ECS's view shows the app STOPPED at 70.123457 s (``executionStoppedAt``, to
    the microsecond); ``metrics``' exit read again is observed at that instant: final."""
    rig = replaying_rig(APP_METRICS, replay_end=10)
    rig.feed(ev("app", "PENDING", at=1), at=100)
    shows = view("RUNNING", {"app": ("STOPPED", 0), "metrics": ("RUNNING", None)}, stopped_at=at(70.123457))
    rig.answer_views(shows, at=100.1)
    for event in (
        ev("metrics", "PENDING", at=1),
        ev("app", "RUNNING", at=2),
        ev("metrics", "RUNNING", at=2),
        ev("metrics", "STOPPED", at=70.123457, exit_code=1),
    ):
        rig.feed(event, at=100.2)
    rig.tick(100.3)
    assert rig.statuses() == ["STOPPED app=STOPPED(0),metrics=STOPPED(1)"]
    assert rig.co.is_retired(KEY)
