"""The report of a scenario: what the broker, the endpoint and the harness's timeline show, and
the promises checked on it (see ``devkit.harness``); ``devkit.harness.table`` prints reports.

``build_report`` is pure: it reads an ``Observed``, the records a finished scenario left behind.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from devkit.fleet import ExpectedTask, final_state_mismatches, flag_counts
from devkit.harness.scenarios import DISRUPTIONS, Fault, Scenario
from schemas.records import Outcome, split_dead_letter_headers
from worker.repartition import parse_source

__all__ = ["FaultRecord", "Observed", "Produced", "Report", "build_report"]

TaskKey = tuple[str, str]
"""(cluster, task ARN)"""
RecordAt = tuple[int, int]
"""(partition, offset) of an input record"""


class FaultRecord(msgspec.Struct, frozen=True):
    """One line of a scenario's timeline: a fault injected, a restart, an exit, a milestone."""

    at_s: float
    what: str


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    seed: int
    events: int
    """Input records produced (fleet events and poison records)."""
    tasks: int
    workers: int
    faults_injected: int
    faults: list[FaultRecord]
    """The timeline: each fault as injected, restarts, exits, production and quiescence."""
    lost: int
    """Tasks not in their final state at the endpoint (statuses, or exit codes as DescribeTasks
    shows them), plus poison records missing from the DLQ."""
    regressions: int
    flags: dict[str, int]
    """The endpoint's flags (must all be 0): ``stopped_while_running`` (a task reported STOPPED
    before its last container stopped), ``updates_after_stopped``, ``running_incomplete``."""
    definition_calls: int
    """DescribeTaskDefinition calls (one per revision and worker process at most, as a rule)."""
    describe_calls: int
    """DescribeTasks calls: the new owners' questions about the tasks they did not follow."""
    calls: int
    """Calls that reached the endpoint, retries included."""
    submissions: int
    """Acknowledged calls (the endpoint accepted and applied them)."""
    duplicate_submissions: int
    tasks_with_duplicates: int
    max_duplicates_per_task: int
    duplicate_bound_per_task: int
    max_distinct_per_task: int
    tasks_over_distinct_bound: int
    """Tasks with more distinct requests than 1 + containers + disruptions (must be 0)."""
    tasks_by_distinct: dict[int, int]
    """How many tasks had 1, 2, 3... distinct acknowledged requests (2 per lifecycle as a rule)."""
    calls_per_task: float
    throttled: int
    """Calls answered ThrottlingException (injected and quota)."""
    quota_throttled: int
    """Of which by the quota: the workers' rate limits were not respected."""
    server_errors: int
    dropped: int
    outcome_records: int
    records_covered: int
    """Input records named in an outcome record's ``sources``."""
    records_replayed: int
    """Input records named in more than one outcome record (re-read after a crash or a cut)."""
    records_dead_lettered: int
    records_other: int
    """Resolved without a call: unchanged, duplicate, late or still-PENDING events."""
    uncommitted: int
    """Records at or past the group's committed offsets at the end (must be 0)."""
    unclean_exits: int
    """Workers that crashed, or did not exit 0 on SIGTERM within the drain deadline plus the
    rebalance timeout (aiokafka's leave waits for a join in progress) plus 3 s."""
    max_exit_s: float
    """The longest time from SIGTERM to a worker's exit."""
    drain_s: float | None
    """From the end of production and faults to quiescence; None: never quiescent."""
    handover_s: float | None = None
    """The longest time from a fault's SIGTERM of a worker until every partition it held was
    assigned to another member (``devkit.harness.handover``); None without such a fault."""
    broker: str = "tansu"
    """The embedded broker the scenario ran on: ``kafka`` (Apache Kafka) or ``tansu``."""
    wall_s: float
    ok: bool = False
    problems: list[str] = msgspec.field(default_factory=list)
    log_dir: str | None = None
    """Kept only when the scenario failed: every worker's log."""


@dataclass(frozen=True)
class Produced:
    """What the harness produced to the input topic, from the broker's acknowledgements."""

    ends: dict[int, int]
    """End offset of each partition."""
    poison: list[RecordAt]
    """(partition, offset) of each poison record."""
    events: int


@dataclass(frozen=True)
class Observed:
    """What a finished scenario left behind: the input it was given, the records read back from
    the broker, the endpoint's own records, and the harness's timeline of the workers."""

    scenario: Scenario
    expected: dict[str, ExpectedTask]
    input_topic: str
    produced: Produced
    endpoint_state: dict[str, Any]
    """``LocalEcsEndpoint.state()``"""
    described_mismatches: list[str]
    """``devkit.fleet.check_final``: what DescribeTasks shows against the expected final states."""
    accepted_requests: Mapping[TaskKey, list[bytes]]
    """Each acknowledged request per task, in order (JSON, sorted keys)."""
    quota_refusals: int
    outcome_records: Sequence[Any]
    repartitioned: Sequence[Any]
    """The repartition topic's records (``input_keying = any``; empty otherwise)."""
    letters: Sequence[Any]
    """Dead-letter records (aiokafka ``ConsumerRecord``s, as the outcome records)."""
    committed: dict[int, int]
    """The group's committed offset per input partition."""
    timeline: list[FaultRecord]
    problems: list[str]
    """Seen by the harness while it ran: crashes, slow exits, workers never ready."""
    unclean_exits: int
    max_exit_s: float
    drain_s: float | None
    handovers_s: Sequence[float | None] = ()
    """Per SIGTERM fault, its handover (``devkit.harness.handover.handover_s``)."""


@dataclass(frozen=True)
class _Records:
    """Every input record accounted for: dead-lettered, covered by outcomes, or neither."""

    lettered: set[RecordAt]
    missing_poison: list[RecordAt]
    outcomes: int
    coverage: Counter[RecordAt]
    """How many outcome records name each input record in their ``sources``."""
    other: int
    uncommitted: int
    ends: dict[int, int]
    """Every input partition's end offset (0 when nothing was produced to it)."""


def _account_records(seen: Observed) -> _Records:
    # Poison records: each must be in the DLQ, found by its __connect.errors.* headers.
    lettered: set[RecordAt] = set()
    for letter in seen.letters:
        errors, _ = split_dead_letter_headers(letter.headers or ())
        if errors and errors.topic == seen.input_topic and errors.partition is not None:
            lettered.add((errors.partition, errors.offset if errors.offset is not None else -1))
    # Records covered by outcomes; records covered more than once were replayed.
    outcomes = [msgspec.json.decode(r.value, type=Outcome) for r in seen.outcome_records]
    origins = _origins(seen)
    coverage: Counter[RecordAt] = Counter()
    for outcome in outcomes:
        covered: set[RecordAt] = set()
        for source in outcome.sources:
            if source.topic == seen.input_topic:
                covered.update((source.partition, offset) for offset in source.offsets)
            else:  # a repartition record: the input record it came from
                covered.update(
                    origins[(source.partition, o)] for o in source.offsets if (source.partition, o) in origins
                )
        coverage.update(covered)
    produced = seen.produced
    ends = {p: produced.ends.get(p, 0) for p in range(seen.scenario.partitions)}
    return _Records(
        lettered=lettered,
        missing_poison=[p for p in produced.poison if p not in lettered],
        outcomes=len(outcomes),
        coverage=coverage,
        other=sum(produced.ends.values()) - len(set(coverage) | lettered),
        uncommitted=sum(max(0, ends[p] - seen.committed.get(p, 0)) for p in ends),
        ends=ends,
    )


def _origins(seen: Observed) -> dict[RecordAt, RecordAt]:
    """Each repartition record's input record (its ``source`` header), by (partition, offset)."""
    origins: dict[RecordAt, RecordAt] = {}
    for record in seen.repartitioned:
        source = parse_source(record.headers or ())
        if source is not None and source[0] == seen.input_topic:
            origins[(record.partition, record.offset)] = (source[1], source[2])
    return origins


def _disruptions(fault: Fault, scenario: Scenario) -> int:
    """How many handovers ``fault`` makes: a broker cut that outlasts the session drops every
    member (each may repeat what it had in flight once, as its partitions' next owner starts from
    ECS's view: README, known limits); any other disruption, one."""
    if fault.kind not in DISRUPTIONS:
        return 0
    if fault.kind == "broker_cut" and (fault.duration_s or 0) * 1000 > scenario.session_timeout_ms:
        return scenario.workers
    return 1


@dataclass(frozen=True)
class _Submissions:
    """Acknowledged requests per task: duplicates (equal to the task's previous acknowledged
    request) and distinct ones, against their bounds."""

    duplicates: dict[TaskKey, int]
    distinct: dict[TaskKey, int]
    disruptions: int
    """Disrupting faults, restarts included: the bound of duplicates per task."""
    over_distinct: list[tuple[TaskKey, int]]
    """Tasks with more distinct requests than 1 + containers + disruptions."""

    @classmethod
    def count(
        cls,
        accepted: Mapping[TaskKey, list[bytes]],
        expected: dict[str, ExpectedTask],
        scenario: Scenario,
    ) -> _Submissions:
        duplicates = {key: sum(1 for a, b in itertools.pairwise(r) if a == b) for key, r in accepted.items()}
        distinct = {key: len(set(requests)) for key, requests in accepted.items()}
        disruptions = sum(_disruptions(f, scenario) for f in scenario.faults) + sum(
            1 for f in scenario.faults if f.kind in ("kill", "term") and f.restart_after_s is not None
        )
        over_distinct = [
            (key, n)
            for key, n in distinct.items()
            if key[1] in expected and n > 1 + len(expected[key[1]].containers) + disruptions
        ]
        return cls(duplicates, distinct, disruptions, over_distinct)

    @property
    def max_duplicates(self) -> int:
        return max(self.duplicates.values(), default=0)

    def bound(self, repeats_allowed: bool) -> int:
        """Duplicates allowed per task: one per disruption, or none."""
        return self.disruptions if repeats_allowed else 0

    def problems(self, repeats_allowed: bool = True) -> list[str]:
        found = []
        bound = self.bound(repeats_allowed)
        if self.max_duplicates > bound:
            found.append(f"a task had {self.max_duplicates} duplicate submissions (bound {bound})")
        found.extend(
            f"{key[1]}: {n} distinct submissions, over its bound" for key, n in self.over_distinct[:5]
        )
        return found


def build_report(seen: Observed) -> Report:
    """Check the promises on what a finished scenario left behind; ``wall_s`` is left to the caller."""
    state = seen.endpoint_state
    mismatches = final_state_mismatches(seen.expected, state) + seen.described_mismatches
    records = _account_records(seen)
    submissions = _Submissions.count(seen.accepted_requests, seen.expected, seen.scenario)
    regressions: list[Any] = state["regressions"]
    repeats_allowed = seen.scenario.repeats_allowed
    flags = flag_counts(state)
    problems = [
        *seen.problems,
        *mismatches[:10],
        *(
            f"flag {name}: {count} calls, e.g. {state['flags'][name]['examples'][:1]}"
            for name, count in flags.items()
            if count
        ),
        *(f"poison record {p} not dead-lettered" for p in records.missing_poison),
        *(
            [f"committed offsets {seen.committed} short of the end offsets {records.ends}"]
            if records.uncommitted
            else []
        ),
        *submissions.problems(repeats_allowed),
        *(f"regression: {r}" for r in regressions[:5]),
        *(
            ["a worker's partitions were never assigned again after its SIGTERM"]
            if None in seen.handovers_s
            else []
        ),
    ]
    # Mismatches read "<task ARN>: ..." (an ARN holds colons, never ": ").
    lost = len({m.split(": ")[0] for m in mismatches}) + len(records.missing_poison)
    report = _assemble(seen, records, submissions, lost=lost, problems=problems)
    report.ok = (
        lost == 0
        and not regressions
        and records.uncommitted == 0
        and seen.drain_s is not None
        and not any(flags.values())
        and submissions.max_duplicates <= submissions.bound(repeats_allowed)
        and not submissions.over_distinct
        and seen.unclean_exits == 0
    )
    return report


def _assemble(
    seen: Observed, records: _Records, submissions: _Submissions, *, lost: int, problems: list[str]
) -> Report:
    state = seen.endpoint_state
    errors: dict[str, int] = state["errors"]
    accepted = int(state["accepted"])
    return Report(
        scenario=seen.scenario.name,
        seed=seen.scenario.seed,
        events=seen.produced.events,
        tasks=len(seen.expected),
        workers=seen.scenario.workers,
        faults_injected=len(seen.scenario.faults),
        faults=seen.timeline,
        lost=lost,
        regressions=len(state["regressions"]),
        flags=flag_counts(state),
        definition_calls=int(state["operations"]["DescribeTaskDefinition"]["calls"]),
        describe_calls=int(state["operations"]["DescribeTasks"]["calls"]),
        calls=int(state["calls"]),
        submissions=accepted,
        duplicate_submissions=sum(submissions.duplicates.values()),
        tasks_with_duplicates=sum(1 for n in submissions.duplicates.values() if n),
        max_duplicates_per_task=submissions.max_duplicates,
        duplicate_bound_per_task=submissions.bound(seen.scenario.repeats_allowed),
        max_distinct_per_task=max(submissions.distinct.values(), default=0),
        tasks_over_distinct_bound=len(submissions.over_distinct),
        tasks_by_distinct=dict(sorted(Counter(submissions.distinct.values()).items())),
        calls_per_task=round(accepted / max(1, len(seen.expected)), 2),
        throttled=int(errors.get("ThrottlingException", 0)),
        quota_throttled=seen.quota_refusals,
        server_errors=int(errors.get("ServerException", 0)),
        dropped=int(state["dropped"]),
        outcome_records=records.outcomes,
        records_covered=len(records.coverage),
        records_replayed=sum(1 for n in records.coverage.values() if n > 1),
        records_dead_lettered=len(records.lettered),
        records_other=records.other,
        uncommitted=records.uncommitted,
        unclean_exits=seen.unclean_exits,
        max_exit_s=round(seen.max_exit_s, 1),
        drain_s=seen.drain_s,
        handover_s=max((h for h in seen.handovers_s if h is not None), default=None),
        wall_s=0.0,
        problems=problems,
    )
