"""Late-bound requests (worker.coalesce ``due_keys`` / ``take`` / ``requeue``): a task due for a
call waits for its token with no request built; the request is built when the call can go and
carries every change merged until then, so changes that arrive while it waits cost no call, and a
throttled submission goes back unsent and is rebuilt with the newest state. Pure: the clock is a
made-up monotonic nanosecond count."""

from __future__ import annotations

from schemas.events import ContainerChange, TaskEvent
from worker.coalesce import Coalescer
from worker.work import SourceRef

LINGER = 100
CLUSTER = "demo"
TASK = "arn:aws:ecs:eu-west-1:111122223333:task/demo/0f2c"
KEY = (CLUSTER, TASK)


def ev(t: int, **statuses: str) -> TaskEvent:
    containers = tuple(ContainerChange(containerName=n, status=s) for n, s in statuses.items())  # type: ignore[arg-type]
    return TaskEvent(cluster=CLUSTER, task=TASK, observedAt=t, containers=containers)


def src(offset: int) -> SourceRef:
    return SourceRef("container-events", 0, offset, 1)


def make() -> Coalescer:
    # Containers first seen PENDING: the whole history is seen, ECS's view is not needed.
    return Coalescer(linger_ns=LINGER, max_active_tasks=100, retired_cap=100, describe=False, settle_ns=0)


def test_changes_while_queued_ride_along_in_the_one_call() -> None:
    co = make()
    co.apply(ev(1, web="RUNNING", app="RUNNING"), src(0), now=0)
    keys, _ = co.due_keys(LINGER)
    assert keys == [KEY]
    # While the task waits for its token: the app stops, then the web container too.
    co.apply(ev(2, app="STOPPED"), src(1), now=LINGER + 1)
    co.apply(ev(3, web="STOPPED"), src(2), now=LINGER + 2)
    assert co.due_keys(LINGER + 3) == ([], [])  # queued once, not twice
    submission, resolved = co.take(KEY)
    assert resolved == []
    assert submission is not None
    assert submission.request.status == "STOPPED"
    assert {c.containerName: c.status for c in submission.request.containers or ()} == {
        "app": "STOPPED",
        "web": "STOPPED",
    }
    assert submission.sources == [src(0), src(1), src(2)]
    assert co.take(KEY) == (None, [])  # taken once


def test_due_builds_at_once_as_before() -> None:
    co = make()
    co.apply(ev(1, web="RUNNING"), src(0), now=0)
    ready, _ = co.due(LINGER)
    assert [s.request.status for s in ready] == ["RUNNING"]


def test_a_throttled_submission_goes_back_and_is_rebuilt_with_the_newest_state() -> None:
    co = make()
    co.apply(ev(1, web="RUNNING"), src(0), now=0)
    co.due_keys(LINGER)
    first, _ = co.take(KEY)
    assert first is not None
    assert first.request.status == "RUNNING"
    co.apply(ev(2, web="STOPPED"), src(1), now=LINGER + 5)  # arrives while the call is out
    co.requeue(first, now=LINGER + 10)
    keys, _ = co.due_keys(LINGER + 10)
    assert keys == [KEY]
    second, _ = co.take(KEY)
    assert second is not None
    assert second.request.status == "STOPPED"
    assert second.sources == [src(0), src(1)]
    assert second.throttled == 1
    assert co.complete(second, "acknowledged", LINGER + 20) == [src(0), src(1)]
    assert co.is_retired(KEY)


def test_a_queued_task_with_nothing_left_to_send_resolves_its_records() -> None:
    co = make()
    co.apply(ev(1, web="RUNNING"), src(0), now=0)
    ready, _ = co.due(LINGER)
    co.complete(ready[0], "acknowledged", LINGER + 1)
    # A duplicate: merged, nothing new, resolved at once.
    co.apply(ev(2, web="RUNNING"), src(1), now=LINGER + 2)
    assert co.due_keys(10 * LINGER) == ([], [])


def test_a_task_dropped_while_queued_is_not_taken() -> None:
    co = make()
    co.apply(ev(1, web="RUNNING"), src(0), now=0)
    co.due_keys(LINGER)
    assert co.drop(lambda s: True) == [src(0)]
    assert co.take(KEY) == (None, [])
