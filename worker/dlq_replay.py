"""``python -m worker dlq replay``: dead letters back where they can succeed.

- ``decode`` and ``validate`` letters go back to their input topic (the letter's
  ``__connect.errors.topic``, else ``input_topic``) with the input record's key, value and
  headers, byte for byte: once the input format is supported or the rule relaxed (or the record
  mended upstream and the letter replayed as it is), the worker reads them as any record. When
  the cause is in the record's own headers (a ``content-type`` naming another format than the
  value's), a ``HeaderEdit`` drops or sets headers on the way back.
- ``submit`` letters (their value is the ``SubmitTaskStateChange`` request) are submitted to ECS
  again through the worker's own path: ``worker.submit.Submitter`` (its retries and rate limit),
  then ``worker.publish.Publisher`` (the outcome record, and a new dead letter if retries run out
  again) — unless newer state of the task has been reported since.

**Newer state** is read from the outcome topic: the letter is *superseded* when an
``acknowledged`` outcome of the same cluster and task completed after the letter was written. The
worker's requests are full snapshots of a task (``worker.snapshot``), and a task's next submission
starts only after the failed one's outcome and dead letter were written, so such an outcome
carries everything the letter did and more; sending the letter would set the task back. (The
comparison is of the worker's clock, in ``completedAt``, with the dead letter's timestamp, also
the worker's clock: replicas' clocks need to agree to within the time between two submissions of
one task.) A replayed letter that is acknowledged writes such an outcome itself, so replaying the
same letters twice sends them once. Of several letters of one task, only the last is sent (each
is a full snapshot).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from schemas.ecs import SubmitTaskStateChangeRequest
from schemas.records import Outcome
from worker.config import Settings
from worker.ecs_clients import EcsClients, routes_of
from worker.kafka_clients import make_producer
from worker.letters import Letter, make_reader, read_topic
from worker.metrics import Metrics
from worker.publish import KafkaSink, Publisher
from worker.ratelimit import RateBudgets
from worker.snapshot import fingerprint
from worker.submit import Submitter
from worker.work import NS_PER_MS, Submission, SubmitResult, TaskKey

__all__ = ["REPLAY_WORKER", "HeaderEdit", "ReplayTally", "latest_acknowledged", "replay_letters"]

log = logging.getLogger(__name__)

REPLAY_WORKER = "dlq-replay"
"""The ``worker`` of the outcome records and dead letters a replay writes."""
_request = msgspec.json.Decoder(SubmitTaskStateChangeRequest)
_outcome = msgspec.json.Decoder(Outcome)


@dataclass(frozen=True, slots=True)
class HeaderEdit:
    """Changes to an input letter's own headers before it goes back to its topic: every header
    named in ``drop`` or ``put`` removed (names compared without case, as the worker reads
    ``content-type``), then each ``put`` pair appended, in order. Empty: the headers as they
    were, byte for byte."""

    drop: tuple[str, ...] = ()
    put: tuple[tuple[str, bytes], ...] = ()

    def apply(self, headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """``headers`` (Kafka's ``(name, value)`` pairs) as they are to be sent."""
        gone = {name.lower() for name in self.drop} | {name.lower() for name, _ in self.put}
        return [(k, v) for k, v in headers if k.lower() not in gone] + list(self.put)


@dataclass(slots=True)
class ReplayTally:
    """What a replay did (or, dry, would do): ``requeued`` input records, ``submitted`` requests
    by result (``acknowledged``, ``rejected``, ``failed``; ``would submit`` when dry),
    ``superseded`` and ``unreadable`` letters left alone."""

    requeued: int = 0
    submitted: Counter[str] = field(default_factory=Counter)
    superseded: int = 0
    unreadable: int = 0

    def ok(self) -> bool:
        """Every letter taken was requeued or acknowledged (or would be)."""
        return not (self.unreadable or set(self.submitted) - {"acknowledged", "would submit"})

    def summary(self) -> str:
        submitted = ", ".join(f"{n} {result}" for result, n in sorted(self.submitted.items())) or "0"
        return (
            f"requeued {self.requeued}, submitted {submitted}, superseded {self.superseded}, "
            f"unreadable {self.unreadable}"
        )


async def latest_acknowledged(settings: Settings, since_ms: int) -> dict[TaskKey, int]:
    """Each task's latest ``acknowledged`` completion (ms since the epoch) in the outcome topic,
    among the outcome records written at or after ``since_ms``."""
    latest: dict[TaskKey, int] = {}
    consumer = make_reader(settings)
    try:
        await consumer.start()
        async for record in read_topic(consumer, settings.outcome_topic, since_ms=since_ms):
            try:
                outcome = _outcome.decode(record.value or b"")
            except msgspec.DecodeError:
                continue  # not ours: the outcome topic's consumers' business
            if outcome.result == "acknowledged":
                key, at = (outcome.cluster, outcome.task), int(outcome.completedAt.timestamp() * 1000)
                latest[key] = max(latest.get(key, 0), at)
    finally:
        await consumer.stop()
    return latest


async def replay_letters(
    settings: Settings,
    letters: Sequence[Letter],
    *,
    dry_run: bool,
    say: Callable[[str], None],
    headers: HeaderEdit = HeaderEdit(),
) -> ReplayTally:
    """Replay ``letters`` (as ``python -m worker dlq`` selected them): input letters to their
    topic, their own headers changed by ``headers``; submit letters to ECS unless superseded;
    ``say`` gets one line per letter. With ``dry_run`` nothing is written and ECS is not called;
    the lines say what would be done."""
    tally = ReplayTally()
    inputs = [x for x in letters if x.stage in ("decode", "validate")]
    submits = [x for x in letters if x.stage == "submit"]
    for letter in letters:
        if letter.stage is None:
            tally.unreadable += 1
            say(f"{_at(letter)} skipped: no dead-letter headers this worker can read")
    producer = None if dry_run or not letters else make_producer(settings)
    try:
        if producer is not None:
            await producer.start()
        await _requeue(settings, inputs, producer, tally, say, headers)
        requests = _last_per_task(_requests(submits, tally, say), tally, say)
        if requests:
            latest = await latest_acknowledged(settings, min(x.timestamp_ms for x, _ in requests))
            due = [(x, r) for x, r in requests if not _superseded(x, r, latest, tally, say)]
            await _resubmit(settings, due, producer, tally, say)
    finally:
        if producer is not None:
            await producer.stop()
    return tally


async def _requeue(
    settings: Settings,
    letters: Sequence[Letter],
    producer: Any,
    tally: ReplayTally,
    say: Callable[[str], None],
    edit: HeaderEdit,
) -> None:
    pending = []
    for letter in letters:
        assert letter.errors is not None  # its stage was read from them
        topic = letter.errors.topic or settings.input_topic
        headers = edit.apply(letter.headers)
        if producer is not None:
            pending.append(await producer.send(topic, letter.value, key=letter.key, headers=headers))
        tally.requeued += 1
        say(f"{_at(letter)} {'would requeue' if producer is None else 'requeued'} to {topic}")
    await asyncio.gather(*pending)  # every record acknowledged, or the first failure raised


def _requests(
    letters: Sequence[Letter], tally: ReplayTally, say: Callable[[str], None]
) -> list[tuple[Letter, SubmitTaskStateChangeRequest]]:
    requests = []
    for letter in letters:
        try:
            request = _request.decode(letter.value or b"")
        except msgspec.DecodeError as exc:
            tally.unreadable += 1
            say(f"{_at(letter)} skipped: the value is not a SubmitTaskStateChange request: {exc}")
            continue
        if not request.cluster or not request.task:
            tally.unreadable += 1
            say(f"{_at(letter)} skipped: the request names no cluster or task")
            continue
        requests.append((letter, request))
    return requests


def _last_per_task(
    requests: list[tuple[Letter, SubmitTaskStateChangeRequest]],
    tally: ReplayTally,
    say: Callable[[str], None],
) -> list[tuple[Letter, SubmitTaskStateChangeRequest]]:
    """One request per task, its last letter's: each request is the task's full snapshot, so a
    later letter of a task carries everything an earlier one did."""
    last: dict[TaskKey, tuple[Letter, SubmitTaskStateChangeRequest]] = {}
    for letter, request in sorted(requests, key=lambda x: (x[0].timestamp_ms, x[0].partition, x[0].offset)):
        key = (request.cluster or "", request.task or "")
        if key in last:
            tally.superseded += 1
            say(f"{_at(last[key][0])} skipped: a later letter of {request.task} is replayed")
        last[key] = (letter, request)
    return list(last.values())


def _superseded(
    letter: Letter,
    request: SubmitTaskStateChangeRequest,
    latest: dict[TaskKey, int],
    tally: ReplayTally,
    say: Callable[[str], None],
) -> bool:
    acknowledged_at = latest.get((request.cluster or "", request.task or ""), 0)
    if acknowledged_at <= letter.timestamp_ms:
        return False
    tally.superseded += 1
    say(f"{_at(letter)} skipped: {request.task} has newer state acknowledged since (outcome topic)")
    return True


async def _resubmit(
    settings: Settings,
    due: Sequence[tuple[Letter, SubmitTaskStateChangeRequest]],
    producer: Any,
    tally: ReplayTally,
    say: Callable[[str], None],
) -> None:
    if producer is None:
        for letter, request in due:
            tally.submitted["would submit"] += 1
            say(f"{_at(letter)} would submit {request.status} of {request.task}")
        return
    metrics = Metrics()
    publisher = Publisher(
        KafkaSink(producer),
        outcome_topic=settings.outcome_topic,
        dlq_topic=settings.dlq_topic,
        worker=REPLAY_WORKER,
        connector=settings.group_id,
        metrics=metrics,
    )
    budgets = RateBudgets(
        rate_cap=settings.rate_limit_per_s,
        burst_cap=settings.rate_limit_burst,
        quota_per_s=settings.account_quota_per_s,
        quota_burst=settings.account_quota_burst,
    )
    async with EcsClients(settings, routes_of(settings)) as clients:
        submitter = Submitter(clients, settings, metrics=metrics, budgets=budgets)
        results = await asyncio.gather(*(_submit(submitter, publisher, x, r) for x, r in due))
    for (letter, request), result in zip(due, results, strict=True):
        tally.submitted[result.result] += 1
        detail = f" ({result.error_code}: {result.error_message})" if result.error_code else ""
        say(f"{_at(letter)} submitted {request.status} of {request.task}: {result.result}{detail}")


async def _submit(
    submitter: Submitter, publisher: Publisher, letter: Letter, request: SubmitTaskStateChangeRequest
) -> SubmitResult:
    """The worker's path for one request (``worker.dispatch``): submit, outcome, dead letter when
    retries run out. Its latency counts from the dead-lettering: the events' times are not kept."""
    submission = Submission(
        key=(request.cluster or "", request.task or ""),
        request=request,
        fingerprint=fingerprint(request),
        sources=[],
        first_event_at=letter.timestamp_ms * NS_PER_MS,
        stopped=request.status == "STOPPED",
    )
    result = await submitter.submit(submission)
    await publisher.outcome(submission, result)
    if result.result == "failed":
        await publisher.dead_letter_submission(submission, result)
    return result


def _at(letter: Letter) -> str:
    return f"{letter.partition}:{letter.offset}"
