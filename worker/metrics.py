"""Prometheus metrics of one worker process (prometheus-client), on their own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_TOTALS = (
    "records_consumed",
    "events_decoded",
    "ignored",
    "repartitioned",
    "tasks_split",
    "dead_lettered",
    "submissions",
    "ecs_calls",
)

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30, 60, 120)
_CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


_PREFIX = "ecs_state_worker_"


class Metrics:
    """Every series of the process, named ``ecs_state_worker_*``, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._input_metrics(self.registry, _PREFIX)
        self._ecs_metrics(self.registry, _PREFIX)
        self._offset_metrics(self.registry, _PREFIX)
        self._knowledge_metrics(self.registry, _PREFIX)

    def _input_metrics(self, r: CollectorRegistry, p: str) -> None:
        self.records_consumed = Counter(
            p + "records_consumed", "Input records read.", ["partition"], registry=r
        )
        self.events_decoded = Counter(
            p + "events_decoded", "Events decoded, by input format.", ["format"], registry=r
        )
        self.ignored = Counter(p + "ignored", "Input items ignored, by reason.", ["reason"], registry=r)
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
