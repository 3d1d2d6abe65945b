"""TaskState / ContainerState: how events merge into one task's known state (worker.task_state)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.ecs import NetworkBinding
from schemas.events import (
    AttachmentChange,
    ContainerChange,
    ContainerStatus,
    ManagedAgentChange,
    TaskEvent,
    TaskStatus,
)
from worker.task_state import (
    CONTAINER_RANK,
    PENDING,
    RUNNING,
    STATUS_NAMES,
    STOPPED,
    TASK_RANK,
    ContainerState,
    TaskState,
)

KEY = ("demo", "arn:aws:ecs:us-east-1:123456789012:task/demo/abc")
CONTAINER_STATUSES: tuple[str, ...] = tuple(CONTAINER_RANK)
TASK_STATUSES: tuple[str, ...] = tuple(TASK_RANK)


def event(observed_at: int = 1, *containers: ContainerChange, **members: Any) -> TaskEvent:
    return TaskEvent(cluster=KEY[0], task=KEY[1], observedAt=observed_at, containers=containers, **members)


def cc(name: str, status: str | None = None, **members: Any) -> ContainerChange:
    return ContainerChange(containerName=name, status=status, **members)  # type: ignore[arg-type]


def state(*events: TaskEvent) -> TaskState:
    s = TaskState(KEY)
    for e in events:
        s.merge(e)
    return s


# -- ranks ------------------------------------------------------------------------------------------


def test_status_names_follow_rank_order() -> None:
    assert (PENDING, RUNNING, STOPPED) == (0, 1, 2)
    assert STATUS_NAMES == ("PENDING", "RUNNING", "STOPPED")


@pytest.mark.parametrize("status", ["NONE", "PENDING", "MANIFEST_PULLED", "PULLED", "CREATED"])
def test_runtime_level_container_states_count_as_pending(status: str) -> None:
    assert CONTAINER_RANK[status] == PENDING
    s = state(event(1, cc("app", status)))
    assert s.containers["app"].rank == PENDING
    assert s.rank == PENDING


def test_container_rank_covers_every_schema_status() -> None:
    assert set(CONTAINER_RANK) == set(get_args(ContainerStatus))
    assert set(TASK_RANK) == set(get_args(TaskStatus))
    assert CONTAINER_RANK["RUNNING"] == RUNNING
    assert CONTAINER_RANK["STOPPED"] == STOPPED
    assert TASK_RANK["RUNNING"] == RUNNING
    assert TASK_RANK["STOPPED"] == STOPPED
    assert TASK_RANK["PROVISIONING"] == PENDING


# -- container merge --------------------------------------------------------------------------------


def test_container_status_never_goes_backwards() -> None:
    c = ContainerState()
    assert c.merge(cc("app", "STOPPED", exitCode=1))
    assert c.rank == STOPPED
    assert not c.merge(cc("app", "RUNNING"))
    assert not c.merge(cc("app", "CREATED"))
    assert c.rank == STOPPED
    assert c.exit_code == 1


def test_lower_rank_event_only_fills_unknown_members() -> None:
    c = ContainerState()
    c.merge(cc("app", "RUNNING", runtimeId="new-id"))
    changed = c.merge(cc("app", "CREATED", runtimeId="old-id", imageDigest="sha256:abc", reason="late"))
    assert changed
    assert c.rank == RUNNING
    assert c.runtime_id == "new-id"  # known: kept
    assert c.image_digest == "sha256:abc"  # unknown: filled
    assert c.reason == "late"
    # Nothing left to fill: the same late event again changes nothing.
    assert not c.merge(cc("app", "CREATED", runtimeId="old-id", imageDigest="sha256:zzz"))
    assert c.image_digest == "sha256:abc"


def test_same_or_higher_rank_event_updates_members() -> None:
    c = ContainerState()
    c.merge(cc("app", "RUNNING", reason="starting"))
    assert c.merge(cc("app", "RUNNING", reason="healthy"))
    assert c.reason == "healthy"
    binding = (NetworkBinding(containerPort=80, hostPort=8080, protocol="tcp"),)
    assert c.merge(cc("app", "STOPPED", exitCode=137, reason="OOM", networkBindings=binding))
    assert (c.rank, c.exit_code, c.reason, c.network_bindings) == (STOPPED, 137, "OOM", binding)


def test_absent_members_mean_not_observed() -> None:
    c = ContainerState()
    c.merge(cc("app", "RUNNING", runtimeId="r1", reason="x"))
    assert not c.merge(cc("app", "RUNNING"))
    assert (c.runtime_id, c.reason) == ("r1", "x")


def test_status_less_change_after_running_only_fills() -> None:
    c = ContainerState()
    c.merge(cc("app", "RUNNING", runtimeId="r1"))
    assert c.merge(cc("app", None, runtimeId="r2", imageDigest="d"))
    assert (c.rank, c.runtime_id, c.image_digest) == (RUNNING, "r1", "d")


# -- task status ------------------------------------------------------------------------------------


def test_new_task_is_pending() -> None:
    s = TaskState(KEY)
    assert s.rank == PENDING
    assert not s.containers


def test_derived_status_is_the_lowest_container_status() -> None:
    s = state(event(1, cc("app", "RUNNING"), cc("sidecar", "CREATED")))
    assert s.rank == PENDING
    s.merge(event(2, cc("sidecar", "RUNNING")))
    assert s.rank == RUNNING
    s.merge(event(3, cc("app", "STOPPED")))
    assert s.rank == RUNNING  # not every known container stopped
    s.merge(event(4, cc("sidecar", "STOPPED")))
    assert s.rank == STOPPED


def test_container_without_status_keeps_task_pending() -> None:
    s = state(event(1, cc("app", "RUNNING"), cc("sidecar", None, runtimeId="x")))
    assert s.rank == PENDING


def test_explicit_task_status_wins_over_derived() -> None:
    s = state(event(1, cc("app", "RUNNING"), cc("sidecar", "CREATED"), status="RUNNING"))
    assert s.rank == RUNNING
    s.merge(event(2, status="STOPPED"))
    assert s.rank == STOPPED
    assert s.containers["app"].rank == RUNNING


def test_explicit_status_without_containers() -> None:
    s = state(event(1, status="RUNNING"))
    assert s.rank == RUNNING
    assert s.explicit_rank == RUNNING


@pytest.mark.parametrize("status", ["DEACTIVATING", "STOPPING", "DEPROVISIONING"])
def test_stopping_phases_are_not_stopped(status: str) -> None:
    s = state(event(1, status=status))
    assert s.rank == RUNNING


def test_task_status_never_goes_backwards() -> None:
    s = state(event(1, cc("app", "RUNNING")))
    assert s.rank == RUNNING
    # A new, still pending container does not take the task back to PENDING.
    assert s.merge(event(2, cc("late", "CREATED")))
    assert s.rank == RUNNING
    # Nor does an explicit lower status.
    s.merge(event(3, status="PENDING"))
    assert s.rank == RUNNING
    s.merge(event(4, status="STOPPED"))
    s.merge(event(5, status="RUNNING"))
    assert s.rank == STOPPED


def test_explicit_status_change_is_reported_as_changed() -> None:
    s = state(event(1, cc("app", "CREATED")))
    assert s.merge(event(2, status="RUNNING"))
    assert not s.merge(event(3, status="RUNNING"))
    assert not s.merge(event(4, status="PENDING"))


# -- other members ---------------------------------------------------------------------------------


def test_reason_and_attachments_merge() -> None:
    s = TaskState(KEY)
    assert s.merge(event(1, reason="r1"))
    assert not s.merge(event(2, reason="r1"))
    a = AttachmentChange(attachmentArn="arn:eni", status="ATTACHING")
    assert s.merge(event(5, attachments=(a,)))
    assert s.attachments == {"arn:eni": (5, "ATTACHING")}
    # An older observation of another status does not win over a newer one.
    assert not s.merge(
        event(3, attachments=(AttachmentChange(attachmentArn="arn:eni", status="PRECREATED"),))
    )
    assert s.attachments["arn:eni"][1] == "ATTACHING"
    assert s.merge(event(6, attachments=(AttachmentChange(attachmentArn="arn:eni", status="ATTACHED"),)))
    assert s.attachments["arn:eni"] == (6, "ATTACHED")


def test_managed_agents_never_go_backwards() -> None:
    s = TaskState(KEY)
    running = ManagedAgentChange(
        containerName="app", managedAgentName="ExecuteCommandAgent", status="RUNNING"
    )
    pending = ManagedAgentChange(
        containerName="app", managedAgentName="ExecuteCommandAgent", status="PENDING"
    )
    stopped = ManagedAgentChange(
        containerName="app", managedAgentName="ExecuteCommandAgent", status="STOPPED", reason="bye"
    )
    assert s.merge(event(1, managedAgents=(running,)))
    assert not s.merge(event(2, managedAgents=(running,)))
    assert not s.merge(event(3, managedAgents=(pending,)))
    assert (s.managed_agents or {})[("app", "ExecuteCommandAgent")].status == "RUNNING"
    assert s.merge(event(4, managedAgents=(stopped,)))
    agent = (s.managed_agents or {})[("app", "ExecuteCommandAgent")]
    assert (agent.status, agent.reason, agent.rank) == ("STOPPED", "bye", STOPPED)
    assert not s.merge(event(5, managedAgents=(running,)))


def test_first_pull_start_and_execution_stop_win() -> None:
    t1 = datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)
    t2 = datetime(2024, 1, 1, 0, 0, 2, tzinfo=UTC)
    s = TaskState(KEY)
    assert s.merge(event(1, pullStartedAt=t1, executionStoppedAt=t1))
    assert not s.merge(event(2, pullStartedAt=t2, executionStoppedAt=t2))
    assert (s.pull_started_at, s.execution_stopped_at) == (t1, t1)
    assert s.merge(event(3, pullStoppedAt=t2))
    assert s.pull_stopped_at == t2


# -- properties -------------------------------------------------------------------------------------

_names = st.sampled_from(["app", "sidecar", "init"])
_container_changes = st.builds(
    ContainerChange,
    containerName=_names,
    status=st.none() | st.sampled_from(CONTAINER_STATUSES),
    runtimeId=st.none() | st.sampled_from(["r1", "r2"]),
    exitCode=st.none() | st.sampled_from([0, 1, 137]),
    reason=st.none() | st.sampled_from(["a", "b"]),
)
_events = st.builds(
    TaskEvent,
    cluster=st.just(KEY[0]),
    task=st.just(KEY[1]),
    observedAt=st.integers(0, 100),
    status=st.none() | st.sampled_from(TASK_STATUSES),
    # One change per container per event, as every decoder emits.
    containers=st.lists(_container_changes, max_size=3, unique_by=lambda c: c.containerName).map(tuple),
)


@settings(max_examples=25, deadline=None)
@given(st.lists(_events, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_statuses_are_order_independent_and_monotone(events: list[TaskEvent], rnd: Any) -> None:
    """Container statuses are the highest seen whatever the order; the task status never drops and
    is at least the highest explicit status; a status is only ever one of the three names."""
    shuffled = list(events)
    rnd.shuffle(shuffled)
    a, b = TaskState(KEY), TaskState(KEY)
    ranks: list[int] = []
    for e in events:
        a.merge(e)
        ranks.append(a.rank)
    for e in shuffled:
        b.merge(e)
    assert ranks == sorted(ranks)
    assert {n: c.rank for n, c in a.containers.items()} == {n: c.rank for n, c in b.containers.items()}
    expected: dict[str, int] = {}
    for e in events:
        for change in e.containers:
            rank = CONTAINER_RANK[change.status] if change.status is not None else -1
            expected[change.containerName] = max(expected.get(change.containerName, -1), rank)
    assert {n: c.rank for n, c in a.containers.items()} == expected
    explicit = max((TASK_RANK[e.status] for e in events if e.status is not None), default=PENDING)
    assert a.rank >= explicit
    if expected and min(expected.values()) == STOPPED:
        assert a.rank == STOPPED
    if a.rank == STOPPED and explicit < STOPPED:
        # Derived STOPPED: at some point every known container was STOPPED.
        assert any(r == STOPPED for r in expected.values())


@settings(max_examples=25, deadline=None)
@given(st.lists(_events, min_size=1, max_size=10), _events)
def test_merging_the_same_event_twice_in_a_row_is_harmless(events: list[TaskEvent], last: TaskEvent) -> None:
    s = state(*events)
    s.merge(last)
    before = (
        {n: (c.rank, c.runtime_id, c.exit_code, c.reason) for n, c in s.containers.items()},
        s.rank,
        s.reason,
    )
    assert not s.merge(last)
    after = (
        {n: (c.rank, c.runtime_id, c.exit_code, c.reason) for n, c in s.containers.items()},
        s.rank,
        s.reason,
    )
    assert before == after


# -- bugs -------------------------------------------------------------------------------------------


def test_late_lower_rank_event_does_not_replace_task_reason() -> None:
    s = state(
        event(2, cc("app", "STOPPED", exitCode=1), status="STOPPED", reason="Essential container exited")
    )
    changed = s.merge(event(1, status="PENDING", reason="Task is provisioning"))
    assert s.reason == "Essential container exited"
    assert not changed


def test_redelivered_older_pull_stopped_at_is_harmless() -> None:
    older = event(1, pullStoppedAt=datetime(2024, 1, 1, 0, 0, 5, tzinfo=UTC))
    newer = event(2, pullStoppedAt=datetime(2024, 1, 1, 0, 0, 9, tzinfo=UTC))
    s = state(older, newer)
    kept = s.pull_stopped_at
    assert not s.merge(older)  # a duplicate of an event already merged
    assert s.pull_stopped_at == kept


def test_out_of_order_attachment_status_does_not_win_over_newer_one() -> None:
    def att(t: int, status: str) -> TaskEvent:
        return event(t, attachments=(AttachmentChange(attachmentArn="arn:eni", status=status),))

    s = state(att(1, "ATTACHED"), att(3, "ATTACHED"))
    s.merge(att(2, "PRECREATED"))  # observed before the newest observation (t=3): stale
    assert (s.attachments or {})["arn:eni"][1] == "ATTACHED"
