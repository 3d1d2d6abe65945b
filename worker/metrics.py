"""Prometheus metrics of one worker process (prometheus-client), on their own registry.

Label values are bounded: a topic, a partition number, a stage, a result, or a short code
(``docker_no_labels``, ``ThrottlingException``), never a message. Codes that come from outside
(an AWS error code, an exception class) pass ``code_label`` first. Besides the worker's own series
the registry carries prometheus-client's process, platform and garbage-collector collectors and
``ecs_state_worker_build_info``.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

import worker

__all__ = ["OTHER_CODE", "STATES", "Metrics", "WorkerState", "build_info", "code_label"]

WorkerState = Literal["starting", "running", "draining", "stopped"]
STATES: tuple[WorkerState, ...] = ("starting", "running", "draining", "stopped")
"""The worker's lifecycle, in order: ``ecs_state_worker_state{state}`` is 1 for the current one."""

_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,63}")
OTHER_CODE = "Other"

_TOTALS = (
    "records_consumed",
    "events_decoded",
    "ignored",
    "repartitioned",
    "tasks_split",
    "reorder_forced",
    "stalls",
    "dead_lettered",
    "submissions",
    "ecs_calls",
)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30, 60, 120)
_CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


_PREFIX = "ecs_state_worker_"


def code_label(code: str) -> str:
    """``code`` as a label value if it has the form of a code (a letter, then up to 63 letters,
    digits, ``_`` or ``.``: AWS error codes, exception class names), else ``Other``: a code taken
    from an answer must not turn into free text or an unbounded set of series."""
    return code if _CODE.fullmatch(code) else OTHER_CODE


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_info() -> dict[str, str]:
    """The labels of ``ecs_state_worker_build_info``: ``{"version": "0.1.0", "python": "3.11.7",
    "aiokafka": "0.14.0", "aiobotocore": "3.10.0"}``."""
    return {
        "version": worker.__version__,
        "python": platform.python_version(),
        "aiokafka": _version("aiokafka"),
        "aiobotocore": _version("aiobotocore"),
    }


class Metrics:
    """Every series of the process, named ``ecs_state_worker_*``, on its own registry, with
    prometheus-client's process (``process_*``), platform (``python_info``) and garbage-collector
    (``python_gc_*``) collectors."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._lifecycle_metrics(self.registry, _PREFIX)
        self._input_metrics(self.registry, _PREFIX)
        self._ecs_metrics(self.registry, _PREFIX)
        self._offset_metrics(self.registry, _PREFIX)
        self._knowledge_metrics(self.registry, _PREFIX)

    def _lifecycle_metrics(self, r: CollectorRegistry, p: str) -> None:
        Info(p + "build", "Versions of the worker, Python and its Kafka and AWS clients.", registry=r).info(
            build_info()
        )
        self.state = Gauge(
            p + "state",
            "1 for the worker's current lifecycle state (starting, running, draining, stopped).",
            ["state"],
            registry=r,
        )
        self.lifecycle: WorkerState = "starting"
        self.set_state("starting")
        self.rebalances = Counter(
            p + "rebalances",
            "Rebalance listener calls: partitions assigned to or revoked from this member.",
            ["event"],
            registry=r,
        )

    def set_state(self, state: WorkerState) -> None:
        """Make ``state`` the one lifecycle state at 1 (the others 0); ``lifecycle`` reads it."""
        self.lifecycle = state
        for each in STATES:
            self.state.labels(each).set(1 if each == state else 0)

    def _input_metrics(self, r: CollectorRegistry, p: str) -> None:
        self.records_consumed = Counter(
            p + "records_consumed", "Input records read.", ["topic", "partition"], registry=r
        )
        self.events_decoded = Counter(
            p + "events_decoded", "Events decoded, by input format.", ["format"], registry=r
        )
        self.ignored = Counter(p + "ignored", "Input items ignored, by reason code.", ["reason"], registry=r)
        self.repartitioned = Counter(
            p + "repartitioned",
            "Events written to the repartition topic (input_keying any), acknowledged.",
            registry=r,
        )
        self.tasks_split = Counter(
            p + "tasks_split",
            "Tasks whose events arrived on more than one input partition (input_keying task): "
            "the input is not keyed by task.",
            registry=r,
        )
        self.stalls = Counter(
            p + "stalls",
            "Times this process did not run for half the session timeout (frozen, throttled, "
            "paused): ECS calls then waited until the group confirmed its membership.",
            registry=r,
        )
        self.reorder_forced = Counter(
            p + "reorder_forced",
            "Re-keyed tasks whose held events were merged at repartition_max_idle_ms while an input "
            "partition had not progressed past them (input_keying any): order not guaranteed.",
            registry=r,
        )
        self.input_progress_lag = Gauge(
            p + "input_progress_lag_seconds",
            "How long ago the least caught-up input partition was last caught up, as the progress "
            "markers of the repartition partitions owned tell (input_keying any).",
            registry=r,
        )
        self.repartition_purged = Counter(
            p + "repartition_purged",
            "Repartition records deleted below the committed offsets (DeleteRecords).",
            registry=r,
        )
        self.dead_lettered = Counter(
            p + "dead_lettered",
            "Dead-letter records written, by stage and error class.",
            ["stage", "error_class"],
            registry=r,
        )

    def _ecs_metrics(self, r: CollectorRegistry, p: str) -> None:
        self.submissions = Counter(
            p + "submissions", "Finished submissions, by result.", ["result"], registry=r
        )
        self.calls = Counter(p + "ecs_calls", "ECS calls made, by outcome code.", ["code"], registry=r)
        self.retries = Counter(p + "retries", "Retried ECS calls, by error code.", ["code"], registry=r)
        self.throttles = Counter(p + "throttles", "Throttling answers from ECS.", ["code"], registry=r)
        self.skipped_unchanged = Counter(
            p + "snapshots_unchanged",
            "Due snapshots not sent: equal to the acknowledged one or still PENDING.",
            registry=r,
        )
        self.active_tasks = Gauge(p + "active_tasks", "Tasks held in memory.", registry=r)
        self.in_flight = Gauge(p + "ecs_calls_in_flight", "ECS calls in flight.", registry=r)
        self.rate_limit = Gauge(p + "rate_limit_per_second", "Current ECS call rate limit.", registry=r)
        self.quota_share = Gauge(
            p + "quota_share", "Share of the account quota taken (owned / topic partitions).", registry=r
        )
        self.paused = Gauge(p + "consumption_paused", "1 while consumption is paused (task cap).", registry=r)
        self.event_to_ack = Histogram(
            p + "event_to_ack_seconds",
            "From an event's observation to ECS's acknowledgement.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.call_seconds = Histogram(
            p + "ecs_call_seconds", "Duration of one ECS call.", buckets=_CALL_BUCKETS, registry=r
        )

    def _offset_metrics(self, r: CollectorRegistry, p: str) -> None:
        self.incomplete_offsets = Gauge(
            p + "incomplete_offsets",
            "Records read but not yet resolved.",
            ["topic", "partition"],
            registry=r,
        )
        self.committed_offset = Gauge(
            p + "committed_offset", "Last committed offset.", ["topic", "partition"], registry=r
        )
        self.consumer_lag = Gauge(
            p + "consumer_lag",
            "Records behind the partition's end.",
            ["topic", "partition"],
            registry=r,
        )

    def _knowledge_metrics(self, r: CollectorRegistry, p: str) -> None:
        self.describe_calls = Counter(
            p + "describe_calls",
            "DescribeTasks and DescribeTaskDefinition calls, by operation and outcome code.",
            ["operation", "code"],
            registry=r,
        )
        self.knowledge_fallbacks = Counter(
            p + "knowledge_fallbacks",
            "Describe answers that could not be had (the tasks fell back to what was seen), by cause.",
            ["operation", "code"],
            registry=r,
        )
        self.definitions_cached = Gauge(
            p + "task_definitions_cached", "Task definition revisions held.", registry=r
        )
        self.last_progress = Gauge(
            p + "last_progress_timestamp_seconds",
            "Unix time of the last unit of progress.",
            registry=r,
        )

    def totals(self) -> dict[str, float]:
        """The process's counters summed over their labels (``submissions`` by result), for the
        log line at stop: ``{"records_consumed": 1200.0, "submissions_acknowledged": 310.0...}``."""
        totals: dict[str, float] = {}
        for family in self.registry.collect():
            name = family.name.removeprefix("ecs_state_worker_")
            if name not in _TOTALS:
                continue
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                key = f"{name}_{sample.labels['result']}" if name == "submissions" else name
                totals[key] = totals.get(key, 0.0) + sample.value
        return totals
