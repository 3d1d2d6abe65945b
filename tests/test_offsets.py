"""Offset bookkeeping (worker.offsets): what may be committed, per partition."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import ContainerChange, TaskEvent
from worker.coalesce import Coalescer
from worker.offsets import OffsetBook, PartitionOffsets
from worker.work import SourceRef

TP = ("events", 0)
OTHER = ("events", 1)


def test_empty_partition_has_nothing_to_commit() -> None:
    p = PartitionOffsets()
    assert p.committable() is None
    assert p.incomplete == 0


def test_committable_is_the_lowest_offset_still_claimed() -> None:
    p = PartitionOffsets()
    p.track(10, 1)
    p.track(11, 2)
    p.track(12, 1)
    assert p.committable() == 10
    p.release(11)
    assert p.committable() == 10
    p.release(10)
    assert p.committable() == 11  # one claim of 11 left
    p.release(12)
    assert p.committable() == 11
    p.release(11)
    assert p.committable() == 13  # nothing claimed: one past the highest
    assert p.incomplete == 0


def test_records_without_claims_resolve_at_once() -> None:
    p = PartitionOffsets()
    p.track(5, 0)
    assert p.committable() == 6
    p.track(6, 1)
    p.track(7, 0)
    assert p.committable() == 6
    p.release(6)
    assert p.committable() == 8


def test_release_count_and_over_release() -> None:
    p = PartitionOffsets()
    p.track(0, 3)
    p.release(0, count=2)
    assert p.committable() == 0
    assert p.incomplete == 1
    p.release(0, count=5)
    assert p.committable() == 1
    assert p.incomplete == 0


def test_release_of_unknown_offset_is_ignored() -> None:
    p = PartitionOffsets()
    p.track(3, 1)
    p.release(2)
    p.release(4)
    assert p.committable() == 3
    p.release(3)
    p.release(3)  # already resolved
    assert p.committable() == 4


def test_redelivered_offsets_are_ignored() -> None:
    p = PartitionOffsets()
    p.track(0, 1)
    p.track(1, 1)
    p.release(0)
    p.track(0, 1)  # re-delivered after a seek: already tracked (and resolved)
    p.track(1, 5)  # already tracked with its own claims
    assert p.committable() == 1
    p.release(1)
    assert p.committable() == 2
    assert p.highest == 1


def test_offset_book_reports_only_moves_on_owned_partitions() -> None:
    book = OffsetBook()
    book.assign([TP])
    assert book.owns(*TP)
    assert not book.owns(*OTHER)
    assert book.to_commit() == {}
    source = book.track(*TP, 0, 1)
    assert source == SourceRef(*TP, 0, 1)
    assert book.track(*OTHER, 0, 0) is None  # not owned: not tracked
    assert not book.release(SourceRef(*OTHER, 0, 1))
    assert book.to_commit() == {TP: 0}  # nothing committed yet: the start may be committed
    book.mark_committed({TP: 0})
    assert book.to_commit() == {}
    assert book.release(source)
    assert book.to_commit() == {TP: 1}
    book.mark_committed({TP: 1, OTHER: 7})
    assert book.committed() == {TP: 1}
    assert book.to_commit() == {}
    assert book.partitions() == [TP]


def test_offset_book_incomplete_and_revoke() -> None:
    book = OffsetBook()
    book.assign([TP, OTHER])
    book.track(*TP, 0, 2)
    late = book.track(*OTHER, 4, 1)
    assert late is not None
    assert book.incomplete() == {TP: 1, OTHER: 1}
    book.revoke([OTHER])
    assert not book.owns(*OTHER)
    assert book.incomplete() == {TP: 1}
    assert set(book.to_commit()) == {TP}
    assert not book.release(late)  # late release for a revoked partition: ignored
    book.mark_committed({TP: 0})
    book.assign([OTHER])  # assigned again: a fresh start
    assert book.incomplete() == {TP: 1, OTHER: 0}
    assert book.to_commit() == {}
    assert book.committed() == {TP: 0}


def test_each_assignment_opens_a_new_epoch() -> None:
    book = OffsetBook()
    book.assign([TP])
    assert book.epoch(*TP) == 1
    book.assign([TP])  # still owned: same epoch
    assert book.epoch(*TP) == 1
    book.revoke([TP])
    assert book.epoch(*TP) is None
    book.assign([TP, OTHER])
    assert (book.epoch(*TP), book.epoch(*OTHER)) == (2, 1)


def test_a_stale_completion_releases_nothing_in_a_new_epoch() -> None:
    """The sequence of the structure issue: record 10 holds events of tasks X and Y; the drain at
    revocation times out with X's submission in flight and Y's change unsent; the partition comes
    back to this worker and record 10 is read again; then X's old submission completes. Its
    source must not release the claims of the re-read record, or offset 11 would be committed
    while Y's change is still unsent."""
    book = OffsetBook()
    coalescer = Coalescer(linger_ns=100, max_active_tasks=10, retired_cap=10, describe=False, settle_ns=0)
    x, y = _event("x", 1), _event("y", 2)

    def read_record_10(now: int) -> SourceRef:
        source = book.track(*TP, 10, 2)
        assert source is not None
        coalescer.apply(x, source, now)
        coalescer.apply(y, source, now + 50)  # Y lingers longer than X
        return source

    book.assign([TP])
    first = read_record_10(0)
    in_flight = coalescer.due(100)[0]  # X is sent; Y's change waits
    assert [s.key[1] for s in in_flight] == ["x"]
    assert in_flight[0].sources == [first]
    # Revocation: the drain ran out of time; what is unresolved is given up, the partition leaves.
    for source in coalescer.drop(lambda s: s.partition == TP[1]):
        book.release(source)
    book.revoke([TP])
    book.assign([TP])  # assigned back: epoch 2, record 10 is read again
    second = read_record_10(200)
    assert second.epoch == 2
    for source in coalescer.complete(in_flight[0], "acknowledged", 250):  # X's stale completion
        assert not book.release(source)
    assert book.to_commit() == {TP: 10}  # not 11: Y's change (and X's, read again) are unsent
    for submission in coalescer.due(400)[0]:
        for source in coalescer.complete(submission, "acknowledged", 400):
            book.release(source)
    assert book.to_commit() == {TP: 11}


def _event(task: str, at: int) -> TaskEvent:
    change = ContainerChange(containerName="app", status="RUNNING")
    return TaskEvent(cluster="c", task=task, observedAt=at, containers=(change,))


def test_assign_keeps_existing_bookkeeping() -> None:
    book = OffsetBook()
    book.assign([TP])
    book.track(*TP, 0, 1)
    book.assign([TP, OTHER])
    assert book.incomplete() == {TP: 1, OTHER: 0}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=30),
    st.lists(st.tuples(st.integers(0, 40), st.integers(1, 3)), max_size=60),
    st.integers(0, 5),
)
def test_committable_matches_a_reference(
    claims: list[int], releases: list[tuple[int, int]], start: int
) -> None:
    p = PartitionOffsets()
    left: dict[int, int] = {}
    for i, n in enumerate(claims):
        p.track(start + i, n)
        left[start + i] = n
    for offset, count in releases:
        p.release(offset, count)
        if offset in left:
            left[offset] = max(0, left[offset] - count)
        pending = [o for o, n in left.items() if n > 0]
        assert p.committable() == (min(pending) if pending else start + len(claims))
        assert p.incomplete == len(pending)
