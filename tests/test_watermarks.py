"""Progress markers and watermarks (``worker.watermarks``) and the reorder buffer that waits on them:
a re-keyed task's events wait for an input partition that is behind (its owner changing, or
lagging), as a Kafka Streams task waits for a partition with known lag (``max.task.idle.ms``)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devkit.brokers import Broker
from schemas.events import ContainerChange, TaskEvent
from tests.conftest import Topics
from worker.metrics import Metrics
from worker.offsets import OffsetBook
from worker.reorder import ReorderBuffer
from worker.repartition import Repartitioner
from worker.watermarks import InputProgress, ProgressMarker, ProgressTracker, Watermarks
from worker.work import SourceRef

S = 1_000_000_000
MS = 1_000_000
WALL = 1_764_000_000 * S
"""The wall clock (ns) when the monotonic clock reads 0 in these tests."""


def event(task: str, status: str, at: int, **change: object) -> TaskEvent:
    return TaskEvent(
        cluster="c",
        task=task,
        observedAt=at,
        containers=(ContainerChange(containerName="app", status=status, **change),),  # type: ignore[arg-type]
    )


def marker(**progress: tuple[int, int]) -> ProgressMarker:
    """A marker of input topic ``in``: ``p<N>=(event_ns, caught_up_ms)``."""
    return ProgressMarker("in", {int(k[1:]): InputProgress(*v) for k, v in progress.items()})


# -- stage 1: what an input partition has put in the repartition topic ------------------------------


def test_event_progress_covers_only_the_acknowledged_prefix() -> None:
    tracker = ProgressTracker()
    for offset, observed in [(10, 5 * S), (11, 9 * S), (12, 7 * S)]:
        tracker.forwarded(0, offset, observed)
    assert tracker.progress(0, None, None, None) == InputProgress(0, 0)  # nothing acknowledged
    assert tracker.progress(0, 11, 20, 1_000) == InputProgress(5 * S, 0)  # 10 acknowledged, behind
    assert tracker.progress(0, 13, 20, 2_000) == InputProgress(9 * S, 0)  # the largest so far
    assert tracker.progress(0, 13, 20, 3_000).event_ns == 9 * S  # never goes back


def test_a_partition_is_caught_up_once_its_acknowledged_prefix_reaches_the_fetched_high_watermark() -> None:
    tracker = ProgressTracker()
    tracker.forwarded(3, 40, 1 * S)
    assert tracker.progress(3, 40, 41, 5_000).caught_up_ms == 0  # record 40 not yet acknowledged
    assert tracker.progress(3, 41, 41, 6_000) == InputProgress(1 * S, 6_000)
    assert tracker.progress(3, 41, 45, 7_000).caught_up_ms == 6_000  # new records: behind again
    assert tracker.progress(3, 41, 41, 4_000).caught_up_ms == 6_000  # an older fetch: no change
    assert tracker.progress(9, 0, 0, 8_000) == InputProgress(0, 8_000)  # an empty partition


def test_a_revoked_input_partition_is_forgotten() -> None:
    tracker = ProgressTracker()
    tracker.forwarded(1, 0, 3 * S)
    tracker.progress(1, 1, 1, 100)
    tracker.retain([2])
    assert tracker.progress(1, None, None, None) == InputProgress(0, 0)


def test_the_marker_is_compact_json_and_round_trips() -> None:
    value = msgspec.json.encode(marker(p0=(5, 6), p7=(0, 9)))
    assert value == b'{"topic":"in","progress":{"0":[5,6],"7":[0,9]}}'
    assert msgspec.json.decode(value, type=ProgressMarker) == marker(p0=(5, 6), p7=(0, 9))


def test_the_offset_book_tells_a_partitions_committable_offset() -> None:
    book = OffsetBook()
    assert book.committable("in", 0) is None  # not owned
    book.assign([("in", 0)])
    assert book.committable("in", 0) is None  # nothing read
    source = book.track("in", 0, 7, 1)
    assert source is not None
    book.track("in", 0, 8, 0)
    assert book.committable("in", 0) == 7
    book.release(source)
    assert book.committable("in", 0) == 9


# -- stage 2: may a task's held events pass? --------------------------------------------------------


def watermarks(*inputs: int) -> Watermarks:
    marks = Watermarks("in")
    marks.set_inputs(inputs)
    return marks


def test_nothing_passes_until_every_input_partition_is_known_to_have_progressed() -> None:
    marks = Watermarks("in")
    marks.note(0, marker(p0=(9 * S, 0), p1=(9 * S, 0)), WALL, 0)
    assert not marks.passes(0, 1 * S, 0)  # the input's partitions are not known yet
    marks.set_inputs([0, 1, 2])
    assert not marks.passes(0, 1 * S, 0)  # input partition 2 has told nothing
    marks.note(0, marker(p2=(1 * S, 0)), WALL, 0)
    assert marks.passes(0, 1 * S, 0)
    assert not marks.passes(0, 1 * S + 1, 0)  # partition 2 has not come that far
    assert not marks.passes(5, 1 * S, 0)  # no marker read in repartition partition 5


def test_a_caught_up_partition_passes_events_that_arrived_before_it_was_caught_up() -> None:
    marks = watermarks(0, 1)
    # partition 1 carries nothing recent, but was caught up 2 s after the wall clock's origin
    marks.note(0, marker(p0=(50 * S, 0), p1=(0, WALL // MS + 2_000)), WALL, 0)
    assert marks.passes(0, 40 * S, arrived=2 * S)  # arrived when partition 1 was caught up
    assert not marks.passes(0, 40 * S, arrived=2 * S + 1)  # arrived later: not known to be read
    # a marker read later, when the monotonic clock is 10 s ahead of the wall clock's origin
    marks.note(0, marker(p1=(0, WALL // MS + 3_000)), WALL + 1 * S, 11 * S)
    assert marks.passes(0, 40 * S, arrived=13 * S)  # 3 s after the origin = 13 s monotonic


def test_progress_only_grows_whoever_wrote_it() -> None:
    marks = watermarks(0)
    marks.note(0, marker(p0=(9 * S, 9_000)), WALL, 0)
    marks.note(0, marker(p0=(2 * S, 1_000)), WALL, 0)  # an earlier owner's marker, read again
    assert marks.passes(0, 9 * S, 0)
    marks.note(0, ProgressMarker("other-topic", {0: InputProgress(0, 0)}), WALL, 0)
    assert marks.passes(0, 9 * S, 0)


def test_a_revoked_repartition_partition_is_forgotten_and_the_lag_is_the_worst_caught_up() -> None:
    marks = watermarks(0, 1)
    assert marks.lag_ns(5 * S) == 0  # nothing known
    marks.note(0, marker(p0=(0, WALL // MS + 1_000), p1=(0, WALL // MS + 4_000)), WALL, 0)
    marks.note(1, marker(p0=(0, WALL // MS + 3_000), p1=(0, WALL // MS + 4_000)), WALL, 0)
    assert marks.lag_ns(5 * S) == 4 * S  # input partition 0 as repartition partition 0 tells it
    marks.retain([1])
    assert marks.lag_ns(5 * S) == 2 * S
    assert not marks.passes(0, 0, -1)


# -- the reorder buffer on the watermarks -----------------------------------------------------------


def test_a_task_waits_for_a_partition_behind_then_merges_everything_in_observation_order() -> None:
    """The rolling restart's case: the task's ``die`` sits in input partition 1 while it changes
    owner; its ``stop``, read from partition 0, waits for it beyond the window."""
    marks = watermarks(0, 1)
    buffer = ReorderBuffer(window_ns=1 * S, watermarks=marks, max_idle_ns=60 * S)
    key = ("c", "a")
    stop = event("a", "STOPPED", at=20 * S)
    buffer.hold(key, stop, SourceRef("r", 3, 0, 1), now=0)
    marks.note(3, marker(p0=(20 * S, 0), p1=(10 * S, 0)), WALL, 0)  # partition 1 stopped at 10 s
    assert buffer.due(5 * S) == []  # quiet for five windows, but partition 1 is behind
    die = event("a", "STOPPED", at=19 * S, exitCode=137)
    buffer.hold(key, die, SourceRef("r", 3, 1, 1), now=6 * S)  # its next owner forwards the die
    marks.note(3, marker(p1=(19 * S, 0)), WALL, 0)
    (first,) = buffer.due(8 * S)  # the die: every input partition has passed 19 s
    assert first[0].observedAt == 19 * S
    assert buffer.due(8 * S + S // 4) == []  # the stop: partition 1 is still short of its 20 s
    marks.note(3, marker(p1=(19 * S, WALL // MS + 6_500)), WALL, 0)  # caught up after the die came
    released = buffer.due(8 * S + S // 2)
    assert [e.observedAt for e, _, _ in released] == [20 * S]
    assert buffer.forced == 0
    assert len(buffer) == 0


def test_a_partition_that_never_progresses_holds_a_task_for_max_idle_at_most() -> None:
    marks = watermarks(0, 1)
    buffer = ReorderBuffer(window_ns=1 * S, watermarks=marks, max_idle_ns=30 * S)
    buffer.hold(("c", "a"), event("a", "RUNNING", at=5 * S), SourceRef("r", 0, 0, 1), now=0)
    marks.note(0, marker(p0=(5 * S, 0)), WALL, 0)  # partition 1 never tells
    assert buffer.due(29 * S) == []
    assert buffer.next_due_at() is not None
    assert buffer.next_due_at() <= 30 * S  # type: ignore[operator]
    (released,) = buffer.due(30 * S)
    assert released[1].offset == 0
    assert buffer.forced == 1


@pytest.mark.parametrize("window_ms", [1, 1_000])
def test_a_task_blocked_by_the_watermarks_is_looked_at_again_within_a_quarter_window(window_ms: int) -> None:
    marks = watermarks(0)
    buffer = ReorderBuffer(window_ns=window_ms * MS, watermarks=marks, max_idle_ns=3_600 * S)
    buffer.hold(("c", "a"), event("a", "RUNNING", at=5 * S), SourceRef("r", 0, 0, 1), now=0)
    assert buffer.due(window_ms * MS) == []
    recheck = buffer.next_due_at()
    assert recheck is not None
    assert window_ms * MS < recheck <= window_ms * MS + window_ms * MS // 4 + 1
    marks.note(0, marker(p0=(5 * S, 0)), WALL, 0)
    assert len(buffer.due(recheck)) == 1


# -- the coalescing stage's intake of markers -------------------------------------------------------


def test_the_intake_takes_markers_resolved_at_once_and_dead_letters_a_malformed_one() -> None:
    from worker.config import Settings
    from worker.intake import Intake

    book = OffsetBook()
    intake = Intake.from_settings(Settings(input_topic="in", input_keying="any"), book)
    marks = intake.coalescer.watermarks
    assert marks is not None
    marks.set_inputs([0])
    assert intake.read_progress("r", 0, 0, b"{}", 0, WALL) is None  # partition not owned
    book.assign([("r", 0)])
    value = msgspec.json.encode(marker(p0=(7 * S, 0)))
    batch = intake.read_progress("r", 0, 0, value, 0, WALL)
    assert batch is not None
    assert batch.events == []
    assert batch.bad == []
    assert book.committable("r", 0) == 1  # nothing to wait for
    assert marks.passes(0, 7 * S, 0)
    broken = intake.read_progress("r", 0, 1, b'{"topic": 3}', 0, WALL)
    assert broken is not None
    ((stage, item),) = broken.bad
    assert stage == "decode"
    assert "progress" in item.reason
    assert book.committable("r", 0) == 1  # held until its dead letter is written
    assert Intake.from_settings(Settings(), OffsetBook()).coalescer.watermarks is None  # task keying


async def _stage_one_on_partition_0(
    consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, topics: Topics
) -> tuple[TopicPartition, OffsetBook, Repartitioner]:
    """Stage 1 of one worker owning input partition 0 from its start: ``consumer`` started on it,
    the offset book that owns it, and the re-keying writer with ``producer``."""
    tp = TopicPartition(topics.input, 0)
    await consumer.start()
    consumer.assign([tp])
    consumer.seek(tp, 0)
    book = OffsetBook()
    book.assign([(topics.input, 0)])
    repartitioner = Repartitioner(
        producer,
        topic=f"{topics.input}-repartition",
        metrics=Metrics(),
        release=book.release,
        spawn=print,
    )
    return tp, book, repartitioner


@pytest.mark.timeout(60)
async def test_records_fetched_but_not_yet_forwarded_are_not_taken_as_caught_up(
    broker: Broker, topics: Topics
) -> None:
    """Right after an assignment nothing is tracked, and the fetch position stands for progress;
    but once a fetch returned records, the position runs ahead of what the consume loop has
    forwarded (it awaits the producer record by record): a marker written then must not say the
    partition is caught up, or held events pass before that partition's earlier ones arrive."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    try:
        for _ in range(3):
            await producer.send_and_wait(topics.input, b"{}", partition=0)
        tp, book, repartitioner = await _stage_one_on_partition_0(consumer, producer, topics)
        fetched = await consumer.getmany(tp, timeout_ms=10_000)
        assert len(fetched[tp]) == 3
        assert consumer.highwater(tp) == 3
        repartitioner.taking([0])  # what the consume loop says before it forwards them
        progress = await repartitioner._progress(consumer, book, topics.input)
        assert progress.get(0, InputProgress(0, 0)).caught_up_ms == 0
        for offset in range(3):  # forwarded and acknowledged
            book.track(topics.input, 0, offset, 0)
        repartitioner.flush()
        progress = await repartitioner._progress(consumer, book, topics.input)
        assert progress[0].caught_up_ms == consumer.last_poll_timestamp(tp) > 0
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())


@pytest.mark.timeout(60)
async def test_an_idle_partition_written_in_transactions_is_caught_up(broker: Broker, topics: Topics) -> None:
    """A transaction's commit marker takes an offset of its own: the high watermark stands one past
    the last record read, and an idle input partition written by a transactional producer (Kafka
    Connect's exactly-once sources) must still count as caught up once its records are forwarded,
    or every re-keyed task waits for it up to ``repartition_max_idle_ms``."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=f"t-{topics.group}")
    await producer.start()
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    try:
        async with producer.transaction():
            for _ in range(3):
                await producer.send(topics.input, b"{}", partition=0)
        tp, book, repartitioner = await _stage_one_on_partition_0(consumer, producer, topics)
        fetched = await consumer.getmany(tp, timeout_ms=10_000)
        assert [record.offset for record in fetched[tp]] == [0, 1, 2]
        async with asyncio.timeout(10):  # the commit marker lands after the commit returns
            while consumer.highwater(tp) != 4:  # the commit marker at offset 3
                assert not await consumer.getmany(tp, timeout_ms=200)
        for offset in range(3):  # forwarded and acknowledged
            book.track(topics.input, 0, offset, 0)
        progress = await repartitioner._progress(consumer, book, topics.input)
        assert progress[0].caught_up_ms == consumer.last_poll_timestamp(tp) > 0
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())


def test_a_busy_task_hands_over_what_the_input_has_passed_and_keeps_the_rest() -> None:
    """A task whose events keep coming faster than the markers: the events every input partition
    has passed go on in order; only the newer ones wait (not the whole task until max idle)."""
    marks = watermarks(0, 1)
    buffer = ReorderBuffer(window_ns=1 * S, watermarks=marks, max_idle_ns=60 * S)
    key = ("c", "busy")
    for n in range(50):  # an event every 100 ms for 5 s: never quiet for a window
        buffer.hold(key, event("busy", "RUNNING", at=n * S // 10), SourceRef("r", 2, n, 1), now=n * S // 10)
    # both input partitions have forwarded what was observed up to 3 s
    marks.note(2, marker(p0=(3 * S, 0), p1=(3 * S, 0)), WALL, 0)
    released = buffer.due(5 * S)
    assert [s.offset for _, s, _ in released] == list(range(31))  # observed at 0 .. 3.0 s
    assert buffer.forced == 0
    assert len(buffer) == 19
    marks.note(2, marker(p0=(9 * S, 0), p1=(9 * S, 0)), WALL, 0)
    assert buffer.due(5 * S + S // 2) == []  # the rest waits for its window again (last at 4.9 s)
    rest = buffer.due(6 * S)
    assert [s.offset for _, s, _ in rest] == list(range(31, 50))
    assert len(buffer) == 0
    assert buffer.next_due_at() is None
