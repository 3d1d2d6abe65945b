"""An exit held for a restart on the task's first record still gets its settle time, and is
final at once when ECS's view shows the task stopping before it.

Found by review: a task first read through a container's exit (its start came before this
process read the task: the history is missed, ECS's view is asked for) holds that exit for a
restart (restart policy; the run time cannot be judged without the start). The settle timer of a
held exit was started only by the events after the first: with no other record of the task, the
exit was held for ever, and so was its record's claim: the partition's committed offset stopped
there for good. And ECS's view showing the task stopping before that exit (a handover: the old
owner reported the essential container's stop) did not make it final, as a record showing the
stop does: it waited for the settle time, or, before the fix above, for the containers'
``destroy``, hours later.

Pure: a real ``Coalescer`` and ``OffsetBook`` (``tests.knowledge_rig``).
"""

from __future__ import annotations

import pytest

from tests.knowledge_rig import APP_METRICS, KEY, S, at, ev, replaying_rig, view


@pytest.mark.parametrize("replayed", [False, True], ids=["new", "replayed"])
def test_an_exit_held_on_the_first_record_is_final_after_the_settle_time(replayed: bool) -> None:
    """The task's only record: ``metrics`` exits (code 1, a restart for its policy); ECS shows
    the task RUNNING. No restart follows: once quiet for the settle time (3 s), the exit is final
    and reported, and the record is resolved."""
    rig = replaying_rig(APP_METRICS, 10 if replayed else None, settle_ns=3 * S)
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


def test_an_exit_held_before_ecs_view_showed_the_task_stopping_is_final_with_it() -> None:
    """A new owner: the old one reported the app (essential) STOPPED at 50 s and committed its
    records; the first record read is ``metrics``' exit at 60 s (its start unseen: held for a
    restart). ECS's view then shows the task stopping since 50 s: the agent restarts nothing of
    a stopping task, so the exit is final at once, and the task's STOPPED goes without waiting
    for the settle time (45 s) or for a later record (the containers' ``destroy``, hours on)."""
    rig = replaying_rig(APP_METRICS, replay_end=10, settle_ns=45 * S)
    rig.feed(ev("metrics", "STOPPED", at=60, exit_code=1), at=100)
    shows = view("RUNNING", {"app": ("STOPPED", 0), "metrics": ("RUNNING", None)}, stopped_at=at(50))
    rig.answer_views(shows, at=100.1)
    rig.tick(100.2)
    assert rig.statuses() == ["STOPPED app=STOPPED(0),metrics=STOPPED(1)"]
    assert rig.sent[0][1].request.executionStoppedAt == at(50)
    assert rig.co.is_retired(KEY)
    assert rig.committable() == rig.offset


def test_an_exit_held_from_before_the_stop_ecs_shows_stays_held() -> None:
    """The same, but ``metrics``' exit came before the task's stop (40 s < 50 s): the agent
    restarted it then (its start follows), so the view does not make it final."""
    rig = replaying_rig(APP_METRICS, replay_end=10, settle_ns=45 * S)
    rig.feed(ev("metrics", "STOPPED", at=40, exit_code=1), at=100)
    shows = view("RUNNING", {"app": ("STOPPED", 0), "metrics": ("RUNNING", None)}, stopped_at=at(50))
    rig.answer_views(shows, at=100.1)
    assert rig.tick(100.2) == []
    rig.feed(ev("metrics", "RUNNING", at=41), at=100.3)
    rig.feed(ev("metrics", "STOPPED", at=70, exit_code=0), at=100.4)
    rig.tick(100.5)
    assert rig.statuses() == ["STOPPED app=STOPPED(0),metrics=STOPPED(0)"]
    assert rig.committable() == rig.offset


def test_an_exit_held_when_ecs_was_never_told_the_stop_time_waits_for_the_records() -> None:
    """ECS shows the app STOPPED but was never told when: whether ``metrics``' exit at 40 s
    came before the stop cannot be judged from the view, so the view does not make it final;
    the next record, its restart's start, shows it was a restart."""
    rig = replaying_rig(APP_METRICS, replay_end=10, settle_ns=45 * S)
    rig.feed(ev("metrics", "STOPPED", at=40, exit_code=1), at=100)
    rig.answer_views(view("RUNNING", {"app": ("STOPPED", 0), "metrics": ("RUNNING", None)}), at=100.1)
    assert rig.tick(100.2) == []
    rig.feed(ev("metrics", "RUNNING", at=41), at=100.3)
    rig.feed(ev("metrics", "STOPPED", at=70, exit_code=0), at=100.4)
    rig.tick(100.5)
    assert rig.statuses() == ["STOPPED app=STOPPED(0),metrics=STOPPED(0)"]
    assert rig.committable() == rig.offset
