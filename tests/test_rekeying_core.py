"""The pure parts of input keying: the repartition record's key and ``source`` header, the reorder
buffer, the coalescer's split-task notes and its waits for exit codes with re-keyed input, and the
time-aware rules that keep a late-read exit from overriding a later one."""

from __future__ import annotations

import itertools
import logging
import random

import msgspec
import pytest
from aiokafka.partitioner import DefaultPartitioner

from schemas.events import ContainerChange, TaskEvent
from worker.coalesce import Applied, Coalescer
from worker.keying import SplitTaskWarnings
from worker.metrics import Metrics
from worker.reorder import ReorderBuffer
from worker.repartition import parse_source, source_header, task_key
from worker.task_definition import ContainerDefinition, RestartPolicy, TaskDefinition
from worker.task_state import RUNNING, STOPPED, TaskState
from worker.work import SourceRef

S = 1_000_000_000
MS = 1_000_000


def event(task: str, container: str, status: str | None, at: int, **change: object) -> TaskEvent:
    return TaskEvent(
        cluster="c",
        task=task,
        observedAt=at,
        containers=(ContainerChange(containerName=container, status=status, **change),),  # type: ignore[arg-type]
    )


def src(partition: int, offset: int) -> SourceRef:
    return SourceRef("t", partition, offset, 1)


# -- the repartition record -------------------------------------------------------------------------


def test_the_key_names_cluster_and_task_and_keeps_one_partition_per_task() -> None:
    key = task_key("prod", "arn:aws:ecs:eu-west-1:1:task/prod/abc")
    assert msgspec.json.decode(key) == ["prod", "arn:aws:ecs:eu-west-1:1:task/prod/abc"]
    assert task_key("a", "b") != task_key("a b", "") != task_key('a","b', "")
    murmur2 = DefaultPartitioner()
    partitions = list(range(12))
    spread = {murmur2(task_key("c", f"task/{n}"), partitions, partitions) for n in range(200)}
    assert len(spread) == 12  # tasks spread over every partition, each task always on one
    assert murmur2(key, partitions, partitions) == murmur2(key, partitions, partitions)


def test_the_source_header_round_trips_and_refuses_what_it_cannot_read() -> None:
    header = source_header("container-events.v2", 7, 123456)
    assert header == b"container-events.v2:7:123456"
    assert parse_source([("other", b"x"), ("source", header)]) == ("container-events.v2", 7, 123456)
    assert parse_source([("source", b"no-colons")]) is None
    assert parse_source([("source", b"t:x:1")]) is None
    assert parse_source([]) is None


# -- the reorder buffer -----------------------------------------------------------------------------


def test_a_tasks_events_come_back_in_observation_order_once_it_is_quiet() -> None:
    buffer = ReorderBuffer(window_ns=1 * S)
    die = event("a", "app", "STOPPED", at=20, exitCode=0)
    stop = event("a", "app", "STOPPED", at=25)
    start = event("a", "app", "RUNNING", at=10)
    for n, (item, now) in enumerate([(stop, 0), (die, S // 2), (start, S - 1)]):
        buffer.hold(("c", "a"), item, src(n, n), now)
    assert buffer.due(2 * S - 2) == []  # quiet for less than a window since the last one
    released = buffer.due(2 * S - 1)
    assert [e.observedAt for e, _, _ in released] == [10, 20, 25]
    assert [s.offset for _, s, _ in released] == [2, 1, 0]
    assert len(buffer) == 0
    assert buffer.next_due_at() is None


def test_a_busy_task_waits_four_windows_at_most_and_every_event_comes_back_once() -> None:
    buffer = ReorderBuffer(window_ns=100)
    rng = random.Random(3)
    held = 0
    returned: list[SourceRef] = []
    for now in range(0, 1000, 10):  # one event every 10 ns: never quiet for a window
        buffer.hold(("c", "busy"), event("busy", "app", "RUNNING", rng.randrange(10**6)), src(0, now), now)
        held += 1
        returned += [s for _, s, _ in buffer.due(now)]
        if now >= 400:
            assert returned, "released within four windows of the first event"
    returned += [s for _, s, _ in buffer.everything()]
    assert sorted(s.offset for s in returned) == list(range(0, 1000, 10))
    assert len(returned) == held


def test_a_revocation_gives_up_the_held_events_of_its_partitions() -> None:
    buffer = ReorderBuffer(window_ns=S)
    buffer.hold(("c", "a"), event("a", "app", "RUNNING", 1), src(0, 5), 0)
    buffer.hold(("c", "a"), event("a", "app", "STOPPED", 2, exitCode=1), src(1, 9), 0)
    buffer.hold(("c", "b"), event("b", "app", "RUNNING", 1), src(1, 10), 0)
    given_up = buffer.drop(lambda s: s.partition == 1)
    assert sorted(s.offset for s in given_up) == [9, 10]
    assert [s.offset for _, s, _ in buffer.everything()] == [5]


# -- the coalescer with re-keyed input --------------------------------------------------------------


def test_held_events_merge_in_order_and_a_stop_read_before_its_exit_waits_for_the_code() -> None:
    c = Coalescer(
        linger_ns=0, max_active_tasks=10, retired_cap=10, reorder_ns=1 * S, rekeyed_exit_wait_ns=10 * S
    )
    start, stop, die = (
        event("a", "app", "RUNNING", 1 * S),
        event("a", "app", "STOPPED", 3 * S),
        event("a", "app", "STOPPED", 2 * S, exitCode=137),
    )
    assert c.apply(stop, src(0, 0), 0)[0] is Applied.HELD
    assert c.apply(start, src(1, 0), 0)[0] is Applied.HELD
    assert c.apply(event("a", "app", "CREATED", 0), src(2, 0), 0)[0] is Applied.HELD
    ready, _ = c.due(S // 2)
    assert ready == []
    assert c.active_count == 0  # still held
    ready, _ = c.due(S)  # released in order: start, stop; the die is not read yet
    assert ready == []  # STOPPED without the exit code: waits for it
    assert c.pinned() == {("t", 0, 0), ("t", 1, 0), ("t", 2, 0)}  # a drain does not send it either
    c.apply(die, src(3, 0), S + 1)
    ready, _ = c.due(3 * S)
    (submission,) = ready
    assert submission.request.status == "STOPPED"
    assert submission.request.containers is not None
    assert submission.request.containers[0].exitCode == 137


def test_a_stop_without_its_exit_goes_once_the_wait_is_over() -> None:
    c = Coalescer(linger_ns=0, max_active_tasks=10, retired_cap=10, reorder_ns=S, rekeyed_exit_wait_ns=5 * S)
    c.apply(event("a", "app", "CREATED", 0), src(0, 2), 0)
    c.apply(event("a", "app", "RUNNING", 1), src(0, 0), 0)
    c.apply(event("a", "app", "STOPPED", 2), src(0, 1), 0)
    assert c.due(S)[0] == []  # merged: STOPPED without an exit code
    assert c.due(5 * S - 1)[0] == []  # quiet for less than the wait since its last event
    (submission,) = c.due(5 * S)[0]
    assert submission.stopped


def test_task_keying_notes_each_task_seen_on_a_second_partition_once() -> None:
    c = Coalescer(linger_ns=S, max_active_tasks=10, retired_cap=10, detect_split=True)
    c.apply(event("a", "app", "RUNNING", 1), src(0, 0), 0)
    c.apply(event("a", "app", "RUNNING", 2), src(0, 1), 0)
    c.apply(event("b", "app", "RUNNING", 1), src(1, 0), 0)
    assert c.take_split() == []
    c.apply(event("a", "log", "RUNNING", 3), src(2, 0), 0)
    c.apply(event("a", "app", "STOPPED", 4, exitCode=0), src(1, 1), 0)
    assert c.take_split() == [(("c", "a"), 0, 2)]
    assert c.take_split() == []
    plain = Coalescer(linger_ns=S, max_active_tasks=10, retired_cap=10)
    plain.apply(event("a", "app", "RUNNING", 1), src(0, 0), 0)
    plain.apply(event("a", "app", "RUNNING", 2), src(1, 0), 0)
    assert plain.take_split() == []


def test_split_warnings_count_every_task_and_log_at_most_one_line_per_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    warnings = SplitTaskWarnings(metrics, every_s=30.0)
    caplog.set_level(logging.WARNING, logger="worker.keying")
    warnings.report([(("c", "a"), 0, 1), (("c", "b"), 2, 3)], now=100.0)
    warnings.report([(("c", "x"), 0, 4)], now=110.0)
    warnings.report([], now=120.0)
    warnings.report([(("c", "y"), 5, 1)], now=131.0)
    assert metrics.registry.get_sample_value("ecs_state_worker_tasks_split_total") == 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "(0 and 1)" in lines[0]
    assert "(1 more such tasks not logged, since the last line or the start)" in lines[0]  # b
    assert "(5 and 1)" in lines[1]
    assert "(1 more such tasks" in lines[1]  # x, met meanwhile


# -- exits and stop requests judged by their observation times --------------------------------------


def _restarting() -> TaskDefinition:
    policy = RestartPolicy(enabled=True, ignoredExitCodes=(), restartAttemptPeriod=60)
    return TaskDefinition(
        arn="td:1",
        containers={
            "app": ContainerDefinition(name="app", essential=True),
            "metrics": ContainerDefinition(name="metrics", essential=False, restartPolicy=policy),
        },
    )


@pytest.mark.parametrize("seed", range(20))
def test_a_restart_read_late_never_replaces_the_final_exit(seed: int) -> None:
    """metrics: started, exits 1 after 100 s (restarted by its policy), started again, asked to
    stop, exits 143. Whatever order the five are read in, its final exit code is 143."""
    steps = [
        event("a", "metrics", "RUNNING", 0),
        event("a", "metrics", "STOPPED", 100 * S, exitCode=1),
        event("a", "metrics", "RUNNING", 101 * S),
        event("a", "metrics", None, 300 * S, stopRequested=True),
        event("a", "metrics", "STOPPED", 301 * S, exitCode=143),
    ]
    random.Random(seed).shuffle(steps)
    state = TaskState(("c", "a"))
    state.know(_restarting())
    for step in steps:
        state.merge(step)
    metrics = state.containers["metrics"]
    assert metrics.rank == STOPPED
    assert metrics.exit_code in (143, None)  # None: the first exit still held as a restart
    if metrics.held_exit is None:
        assert metrics.exit_code == 143


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_an_exit_read_after_its_restarts_start_leaves_the_container_running(order: tuple[int, ...]) -> None:
    """metrics: started, exits 1 after 100 s, restarted by its policy. Whatever order the three
    are read in (a forced release of re-keyed input can bring the exit last), the container is
    RUNNING, no exit is held, and the settle deadline (``finalize_held``) changes nothing."""
    steps = [
        event("a", "metrics", "RUNNING", 0),
        event("a", "metrics", "STOPPED", 100 * S, exitCode=1),
        event("a", "metrics", "RUNNING", 101 * S),
    ]
    state = TaskState(("c", "a"))
    state.know(_restarting())
    for index in order:
        state.merge(steps[index])
    metrics = state.containers["metrics"]
    assert (metrics.rank, metrics.exit_code, metrics.held_exit) == (RUNNING, None, None)
    assert not state.holding()
    assert state.finalize_held() is False
    assert (metrics.rank, metrics.exit_code) == (RUNNING, None)


def test_without_a_restart_policy_an_exit_read_after_a_later_start_is_still_final() -> None:
    """app has no restart policy: the agent never restarts it, so its exit is final whatever was
    read before it."""
    state = TaskState(("c", "a"))
    state.know(_restarting())
    for step in (
        event("a", "app", "RUNNING", 0),
        event("a", "app", "RUNNING", 101 * S),
        event("a", "app", "STOPPED", 100 * S, exitCode=1),
    ):
        state.merge(step)
    assert (state.containers["app"].rank, state.containers["app"].exit_code) == (STOPPED, 1)
