"""Nothing after STOPPED, and nothing untrue in it, after a handover too.

Found by the benchmark's paced run (a rolling handover between two workers, the local ECS
endpoint's ``updates_after_stopped`` flag): the new owner of a partition started a task from ECS's
view, which showed the essential container STOPPED (the old owner had reported it, with its
``executionStoppedAt``), and read the rest of the task's records again:

- its STOPPED carried no ``executionStoppedAt`` (the view's was not read), so the ``destroy``
  events a minute later dated it instead, and were sent as a second STOPPED: they had come while
  the first was in flight, so the task was not retired but sent again;
- a container's exit of a restart (restart policy) read again after the view was taken as final,
  the task counted as stopping from the view's essential stop while the exit came before it (a
  ``start`` read again had dated ``executionStoppedAt``): a STOPPED went before that container
  really stopped, and its real exit followed as a second STOPPED.

Pure: a real ``Coalescer`` and ``OffsetBook`` (``tests.knowledge_rig``).
"""

from __future__ import annotations

from typing import Any

from tests.knowledge_rig import APP_METRICS, ARN, KEY, Rig, S, at, definition, ev, replaying_rig, shown, view
from worker.coalesce import Applied

APP_SIDECAR: list[dict[str, Any]] = [{"name": "app"}, {"name": "sidecar", "essential": False}]


def test_a_fact_merged_while_stopped_is_in_flight_causes_no_second_call() -> None:
    """A task followed from its creation: its STOPPED goes without the app's exit code (a ``stop``
    read before its ``die``, no exit wait); the ``die`` arrives while the STOPPED is in flight.
    The agent reports nothing after a task's STOPPED: the acknowledged STOPPED retires the task,
    and the ``die`` is resolved as late."""
    rig = Rig()
    rig.co.definitions.put(ARN, definition(APP_SIDECAR))
    rig.feed(ev("app", "PENDING", at=1))
    rig.feed(ev("sidecar", "PENDING", at=1))
    rig.feed(ev("app", "RUNNING", at=2))
    rig.feed(ev("sidecar", "RUNNING", at=2))
    rig.tick(3)
    rig.feed(ev("app", "STOPPED", at=10))  # Docker's stop, read before its die
    rig.feed(ev("sidecar", "STOPPED", at=10.5, exit_code=143))
    (stopped,) = rig.tick(11, ack=False)
    assert shown(stopped) == "STOPPED app=STOPPED(None),sidecar=STOPPED(143)"
    rig.feed(ev("app", "STOPPED", at=9.9, exit_code=2), at=11.1)  # the die, while in flight
    rig.release(rig.co.complete(stopped, "acknowledged", rig.ns(11.2)))
    assert rig.tick(12) == []
    assert rig.co.is_retired(KEY)
    assert rig.committable() == rig.offset  # the die is resolved with the STOPPED


def test_a_stopped_from_ecs_view_repeats_its_execution_stop_and_destroys_change_nothing() -> None:
    """The old owner reported RUNNING with the app STOPPED (and ``executionStoppedAt``); the new
    owner reads the sidecar's stop again, then the containers' ``destroy`` a minute later, while
    its STOPPED is in flight and after. One STOPPED, dated as ECS was told."""
    rig = replaying_rig(APP_SIDECAR, replay_end=2)
    rig.feed(ev("sidecar", "STOPPED", at=20, exit_code=143), at=30)
    rig.feed(ev("sidecar", "STOPPED", at=20.005), at=30)  # its stop
    assert rig.wanted()[1] == [KEY]
    shows = view("RUNNING", {"app": ("STOPPED", 0), "sidecar": ("RUNNING", None)}, stopped_at=at(5))
    rig.answer_views(shows, at=30.2)
    (stopped,) = rig.tick(30.3, ack=False)
    assert shown(stopped) == "STOPPED app=STOPPED(0),sidecar=STOPPED(143)"
    assert stopped.request.executionStoppedAt == at(5)
    rig.feed(ev("app", "STOPPED", at=80), at=31)  # destroy, while the STOPPED is in flight
    rig.release(rig.co.complete(stopped, "acknowledged", rig.ns(31.5)))
    applied, _ = rig.feed(ev("sidecar", "STOPPED", at=80), at=32)  # destroy, after
    assert applied is Applied.RETIRED
    assert rig.tick(40) == []
    assert rig.committable() == rig.offset


def test_a_restart_read_again_after_ecs_view_is_not_taken_for_the_stop() -> None:
    """The old owner reported RUNNING with the app STOPPED at 50 s (``executionStoppedAt``),
    ``metrics`` still running: it had restarted at 41 s (an exit 1 after 40 s, under its restart
    policy), and stops at 60 s. The new owner reads the task again from its creation and has
    ECS's view after the first record: the exit at 40 s came before the task's stop, so it is a
    restart, not the end; the one STOPPED goes after the exit at 60 s, with its code."""
    rig = replaying_rig(APP_METRICS, replay_end=10)
    rig.feed(ev("app", "PENDING", at=1), at=100)
    shows = view("RUNNING", {"app": ("STOPPED", 0), "metrics": ("RUNNING", None)}, stopped_at=at(50))
    rig.answer_views(shows, at=100.1)
    for event in (
        ev("metrics", "PENDING", at=1),
        ev("app", "RUNNING", at=2),
        ev("metrics", "RUNNING", at=2),
        ev("metrics", "STOPPED", at=40, exit_code=1),  # restarted by the agent...
        ev("metrics", "RUNNING", at=41),  # ... here
        ev("app", "STOPPED", at=50, exit_code=0),
        ev("metrics", None, at=50.1, stop=True),  # the agent stops it (kill)
    ):
        rig.feed(event, at=100.2)
        rig.tick(100.3)
    assert rig.statuses() == []  # ECS shows all of that already
    rig.feed(ev("metrics", "STOPPED", at=60, exit_code=0), at=100.4)
    rig.tick(100.5)
    assert rig.statuses() == ["STOPPED app=STOPPED(0),metrics=STOPPED(0)"]
    assert rig.sent[0][1].request.executionStoppedAt == at(50)
    assert rig.co.is_retired(KEY)


def test_a_start_read_again_after_ecs_view_does_not_date_the_execution_stop() -> None:
    """ECS shows the essential container STOPPED but was never told when (no
    ``executionStoppedAt``): records read again (its start, its destroy) do not date it."""
    rig = replaying_rig(APP_SIDECAR, replay_end=10)
    rig.feed(ev("app", "PENDING", at=1), at=100)
    shows = view("RUNNING", {"app": ("STOPPED", 0), "sidecar": ("RUNNING", None)})
    rig.answer_views(shows, at=100.1)
    rig.feed(ev("app", "RUNNING", at=2), at=100.2)
    rig.feed(ev("sidecar", "STOPPED", at=60, exit_code=143), at=100.3)
    rig.feed(ev("app", "STOPPED", at=120), at=100.3)  # destroy
    rig.tick(101)
    assert rig.statuses() == ["STOPPED app=STOPPED(0),sidecar=STOPPED(143)"]
    assert rig.sent[0][1].request.executionStoppedAt is None


def test_a_drain_does_not_take_a_restart_exit_for_the_end() -> None:
    """A revocation's drain pauses consumption: a held restart exit whose restart (the ``start``)
    has not been read yet is not quiet, only unread. Its settle time passing during the drain
    does not make it final (the drain would report the restart's exit as the container's end):
    its records are given up to the next owner, who reads the restart."""
    rig = Rig(settle_ns=3 * S)
    rig.co.definitions.put(ARN, definition(APP_METRICS))
    rig.feed(ev("app", "PENDING", at=0))
    rig.feed(ev("metrics", "PENDING", at=0))
    rig.feed(ev("app", "RUNNING", at=1))
    rig.feed(ev("metrics", "RUNNING", at=1))
    rig.tick(2)
    rig.feed(ev("metrics", "STOPPED", at=70, exit_code=1))  # restarted by the agent at 70.05 s
    rig.co.set_draining(True)
    rig.co.set_linger(0)
    rig.release(rig.co.flush_all(rig.ns(70.1)))
    for t in (71, 74, 75):  # the drain (5 s) outlasts the settle time; nothing is read meanwhile
        assert rig.tick(t) == []
    assert rig.co.next_due_at() is None  # no settle check while draining: no busy wake-up
    assert rig.statuses() == ["RUNNING app=RUNNING(None),metrics=RUNNING(None)"]
    given_up = rig.co.drop(lambda source: True)
    assert [s.offset for s in given_up] == [4]  # the exit, for the next owner to read again
