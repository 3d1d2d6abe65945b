"""Knowing the whole task (worker.agent_rules, worker.knowledge, the coalescer's learn_* methods):
the definition's container set, ECS's own view, the agent's status and restart rules. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.events import ContainerChange, TaskEvent
from worker.agent_rules import PENDING, RUNNING, STOPPED, earliest_rank, should_restart
from worker.coalesce import Applied, Coalescer
from worker.task_definition import (
    ContainerDefinition,
    EcsTaskView,
    TaskDefinition,
    definition_from_botocore,
    view_from_botocore,
)
from worker.work import SourceRef, Submission

S = 1_000_000_000
LINGER = 100
CLUSTER = "c"
TASK = "arn:aws:ecs:us-east-1:111122223333:task/c/0123456789abcdef0123456789abcdef"
DEF_ARN = "arn:aws:ecs:us-east-1:111122223333:task-definition/web:3"
KEY = (CLUSTER, TASK)


def definition(*containers: dict[str, Any]) -> TaskDefinition:
    return definition_from_botocore(
        {"taskDefinition": {"taskDefinitionArn": DEF_ARN, "containerDefinitions": list(containers)}}
    )


INIT_APP = definition(
    {"name": "init", "essential": False},
    {"name": "app", "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
)
ENVOY_APP = definition(
    {"name": "envoy", "healthCheck": {"command": ["CMD", "true"]}},
    {"name": "app", "dependsOn": [{"containerName": "envoy", "condition": "HEALTHY"}]},
)
RESTARTING = definition(
    {"name": "app", "restartPolicy": {"enabled": True, "ignoredExitCodes": [0], "restartAttemptPeriod": 300}},
    {"name": "log", "essential": False},
)


def ev(t_s: float, *changes: ContainerChange, **members: Any) -> TaskEvent:
    return TaskEvent(
        cluster=CLUSTER,
        task=TASK,
        observedAt=int(t_s * S),
        containers=changes,
        taskDefinitionArn=DEF_ARN,
        **members,
    )


def cc(name: str, status: str | None = None, **members: Any) -> ContainerChange:
    return ContainerChange(containerName=name, status=status, **members)  # type: ignore[arg-type]


class Run:
    """A coalescer driven by event times (seconds); every submission is acknowledged."""

    def __init__(self, known: TaskDefinition | None = INIT_APP, **options: Any) -> None:
        options = {"describe": True, "settle_ns": 45 * S, "stop_linger_ns": 35 * S} | options
        self.c = Coalescer(linger_ns=LINGER, max_active_tasks=10, retired_cap=10, **options)
        if known is not None:
            self.c.definitions.put(known.arn, known)
        self.offset = 0
        self.now = 0
        self.sent: list[Submission] = []
        self.resolved: list[SourceRef] = []

    def apply(self, event: TaskEvent) -> Applied:
        self.now = max(self.now, event.observedAt)
        self.flush(self.now)
        self.offset += 1
        applied, _ = self.c.apply(event, SourceRef("in", 0, self.offset, 1), self.now)
        return applied

    def flush(self, until: int) -> None:
        while (due := self.c.next_due_at()) is not None and due <= until:
            ready, resolved = self.c.due(due)
            self.resolved.extend(resolved)
            for submission in ready:
                self.sent.append(submission)
                self.resolved.extend(self.c.complete(submission, "acknowledged", due))

    def statuses(self) -> list[tuple[str | None, dict[str, str | None]]]:
        return [
            (s.request.status, {c.containerName or "": c.status for c in s.request.containers or ()})
            for s in self.sent
        ]


# -- the agent's rules ------------------------------------------------------------------------------


def test_task_status_counts_every_container_of_the_definition() -> None:
    assert earliest_rank({"init": STOPPED}, INIT_APP) == PENDING  # app never seen
    assert earliest_rank({"init": STOPPED, "app": RUNNING}, INIT_APP) == RUNNING
    assert earliest_rank({"init": STOPPED, "app": STOPPED}, INIT_APP) == STOPPED
    assert earliest_rank({"init": STOPPED}, None) == STOPPED  # without a definition: what was seen
    assert earliest_rank({}, None) == PENDING


@pytest.mark.parametrize(
    ("exit_code", "stop_requested", "ran_s", "restarts"),
    [
        (1, False, 400, True),
        (1, False, 299, False),  # inside the attempt period: not restarted
        (0, False, 400, False),  # an ignored exit code
        (1, True, 400, False),  # a stop was asked of it
        (None, False, 400, False),  # no exit code
    ],
)
def test_restart_decision_follows_the_agents_restart_tracker(
    exit_code: int | None, stop_requested: bool, ran_s: int, restarts: bool
) -> None:
    app = RESTARTING.containers["app"]
    timing: dict[str, Any] = {"task_stopping": False, "started_at": 0, "exited_at": ran_s * S}
    assert should_restart(app, exit_code=exit_code, stop_requested=stop_requested, **timing) is restarts
    assert not should_restart(RESTARTING.containers["log"], exit_code=1, stop_requested=False, **timing)
    # The task stopping (an essential container stopped) sets every desired status to STOPPED.
    stopping = timing | {"task_stopping": True}
    assert not should_restart(app, exit_code=exit_code, stop_requested=stop_requested, **stopping)


def test_definitions_and_views_are_read_from_botocore_answers() -> None:
    assert INIT_APP.containers["init"] == ContainerDefinition(name="init", essential=False)
    assert INIT_APP.containers["app"].essential
    assert INIT_APP.dependents("init") == ["app"]
    assert RESTARTING.containers["app"].restartPolicy is not None
    assert ENVOY_APP.containers["envoy"].healthCheck
    view = view_from_botocore(
        {
            "taskArn": TASK,
            "lastStatus": "RUNNING",
            "containers": [{"name": "app", "lastStatus": "RUNNING", "exitCode": None, "cpu": "0"}],
        }
    )
    assert view.containers[0].name == "app"
    assert view.executionStoppedAt is None
    stopped_at = datetime(2026, 11, 30, 8, 0, 1, 500000, tzinfo=UTC)  # botocore parses timestamps
    stopping = view_from_botocore({"taskArn": TASK, "executionStoppedAt": stopped_at})
    assert stopping.executionStoppedAt == stopped_at
    with pytest.raises(ValueError, match="not a task definition"):
        definition_from_botocore({"taskDefinition": {"family": "x"}})


# -- the scenarios, on the pure core ------------------------------------------------------------


def test_an_init_container_that_completed_does_not_stop_the_task() -> None:
    run = Run(INIT_APP)
    run.apply(ev(0, cc("init", "CREATED")))
    run.apply(ev(1, cc("init", "RUNNING")))
    run.apply(ev(3, cc("init", "STOPPED", exitCode=0)))
    run.flush(10 * S)
    assert run.sent == []  # init done, app not created yet: still PENDING
    run.apply(ev(12, cc("app", "CREATED")))
    run.apply(ev(13, cc("app", "RUNNING")))
    run.flush(20 * S)
    assert run.statuses() == [("RUNNING", {"app": "RUNNING", "init": "STOPPED"})]
    run.apply(ev(50, cc("app", "STOPPED", exitCode=0)))
    run.flush(60 * S)
    assert [s for s, _ in run.statuses()] == ["RUNNING", "STOPPED"]
    assert run.c.is_retired(KEY)


def test_a_sidecar_gate_is_not_reported_running_before_the_app_exists() -> None:
    run = Run(ENVOY_APP)
    run.apply(ev(0, cc("envoy", "CREATED")))
    run.apply(ev(1, cc("envoy", "RUNNING")))
    run.flush(30 * S)  # envoy healthy after a while; app created only then
    assert run.sent == []
    run.apply(ev(31, cc("app", "CREATED")))
    run.apply(ev(32, cc("app", "RUNNING")))
    run.flush(40 * S)
    assert run.statuses() == [("RUNNING", {"app": "RUNNING", "envoy": "RUNNING"})]


def test_ten_staggered_containers_cost_one_running_call() -> None:
    names = [f"c{i}" for i in range(10)]
    ten = definition(*({"name": n} for n in names))
    run = Run(ten)
    for i, name in enumerate(names):
        run.apply(ev(i * 0.8, cc(name, "CREATED")))
        run.apply(ev(i * 0.8 + 0.1, cc(name, "RUNNING")))
    run.flush(20 * S)
    assert run.statuses() == [("RUNNING", dict.fromkeys(names, "RUNNING"))]


def test_a_restart_under_the_restart_policy_is_not_reported() -> None:
    run = Run(RESTARTING)
    run.apply(ev(0, cc("app", "CREATED"), cc("log", "CREATED")))
    run.apply(ev(1, cc("app", "RUNNING"), cc("log", "RUNNING")))
    run.flush(5 * S)
    assert len(run.sent) == 1
    run.apply(ev(401, cc("app", "STOPPED", exitCode=1)))  # ran 400 s: restarted by the agent
    run.apply(ev(402, cc("app", "RUNNING")))
    run.flush(500 * S)
    assert len(run.sent) == 1  # nothing to say
    # The final stop: the agent asks the containers to stop (kill), then they die.
    run.apply(ev(900, cc("app", stopRequested=True), cc("log", stopRequested=True)))
    run.apply(ev(901, cc("app", "STOPPED", exitCode=143), cc("log", "STOPPED", exitCode=143)))
    run.flush(1000 * S)
    assert run.statuses()[-1] == ("STOPPED", {"app": "STOPPED", "log": "STOPPED"})
    assert [c.exitCode for c in run.sent[-1].request.containers or ()] == [143, 143]
    assert len(run.sent) == 2


def test_an_exit_held_for_a_restart_becomes_final_when_a_stop_follows() -> None:
    run = Run(RESTARTING)
    run.apply(ev(0, cc("app", "RUNNING"), cc("log", "CREATED")))
    run.c.learn_view(KEY, None, run.now)  # (the start was missed: no ECS view here)
    run.apply(ev(1, cc("log", "RUNNING")))
    run.apply(ev(400, cc("app", "STOPPED", exitCode=1)))  # held: a restart is expected...
    run.apply(ev(401, cc("app", stopRequested=True)))  # ... but the agent stops it instead
    run.apply(ev(402, cc("log", "STOPPED", exitCode=0)))
    run.flush(2000 * S)
    final = run.sent[-1].request
    assert final.status == "STOPPED"
    assert {c.containerName: c.exitCode for c in final.containers or ()} == {"app": 1, "log": 0}


def test_an_essential_exit_waits_for_the_tasks_stopped_and_dates_execution_stop() -> None:
    run = Run(INIT_APP)
    run.apply(ev(0, cc("init", "CREATED")))
    run.apply(ev(1, cc("init", "RUNNING")))
    run.apply(ev(2, cc("init", "STOPPED", exitCode=0)))
    run.apply(ev(3, cc("app", "CREATED")))
    run.apply(ev(4, cc("app", "RUNNING")))
    run.flush(10 * S)
    assert len(run.sent) == 1
    run.apply(ev(100, cc("app", "STOPPED", exitCode=2)))  # essential: STOPPED is derived at once
    run.flush(200 * S)
    assert [s for s, _ in run.statuses()] == ["RUNNING", "STOPPED"]
    assert run.sent[-1].request.executionStoppedAt is not None
    assert run.sent[-1].request.executionStoppedAt.timestamp() == 100


def test_a_stopping_task_spends_no_call_on_its_intermediate_state() -> None:
    two = definition({"name": "app"}, {"name": "sidecar", "essential": False})
    run = Run(two)
    run.apply(ev(0, cc("app", "CREATED"), cc("sidecar", "CREATED")))
    run.apply(ev(1, cc("app", "RUNNING"), cc("sidecar", "RUNNING")))
    run.apply(ev(50, cc("app", "STOPPED", exitCode=1)))
    run.flush(75 * S)
    assert len(run.sent) == 1  # RUNNING only: the essential exit waits for the STOPPED
    run.apply(ev(80, cc("sidecar", "STOPPED", exitCode=143)))  # the agent stops it 30 s later
    run.flush(200 * S)
    assert run.statuses() == [
        ("RUNNING", {"app": "RUNNING", "sidecar": "RUNNING"}),
        ("STOPPED", {"app": "STOPPED", "sidecar": "STOPPED"}),
    ]


def test_containers_outside_the_definition_are_never_reported() -> None:
    run = Run(INIT_APP)
    run.apply(ev(0, cc("~internal~ecs~pause", "RUNNING"), cc("init", "CREATED")))
    run.apply(ev(1, cc("init", "STOPPED", exitCode=0), cc("app", "CREATED")))
    run.apply(ev(2, cc("app", "RUNNING")))
    run.flush(10 * S)
    assert run.statuses() == [("RUNNING", {"app": "RUNNING", "init": "STOPPED"})]


# -- holding for the definition, asking for ECS's view -------------------------------------------------


def test_events_wait_for_their_definition() -> None:
    run = Run(None)
    assert run.apply(ev(0, cc("init", "CREATED"))) is Applied.HELD
    assert run.apply(ev(1, cc("init", "STOPPED", exitCode=0))) is Applied.HELD
    assert run.c.take_wants() == ([DEF_ARN], [])
    assert run.c.take_wants() == ([], [])  # asked once
    run.resolved.extend(run.c.learn_definition(DEF_ARN, INIT_APP, run.now))
    run.flush(10 * S)
    assert run.sent == []  # app never seen: not STOPPED, not RUNNING
    assert run.resolved == []  # never reported: its history stays claimed for a new owner


def test_a_missed_start_asks_ecs_and_neither_repeats_nor_contradicts_it() -> None:
    """A rolling restart: the new owner first sees app's exit. ECS's view (reported by the previous
    owner) has both containers RUNNING: the task is not STOPPED until the sidecar stops too."""
    two = definition({"name": "app"}, {"name": "sidecar", "essential": False})
    run = Run(two, stop_linger_ns=0)
    run.apply(ev(100, cc("app", "STOPPED", exitCode=1)))
    assert run.c.take_wants() == ([], [KEY])
    run.flush(200 * S)
    assert run.sent == []  # waits for ECS's view
    view = EcsTaskView(
        taskArn=TASK,
        lastStatus="RUNNING",
        containers=(
            view_from_botocore(
                {"taskArn": TASK, "containers": [{"name": "app", "lastStatus": "RUNNING"}]}
            ).containers[0],
            view_from_botocore(
                {"taskArn": TASK, "containers": [{"name": "sidecar", "lastStatus": "RUNNING"}]}
            ).containers[0],
        ),
    )
    run.c.learn_view(KEY, view, run.now)
    run.flush(300 * S)
    assert run.statuses() == [("RUNNING", {"app": "STOPPED", "sidecar": "RUNNING"})]
    run.apply(ev(310, cc("sidecar", "STOPPED", exitCode=143)))
    run.flush(400 * S)
    assert [s for s, _ in run.statuses()] == ["RUNNING", "STOPPED"]


def test_a_view_equal_to_what_ecs_shows_is_not_sent_again() -> None:
    run = Run(INIT_APP)
    run.apply(ev(100, cc("app", "RUNNING")))  # a cold start mid-lifecycle
    assert run.c.take_wants() == ([], [KEY])
    view = view_from_botocore(
        {
            "taskArn": TASK,
            "lastStatus": "RUNNING",
            "containers": [
                {"name": "init", "lastStatus": "STOPPED", "exitCode": 0},
                {"name": "app", "lastStatus": "RUNNING"},
            ],
        }
    )
    run.resolved.extend(run.c.learn_view(KEY, view, run.now))
    run.flush(200 * S)
    assert run.sent == []  # ECS already shows exactly this
    assert run.resolved == [SourceRef("in", 0, 1, 1)]


def test_a_task_ecs_shows_stopped_causes_no_call() -> None:
    run = Run(INIT_APP)
    run.apply(ev(9000, cc("app", "STOPPED")))  # the agent's cleanup, hours after the stop
    view = view_from_botocore({"taskArn": TASK, "lastStatus": "STOPPED", "containers": []})
    assert run.c.learn_view(KEY, view, run.now) == [SourceRef("in", 0, 1, 1)]
    assert run.c.is_retired(KEY)
    assert run.apply(ev(9001, cc("init", "STOPPED"))) is Applied.RETIRED
    run.flush(10_000 * S)
    assert run.sent == []


def test_a_task_unknown_to_ecs_retires_without_a_call() -> None:
    run = Run(INIT_APP)
    run.apply(ev(9000, cc("app", "STOPPED")))
    assert run.c.learn_missing(KEY) == [SourceRef("in", 0, 1, 1)]
    assert run.c.is_retired(KEY)


def test_without_ecs_a_partial_view_waits_for_the_settle_time() -> None:
    """Describe denied: a task first seen at its app's exit, init never seen. Its STOPPED is not
    derived until the task has been quiet for the settle time; then from the containers seen."""
    run = Run(INIT_APP)
    run.apply(ev(100, cc("app", "RUNNING")))
    run.c.learn_view(KEY, None, run.now)  # denied
    run.flush(110 * S)
    assert run.sent == []  # init never seen: not RUNNING
    run.apply(ev(120, cc("app", "STOPPED", exitCode=0)))
    run.flush(120 * S + 44 * S)
    assert run.sent == []  # quiet for 44 s: not yet
    run.flush(120 * S + 46 * S)
    assert run.statuses() == [("STOPPED", {"app": "STOPPED"})]


def test_without_a_definition_a_partial_view_also_settles() -> None:
    run = Run(None, describe=False)
    run.apply(TaskEvent(cluster=CLUSTER, task=TASK, observedAt=100 * S, containers=(cc("a", "STOPPED"),)))
    run.flush(100 * S + LINGER)
    assert run.sent == []  # first seen at its exit: held for the settle time
    run.flush(150 * S)
    assert run.statuses() == [("STOPPED", {"a": "STOPPED"})]


def test_a_task_followed_from_its_creation_asks_nothing() -> None:
    run = Run(INIT_APP)
    run.apply(ev(0, cc("init", "CREATED")))
    run.apply(ev(1, cc("init", "RUNNING")))
    assert run.c.take_wants() == ([], [])


def test_a_dependent_seen_before_its_dependency_shows_a_missed_history() -> None:
    run = Run(INIT_APP)
    run.apply(ev(10, cc("app", "CREATED")))  # init's whole life was before this process read it
    assert run.c.take_wants() == ([], [KEY])


def test_a_duplicated_exit_from_before_a_restart_is_stale() -> None:
    """A shipper delivers the restarted container's ``die`` twice, the copy after its new ``start``:
    the copy is older than the restart and changes nothing."""
    run = Run(RESTARTING)
    run.apply(ev(0, cc("app", "CREATED"), cc("log", "CREATED")))
    run.apply(ev(1, cc("app", "RUNNING"), cc("log", "RUNNING")))
    run.apply(ev(401, cc("app", "STOPPED", exitCode=1)))
    run.apply(ev(402, cc("app", "RUNNING")))
    run.apply(ev(401, cc("app", "STOPPED", exitCode=1)))  # the copy, delivered late
    run.flush(1000 * S)
    assert run.statuses() == [("RUNNING", {"app": "RUNNING", "log": "RUNNING"})]
