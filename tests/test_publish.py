"""Stage 5 (worker.publish): outcome records, dead letters, and writing them through a sink."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from schemas.ecs import SubmitTaskStateChangeRequest
from schemas.records import Outcome, SourceRecords, Stage, split_dead_letter_headers
from worker.decode import BadItem
from worker.metrics import Metrics
from worker.publish import (
    Origin,
    Publisher,
    build_outcome,
    dead_letter_headers,
    input_dead_letter,
    submit_dead_letter,
)
from worker.work import SourceRef, Submission, SubmitResult

TASK = "arn:aws:ecs:us-east-1:123456789012:task/demo/abc"
FIRST = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z in ns


def submission(sources: list[tuple[str, int, int]], status: str = "RUNNING") -> Submission:
    request = SubmitTaskStateChangeRequest(cluster="demo", task=TASK, status=status)
    return Submission(
        key=("demo", TASK),
        request=request,
        fingerprint="f00d",
        sources=[SourceRef(t, p, o, 1) for t, p, o in sources],
        first_event_at=FIRST,
        stopped=status == "STOPPED",
    )


def test_outcome_of_an_acknowledged_submission() -> None:
    sub = submission([("in", 1, 7), ("in", 0, 5), ("in", 1, 3), ("in", 1, 7), ("alt", 0, 9)])
    result = SubmitResult("acknowledged", 2, FIRST + 1_234_567_891, acknowledgment="ACK")
    outcome = build_outcome(sub, result, "worker-0")
    assert outcome == Outcome(
        cluster="demo",
        task=TASK,
        status="RUNNING",
        result="acknowledged",
        attempts=2,
        fingerprint="f00d",
        request=sub.request,
        firstEventAt=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        completedAt=outcome.completedAt,
        latencyMs=1234.568,
        sources=[
            SourceRecords(topic="alt", partition=0, offsets=[9]),
            SourceRecords(topic="in", partition=0, offsets=[5]),
            SourceRecords(topic="in", partition=1, offsets=[3, 7]),
        ],
        acknowledgment="ACK",
        worker="worker-0",
    )
    delta = outcome.completedAt - outcome.firstEventAt
    assert abs(delta.total_seconds() - 1.234567891) < 1e-5
    assert outcome.completedAt.tzinfo is not None


def test_outcome_of_a_failed_submission() -> None:
    sub = submission([("in", 0, 1)], status="STOPPED")
    result = SubmitResult("failed", 8, FIRST + 2_000_000_000, None, "ThrottlingException", "Rate exceeded")
    outcome = build_outcome(sub, result, "w")
    assert (outcome.result, outcome.status, outcome.attempts) == ("failed", "STOPPED", 8)
    assert (outcome.errorCode, outcome.errorMessage, outcome.acknowledgment) == (
        "ThrottlingException",
        "Rate exceeded",
        None,
    )
    assert outcome.latencyMs == 2000.0
    wire = msgspec.json.decode(msgspec.json.encode(outcome))
    assert "acknowledgment" not in wire  # unset members are omitted
    assert wire["request"] == {"cluster": "demo", "task": TASK, "status": "STOPPED"}
    assert msgspec.json.decode(msgspec.json.encode(outcome), type=Outcome) == outcome


def test_outcome_with_no_sources() -> None:
    outcome = build_outcome(submission([]), SubmitResult("rejected", 1, FIRST), "w")
    assert outcome.sources == []
    assert outcome.result == "rejected"
    assert outcome.latencyMs == 0.0


def test_an_input_dead_letter_has_kafka_connects_headers_after_the_records_own() -> None:
    """Kafka Connect's names and values (``DeadLetterQueueReporter``: topic, partition and offset
    in decimal, the stage's enum name, the executing class), the worker's own extras, and the
    input record's headers first; error headers of an earlier dead-lettering are replaced."""
    bad: list[tuple[Stage, BadItem]] = [
        ("validate", BadItem("container 'wéb': tcp ports 80 and 80-90 overlap", "EcsRuleViolation", 0))
    ]
    letter = input_dead_letter("in", 2, 41, bad, Origin("ecs-state-worker", "pod-1"))
    own = [("content-type", b"application/vnd.docker.event+json"), ("__connect.errors.stage", b"TASK_PUT")]
    headers = dead_letter_headers(letter, own)
    assert headers == [
        ("content-type", b"application/vnd.docker.event+json"),
        ("__connect.errors.stage", b"TRANSFORMATION"),
        ("__connect.errors.class.name", b"worker.intake.Intake"),
        ("__connect.errors.exception.class.name", b"EcsRuleViolation"),
        (
            "__connect.errors.exception.message",
            "item 0: container 'wéb': tcp ports 80 and 80-90 overlap".encode(),
        ),
        ("__connect.errors.connector.name", b"ecs-state-worker"),
        ("__connect.errors.task.id", b"pod-1"),
        ("__connect.errors.topic", b"in"),
        ("__connect.errors.partition", b"2"),
        ("__connect.errors.offset", b"41"),
        ("__ecs-state-worker.errors.item", b"0"),
    ]
    parsed, kept = split_dead_letter_headers(headers)
    assert parsed == letter
    assert parsed is not None
    assert parsed.pipeline_stage == "validate"
    assert kept == own[:1]


def test_a_submit_dead_letter_names_its_task_and_omits_unset_members() -> None:
    result = SubmitResult("failed", 3, FIRST, error_code="ServerException", error_message="boom")
    headers = dict(dead_letter_headers(submit_dead_letter(("demo", TASK), result, Origin("g", "w-1"))))
    assert headers == {
        "__connect.errors.stage": b"TASK_PUT",
        "__connect.errors.class.name": b"worker.submit.Submitter",
        "__connect.errors.exception.class.name": b"ServerException",
        "__connect.errors.exception.message": b"retries exhausted after 3 attempts: boom",
        "__connect.errors.connector.name": b"g",
        "__connect.errors.task.id": b"w-1",
        "__ecs-state-worker.errors.cluster": b"demo",
        "__ecs-state-worker.errors.task": TASK.encode(),
        "__ecs-state-worker.errors.attempts": b"3",
    }


def test_headers_without_error_headers_are_no_dead_letter() -> None:
    parsed, kept = split_dead_letter_headers([("content-type", b"x"), ("__connect.errors.stage", b"NOPE")])
    assert parsed is None
    assert kept == [("content-type", b"x")]


class _FlakySink:
    """A sink whose first ``failures`` writes fail, as a producer does while the broker is away."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.written: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker away")
        self.written.append((topic, key, value, headers))


def _publisher(sink: _FlakySink, giving_up: bool = False) -> Publisher:
    return Publisher(
        sink,
        outcome_topic="out",
        dlq_topic="dlq",
        worker="w",
        metrics=Metrics(),
        giving_up=lambda: giving_up,
        max_backoff_s=0.01,
    )


async def test_publisher_retries_until_the_broker_acknowledges() -> None:
    sink = _FlakySink(failures=3)
    publisher = _publisher(sink)
    result = SubmitResult("failed", 8, FIRST + 1, error_code="ServerException", error_message="boom")
    await publisher.dead_letter_submission(submission([("in", 0, 1)]), result)
    assert len(sink.written) == 1
    topic, key, value, headers = sink.written[0]
    assert (topic, key) == ("dlq", TASK.encode())
    assert msgspec.json.decode(value or b"", type=SubmitTaskStateChangeRequest).task == TASK
    assert dict(headers or [])["__connect.errors.stage"] == b"TASK_PUT"
    assert publisher._metrics.totals()["dead_lettered"] == 1


async def test_publisher_gives_up_once_the_drain_deadline_passed() -> None:
    sink = _FlakySink(failures=1)
    with pytest.raises(ConnectionError):
        await _publisher(sink, giving_up=True).outcome(
            submission([]), SubmitResult("acknowledged", 1, FIRST + 1)
        )
    assert sink.written == []
