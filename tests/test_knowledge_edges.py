"""Edge cases of knowing a task (worker.coalesce, worker.knowledge, worker.task_state,
worker.agent_rules) with its offsets (worker.offsets): histories missed at a rebalance, kills seen
first, containers never created, restart policies, describe answers that cannot be had, and
answers arriving around revocations. Pure: the clock is passed in (``tests.knowledge_rig``)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from schemas.events import ContainerStatus
from tests.knowledge_rig import (
    ARN,
    KEY,
    TASK,
    Rig,
    S,
    coalescer,
    ev,
    shown,
    view,
)
from worker.task_definition import EcsTaskView

APP_MIGRATE: list[dict[str, Any]] = [{"name": "app"}, {"name": "migrate", "essential": False}]
APP_SIDECAR: list[dict[str, Any]] = [{"name": "app"}, {"name": "sidecar", "essential": False}]
INIT_APP: list[dict[str, Any]] = [
    {"name": "init", "essential": False},
    {"name": "app", "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
]
RESTARTING: list[dict[str, Any]] = [
    {"name": "app", "restartPolicy": {"enabled": True, "ignoredExitCodes": [0], "restartAttemptPeriod": 60}}
]
"""A single container restarted when it exits non-zero after running at least 60 s."""


def quiet_rig() -> Rig:
    """The worker's default settle (45 s) and stop linger (35 s), spelled out."""
    return Rig(co=coalescer(settle_ns=45 * S, stop_linger_ns=35 * S))


# -- a history missed at a rebalance --------------------------------------------------------------


def test_kill_seen_first_waits_for_ecs_view_then_reports_every_container_stopped() -> None:
    """After a rebalance the new owner's first event of the task is app's ``kill`` (the agent
    stopping it: a deployment, a scale-in); ``migrate`` (non-essential) ran to completion before
    the committed offset. app's exit shows that its creation and start were missed, so nothing is
    reported, and no offset committed, until ECS's view (DescribeTasks) completes the task."""
    rig = Rig()
    rig.feed(ev("app", at=0, stop=True))
    assert rig.learn_definitions(APP_MIGRATE) == [ARN]
    rig.feed(ev("app", "STOPPED", at=1, exit_code=143))  # die
    rig.feed(ev("app", "STOPPED", at=1.1))  # stop
    assert rig.wanted() == ([], [KEY])
    for t in (2, 40, 100):
        assert rig.tick(t) == []
    assert rig.committable() == 0

    # What the previous owner reported: the task RUNNING, migrate completed.
    ecs = view("RUNNING", {"app": ("RUNNING", None), "migrate": ("STOPPED", 0)})
    assert rig.answer_views(ecs, at=100) == [KEY]
    rig.tick(100)
    assert rig.statuses() == ["STOPPED app=STOPPED(143),migrate=STOPPED(0)"]
    assert rig.committable() == rig.offset == 3
    assert rig.co.is_retired(KEY)


def test_kill_seen_first_without_definition_is_not_stopped_while_an_unseen_container_runs() -> None:
    """The same kill-first task, but its definition cannot be had: the containers seen (app) are
    not the whole task, so app's exit is not reported as the task's STOPPED. ECS's view shows a
    sidecar still RUNNING: the task is reported RUNNING with app stopped, and STOPPED only once
    the sidecar's stop is seen."""
    rig = Rig()
    rig.feed(ev("app", at=0, stop=True))
    assert rig.learn_definitions(None) == [ARN]
    rig.feed(ev("app", "STOPPED", at=1, exit_code=143))
    assert rig.tick(1.5) == []
    assert rig.wanted() == ([], [KEY])
    assert rig.committable() == 0

    ecs = view("RUNNING", {"app": ("RUNNING", None), "sidecar": ("RUNNING", None)})
    rig.answer_views(ecs, at=2)
    rig.tick(3)
    assert rig.statuses() == ["RUNNING app=STOPPED(143),sidecar=RUNNING(None)"]
    rig.feed(ev("sidecar", "STOPPED", at=20, exit_code=0))
    rig.tick(20)
    assert rig.statuses()[-1] == "STOPPED app=STOPPED(143),sidecar=STOPPED(0)"
    assert rig.committable() == rig.offset == 3


@pytest.mark.parametrize(
    ("answer", "reported_at"),
    [
        pytest.param(view("RUNNING", {"a": ("RUNNING", None), "b": ("RUNNING", None)}), 1.0, id="view"),
        pytest.param(None, 46.0, id="describe-denied"),
    ],
)
def test_change_scheduled_before_the_history_shows_missed_waits_for_ecs_view(
    answer: EcsTaskView | None, reported_at: float
) -> None:
    """A task without a definition label (canonical events): a's RUNNING is scheduled for the
    linger; then b is first seen STOPPED (its start was missed) and a stops. The change already
    scheduled is not sent before ECS's view is known. With the view the task is reported STOPPED
    at once; with the describe denied, once quiet for the settle time (45 s after a's stop)."""
    rig = Rig()
    rig.feed(ev("a", "PENDING", at=0, arn=None))
    rig.feed(ev("a", "RUNNING", at=0.1, arn=None))
    rig.feed(ev("b", "STOPPED", at=0.2, exit_code=0, arn=None))
    rig.feed(ev("a", "STOPPED", at=0.3, exit_code=0, arn=None))
    assert rig.tick(0.7) == []
    assert rig.wanted() == ([], [KEY])
    assert rig.committable() == 0

    rig.answer_views(answer, at=1)
    for t in (1, 45):
        if t < reported_at:
            assert rig.tick(t) == []
    assert rig.committable() == 0
    rig.tick(reported_at)
    assert rig.statuses() == ["STOPPED a=STOPPED(0),b=STOPPED(0)"]
    assert rig.committable() == rig.offset == 4


def test_restart_after_a_rebalance_with_its_start_unseen_is_not_reported_stopped() -> None:
    """A long-running single-container task with a restart policy. After a rebalance the first
    event is its natural exit: its start was not seen, so the restart period cannot be judged and
    the exit is held as a restart. ECS shows it RUNNING; the agent's restart follows: nothing is
    reported (ECS already shows it), the task is not retired, and its records are resolved."""
    rig = Rig()
    rig.feed(ev("app", "STOPPED", at=10_000, exit_code=1))
    rig.learn_definitions([{"name": "app", "restartPolicy": {"enabled": True}}], at=10_000)
    assert rig.answer_views(view("RUNNING", {"app": ("RUNNING", None)}), at=10_000) == [KEY]
    assert rig.tick(10_000.1) == []
    assert rig.committable() == 0  # the held exit stays claimed until the restart shows

    rig.feed(ev("app", "RUNNING", at=10_001))
    for t in (10_002, 20_000):
        assert rig.tick(t) == []
    assert not rig.co.is_retired(KEY)
    assert list(rig.co.keys()) == [KEY]
    assert rig.committable() == rig.offset == 2


# -- containers never seen ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            view("PENDING", {"app": ("PENDING", None), "sidecar": ("PENDING", None)}),
            id="view-never-reported",
        ),
        pytest.param(None, id="describe-denied"),
    ],
)
def test_task_stopping_with_a_container_never_created_asks_ecs_then_stops_once_quiet(
    answer: EcsTaskView | None,
) -> None:
    """A task followed from its creation whose ``sidecar`` is never created (its image pull
    failed: no Docker event at all); the agent stops the task, app exits 143. The task was never
    reported (PENDING: sidecar never ran), so ECS shows every container PENDING, or cannot be
    asked (describe denied). Either way the task falls back to the containers seen and, once quiet
    for the settle time (45 s after app's exit), is reported STOPPED; the exit's record is
    committable only after that report."""
    rig = quiet_rig()
    rig.feed(ev("app", "PENDING", at=0))
    rig.learn_definitions(APP_SIDECAR)
    rig.feed(ev("app", "RUNNING", at=1))
    assert rig.tick(2) == []  # PENDING: sidecar not even created
    rig.feed(ev("app", at=5, stop=True))
    rig.feed(ev("app", "STOPPED", at=6, exit_code=143))
    assert rig.tick(6.5) == []
    assert rig.wanted() == ([], [KEY])
    assert rig.committable() == 0  # never reported: its whole history stays claimed

    rig.answer_views(answer, at=7)
    for t in (7, 10, 50):
        assert rig.tick(t) == []
    assert rig.committable() == 0
    [stopped] = rig.tick(52)
    containers = {c.containerName: (c.status, c.exitCode) for c in stopped.request.containers or ()}
    assert (stopped.request.status, containers["app"]) == ("STOPPED", ("STOPPED", 143))
    assert rig.committable() == rig.offset == 4
    assert rig.co.is_retired(KEY)


def test_unavailable_definition_is_asked_again_after_a_minute() -> None:
    """A DescribeTaskDefinition fails once (throttled past its deadline): the revision is known as
    unavailable for a minute only. An hour later a new task of the revision, followed from its
    creation, asks for it again, so its init container's exit 0 (app not yet created) is not taken
    for the task's STOPPED; the task is reported RUNNING once app runs."""
    rig = Rig()
    rig.feed(ev("x", "PENDING", at=0, task=TASK + "-first"))
    assert rig.learn_definitions(None, at=0) == [ARN]
    rig.feed(ev("x", "PENDING", at=30, task=TASK + "-within"))
    assert rig.wanted()[0] == []  # within the minute: not asked again

    second = TASK + "-second"
    rig.feed(ev("init", "PENDING", at=3600, task=second))
    assert rig.wanted()[0] == [ARN]
    rig.feed(ev("init", "RUNNING", at=3601, task=second))
    rig.feed(ev("init", "STOPPED", at=3605, exit_code=0, task=second))
    assert rig.learn_definitions(INIT_APP, at=3605.5) == [ARN]
    assert rig.tick(3606) == []
    rig.feed(ev("app", "PENDING", at=3606, task=second))
    rig.feed(ev("app", "RUNNING", at=3607, task=second))
    rig.tick(3608)
    assert rig.statuses() == ["RUNNING app=RUNNING(None),init=STOPPED(0)"]  # containers sorted


# -- restart policies ---------------------------------------------------------------------------------


def test_exit_after_the_essential_container_stopped_is_final_despite_a_restart_policy() -> None:
    """app (essential, no policy) exits 1; sidecar, with a restart policy, exits on its own a
    second later. The agent has set sidecar's desired status to STOPPED (the task is stopping), so
    it is not restarted, and no kill is seen: the task is reported STOPPED with both exits."""
    rig = Rig()
    policy = {"enabled": True, "restartAttemptPeriod": 60}
    containers: list[dict[str, Any]] = [
        {"name": "app"},
        {"name": "sidecar", "essential": False, "restartPolicy": policy},
    ]
    for name in ("app", "sidecar"):
        rig.feed(ev(name, "PENDING", at=0))
    rig.learn_definitions(containers)
    for name in ("app", "sidecar"):
        rig.feed(ev(name, "RUNNING", at=1))
    rig.tick(2)
    rig.feed(ev("app", "STOPPED", at=600, exit_code=1))
    rig.feed(ev("sidecar", "STOPPED", at=601, exit_code=0))
    for t in (602, 640, 700, 3 * 3600):
        rig.tick(t)
    assert [(t, shown(s)) for t, s in rig.sent] == [
        (2, "RUNNING app=RUNNING(None),sidecar=RUNNING(None)"),
        (602, "STOPPED app=STOPPED(1),sidecar=STOPPED(0)"),
    ]
    assert rig.committable() == rig.offset == 6


def test_held_restart_exit_without_a_following_start_becomes_final_once_quiet() -> None:
    """app ran exactly its restart period (60 s) and exits 1: the agent would restart it, so the
    exit is held. No start follows (the agent judged the period otherwise, or gave up): once the
    task has been quiet for the settle time (45 s) the exit is final, and the task, whose only
    container stopped, is reported STOPPED; the exit's record is committable only then."""
    rig = Rig()
    rig.feed(ev("app", "PENDING", at=0))
    rig.learn_definitions([{"name": "app", "restartPolicy": {"enabled": True, "restartAttemptPeriod": 60}}])
    rig.feed(ev("app", "RUNNING", at=1))
    rig.tick(2)
    rig.feed(ev("app", "STOPPED", at=61, exit_code=1))
    for t in (62, 100):
        assert rig.tick(t) == []
    assert rig.committable() == 2
    rig.tick(107)
    assert rig.statuses() == ["RUNNING app=RUNNING(None)", "STOPPED app=STOPPED(1)"]
    assert rig.committable() == rig.offset == 3


def test_restarts_are_not_reported_and_an_exit_within_the_attempt_period_is_final() -> None:
    """app, restarted on a non-zero exit after 60 s of running, exits twice after longer runs
    (the agent restarts it: nothing reported), then exits 3 after 29 s: that exit is final and
    the task is reported STOPPED with it."""
    rig = Rig()
    rig.feed(ev("app", "PENDING", at=0))
    rig.learn_definitions(RESTARTING)
    rig.feed(ev("app", "RUNNING", at=1))
    rig.tick(2)
    rig.feed(ev("app", "STOPPED", at=100, exit_code=1))  # ran 99 s: restarted
    rig.tick(101)
    rig.feed(ev("app", "RUNNING", at=101))
    rig.tick(102)
    rig.feed(ev("app", "STOPPED", at=200, exit_code=2))  # ran 99 s: restarted
    rig.tick(201)
    rig.feed(ev("app", "RUNNING", at=201))
    rig.tick(202)
    rig.feed(ev("app", "STOPPED", at=230, exit_code=3))  # ran 29 s: final
    rig.tick(231)
    assert rig.statuses() == ["RUNNING app=RUNNING(None)", "STOPPED app=STOPPED(3)"]
    assert rig.committable() == rig.offset


def test_stop_request_delivered_after_the_exit_makes_the_held_exit_final() -> None:
    """Docker's ``kill`` (a stop asked of app) is delivered after app's ``die`` though observed
    before it: the exit, first held as a restart, is final: the task is reported STOPPED."""
    rig = Rig()
    rig.feed(ev("app", "PENDING", at=0))
    rig.learn_definitions(RESTARTING)
    rig.feed(ev("app", "RUNNING", at=1))
    rig.tick(2)
    rig.feed(ev("app", "STOPPED", at=100, exit_code=143))  # die: held, it looks like a restart
    rig.feed(ev("app", at=99.9, stop=True), at=100)  # kill, delivered after the die
    rig.tick(101)
    assert rig.statuses() == ["RUNNING app=RUNNING(None)", "STOPPED app=STOPPED(143)"]
    assert rig.committable() == rig.offset


@pytest.mark.parametrize("exit_code", [0, None], ids=["ignored-exit-code", "no-exit-code"])
def test_exit_with_an_ignored_or_no_exit_code_is_final(exit_code: int | None) -> None:
    """The restart policy ignores exit code 0, and an exit without a code is not restarted
    either: after a long run such an exit is final and the task is reported STOPPED."""
    rig = Rig()
    rig.feed(ev("app", "PENDING", at=0))
    rig.learn_definitions(RESTARTING)
    rig.feed(ev("app", "RUNNING", at=1))
    rig.tick(2)
    rig.feed(ev("app", "STOPPED", at=500, exit_code=exit_code))
    rig.tick(501)
    assert rig.sent[-1][1].request.status == "STOPPED"
    assert rig.committable() == rig.offset


def test_essential_exit_with_the_sidecar_still_running_is_reported_after_the_stop_linger() -> None:
    """app (essential) exits 1; the sidecar's stop never comes (its events lost). The task waits
    up to the stop linger (35 s) for its STOPPED, then reports what it knows: RUNNING with app
    stopped (and executionStoppedAt), so no record is held for ever."""
    rig = Rig(co=coalescer(stop_linger_ns=35 * S))
    for name in ("app", "sidecar"):
        rig.feed(ev(name, "PENDING", at=0))
    rig.learn_definitions(APP_SIDECAR)
    for name in ("app", "sidecar"):
        rig.feed(ev(name, "RUNNING", at=1))
    rig.tick(2)
    rig.feed(ev("app", "STOPPED", at=10, exit_code=1))
    rig.tick(20)
    assert len(rig.sent) == 1
    rig.tick(46)
    assert rig.statuses()[-1] == "RUNNING app=STOPPED(1),sidecar=RUNNING(None)"
    assert rig.sent[-1][1].request.executionStoppedAt is not None
    assert rig.committable() == rig.offset


def test_duplicated_and_shuffled_events_never_regress_the_reported_status() -> None:
    """A two-container lifecycle delivered shuffled, with three events duplicated (at-least-once
    delivery, shippers racing): the statuses reported never go backwards, and a STOPPED report
    always carries both containers stopped."""
    lifecycle: list[tuple[str, ContainerStatus, float, int | None]] = [
        ("app", "PENDING", 0, None),
        ("sidecar", "PENDING", 0.1, None),
        ("app", "RUNNING", 1, None),
        ("sidecar", "RUNNING", 1.1, None),
        ("app", "STOPPED", 50, 1),
        ("sidecar", "STOPPED", 60, 143),
    ]
    order = ("PENDING", "RUNNING", "STOPPED")
    for seed in range(200):
        rnd = random.Random(seed)
        events = lifecycle + rnd.sample(lifecycle, 3)
        rnd.shuffle(events)
        rig = Rig(co=coalescer(stop_linger_ns=35 * S))
        name, status, observed, code = events[0]
        rig.feed(ev(name, status, at=observed, exit_code=code), at=0)
        rig.learn_definitions(APP_SIDECAR)
        t = 0.0
        for name, status, observed, code in events[1:]:
            t += 0.3
            rig.feed(ev(name, status, at=observed, exit_code=code), at=t)
            rig.tick(t)
        rig.tick(t + 100)
        reported = [s.request for _, s in rig.sent]
        ranks = [order.index(r.status or "") for r in reported]
        assert ranks == sorted(ranks), (seed, rig.statuses())
        for request in reported:
            if request.status == "STOPPED":
                containers = request.containers or ()
                assert [c.status for c in containers] == ["STOPPED", "STOPPED"], (seed, rig.statuses())


# -- answers around revocations -------------------------------------------------------------------


def test_definition_answer_after_revoke_and_reassign_serves_the_records_read_again() -> None:
    """The partition is revoked while the task's definition is being fetched, and assigned back:
    its records are read again under the new epoch. The re-read task asks no second fetch; the
    answer of the first serves it, and only the new records' offsets move on."""
    rig = Rig()
    rig.feed(ev("app", "PENDING", at=0))
    rig.feed(ev("app", "RUNNING", at=1))
    assert rig.wanted() == ([ARN], [])  # the fetch starts
    rig.release(rig.co.drop(lambda source: source.partition == 0))
    rig.book.revoke([("t", 0)])
    rig.book.assign([("t", 0)])
    rig.offset = 0  # read again from the committed offset
    rig.feed(ev("app", "PENDING", at=0))
    rig.feed(ev("app", "RUNNING", at=1))
    rig.feed(ev("sidecar", "PENDING", at=1))
    rig.feed(ev("sidecar", "RUNNING", at=1.2))
    assert rig.co.take_wants() == ([], [])
    assert rig.learn_definitions(APP_SIDECAR, at=2) == [ARN]  # the first fetch's answer
    assert rig.committable() == 0
    rig.tick(3)
    assert rig.statuses() == ["RUNNING app=RUNNING(None),sidecar=RUNNING(None)"]
    assert rig.committable() == 4


def test_view_answer_for_a_task_dropped_at_revocation_is_ignored() -> None:
    """A task first seen RUNNING wants ECS's view; its partition is revoked before the answer.
    The late answer resolves nothing and does not bring the task back."""
    rig = Rig()
    rig.feed(ev("app", "RUNNING", at=0))  # first seen RUNNING: its start was missed
    rig.learn_definitions(APP_SIDECAR)
    assert rig.wanted() == ([], [KEY])
    rig.release(rig.co.drop(lambda source: True))
    rig.book.revoke([("t", 0)])
    rig.book.assign([("t", 0)])
    answer = view("RUNNING", {"app": ("RUNNING", None)})
    assert rig.co.learn_view(KEY, answer, rig.ns(1)) == []
    assert list(rig.co.keys()) == []


def test_completion_from_an_earlier_assignment_releases_nothing() -> None:
    """One record carries two tasks' changes. A's submission is in flight when the partition is
    revoked; the partition is assigned back and the record read again. A's old submission then
    completes: its release names the earlier epoch, so the re-read record stays claimed."""
    rig = Rig(describe=False, settle_ns=0)
    other = (KEY[0], TASK + "y")
    record = rig.track(claims=2)
    rig.co.apply(ev("a", "RUNNING", arn=None), record, rig.ns(0))
    rig.co.apply(ev("b", "RUNNING", arn=None, task=other[1]), record, rig.ns(0))
    ready, _ = rig.co.due(rig.ns(1))
    [stale] = [s for s in ready if s.key == KEY]
    rig.release(rig.co.drop(lambda source: True))
    rig.book.revoke([("t", 0)])
    rig.book.assign([("t", 0)])
    rig.offset = 0
    again = rig.track(claims=2)
    assert again.epoch == record.epoch + 1
    rig.co.apply(ev("a", "RUNNING", arn=None), again, rig.ns(2))
    rig.co.apply(ev("b", "RUNNING", arn=None, task=other[1]), again, rig.ns(2))
    released = rig.co.complete(stale, "acknowledged", rig.ns(3))
    assert released
    assert all(s.epoch == record.epoch for s in released)
    assert not any(rig.book.release(s) for s in released)
    assert rig.committable() == 0


def test_missing_answer_while_a_submission_is_in_flight_retires_the_task_after_it() -> None:
    """A task without a definition label, followed from its creation: its RUNNING is in flight
    when a second container is first seen RUNNING (a view is wanted), and DescribeTasks answers
    MISSING before the submission completes (rejected). The task retires then: its later events
    are late, nothing more is sent, and every offset is committable."""
    rig = Rig()
    rig.feed(ev("a", "PENDING", at=0, arn=None))
    rig.feed(ev("a", "RUNNING", at=0.1, arn=None))
    [in_flight] = rig.tick(1, ack=False)
    rig.feed(ev("b", "RUNNING", at=1.1, arn=None))
    assert rig.wanted() == ([], [KEY])
    assert rig.co.learn_missing(KEY) == []  # retired once the submission completes
    rig.release(rig.co.complete(in_flight, "rejected", rig.ns(2)))
    assert rig.co.is_retired(KEY)
    rig.tick(2.5)
    rig.feed(ev("a", "STOPPED", at=3, exit_code=0, arn=None))
    rig.feed(ev("b", "STOPPED", at=3, exit_code=0, arn=None))
    for t in (4, 100, 10_000):
        rig.tick(t)
    assert rig.statuses() == ["RUNNING a=RUNNING(None)"]
    assert rig.committable() == rig.offset == 5
