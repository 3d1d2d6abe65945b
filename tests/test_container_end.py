"""A container's end in any order, an ``oom`` inside a running container, and ECS Exec's managed
agent: Docker records decoded by the worker's own decoder and merged by a real ``Coalescer``
(pure; the clock is the rig's, in seconds).

The agent reports a container's STOPPED with the exit code and the OOM flag it reads from inspect;
Docker's events bring them apart (``kill``, ``oom``, ``die``, ``stop``), in whatever order the
shippers deliver them. Whatever the order, the final request must be the same."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.ecs import ManagedAgentStateChange, SubmitTaskStateChangeRequest
from schemas.events import TaskEvent
from tests.ecs_tasks import DockerTask
from tests.knowledge_rig import ARN, CLUSTER, KEY, T0, TASK, Rig, S, coalescer, shown
from worker.agent_rules import MANAGED_AGENT_STOPPED_REASON
from worker.decode import RecordDecoder, reasons
from worker.decode.event_builder import OOM_REASON
from worker.decode.exec_agent import EXEC_AGENT_CREATED, EXEC_AGENT_STARTED_REASON
from worker.intake import Intake
from worker.offsets import OffsetBook

EXIT_WAIT = 1.0
"""The rig's ``exit_wait`` in seconds."""
ALONE: list[dict[str, Any]] = [{"name": "app"}]
WITH_SIDECAR: list[dict[str, Any]] = [{"name": "app"}, {"name": "sidecar", "essential": False}]
DOCKER_ORDER = ("kill", "oom", "die", "stop")
"""The order Docker emits a container's end in (a stop asked first); observed 0.1 s apart."""
AGENT_COMMAND = "/ecs-execute-command-4b1a6b2e-0f5c-4c53-9bd4-2f4e0f6a1c3d/amazon-ssm-agent"

_decoder = RecordDecoder(input_format="docker", max_record_bytes=1 << 20)
_docker = DockerTask(CLUSTER, TASK, ARN)


def docker(container: str, action: str, at: float, exit_code: int | None = None) -> TaskEvent:
    """The one canonical event the worker decodes from Docker's ``action`` event, observed ``at``
    seconds after ``T0``."""
    decoded = _decoder.decode(_docker.event(container, action, at, exit_code=exit_code, base_ns=T0))
    assert decoded.bad == []
    assert decoded.ignored == []
    (event,) = decoded.events
    return event


def running_rig(containers: list[dict[str, Any]]) -> Rig:
    """Every container of ``containers`` created and started; the task's RUNNING acknowledged."""
    rig = Rig(
        coalescer(describe=False, settle_ns=45 * S, stop_linger_ns=35 * S, exit_wait_ns=int(EXIT_WAIT * S))
    )
    for i, spec in enumerate(containers):
        rig.feed(docker(spec["name"], "create", 0.1 * i))
        if i == 0:
            rig.learn_definitions(containers)
        rig.feed(docker(spec["name"], "start", 0.1 * i + 0.05))
    assert [s.request.status for s in rig.tick(2.0)] == ["RUNNING"]
    return rig


def final_request(
    containers: list[dict[str, Any]], ending: str, arrivals: tuple[str, ...], exit_code: int, step: float
) -> SubmitTaskStateChangeRequest:
    """The last request sent once ``ending``'s end events (observed in Docker's order from 10 s)
    arrived in the order ``arrivals``, ``step`` seconds apart from 10.5 s, time being taken after
    each, and long after the last."""
    rig = running_rig(containers)
    for i, action in enumerate(arrivals):
        at = 10.5 + i * step
        observed = 10.0 + 0.1 * DOCKER_ORDER.index(action)
        rig.feed(docker(ending, action, observed, exit_code if action == "die" else None), at=at)
        rig.tick(at)
    rig.tick(100.0)
    return rig.sent[-1][1].request


@settings(max_examples=300, deadline=None)
@given(
    containers=st.sampled_from([ALONE, WITH_SIDECAR]),
    present=st.sets(st.sampled_from(DOCKER_ORDER), min_size=1),
    exit_code=st.sampled_from([0, 1, 137, 143]),
    step_ms=st.integers(0, 300),
    data=st.data(),
)
def test_every_order_of_a_container_end_gives_the_same_final_request(
    containers: list[dict[str, Any]], present: set[str], exit_code: int, step_ms: int, data: st.DataObject
) -> None:
    """Any subset of kill, oom, die and stop, in any arrival order within the exit wait, gives the
    request Docker's own order gives: the exit code of the die, the OOM reason of the oom (an
    OOM kill exits 137), STOPPED once a die or stop came, and the first stop's observation as
    executionStoppedAt. ``app`` alone: the task's STOPPED, after which nothing more is sent;
    ``sidecar`` (not essential): the task stays RUNNING, later facts go in later requests."""
    ending = containers[-1]["name"]
    code = 137 if "oom" in present else exit_code
    in_docker_order = tuple(a for a in DOCKER_ORDER if a in present)
    arrivals = tuple(data.draw(st.permutations(in_docker_order)))
    expected = final_request(containers, ending, in_docker_order, code, step_ms / 1000)
    assert final_request(containers, ending, arrivals, code, step_ms / 1000) == expected
    (container,) = [c for c in expected.containers or () if c.containerName == ending]
    stopped = bool(present & {"die", "stop"})
    assert container.status == ("STOPPED" if stopped else "RUNNING")
    assert container.exitCode == (code if "die" in present else None)
    assert container.reason == (OOM_REASON if "oom" in present and stopped else None)
    assert expected.status == ("STOPPED" if stopped and ending == "app" else "RUNNING")
    first_stop = 10.2 if "die" in present else 10.3
    assert expected.executionStoppedAt == (
        datetime.fromtimestamp((T0 + int(first_stop * S)) / 1e9, tz=UTC)
        if stopped and ending == "app"
        else None
    )


def test_a_stop_before_its_die_waits_for_it_and_the_task_stopped_carries_the_exit_code() -> None:
    rig = running_rig(ALONE)
    rig.feed(docker("app", "stop", 10.3), at=10.5)
    assert rig.tick(10.5) == []  # the task is STOPPED, but its die has not come
    rig.feed(docker("app", "die", 10.2, exit_code=2), at=10.9)
    assert [shown(s) for s in rig.tick(10.9)] == ["STOPPED app=STOPPED(2)"]  # complete: at once
    late, _ = rig.feed(docker("app", "destroy", 11.0), at=11.0)
    assert late.value == "retired"


def test_a_stop_whose_die_never_comes_is_sent_after_the_exit_wait() -> None:
    rig = running_rig(ALONE)
    rig.feed(docker("app", "stop", 10.3), at=10.5)
    assert rig.tick(10.5 + EXIT_WAIT - 0.001) == []
    (sent,) = rig.tick(10.5 + EXIT_WAIT)
    assert [(c.status, c.exitCode) for c in sent.request.containers or ()] == [("STOPPED", None)]


def test_an_exit_137_waits_for_its_oom_and_one_without_is_sent_after_the_wait() -> None:
    rig = running_rig(ALONE)
    rig.feed(docker("app", "die", 10.2, exit_code=137), at=10.5)
    assert rig.tick(11.0) == []
    rig.feed(docker("app", "oom", 10.1), at=11.2)
    (sent,) = rig.tick(11.2)
    (container,) = sent.request.containers or ()
    assert (container.exitCode, container.reason) == (137, OOM_REASON)

    other = running_rig(ALONE)
    other.feed(docker("app", "die", 10.2, exit_code=137), at=10.5)
    (sent,) = other.tick(10.5 + EXIT_WAIT)
    assert [(c.exitCode, c.reason) for c in sent.request.containers or ()] == [(137, None)]


def test_a_fact_after_a_report_lands_in_the_next_request_while_the_task_runs() -> None:
    """The sidecar's stop waited its exit wait in vain and was reported; its die and oom, later,
    go in the next request, since the task is not STOPPED."""
    rig = running_rig(WITH_SIDECAR)
    rig.feed(docker("sidecar", "stop", 10.3), at=10.5)
    rig.tick(10.5 + EXIT_WAIT)
    assert rig.statuses()[-1] == "RUNNING app=RUNNING(None),sidecar=STOPPED(None)"
    rig.feed(docker("sidecar", "die", 10.2, exit_code=137), at=12.0)
    rig.feed(docker("sidecar", "oom", 10.1), at=12.1)
    rig.tick(13.0)
    sidecar = [c for c in rig.sent[-1][1].request.containers or () if c.containerName == "sidecar"]
    assert [(c.status, c.exitCode, c.reason) for c in sidecar] == [("STOPPED", 137, OOM_REASON)]


def test_draining_sends_a_stop_without_waiting_for_its_die() -> None:
    rig = running_rig(ALONE)
    rig.co.set_draining(True)
    rig.feed(docker("app", "stop", 10.3), at=10.5)
    assert [shown(s) for s in rig.tick(10.5)] == ["STOPPED app=STOPPED(None)"]


def test_an_oom_in_a_running_container_causes_no_call_and_marks_its_end() -> None:
    """An exec'd child is OOM-killed; the container lives on. No call, its record is resolved;
    when the container dies later its STOPPED carries the OOM reason (Docker keeps the container's
    OOMKilled flag until its next start, and the agent reads it at the end)."""
    rig = running_rig(WITH_SIDECAR)
    committed = rig.committable()
    applied, _ = rig.feed(docker("app", "oom", 5.0), at=5.0)
    assert applied.value == "unchanged"
    assert rig.tick(8.0) == []
    assert rig.committable() == (committed or 0) + 1  # resolved without a call
    rig.feed(docker("app", "die", 20.0, exit_code=1), at=20.0)
    rig.feed(docker("sidecar", "kill", 20.1), at=20.1)
    rig.feed(docker("sidecar", "die", 20.2, exit_code=143), at=20.2)
    rig.tick(21.0)
    request = rig.sent[-1][1].request
    assert request.status == "STOPPED"
    assert [(c.containerName, c.exitCode, c.reason) for c in request.containers or ()] == [
        ("app", 1, OOM_REASON),
        ("sidecar", 143, None),
    ]


def test_a_restart_forgets_the_oom_of_the_life_before() -> None:
    policy = {"enabled": True, "ignoredExitCodes": [], "restartAttemptPeriod": 10}
    rig = running_rig([{"name": "app", "restartPolicy": policy}])
    rig.feed(docker("app", "oom", 50.0), at=50.0)
    rig.feed(docker("app", "die", 50.1, exit_code=137), at=50.1)
    rig.feed(docker("app", "start", 51.0), at=51.0)  # restarted by the agent: nothing to report
    assert rig.tick(52.0) == []
    rig.feed(docker("app", "kill", 100.0), at=100.0)
    rig.feed(docker("app", "die", 100.1, exit_code=143), at=100.1)
    rig.tick(101.0)
    assert [(c.exitCode, c.reason) for c in rig.sent[-1][1].request.containers or ()] == [(143, None)]


# -- ECS Exec ------------------------------------------------------------------------------------


def decode(action: str, container: str = "app") -> tuple[list[TaskEvent], list[str]]:
    decoded = _decoder.decode(_docker.event(container, action, 5.0, base_ns=T0))
    assert decoded.bad == []
    return decoded.events, decoded.ignored


@pytest.mark.parametrize(
    "command",
    [AGENT_COMMAND, AGENT_COMMAND + " ", "C:\\Program Files\\Amazon\\SSM\\amazon-ssm-agent.exe"],
)
def test_the_managed_agents_exec_start_is_its_running(command: str) -> None:
    events, ignored = decode(f"exec_start: {command}")
    assert ignored == []
    (event,) = events
    assert (event.cluster, event.task, event.taskDefinitionArn, event.containers) == (CLUSTER, TASK, ARN, ())
    assert [(a.containerName, a.managedAgentName, a.status, a.reason) for a in event.managedAgents] == [
        ("app", "ExecuteCommandAgent", "RUNNING", EXEC_AGENT_STARTED_REASON)
    ]


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (f"exec_create: {AGENT_COMMAND}", EXEC_AGENT_CREATED),
        ("exec_create: /bin/sh -c ps", reasons.DOCKER_EXEC),
        ("exec_start: /bin/sh -c ps", reasons.DOCKER_EXEC),
        ("exec_start: /usr/bin/amazon-ssm-agent", reasons.DOCKER_EXEC),
        (f"exec_start: sh -c {AGENT_COMMAND}", reasons.DOCKER_EXEC),
        ("exec_die", reasons.DOCKER_EXEC),
        ("exec_detach", reasons.DOCKER_EXEC),
    ],
)
def test_other_exec_events_are_ignored_with_their_reason(action: str, reason: str) -> None:
    assert decode(action) == ([], [reason])


def agents(request: SubmitTaskStateChangeRequest) -> list[ManagedAgentStateChange]:
    return list(request.managedAgents or ())


def test_the_managed_agent_runs_with_its_container_and_stops_with_it() -> None:
    rig = running_rig(ALONE)
    rig.feed(docker("app", f"exec_start: {AGENT_COMMAND}", 3.0), at=3.0)
    (running,) = rig.tick(4.0)
    assert agents(running.request) == [
        ManagedAgentStateChange(
            containerName="app", managedAgentName="ExecuteCommandAgent", status="RUNNING",
            reason=EXEC_AGENT_STARTED_REASON,
        )
    ]  # fmt: skip
    rig.feed(docker("app", "die", 10.0, exit_code=0), at=10.0)
    (stopped,) = rig.tick(10.0)
    assert stopped.request.status == "STOPPED"
    assert agents(stopped.request) == [
        ManagedAgentStateChange(
            containerName="app", managedAgentName="ExecuteCommandAgent", status="STOPPED",
            reason=MANAGED_AGENT_STOPPED_REASON,
        )
    ]  # fmt: skip


def test_a_managed_agent_start_seen_after_its_container_stopped_is_stopped() -> None:
    rig = running_rig(WITH_SIDECAR)
    rig.feed(docker("sidecar", "die", 10.0, exit_code=0), at=10.0)
    rig.feed(docker("sidecar", f"exec_start: {AGENT_COMMAND}", 3.0), at=10.1)
    rig.tick(11.0)
    assert [(a.containerName, a.status, a.reason) for a in agents(rig.sent[-1][1].request)] == [
        ("sidecar", "STOPPED", MANAGED_AGENT_STOPPED_REASON)
    ]


def test_a_users_exec_session_causes_no_call_and_is_counted() -> None:
    """Through the intake, as the worker runs it: a user's ``docker exec`` is ignored, counted by
    reason, and its record resolved without a call."""
    book = OffsetBook()
    book.assign([("t", 0)])
    intake = Intake(_decoder, coalescer(describe=False), book, S // 2)
    for offset, action in enumerate(("exec_create: /bin/bash", "exec_start: /bin/bash", "exec_die")):
        batch = intake.read("t", 0, offset, _docker.event("app", action, 1.0, base_ns=T0))
        assert batch is not None
        assert (batch.events, batch.bad) == ([], [])
    assert intake.ignored == {reasons.DOCKER_EXEC: 3}
    assert KEY not in set(intake.coalescer.keys())  # nothing merged, nothing to send
    assert book.to_commit() == {("t", 0): 3}  # every record resolved


def test_a_canonical_producer_says_the_managed_agent_and_an_oom_too() -> None:
    """The canonical format carries the same facts: a managed agent's RUNNING, and an OOM reason
    without a status; both end with the container's STOPPED."""
    canonical = RecordDecoder(input_format="canonical", max_record_bytes=1 << 20)

    def record(at: float, **members: Any) -> TaskEvent:
        body = {"cluster": CLUSTER, "task": TASK, "observedAt": T0 + int(at * S), "taskDefinitionArn": ARN}
        (event,) = canonical.decode(msgspec.json.encode(body | members)).events
        return event

    rig = running_rig(ALONE)
    agent = {"containerName": "app", "managedAgentName": "ExecuteCommandAgent", "status": "RUNNING"}
    rig.feed(record(3.0, managedAgents=[agent]), at=3.0)
    rig.feed(record(4.0, containers=[{"containerName": "app", "reason": OOM_REASON}]), at=4.0)
    (running,) = rig.tick(4.0)
    assert [(a.status, a.reason) for a in agents(running.request)] == [("RUNNING", None)]
    assert [c.reason for c in running.request.containers or ()] == [None]  # not before the end
    rig.feed(record(9.0, containers=[{"containerName": "app", "status": "STOPPED", "exitCode": 137}]), at=9.0)
    (stopped,) = rig.tick(9.0)
    assert [(c.exitCode, c.reason) for c in stopped.request.containers or ()] == [(137, OOM_REASON)]
    assert [(a.status, a.reason) for a in agents(stopped.request)] == [
        ("STOPPED", MANAGED_AGENT_STOPPED_REASON)
    ]
