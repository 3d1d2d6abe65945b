"""The coalescer (worker.coalesce) and the snapshot it submits (worker.snapshot). The clock is passed
in: every ``now`` here is a made-up monotonic nanosecond count."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from schemas.ecs import (
    AttachmentStateChange,
    ContainerStateChange,
    ManagedAgentStateChange,
    NetworkBinding,
    SubmitTaskStateChangeRequest,
)
from schemas.events import AttachmentChange, ContainerChange, ManagedAgentChange, TaskEvent
from worker.coalesce import Applied, Coalescer
from worker.ecs_rules import MAX_ID_BYTES, MAX_REASON_BYTES
from worker.offsets import OffsetBook
from worker.snapshot import build_request, fingerprint
from worker.task_state import (
    CONTAINER_RANK,
    PENDING,
    RUNNING,
    STATUS_NAMES,
    STOPPED,
    TASK_RANK,
    TaskKey,
    TaskState,
)
from worker.work import OutcomeResult, SourceRef, Submission

LINGER = 100
CLUSTER = "demo"
TOPIC = "container-events"


def arn(name: str) -> str:
    return f"arn:aws:ecs:us-east-1:123456789012:task/demo/{name}"


def key(name: str = "t1") -> TaskKey:
    return (CLUSTER, arn(name))


def ev(task: str = "t1", *containers: ContainerChange, t: int = 1, **members: Any) -> TaskEvent:
    return TaskEvent(cluster=CLUSTER, task=arn(task), observedAt=t, containers=containers, **members)


def cc(name: str, status: str | None = None, **members: Any) -> ContainerChange:
    return ContainerChange(containerName=name, status=status, **members)  # type: ignore[arg-type]


def src(offset: int, partition: int = 0) -> SourceRef:
    return SourceRef(TOPIC, partition, offset, 1)


def make(linger: int = LINGER, cap: int = 100, retired: int = 100) -> Coalescer:
    return Coalescer(linger_ns=linger, max_active_tasks=cap, retired_cap=retired, describe=False, settle_ns=0)


def submit_one(c: Coalescer, now: int) -> Submission:
    subs, resolved = c.due(now)
    assert resolved == []
    assert len(subs) == 1
    return subs[0]


# -- scheduling -------------------------------------------------------------------------------------


def test_first_change_is_due_linger_later() -> None:
    c = make()
    assert c.apply(ev("t1", cc("app", "RUNNING")), src(0), 1_000) == (Applied.CHANGED, [])
    assert c.next_due_at() == 1_000 + LINGER
    assert c.due(1_000 + LINGER - 1) == ([], [])
    sub = submit_one(c, 1_000 + LINGER)
    assert sub.key == key("t1")
    assert sub.sources == [src(0)]
    assert sub.request.status == "RUNNING"
    assert sub.request.cluster == CLUSTER
    assert sub.request.task == arn("t1")
    assert not sub.stopped
    assert c.in_flight() == [sub]
    assert c.next_due_at() is None


def test_linger_counts_from_the_first_unsent_change() -> None:
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING")), src(0), 1_000)
    assert c.apply(ev("t1", cc("app", "RUNNING", reason="healthy")), src(1), 1_090) == (Applied.CHANGED, [])
    assert c.next_due_at() == 1_100  # not pushed back by the later change
    sub = submit_one(c, 1_100)
    assert sub.sources == [src(0), src(1)]
    assert sub.request.containers is not None
    assert sub.request.containers[0].reason == "healthy"


def test_stopped_is_due_at_once() -> None:
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING")), src(0), 1_000)
    c.apply(ev("t1", cc("app", "STOPPED", exitCode=0)), src(1), 1_010)
    assert c.next_due_at() == 1_010
    sub = submit_one(c, 1_010)
    assert sub.stopped
    assert sub.request.status == "STOPPED"
    assert sub.sources == [src(0), src(1)]


def test_stopped_task_first_seen_is_due_at_once() -> None:
    c = make(linger=10**9)
    c.apply(ev("t1", status="STOPPED"), src(0), 5)
    assert c.next_due_at() == 5


def test_first_event_at_is_the_oldest_observation_carried() -> None:
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING"), t=500), src(0), 0)
    c.apply(ev("t1", cc("app", "RUNNING", runtimeId="r"), t=300), src(1), 1)
    c.apply(ev("t1", cc("app", "RUNNING", reason="x"), t=900), src(2), 2)
    assert submit_one(c, LINGER).first_event_at == 300


def test_flush_all_and_set_linger() -> None:
    c = make(linger=10**9)
    c.apply(ev("t1", cc("app", "RUNNING")), src(0), 0)
    assert c.next_due_at() == 10**9
    c.flush_all(5)
    assert c.next_due_at() == 5
    c.set_linger(0)
    c.apply(ev("t2", cc("app", "RUNNING")), src(1), 7)
    subs, resolved = c.due(7)
    assert resolved == []
    assert sorted(s.key for s in subs) == [key("t1"), key("t2")]


# -- what is (not) sent -----------------------------------------------------------------------------


def test_duplicate_of_acknowledged_state_resolves_at_once() -> None:
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING")), src(0), 0)
    sub = submit_one(c, LINGER)
    assert c.complete(sub, "acknowledged", LINGER) == [src(0)]
    assert c.apply(ev("t1", cc("app", "RUNNING")), src(1), LINGER) == (Applied.UNCHANGED, [src(1)])
    assert c.apply(ev("t1", cc("app", "CREATED")), src(2), LINGER) == (Applied.UNCHANGED, [src(2)])
    assert c.next_due_at() is None


def test_unchanged_event_while_dirty_rides_with_the_next_submission() -> None:
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING")), src(0), 0)
    assert c.apply(ev("t1", cc("app", "RUNNING")), src(1), 1) == (Applied.UNCHANGED, [])
    assert submit_one(c, LINGER).sources == [src(0), src(1)]


def test_pending_task_is_not_submitted_and_its_sources_wait_for_its_first_report() -> None:
    """A task still PENDING is not reported; its records stay claimed until it is, so that a new
    owner after a rebalance reads its containers' creation and starts again."""
    c = make()
    assert c.apply(ev("t1", cc("app", "CREATED")), src(0), 0) == (Applied.CHANGED, [])
    assert c.apply(ev("t1", cc("app", "PULLED", imageDigest="sha256:1")), src(1), 1) == (Applied.CHANGED, [])
    assert c.due(LINGER - 1) == ([], [])
    assert c.due(LINGER) == ([], [])
    assert c.next_due_at() is None
    assert c.pinned() == {(TOPIC, 0, 0), (TOPIC, 0, 1)}
    # It is submitted once it runs, with every record it held.
    c.apply(ev("t1", cc("app", "RUNNING")), src(2), 200)
    sub = submit_one(c, 200 + LINGER)
    assert sub.sources == [src(0), src(1), src(2)]
    assert c.pinned() == set()
    assert sub.request.containers is not None
    assert sub.request.containers[0].imageDigest == "sha256:1"


def test_snapshot_equal_to_last_acknowledged_is_not_sent() -> None:
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING")), src(0), 0)
    c.complete(submit_one(c, LINGER), "acknowledged", LINGER)
    # A new container still PENDING changes the state but not the request.
    assert c.apply(ev("t1", cc("late", "CREATED")), src(1), 200) == (Applied.CHANGED, [])
    assert c.due(200 + LINGER) == ([], [src(1)])


@pytest.mark.parametrize("result", ["rejected", "failed"])
def test_unacknowledged_snapshot_is_sent_again(result: OutcomeResult) -> None:
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING")), src(0), 0)
    first = submit_one(c, LINGER)
    assert c.complete(first, result, LINGER) == [src(0)]
    assert not c.is_retired(key("t1"))
    c.apply(ev("t1", cc("late", "CREATED")), src(1), 200)
    again = submit_one(c, 200 + LINGER)
    assert again.fingerprint == first.fingerprint
    assert again.sources == [src(1)]


def test_pending_containers_are_not_reported_and_containers_are_sorted() -> None:
    c = make()
    c.apply(
        ev(
            "t1",
            cc("zeta", "RUNNING"),
            cc("mid", "CREATED"),
            cc("alpha", "STOPPED", exitCode=3),
            status="RUNNING",
        ),
        src(0),
        0,
    )
    sub = submit_one(c, LINGER)
    assert sub.request.containers is not None
    assert [(x.containerName, x.status) for x in sub.request.containers] == [
        ("alpha", "STOPPED"),
        ("zeta", "RUNNING"),
    ]


# -- one submission in flight per task -------------------------------------------------------------


def test_changes_during_flight_go_into_the_next_submission() -> None:
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING")), src(0), 0)
    first = submit_one(c, LINGER)
    assert c.apply(ev("t1", cc("app", "RUNNING", reason="x")), src(1), 150) == (Applied.CHANGED, [])
    assert c.in_flight() == [first]
    assert c.complete(first, "acknowledged", 400) == [src(0)]
    due_at = c.next_due_at()
    assert due_at is not None
    assert due_at <= 400 + LINGER
    second = submit_one(c, 400 + LINGER)
    assert second.sources == [src(1)]
    assert second.request.containers is not None
    assert second.request.containers[0].reason == "x"


def test_changes_during_flight_are_scheduled_even_if_the_scheduler_polled_meanwhile() -> None:
    """Regression (fixed in d0b82e8): next_due_at dropped the heap item of an in-flight task and
    complete() then never re-queued its pending change."""
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING")), src(0), 0)
    first = submit_one(c, LINGER)
    c.apply(ev("t1", cc("app", "RUNNING", reason="x")), src(1), 150)
    # The pipeline's schedule loop polls due()/next_due_at() while the call is in flight.
    assert c.due(1_000) == ([], [])
    assert c.complete(first, "acknowledged", 1_000) == [src(0)]
    assert c.next_due_at() == 1_000  # its linger (from t=150) has passed: due at once
    subs, _ = c.due(1_000)
    assert [s.sources for s in subs] == [[src(1)]]


def test_change_during_flight_keeps_its_own_linger() -> None:
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING")), src(0), 0)
    first = submit_one(c, LINGER)
    c.apply(ev("t1", cc("app", "RUNNING", reason="x")), src(1), 950)
    assert c.due(960) == ([], [])
    c.complete(first, "acknowledged", 1_000)
    assert c.next_due_at() == 950 + LINGER
    assert c.due(950 + LINGER - 1) == ([], [])
    assert submit_one(c, 950 + LINGER).sources == [src(1)]


def test_unchanged_event_during_flight_resolves_on_complete() -> None:
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING")), src(0), 0)
    first = submit_one(c, LINGER)
    assert c.apply(ev("t1", cc("app", "RUNNING")), src(1), 150) == (Applied.UNCHANGED, [])
    assert c.complete(first, "acknowledged", 200) == [src(0), src(1)]
    assert c.next_due_at() is None


# -- retirement -------------------------------------------------------------------------------------


@pytest.mark.parametrize("result", ["acknowledged", "rejected", "failed"])
def test_finished_stopped_submission_retires_the_task(result: OutcomeResult) -> None:
    c = make()
    c.apply(ev("t1", cc("app", "STOPPED", exitCode=0)), src(0), 0)
    sub = submit_one(c, 0)
    assert sub.stopped
    assert c.apply(ev("t1", cc("app", "STOPPED", exitCode=0)), src(1), 1) == (Applied.UNCHANGED, [])
    assert c.complete(sub, result, 2) == [src(0), src(1)]
    assert c.is_retired(key("t1"))
    assert c.active_count == 0
    assert key("t1") not in set(c.keys())
    assert c.apply(ev("t1", cc("app", "RUNNING", reason="late")), src(2), 3) == (Applied.RETIRED, [src(2)])
    assert c.next_due_at() is None


def test_change_during_stopped_flight_is_late_once_acknowledged() -> None:
    """An acknowledged STOPPED is the task's last report, as the agent's is: a fact merged while
    it was in flight (an exit code, a reason) is late, as it would be after; ECS's endpoint flags
    a later call (``updates_after_stopped``)."""
    c = make()
    c.apply(ev("t1", cc("app", "STOPPED")), src(0), 0)
    first = submit_one(c, 0)
    c.apply(ev("t1", cc("app", "STOPPED", exitCode=137, reason="OOM")), src(1), 1)
    assert c.complete(first, "acknowledged", 2) == [src(0), src(1)]
    assert c.is_retired(key("t1"))
    assert c.due(2) == ([], [])
    assert c.next_due_at() is None


def test_stopped_task_retires_after_a_no_op_change_during_its_call() -> None:
    c = make()
    c.apply(ev("t1", status="STOPPED"), src(0), 0)
    sub = submit_one(c, 0)
    # A container seen without a status changes the state but not the request.
    assert c.apply(ev("t1", cc("app")), src(1), 1) == (Applied.CHANGED, [])
    assert c.complete(sub, "acknowledged", 2) == [src(0), src(1)]  # retired at once
    assert c.due(2) == ([], [])
    assert c.is_retired(key("t1"))
    assert c.apply(ev("t1", cc("app", "STOPPED", reason="late")), src(2), 3) == (Applied.RETIRED, [src(2)])


def test_retired_cache_is_bounded() -> None:
    c = make(retired=1)
    for i, name in enumerate(["t1", "t2"]):
        c.apply(ev(name, status="STOPPED"), src(i), 0)
        c.complete(submit_one(c, 0), "acknowledged", 0)
    assert not c.is_retired(key("t1"))
    assert c.is_retired(key("t2"))
    assert c.apply(ev("t1", status="STOPPED"), src(9), 1)[0] is Applied.CHANGED


def test_stale_completion_returns_its_sources() -> None:
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING")), src(0), 0)
    sub = submit_one(c, LINGER)
    assert c.drop(lambda s: s[1] == 0) == []  # in flight: handed back by complete
    assert c.active_count == 0
    c.apply(ev("t1", cc("app", "RUNNING")), src(1), 200)  # a new entry for the same task
    assert c.complete(sub, "acknowledged", 300) == [src(0)]
    # The new entry is unaffected: still dirty, and its own submission is still to come.
    assert submit_one(c, 200 + LINGER).sources == [src(1)]


# -- drop -------------------------------------------------------------------------------------------


def test_drop_forgets_tasks_of_revoked_partitions() -> None:
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING")), src(0, partition=0), 0)
    c.apply(ev("t2", cc("app", "RUNNING")), src(0, partition=1), 0)
    c.apply(ev("t3", cc("app", "CREATED")), src(1, partition=1), 0)
    assert sorted(c.drop(lambda s: s[1] == 1)) == [src(0, 1), src(1, 1)]
    assert list(c.keys()) == [key("t1")]
    assert submit_one(c, LINGER).key == key("t1")


# -- bounded memory ---------------------------------------------------------------------------------


def _clean(c: Coalescer, name: str, offset: int, now: int) -> None:
    """Make a task known and clean (reported, acknowledged, resolved)."""
    c.apply(ev(name, cc("app", "RUNNING")), src(offset), now)
    (submission,), _ = c.due(now + LINGER)
    assert c.complete(submission, "acknowledged", now + LINGER) == [src(offset)]


def test_clean_tasks_are_evicted_least_recently_changed_first() -> None:
    c = make(cap=2)
    _clean(c, "a", 0, 0)
    _clean(c, "b", 1, 0)
    assert c.apply(ev("a", cc("app", "CREATED")), src(2), 200) == (Applied.UNCHANGED, [src(2)])  # touch a
    c.apply(ev("c", cc("app", "RUNNING")), src(3), 300)
    assert set(c.keys()) == {key("a"), key("c")}
    assert c.evicted == 1
    assert not c.enforce_cap()


def test_busy_tasks_are_not_evicted_and_saturate() -> None:
    c = make(cap=1)
    c.apply(ev("a", cc("app", "RUNNING")), src(0), 0)
    c.apply(ev("b", cc("app", "RUNNING")), src(1), 0)
    assert c.active_count == 2
    assert c.enforce_cap()
    subs, _ = c.due(LINGER)
    assert len(subs) == 2
    assert c.enforce_cap()  # in flight: still busy
    by_key = {s.key: s for s in subs}
    c.complete(by_key[key("a")], "acknowledged", LINGER)
    assert not c.enforce_cap()  # a is clean now, and evicted
    assert list(c.keys()) == [key("b")]
    assert c.evicted == 1


# -- per-task bounds -------------------------------------------------------------------------------


def test_over_limits_counts_known_and_new_containers() -> None:
    c = Coalescer(
        linger_ns=LINGER, max_active_tasks=10, retired_cap=10, max_containers=2, describe=False, settle_ns=0
    )
    assert c.over_limits(ev("t1", cc("a"), cc("b"))) is None
    broken = c.over_limits(ev("t1", cc("a"), cc("b"), cc("c")))
    assert broken is not None
    assert "3 containers" in broken
    assert "max_containers_per_task=2" in broken
    c.apply(ev("t1", cc("a", "RUNNING"), cc("b", "RUNNING")), src(0), 0)
    assert c.over_limits(ev("t1", cc("a", "STOPPED"))) is None  # known container: no growth
    assert c.over_limits(ev("t1", cc("c"))) is not None
    assert c.over_limits(ev("t2", cc("c"))) is None  # another task has its own bound


def test_over_limits_counts_attachments_and_managed_agents() -> None:
    c = Coalescer(
        linger_ns=LINGER, max_active_tasks=10, retired_cap=10, max_attachments=1, describe=False, settle_ns=0
    )

    def att(*arns: str) -> TaskEvent:
        return ev("t1", attachments=tuple(AttachmentChange(attachmentArn=a, status="ATTACHED") for a in arns))

    def agents(*names: str) -> TaskEvent:
        return ev(
            "t1",
            managedAgents=tuple(
                ManagedAgentChange(containerName=n, managedAgentName="ExecuteCommandAgent", status="RUNNING")
                for n in names
            ),
        )

    assert c.over_limits(att("arn:1")) is None
    assert "attachments" in (c.over_limits(att("arn:1", "arn:2")) or "")
    assert "managed agents" in (c.over_limits(agents("a", "b")) or "")
    c.apply(att("arn:1"), src(0), 0)
    assert c.over_limits(att("arn:1")) is None
    assert c.over_limits(att("arn:2")) is not None
    assert c.over_limits(agents("a")) is None  # counted apart from attachments


# -- snapshot ---------------------------------------------------------------------------------------


def test_request_is_a_full_deterministic_snapshot() -> None:
    t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    events = [
        ev(
            "t1",
            cc("web", "RUNNING", runtimeId="r-web", networkBindings=(NetworkBinding(containerPort=80),)),
            t=1,
            attachments=(
                AttachmentChange(attachmentArn="arn:b", status="ATTACHED"),
                AttachmentChange(attachmentArn="arn:a", status="ATTACHED"),
            ),
            pullStartedAt=t0,
        ),
        ev(
            "t1",
            cc("db", "RUNNING", imageDigest="sha256:d"),
            t=2,
            managedAgents=(
                ManagedAgentChange(
                    containerName="web", managedAgentName="ExecuteCommandAgent", status="RUNNING"
                ),
                ManagedAgentChange(
                    containerName="db", managedAgentName="ExecuteCommandAgent", status="RUNNING"
                ),
            ),
            pullStoppedAt=t0,
            reason="r",
        ),
    ]
    a, b = TaskState(key("t1")), TaskState(key("t1"))
    for e in events:
        a.merge(e)
    for e in reversed(events):
        b.merge(e)
    request = build_request(a)
    assert request == build_request(b)
    assert fingerprint(request) == fingerprint(build_request(b))
    assert request == SubmitTaskStateChangeRequest(
        cluster=CLUSTER,
        task=arn("t1"),
        status="RUNNING",
        reason="r",
        containers=(
            ContainerStateChange(containerName="db", imageDigest="sha256:d", status="RUNNING"),
            ContainerStateChange(
                containerName="web",
                runtimeId="r-web",
                status="RUNNING",
                networkBindings=(NetworkBinding(containerPort=80),),
            ),
        ),
        attachments=(
            AttachmentStateChange(attachmentArn="arn:a", status="ATTACHED"),
            AttachmentStateChange(attachmentArn="arn:b", status="ATTACHED"),
        ),
        managedAgents=(
            ManagedAgentStateChange(
                containerName="db", managedAgentName="ExecuteCommandAgent", status="RUNNING"
            ),
            ManagedAgentStateChange(
                containerName="web", managedAgentName="ExecuteCommandAgent", status="RUNNING"
            ),
        ),
        pullStartedAt=t0,
        pullStoppedAt=t0,
    )


def test_fingerprint_tracks_the_wire_form() -> None:
    s = TaskState(key("t1"))
    s.merge(ev("t1", cc("app", "RUNNING")))
    first = build_request(s)
    assert fingerprint(first) == fingerprint(build_request(s))
    assert len(fingerprint(first)) == 24
    s.merge(ev("t1", cc("app", "RUNNING", reason="x")))
    assert fingerprint(build_request(s)) != fingerprint(first)
    # A PENDING container is not part of the request: the fingerprint does not move.
    before = fingerprint(build_request(s))
    s.merge(ev("t1", cc("other", "CREATED")))
    assert fingerprint(build_request(s)) == before


def test_snapshot_cuts_long_fields_at_a_character_boundary() -> None:
    s = TaskState(key("t1"))
    reason = "a" * (MAX_REASON_BYTES - 1) + "é" + "tail"
    runtime_id = "x" * (MAX_ID_BYTES - 2) + "€"  # the 3-byte character straddles the limit
    s.merge(
        ev(
            "t1",
            cc("app", "STOPPED", reason=reason, runtimeId=runtime_id, imageDigest="d" * 300),
            reason="🙂" * 300,
            managedAgents=(
                ManagedAgentChange(
                    containerName="app",
                    managedAgentName="ExecuteCommandAgent",
                    status="STOPPED",
                    reason=reason,
                ),
            ),
        )
    )
    request = build_request(s)
    assert request.containers is not None
    assert request.managedAgents is not None
    container = request.containers[0]
    assert container.reason == "a" * (MAX_REASON_BYTES - 1)
    assert container.runtimeId == "x" * (MAX_ID_BYTES - 2)
    assert container.imageDigest == "d" * MAX_ID_BYTES
    assert request.reason == "🙂" * (MAX_REASON_BYTES // 4)
    assert request.managedAgents[0].reason == "a" * (MAX_REASON_BYTES - 1)


# -- randomized: exactly-once, monotone status, convergence -----------------------------------------

TASKS = [key(f"t{i}") for i in range(3)]
_change = st.builds(
    ContainerChange,
    containerName=st.sampled_from(["app", "sidecar"]),
    status=st.sampled_from([None, "CREATED", "PULLED", "RUNNING", "RUNNING", "RUNNING", "STOPPED"]),
    exitCode=st.none() | st.sampled_from([0, 137]),
    reason=st.none() | st.sampled_from(["a", "b"]),
)
_event = st.builds(
    TaskEvent,
    cluster=st.just(CLUSTER),
    task=st.just("placeholder"),
    observedAt=st.integers(0, 10_000),
    status=st.none() | st.none() | st.sampled_from(["PENDING", "RUNNING", "STOPPED"]),
    reason=st.none() | st.sampled_from(["x", "y"]),
    containers=st.lists(_change, max_size=2, unique_by=lambda c: c.containerName).map(tuple),
    attachments=st.lists(
        st.builds(AttachmentChange, attachmentArn=st.just("arn:eni"), status=st.sampled_from(["A", "B"])),
        max_size=1,
    ).map(tuple),
)


def reference_status(events: list[TaskEvent], floors: list[int]) -> tuple[int, dict[str, int]]:
    """The documented status rules, written out independently of worker.task_state.

    ``floors[i]``: the rank already reported when ``events[i]`` was merged. Events never lower the
    task's status; but a container first seen past PENDING shows that the view was partial
    (README, "How the worker knows a task"): without ECS's view (``describe=False``) and with no
    settle time, the status is then derived at once from the containers seen, and a rank not yet
    reported may fall to it (``knowledge._fall_back``, ``TaskState.settle`` and ``_rerank``)."""
    containers: dict[str, int] = {}
    explicit, rank, missed = -1, PENDING, False
    for e, floor in zip(events, floors, strict=True):
        was_missed = missed
        for change in e.containers:
            seen = CONTAINER_RANK[change.status] if change.status is not None else -1
            first = containers.get(change.containerName, -1) < 0
            missed |= seen > PENDING and first
            containers[change.containerName] = max(containers.get(change.containerName, -1), seen)
        if e.status is not None:
            explicit = max(explicit, TASK_RANK[e.status])
        derived = max(min(containers.values()), PENDING) if containers else PENDING
        rank = max(floor if missed and not was_missed else rank, explicit, derived)
    return rank, {n: r for n, r in containers.items() if r > PENDING}


def model_state(k: TaskKey, events: list[TaskEvent], floors: list[int]) -> TaskState:
    """The task's state as the coalescer of the machine (no definitions, ``describe=False``,
    ``settle_ns=0``) must hold it: the events merged in order and, when one first shows a missed
    history, the fallback's settle at once, never below the rank reported by then (``floors``)."""
    state = TaskState(k)
    for event, floor in zip(events, floors, strict=True):
        missed = state.missed
        state.merge(event)
        if state.missed and not missed:
            state.floor = floor
            state.settle()
    return state


_SIDECAR_THEN_APP = [
    ev("t1", cc("sidecar", "CREATED"), t=0),
    ev("t1", cc("sidecar", "STOPPED"), t=0),
    ev("t1", cc("app", "RUNNING"), t=0),
]


def test_an_unreported_stopped_falls_when_the_view_turns_out_partial() -> None:
    """No definition, describe off, no settle time. The sidecar is created and stops: every
    container seen has stopped, so the task derives STOPPED, due at once. Before the call goes the
    app is first seen RUNNING: its start was missed, the view was partial, and without ECS's view
    the status derives from the containers seen (README, "How the worker knows a task";
    ``knowledge._fall_back``, ``TaskState.settle``). The STOPPED, never reported, falls to RUNNING
    (``TaskState._rerank``): a task is STOPPED only once every container has stopped (agent:
    ``Task.updateTaskKnownStatus``), and ECS takes STOPPED as final."""
    c = make()
    for offset, event in enumerate(_SIDECAR_THEN_APP[:2]):
        c.apply(event, src(offset), 0)
    assert c.next_due_at() == 0
    c.apply(_SIDECAR_THEN_APP[2], src(2), 0)
    sub = submit_one(c, 0)
    statuses = {x.containerName: x.status for x in sub.request.containers or ()}
    assert (sub.request.status, statuses, sub.stopped) == (
        "RUNNING",
        {"app": "RUNNING", "sidecar": "STOPPED"},
        False,
    )
    assert c.complete(sub, "acknowledged", 1) == [src(0), src(1), src(2)]
    assert not c.is_retired(key("t1"))
    # The randomized machine's model and reference agree (nothing reported before the app).
    floors = [PENDING] * 3
    assert build_request(model_state(key("t1"), _SIDECAR_THEN_APP, floors)) == sub.request
    assert reference_status(_SIDECAR_THEN_APP, floors) == (RUNNING, {"app": RUNNING, "sidecar": STOPPED})


def test_a_reported_stopped_is_final_when_the_view_turns_out_partial() -> None:
    """The same events, but the STOPPED call went before the app was seen: what was reported is
    the floor (``TaskState.floor``), so the task stays STOPPED; and once acknowledged it is the
    task's last report, as the agent's STOPPED is: the app's RUNNING, merged while the call was in
    flight, is late (sent, it would say a STOPPED task runs a container, after its STOPPED)."""
    c = make()
    for offset, event in enumerate(_SIDECAR_THEN_APP[:2]):
        c.apply(event, src(offset), 0)
    stopped = submit_one(c, 0)
    assert (stopped.request.status, stopped.stopped) == ("STOPPED", True)
    assert c.apply(_SIDECAR_THEN_APP[2], src(2), 0) == (Applied.CHANGED, [])
    assert c.complete(stopped, "acknowledged", 1) == [src(0), src(1), src(2)]
    assert c.is_retired(key("t1"))
    assert c.due(1) == ([], [])
    floors = [PENDING, PENDING, STOPPED]
    assert reference_status(_SIDECAR_THEN_APP, floors)[0] == STOPPED  # (the state it would report)
    assert build_request(model_state(key("t1"), _SIDECAR_THEN_APP[:2], floors[:2])) == stopped.request


def test_a_rejected_stopped_goes_again_with_what_came_meanwhile() -> None:
    """A STOPPED that ECS did not acknowledge (rejected, or retries exhausted: dead-lettered) is
    not the task's last report: a change merged while it was in flight goes in a new one."""
    c = make()
    c.apply(ev("t1", cc("app", "RUNNING")), src(0), 0)
    c.apply(ev("t1", cc("app", "STOPPED")), src(1), 0)
    stopped = submit_one(c, 0)
    assert c.apply(ev("t1", cc("app", "STOPPED", exitCode=2)), src(2), 0) == (Applied.CHANGED, [])
    assert c.complete(stopped, "rejected", 1) == [src(0), src(1)]
    again = submit_one(c, 1)
    assert [(x.status, x.exitCode) for x in again.request.containers or ()] == [("STOPPED", 2)]


class CoalescerMachine(RuleBasedStateMachine):
    results: tuple[OutcomeResult, ...] = ("acknowledged", "rejected", "failed")

    def __init__(self) -> None:
        super().__init__()
        self.c = Coalescer(linger_ns=LINGER, max_active_tasks=64, retired_cap=64, describe=False, settle_ns=0)
        self.now = 0
        self.offset = 0
        self.applied: dict[SourceRef, TaskKey] = {}
        self.returned: set[SourceRef] = set()
        self.flight: list[tuple[Submission, int]] = []
        self.gen: dict[TaskKey, int] = defaultdict(int)
        self.merged: dict[TaskKey, list[TaskEvent]] = defaultdict(list)
        self.floors: dict[TaskKey, list[int]] = defaultdict(list)
        """Per merged event, the rank already reported for its task (the floor of a settle)."""
        self.history: dict[TaskKey, list[tuple[Submission, OutcomeResult | None]]] = defaultdict(list)
        self.taken_after: dict[int, int] = {}
        """Per submission (by id), how many of its task's merged events it carries (all, when taken)."""
        # The offset book beside the coalescer, as the pipeline runs them: each applied event is
        # one record of one claim; a revocation gives its partition up and a reassignment re-reads
        # it from the committed offset under a new epoch.
        self.book = OffsetBook()
        self.book.assign([(TOPIC, 0), (TOPIC, 1)])
        self.log: dict[int, list[tuple[int, TaskKey, TaskEvent]]] = defaultdict(list)
        self.committed: dict[int, int] = {0: 0, 1: 0}

    # bookkeeping

    def resolve(self, sources: list[SourceRef]) -> None:
        for s in sources:
            assert s in self.applied, f"{s} was never applied"
            assert s not in self.returned, f"{s} returned twice"
            self.returned.add(s)
            self.book.release(s)

    def last_acked(self, k: TaskKey) -> Submission | None:
        acked = [s for s, r in self.history[k] if r == "acknowledged"]
        return acked[-1] if acked else None

    def take(self, subs: list[Submission]) -> None:
        for sub in subs:
            k = sub.key
            assert all(s.key != k or g != self.gen[k] for s, g in self.flight), "two in flight"
            assert sub.fingerprint == fingerprint(sub.request)
            assert sub.request.status in ("RUNNING", "STOPPED")
            assert sub.stopped == (sub.request.status == "STOPPED")
            names = [x.containerName or "" for x in sub.request.containers or ()]
            assert all(names)
            assert names == sorted(names)
            assert all(x.status in ("RUNNING", "STOPPED") for x in sub.request.containers or ())
            # The full state so far, not a delta.
            expected = model_state(k, self.merged[k], self.floors[k])
            assert sub.request == build_request(expected)
            previous = self.history[k]
            if previous:
                assert STATUS_NAMES.index(sub.request.status) >= STATUS_NAMES.index(
                    previous[-1][0].request.status or ""
                )
            acked = self.last_acked(k)
            assert acked is None or acked.fingerprint != sub.fingerprint
            assert all(self.applied[s] == k and s not in self.returned for s in sub.sources)
            previous.append((sub, None))
            self.flight.append((sub, self.gen[k]))
            self.taken_after[id(sub)] = len(self.merged[k])

    def finish(self, index: int, result: OutcomeResult) -> None:
        sub, gen = self.flight.pop(index)
        resolved = self.c.complete(sub, result, self.now)
        assert set(sub.sources) <= set(resolved)
        self.resolve(resolved)
        if gen == self.gen[sub.key]:
            hist = self.history[sub.key]
            at = next(i for i, (s, _) in enumerate(hist) if s is sub)
            hist[at] = (sub, result)
            if self.c.is_retired(sub.key):
                assert sub.stopped
            if sub.stopped and result == "acknowledged":
                # The task's last report: what was merged while it was in flight is late.
                assert self.c.is_retired(sub.key)
                merged = self.taken_after[id(sub)]
                self.merged[sub.key] = self.merged[sub.key][:merged]
                self.floors[sub.key] = self.floors[sub.key][:merged]

    # rules

    @rule(task=st.integers(0, len(TASKS) - 1), event=_event, partition=st.integers(0, 1))
    def apply(self, task: int, event: TaskEvent, partition: int) -> None:
        self.apply_to(TASKS[task], event, partition)

    @precondition(lambda self: bool(self.flight))
    @rule(index=st.integers(0, 1_000), event=_event, partition=st.integers(0, 1))
    def apply_during_flight(self, index: int, event: TaskEvent, partition: int) -> None:
        """A change to a task whose submission is in flight (the interesting interleaving)."""
        self.apply_to(self.flight[index % len(self.flight)][0].key, event, partition)

    def apply_to(self, k: TaskKey, event: TaskEvent, partition: int) -> None:
        event = msgspec.structs.replace(event, task=k[1])
        self.log[partition].append((self.offset, k, event))
        self.read(partition, self.offset, k, event)
        self.offset += 1

    def read(self, partition: int, offset: int, k: TaskKey, event: TaskEvent) -> None:
        source = self.book.track(TOPIC, partition, offset, 1)
        assert source is not None
        self.applied[source] = k
        was_retired = self.c.is_retired(k)
        applied, resolved = self.c.apply(event, source, self.now)
        assert (applied is Applied.RETIRED) == was_retired
        if applied is Applied.RETIRED:
            assert resolved == [source]
        else:
            self.merged[k].append(event)
            # Every submission taken raised the floor when it was built, whatever its outcome.
            reported = [STATUS_NAMES.index(s.request.status or "") for s, _ in self.history[k]]
            self.floors[k].append(max(reported, default=PENDING))
            assert resolved in ([], [source])
            if applied is Applied.CHANGED:
                assert resolved == []
        self.resolve(resolved)

    @rule(dt=st.sampled_from([0, 1, LINGER // 2, LINGER, 2 * LINGER]))
    def advance(self, dt: int) -> None:
        self.now += dt

    @rule()
    def due(self) -> None:
        subs, resolved = self.c.due(self.now)
        self.resolve(resolved)
        self.take(subs)

    @precondition(lambda self: bool(self.flight))
    @rule(index=st.integers(0, 1_000), data=st.data())
    def complete(self, index: int, data: st.DataObject) -> None:
        result = data.draw(st.sampled_from(self.results))
        self.finish(index % len(self.flight), result)

    @rule(partition=st.integers(0, 1), rebalance=st.integers(0, 3))
    def revoke_and_reassign(self, partition: int, rebalance: int) -> None:
        """A rebalance takes ``partition`` away and gives it back: submissions of its records may
        still be in flight (a drain that timed out); its records are read again from the committed
        offset, under a new epoch, while those old submissions finish later."""
        if rebalance:  # rebalances are rare: keep most runs long enough to build history
            return
        self.commit()
        before = set(self.c.keys())
        resolved = self.c.drop(lambda s: s.partition == partition)
        for k in before - set(self.c.keys()):
            self.gen[k] += 1
            self.merged[k] = []
            self.floors[k] = []
            self.history[k] = []
        self.resolve(resolved)
        self.book.revoke([(TOPIC, partition)])
        self.book.assign([(TOPIC, partition)])
        for offset, k, event in self.log[partition]:
            if offset >= self.committed[partition]:
                self.read(partition, offset, k, event)

    @rule()
    def commit(self) -> None:
        moves = self.book.to_commit()
        self.book.mark_committed(moves)
        for (_, partition), offset in moves.items():
            assert offset >= self.committed[partition], "a commit went backwards"
            self.committed[partition] = offset

    @invariant()
    def commit_never_passes_unresolved_work(self) -> None:
        """The committable offset of a partition never passes a record whose change, read under
        the current epoch, is not resolved yet (a stale completion released nothing)."""
        for partition in (0, 1):
            epoch = self.book.epoch(TOPIC, partition)
            pending = [
                s.offset
                for s in self.applied
                if s.partition == partition and s.epoch == epoch and s not in self.returned
            ]
            committable = self.book.to_commit().get((TOPIC, partition), self.committed[partition])
            if pending:
                assert committable <= min(pending), (partition, committable, min(pending))

    @invariant()
    def bounded(self) -> None:
        assert self.c.active_count == len(self.c.keys()) <= len(TASKS)
        assert not self.c.enforce_cap()
        assert len(self.c.in_flight()) <= len(self.flight)

    def teardown(self) -> None:
        # First let time alone drive every pending change out (liveness without flush_all)...
        for _ in range(10):
            while self.flight:
                self.finish(0, "acknowledged")
            self.now += LINGER
            subs, resolved = self.c.due(self.now)
            self.resolve(resolved)
            self.take(subs)
            if not subs and self.c.next_due_at() is None:
                break
        self.assert_all_returned_but_pinned("pending changes never became due")
        # ... then drain as the pipeline does on shutdown: nothing may be left but what waits.
        self.c.set_linger(0)
        for _ in range(10):
            self.c.flush_all(self.now)
            subs, resolved = self.c.due(self.now)
            self.resolve(resolved)
            self.take(subs)
            if not subs:
                break
            while self.flight:
                self.finish(0, "acknowledged")
        assert self.c.next_due_at() is None
        assert self.c.in_flight() == []
        self.assert_all_returned_but_pinned("sources never handed back")
        for k in TASKS:
            self.check_converged(k)
        # A revocation gives up what waits (never-reported tasks): then every source is back.
        self.resolve(self.c.drop(lambda s: True))
        assert self.returned == set(self.applied)

    def assert_all_returned_but_pinned(self, why: str) -> None:
        """Every source is back, but those of tasks never reported (still PENDING), which stay
        claimed so that a new owner reads their history again."""
        pinned = self.c.pinned()
        for source in set(self.applied) - self.returned:
            assert (source.topic, source.partition, source.offset) in pinned, why
            k = self.applied[source]
            assert reference_status(self.merged[k], self.floors[k])[0] == PENDING, why

    def check_converged(self, k: TaskKey) -> None:
        state = model_state(k, self.merged[k], self.floors[k])
        expected = build_request(state)
        rank, containers = reference_status(self.merged[k], self.floors[k])
        assert state.rank == rank
        hist = self.history[k]
        if rank == PENDING:
            assert hist == []
            return
        assert hist, "a RUNNING or STOPPED task was never submitted"
        last, result = hist[-1]
        acked = self.last_acked(k)
        assert result is not None
        assert expected in (last.request, acked.request if acked else None)
        if result == "acknowledged":
            assert acked is last
            assert last.request == expected
        assert expected.status == STATUS_NAMES[rank]
        assert {x.containerName: x.status for x in expected.containers or ()} == {
            n: STATUS_NAMES[r] for n, r in containers.items()
        }
        # (Retirement of STOPPED tasks is pinned by the deterministic tests above.)
        if rank == RUNNING:
            assert not self.c.is_retired(k)


class AcknowledgingMachine(CoalescerMachine):
    """ECS acknowledges everything: the last acknowledged submission is the whole merged state."""

    results: tuple[OutcomeResult, ...] = ("acknowledged",)

    def check_converged(self, k: TaskKey) -> None:
        super().check_converged(k)
        events = self.merged[k]
        if not events or reference_status(events, self.floors[k])[0] == PENDING:
            return
        state = model_state(k, events, self.floors[k])
        acked = self.last_acked(k)
        assert acked is not None
        assert acked.request == build_request(state)


_machine_settings = settings(max_examples=20, stateful_step_count=40, deadline=None)


def test_coalescer_random_sequences_all_results() -> None:
    run_state_machine_as_test(CoalescerMachine, settings=_machine_settings)


def test_coalescer_random_sequences_all_acknowledged() -> None:
    run_state_machine_as_test(AcknowledgingMachine, settings=_machine_settings)


def test_drop_keeps_a_task_that_also_answers_for_owned_partitions() -> None:
    c = make()
    c.apply(ev("t1", cc("a", "RUNNING")), src(0, partition=0), 0)
    c.apply(ev("t1", cc("b", "RUNNING")), src(5, partition=1), 0)
    # Partition 1 is revoked: its source is given up, but t1 still answers for offset 0 of
    # partition 0, which must not be committed before t1's change is reported.
    assert c.drop(lambda s: s[1] == 1) == [src(5, partition=1)]
    assert list(c.keys()) == [key("t1")]
    submission = submit_one(c, LINGER)
    assert submission.sources == [src(0, partition=0)]
    assert {x.containerName for x in submission.request.containers or ()} == {"a", "b"}
