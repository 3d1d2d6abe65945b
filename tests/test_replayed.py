"""Records read again after a handover (``OffsetBook.replayed``, ``KnowledgeMixin._known``): a
task first seen below its partition's replay end may have been reported already, by an earlier
owner or by this process before it lost its membership; it starts from ECS's view. Pure: a real
``Coalescer`` and ``OffsetBook`` (``tests.knowledge_rig``)."""

from __future__ import annotations

from typing import Any

from tests.knowledge_rig import ARN, KEY, Rig, definition, ev, view
from worker.coalesce import Applied
from worker.offsets import OffsetBook
from worker.work import SourceRef

APP_LOG: list[dict[str, Any]] = [{"name": "app"}, {"name": "log", "essential": False}]


def known_rig(**options: Any) -> Rig:
    """A rig whose definition is known already, partition ``("t", 0)`` replayed below offset 4:
    the records 0-3 were (maybe) processed before the handover."""
    rig = Rig(**options)
    rig.co.definitions.put(ARN, definition(APP_LOG))
    rig.book.note_replay_end("t", 0, 4)
    return rig


def creation_and_start(rig: Rig) -> None:
    """The next four records, below the replay end: the task's history from creation to RUNNING."""
    rig.feed(ev("app", "PENDING", at=1))
    rig.feed(ev("log", "PENDING", at=1))
    rig.feed(ev("log", "RUNNING", at=1.5))
    rig.feed(ev("app", "RUNNING", at=2))


def test_a_replayed_task_ecs_shows_running_is_not_reported_running_again() -> None:
    rig = known_rig()
    creation_and_start(rig)
    assert rig.wanted()[1] == [KEY]  # a history read from its creation, yet not trusted to be new
    rig.tick(3)
    assert rig.statuses() == []  # nothing before ECS's answer
    assert rig.committable() == 0
    rig.answer_views(view("RUNNING", {"app": ("RUNNING", None), "log": ("RUNNING", None)}), at=3)
    rig.tick(4)
    assert rig.statuses() == []  # what ECS shows is not sent again
    assert rig.committable() == 4  # and the records are resolved
    rig.feed(ev("app", "STOPPED", at=5, exit_code=0))  # offset 5: past the replay end, new
    rig.feed(ev("log", "STOPPED", at=5.5, exit_code=0))
    rig.tick(6)
    assert rig.statuses() == ["STOPPED app=STOPPED(0),log=STOPPED(0)"]
    assert rig.committable() == 6


def test_a_replayed_task_ecs_shows_stopped_retires_without_a_call() -> None:
    rig = known_rig()
    creation_and_start(rig)
    rig.answer_views(view("STOPPED", {"app": ("STOPPED", 0), "log": ("STOPPED", 0)}), at=3)
    rig.tick(4)
    assert rig.statuses() == []
    assert rig.committable() == 4
    applied, _ = rig.feed(ev("app", "STOPPED", at=5, exit_code=0))  # the rest of the replay
    assert applied is Applied.RETIRED
    assert rig.co.take_wants() == ([], [])  # retired: ECS is not asked again
    assert rig.committable() == 5


def test_a_replayed_stop_newer_than_ecs_view_is_reported_once() -> None:
    """The earlier owner reported RUNNING and lost its membership before the stop: the replay
    carries the stop, which ECS does not show yet; it is reported, and only it."""
    rig = known_rig()
    rig.book.revoke([("t", 0)])
    rig.book.assign([("t", 0)])
    rig.offset = 0
    rig.book.note_replay_end("t", 0, 6)
    creation_and_start(rig)
    rig.feed(ev("app", "STOPPED", at=5, exit_code=2))
    rig.feed(ev("log", "STOPPED", at=5.5, exit_code=0))
    rig.tick(6)
    assert rig.statuses() == []
    rig.answer_views(view("RUNNING", {"app": ("RUNNING", None), "log": ("RUNNING", None)}), at=6)
    rig.tick(6.1)
    assert rig.statuses() == ["STOPPED app=STOPPED(2),log=STOPPED(0)"]
    assert rig.committable() == 6


def test_a_task_first_seen_past_the_replay_end_asks_nothing() -> None:
    rig = known_rig()
    rig.offset = 4  # the records below the end belonged to other tasks
    creation_and_start(rig)
    assert rig.wanted() == ([], [])
    rig.tick(3)
    assert rig.statuses() == ["RUNNING app=RUNNING(None),log=RUNNING(None)"]


def test_a_replayed_task_whose_definition_is_fetched_asks_ecs_once_it_is_known() -> None:
    rig = Rig()
    rig.book.note_replay_end("t", 0, 4)
    creation_and_start(rig)
    assert rig.wanted() == ([ARN], [])  # the view is asked once the container set is known
    rig.learn_definitions(APP_LOG, at=2)
    assert rig.wanted()[1] == [KEY]
    rig.answer_views(view("RUNNING", {"app": ("RUNNING", None), "log": ("RUNNING", None)}), at=3)
    rig.tick(4)
    assert rig.statuses() == []
    assert rig.committable() == 4


def test_a_replayed_task_ecs_does_not_know_is_retired() -> None:
    rig = known_rig()
    creation_and_start(rig)
    rig.wanted()
    rig.release(rig.co.learn_missing(KEY))
    rig.tick(4)
    assert rig.statuses() == []
    assert rig.co.is_retired(KEY)
    assert rig.committable() == 4


def test_a_replayed_task_without_ecs_view_goes_as_seen_at_once() -> None:
    """``DescribeTasks`` failed: a history seen from its creation is whole, so no settle wait; what
    was reported before may be repeated (at-least-once), never contradicted."""
    rig = known_rig()
    creation_and_start(rig)
    rig.answer_views(None, at=3)
    rig.tick(3.5)
    assert rig.statuses() == ["RUNNING app=RUNNING(None),log=RUNNING(None)"]
    assert rig.committable() == 4


def test_without_describe_a_replayed_task_goes_as_seen() -> None:
    rig = known_rig(describe=False)
    creation_and_start(rig)
    assert rig.wanted() == ([], [])  # no view asked
    rig.tick(3)
    assert rig.statuses() == ["RUNNING app=RUNNING(None),log=RUNNING(None)"]


def test_this_process_retired_task_read_again_after_rejoining_causes_no_call() -> None:
    """This process reported the task STOPPED, then lost its membership before committing: it is
    assigned the partition again and re-reads the task from its creation. Its retired cache
    answers first: no view is asked and nothing is sent."""
    rig = known_rig()
    rig.offset = 4
    creation_and_start(rig)
    rig.tick(3)
    rig.feed(ev("app", "STOPPED", at=5, exit_code=0))
    rig.feed(ev("log", "STOPPED", at=5.5, exit_code=0))
    rig.tick(6)
    assert len(rig.statuses()) == 2  # RUNNING, STOPPED
    rig.release(rig.co.drop(lambda source: source.partition == 0))
    rig.book.revoke([("t", 0)])
    rig.book.assign([("t", 0)])  # the commit failed (UnknownMemberId): read again from 5
    rig.book.note_replay_end("t", 0, 10)
    rig.offset = 4
    creation_and_start(rig)
    assert rig.co.take_wants() == ([], [])
    rig.tick(7)
    assert len(rig.statuses()) == 2
    assert rig.committable() == 8


def test_replay_end_is_noted_once_per_assignment_and_fences_by_epoch() -> None:
    book = OffsetBook()
    book.note_replay_end("t", 0, 10)  # not owned: ignored
    book.assign([("t", 0)])
    assert book.replay_end("t", 0) is None
    assert not book.replayed(SourceRef("t", 0, 3, 1))  # no end noted: nothing is replayed
    book.note_replay_end("t", 0, 10)
    book.note_replay_end("t", 0, 20)  # the first fetch's high watermark comes after: ignored
    assert book.replay_end("t", 0) == 10
    assert book.replayed(SourceRef("t", 0, 9, 1))
    assert not book.replayed(SourceRef("t", 0, 10, 1))
    assert not book.replayed(SourceRef("t", 0, 9, 2))  # another epoch's source
    book.revoke([("t", 0)])
    book.assign([("t", 0)])
    assert book.replay_end("t", 0) is None  # a new assignment notes its own


def test_a_clean_task_of_a_revoked_partition_is_forgotten_and_read_again_from_ecs_view() -> None:
    """This process reported the task RUNNING (nothing left to send), then lost the partition; the
    next owner reported the stop. Assigned the partition back, this process must not merge the
    re-read records into its stale knowledge (RUNNING): it starts again from ECS's view, which
    shows the STOPPED, and sends nothing."""
    rig = known_rig()
    rig.offset = 4
    creation_and_start(rig)
    rig.tick(3)
    assert rig.statuses() == ["RUNNING app=RUNNING(None),log=RUNNING(None)"]
    rig.release(rig.co.drop(lambda source: source.partition == 0))
    assert rig.co.active_count == 0
    rig.book.revoke([("t", 0)])
    rig.book.assign([("t", 0)])  # back, after the next owner's STOPPED: read again from 8
    rig.book.note_replay_end("t", 0, 10)
    rig.offset = 8
    rig.feed(ev("log", "STOPPED", at=6, exit_code=143))
    rig.feed(ev("app", "STOPPED", at=6.5))
    assert rig.wanted()[1] == [KEY]
    rig.tick(7)
    assert len(rig.statuses()) == 1  # nothing before the answer
    rig.answer_views(view("STOPPED", {"app": ("STOPPED", 0), "log": ("STOPPED", 143)}), at=7)
    rig.tick(8)
    assert len(rig.statuses()) == 1
    assert rig.co.is_retired(KEY)
    assert rig.committable() == 10


def test_a_clean_task_of_a_partition_still_owned_is_kept() -> None:
    rig = known_rig()
    rig.offset = 4
    creation_and_start(rig)
    rig.tick(3)
    assert rig.co.drop(lambda source: source.partition == 1) == []
    assert rig.co.active_count == 1
