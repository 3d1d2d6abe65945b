"""Settings: defaults < TOML file < ``WORKER_*`` environment variables < command-line flags.

Every setting is one member of ``Settings`` with its unit in its name (``linger_ms``) and its
bounds in its type; ``SETTING_HELP`` documents each (the CLI help and the README table come from
it). A bad setting fails at start with a message naming the setting and where it came from.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import msgspec

from worker.decode.registry import INPUT_FORMAT_HELP, InputFormat
from worker.setting_checks import problems, unknown_variables

__all__ = [
    "SETTING_HELP",
    "ConfigError",
    "InputKeying",
    "Settings",
    "env_name",
    "flag_name",
    "load_settings",
    "repartition_topic",
]

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
RoleArn = Annotated[str, msgspec.Meta(pattern=r"^arn:aws[\w-]*:iam::\d{12}:role/.+$")]
InputKeying = Literal["task", "any"]
"""How the input topic is keyed: ``task`` (each task's events on one partition) or ``any``."""

_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
"""Kafka's legal topic names (``org.apache.kafka.common.internals.Topic.validate``)."""
_MIN_RETENTION_MS = 3_600_000


def repartition_topic(group_id: str) -> str:
    """The internal repartition topic of ``group_id``'s workers, named as Kafka Streams names its
    own (``<application.id>-<name>-repartition``): ``<group_id>-repartition``."""
    return f"{group_id}-repartition"


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Kafka
    bootstrap_servers: NonEmpty = "127.0.0.1:9092"
    input_topic: NonEmpty = "container-events"
    outcome_topic: NonEmpty = "ecs-state-outcomes"
    dlq_topic: NonEmpty = "ecs-state-dlq"
    group_id: NonEmpty = "ecs-state-worker"
    group_instance_id: str | None = None
    client_id: NonEmpty = "ecs-state-worker"
    input_format: InputFormat = "auto"
    input_keying: InputKeying = "task"
    repartition_partitions: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0
    repartition_replication_factor: Annotated[int, msgspec.Meta(ge=0, le=32)] = 0
    repartition_retention_ms: Annotated[int, msgspec.Meta(ge=-1)] = 604_800_000
    repartition_purge_interval_ms: NonNegative = 30_000
    repartition_reorder_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 1_000
    repartition_max_idle_ms: NonNegative = 0
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    start_time: datetime | None = None
    max_record_bytes: Positive = 1_048_576
    max_poll_records: Positive = 500
    fetch_max_wait_ms: Positive = 100
    session_timeout_ms: Positive = 45_000
    rebalance_timeout_ms: Positive = 60_000
    commit_interval_ms: Positive = 1_000
    enable_idempotence: bool | Literal["auto"] = "auto"
    acks: Literal["all", "1", "0"] = "all"
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "AWS_MSK_IAM"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # ECS
    region: NonEmpty | None = None
    ecs_endpoint_url: str | None = None
    home_account: Annotated[str, msgspec.Meta(pattern=r"^\d{12}$")] | None = None
    account_roles: dict[Annotated[str, msgspec.Meta(pattern=r"^\d{12}$")], RoleArn] = {}
    sts_endpoint_url: str | None = None
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    call_timeout_ms: Positive = 10_000
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    retry_deadline_ms: Positive = 120_000
    retry_initial_ms: Positive = 200
    retry_max_ms: Positive = 20_000
    rate_limit_per_s: Annotated[float, msgspec.Meta(gt=0)] = 100.0
    rate_limit_burst: Positive = 150
    account_quota_per_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    account_quota_burst: Positive = 200
    # Coalescing
    linger_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 500
    max_active_tasks: Positive = 200_000
    max_containers_per_task: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 100
    max_attachments_per_task: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 100
    retired_cache: Positive = 100_000
    # Knowing the task
    describe_tasks: bool = True
    describe_batch_ms: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 200
    describe_rate_limit_per_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    describe_deadline_ms: Positive = 20_000
    task_definition_cache: Positive = 1_024
    settle_ms: Annotated[int, msgspec.Meta(ge=0)] = 45_000
    stop_linger_ms: Annotated[int, msgspec.Meta(ge=0)] = 35_000
    exit_wait_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 1_000
    # Operations
    start_timeout_ms: NonNegative = 60_000
    drain_timeout_ms: Positive = 25_000
    metrics_port: Port = 9464
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.retry_initial_ms > self.retry_max_ms:
            raise ValueError("retry_initial_ms must not exceed retry_max_ms")
        self._check_sasl()
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        if self.enable_idempotence is True and self.acks != "all":
            raise ValueError("enable_idempotence true needs acks all")
        if self.account_roles and self.home_account is None:
            raise ValueError("account_roles needs home_account (the account of the default credentials)")
        if self.drain_timeout_ms >= self.rebalance_timeout_ms:
            raise ValueError("drain_timeout_ms must be shorter than rebalance_timeout_ms")
        if self.input_keying == "any":
            self._check_repartition()

    def _check_repartition(self) -> None:
        if self.dry_run:
            raise ValueError(
                "dry_run cannot run with input_keying any: its repartition stage writes records "
                "(to <group_id>-repartition), which a dry run never does"
            )
        topic = repartition_topic(self.group_id)
        if not _TOPIC_NAME.fullmatch(topic):
            raise ValueError(
                f"group_id {self.group_id!r} makes the repartition topic {topic!r}, not a legal Kafka "
                "topic name (letters, digits, '.', '_', '-'; at most 249 characters)"
            )
        if topic in (self.input_topic, self.outcome_topic, self.dlq_topic):
            raise ValueError(
                f"group_id makes the repartition topic {topic!r}, a topic the worker uses already"
            )
        if 0 <= self.repartition_retention_ms < _MIN_RETENTION_MS:
            raise ValueError(
                "repartition_retention_ms must be -1 (no time limit) or at least 3600000 (one hour): "
                "records older than it are deleted even when not yet consumed"
            )

    def _check_sasl(self) -> None:
        if not self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is not None:
                raise ValueError("sasl_mechanism needs security_protocol SASL_SSL or SASL_PLAINTEXT")
            return
        if self.sasl_mechanism == "AWS_MSK_IAM":
            # MSK serves IAM authentication on its TLS listener only (port 9098).
            # sasl_username and sasl_password are not used (the base Deployment passes an optional
            # Secret's password, unset where no Secret exists).
            if self.security_protocol != "SASL_SSL":
                raise ValueError("sasl_mechanism AWS_MSK_IAM needs security_protocol SASL_SSL")
            return
        if not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError("security_protocol SASL_* needs sasl_mechanism, sasl_username and sasl_password")

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict fit for a log line: secrets masked."""
        data: dict[str, Any] = msgspec.structs.asdict(self)
        if data.get("sasl_password"):
            data["sasl_password"] = "***"
        return data


SETTING_HELP: dict[str, str] = {
    "bootstrap_servers": "Kafka bootstrap servers, comma separated.",
    "input_topic": "Topic of container-runtime events.",
    "outcome_topic": "Topic receiving one outcome record per finished submission.",
    "dlq_topic": "Dead-letter topic: undecodable input, invalid events, exhausted submissions.",
    "group_id": "Consumer group id; every replica uses the same.",
    "group_instance_id": "Static membership id (e.g. the pod name): restarts do not rebalance.",
    "client_id": "Kafka client id, also written to outcome and dead-letter records.",
    "input_format": INPUT_FORMAT_HELP,
    "input_keying": (
        "How the input topic is keyed: task (each task's events on one partition: by task ARN or by "
        "host) or any (container id, unkeyed...: the worker re-keys the events by task through its "
        "repartition topic, <group_id>-repartition)."
    ),
    "repartition_partitions": (
        "With input_keying any: partitions of the repartition topic when the worker creates it; "
        "0: as many as the input topic."
    ),
    "repartition_replication_factor": (
        "With input_keying any: replication factor of the repartition topic when the worker "
        "creates it; 0: the input topic's."
    ),
    "repartition_retention_ms": (
        "With input_keying any: retention.ms of the repartition topic when the worker creates it "
        "(-1: none); records older are deleted even if not yet consumed: keep it above the longest outage."
    ),
    "repartition_purge_interval_ms": (
        "With input_keying any: how often the repartition records below the committed offsets are "
        "deleted (DeleteRecords, as Kafka Streams does); 0: never, retention alone."
    ),
    "repartition_reorder_ms": (
        "With input_keying any: a task's re-keyed events are merged once the task has been quiet this "
        "long (at most 4 times this after the first), in their observation order: events read from "
        "different input partitions arrive out of order."
    ),
    "repartition_max_idle_ms": (
        "With input_keying any: how long a task's re-keyed events wait for an input partition that "
        "is behind (changing owner, lagging: its progress markers tell) before they are merged "
        "anyway, as Kafka Streams' max.task.idle.ms; 0: the longest of exit_wait_ms, stop_linger_ms, "
        "session_timeout_ms and rebalance_timeout_ms (a dead owner's partitions stall that long)."
    ),
    "auto_offset_reset": (
        "Where a partition the group has no committed offset for starts: earliest (all that the "
        "topic retains) or latest (only records produced from now on)."
    ),
    "start_time": (
        "ISO 8601 time with a zone (2026-11-30T08:00:00Z): partitions without a committed offset "
        "start at the first record at or after it (Kafka's offsets_for_times), or at their end "
        "where none is that late (as kafka-consumer-groups --reset-offsets --to-datetime); "
        "committed offsets always win."
    ),
    "max_record_bytes": "Larger input records are dead-lettered.",
    "max_poll_records": "Records fetched per poll.",
    "fetch_max_wait_ms": "Longest wait of a fetch for new records: bounds the delay a quiet partition adds.",
    "session_timeout_ms": "Consumer group session timeout.",
    "rebalance_timeout_ms": "Time a rebalance waits for members; covers the drain of revoked partitions.",
    "commit_interval_ms": "How often resolved offsets are committed.",
    "enable_idempotence": (
        "Idempotent producer: auto asks the brokers at start (InitProducerId) and turns it on where "
        "they grant producer ids (Apache Kafka, MSK, Confluent; not Tansu) and acks is all; "
        "true fails at start where they do not."
    ),
    "acks": "Producer acknowledgements for outcome and dead-letter records.",
    "compression_type": "Compression of outcome and dead-letter records.",
    "security_protocol": "Kafka security protocol.",
    "sasl_mechanism": (
        "SASL mechanism: PLAIN or SCRAM-* with sasl_username and sasl_password; AWS_MSK_IAM for "
        "MSK IAM (OAUTHBEARER signed with the AWS credentials, IRSA on EKS; needs SASL_SSL)."
    ),
    "sasl_username": "SASL user name.",
    "sasl_password": "SASL password (prefer the WORKER_SASL_PASSWORD variable from a secret).",
    "ssl_cafile": "CA bundle to verify the brokers.",
    "ssl_certfile": "Client certificate for mutual TLS.",
    "ssl_keyfile": "Client private key for mutual TLS.",
    "region": (
        "AWS region of the ECS clusters; unset: the SDK's (AWS_REGION, AWS_DEFAULT_REGION, the "
        "profile's region), and the worker does not start without one."
    ),
    "ecs_endpoint_url": "ECS endpoint override (the local endpoint); unset for real ECS.",
    "home_account": (
        "Account of the default credentials: its tasks are called with them, other accounts only "
        "through account_roles (their tasks are rejected otherwise); unset: every account "
        "(of region's partition)."
    ),
    "account_roles": (
        "Role to assume per other account, as ACCOUNT=ROLE_ARN pairs, comma separated "
        "(a TOML table in a file); needs home_account."
    ),
    "sts_endpoint_url": "STS endpoint override for account_roles (the local endpoint); unset for real STS.",
    "concurrency": "Most ECS calls in flight; also the HTTP connection pool size.",
    "call_timeout_ms": "Connect and read timeout of one ECS call.",
    "max_attempts": "Attempts per submission, the first included.",
    "retry_deadline_ms": "Give up retrying a submission after this long.",
    "retry_initial_ms": "First retry backoff (exponential, with jitter).",
    "retry_max_ms": "Largest retry backoff.",
    "rate_limit_per_s": (
        "ECS calls per second of this process per account and Region (ECS allows about 120/s per "
        "account and Region, shared: divide by replicas, or set account_quota_per_s)."
    ),
    "rate_limit_burst": "Token-bucket burst of ECS calls per account and Region.",
    "account_quota_per_s": (
        "ECS calls per second per account and Region for the whole group: each process takes its "
        "share of partitions of it (and at most rate_limit_per_s); unset: rate_limit_per_s alone."
    ),
    "account_quota_burst": "Burst per account and Region for the group, shared like account_quota_per_s.",
    "linger_ms": "Delay from a task's first unsent change to its submission (STOPPED goes at once).",
    "max_active_tasks": "Cap on tasks held in memory; at the cap consumption pauses.",
    "max_containers_per_task": "Events giving a task more containers are dead-lettered (ECS allows 10).",
    "max_attachments_per_task": "Events giving a task more attachments or managed agents are dead-lettered.",
    "retired_cache": "STOPPED tasks remembered so late events cause no call.",
    "describe_tasks": (
        "Ask ECS (DescribeTasks) for the view of a task whose history this process missed "
        "(after a restart or a rebalance); off: fall back to what was seen, with settle_ms."
    ),
    "describe_batch_ms": "How long describe requests gather before a call (up to 100 tasks per cluster).",
    "describe_rate_limit_per_s": "DescribeTasks and DescribeTaskDefinition calls per second (this process).",
    "describe_deadline_ms": "Give up retrying a describe call after this long (the task then falls back).",
    "task_definition_cache": "Task definition revisions kept (each is fetched once).",
    "settle_ms": (
        "Without ECS's view, a STOPPED derived from a partial view waits until the task has been "
        "quiet this long (keep above the agent's 30 s stop timeout)."
    ),
    "stop_linger_ms": (
        "Once an essential container stopped, wait up to this long for the task's STOPPED before "
        "reporting the intermediate state (the agent stops the others within its stop timeout)."
    ),
    "exit_wait_ms": (
        "A container's stop whose end lacks a fact the agent reports with it (a stop before its "
        "die: the exit code; an exit 137: a possible oom) waits up to this long for it; 0: never."
    ),
    "start_timeout_ms": (
        "At start, keep trying to reach the brokers and find the input topic this long (backoff "
        "0.5 s doubling to 5 s), then exit 3 with one line; 0: one attempt."
    ),
    "drain_timeout_ms": "On SIGTERM, wait this long for in-flight work (keep under the pod's grace period).",
    "metrics_port": "Port of /metrics, /healthz and /readyz; 0 disables.",
    "log_level": "Log level.",
    "log_format": "json for structured logs, text for humans.",
    "dry_run": (
        "Consume, decode, coalesce and log each request that would be sent; no ECS call (no "
        "submission, no describe), no offset commit, no outcome or dead-letter record."
    ),
}


class ConfigError(ValueError):
    """A setting is invalid; the message names it."""


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    return "WORKER_" + field.upper()


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the sources (later wins) and validate; raise ``ConfigError`` naming the bad setting."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    path = config_file or (Path(env["WORKER_CONFIG"]) if env.get("WORKER_CONFIG") else None)
    if path is not None:
        for key, value in _read_toml(path).items():
            merged[key] = value
            origin[key] = f"{path}: {key}"
    fields = set(SETTING_HELP)
    for field in fields:
        if (value := env.get(env_name(field))) is not None:
            merged[field] = _from_env(value)
            origin[field] = env_name(field)
    for field, value in (flags or {}).items():
        if value is not None:
            merged[field] = value
            origin[field] = flag_name(field)
    if "account_roles" in merged:
        merged["account_roles"] = _pairs(merged["account_roles"])
    unknown = sorted(set(merged) - fields)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} (from {origin[unknown[0]]})")
    for _variable, problem in unknown_variables(env, fields):
        raise ConfigError(f"unknown environment variable {problem}")
    _normalise_case(merged)
    try:
        settings = msgspec.convert(merged, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc, origin)) from None
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from None
    for field, problem in problems(settings):
        where = f" (from {origin[field]})" if field in origin else ""
        raise ConfigError(f"invalid setting {field}{where}: {problem}")
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return {key.replace("-", "_"): value for key, value in _settings_table(data, path).items()}


def _settings_table(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The settings of a parsed config file: the whole file, or its ``[worker]`` table.

    A file is either flat (every top-level key a setting) or holds one ``[worker]`` table and
    nothing beside it. Raises ``ConfigError`` naming the file and the key for a ``worker`` key
    that is not a table, or for any top-level key next to the ``[worker]`` table (it would
    otherwise be dropped without a word).
    """
    if "worker" not in data:
        return data
    table = data["worker"]
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: 'worker' must be a table ([worker]), got {table!r}")
    beside = sorted(key for key in data if key != "worker")
    if beside:
        raise ConfigError(
            f"config file {path}: top-level key {beside[0]!r} beside the [worker] table; "
            "put every setting inside [worker] or write a flat file without it"
        )
    return table


def _pairs(value: Any) -> Any:
    """``ACCOUNT=ROLE,ACCOUNT=ROLE`` (environment, flag) as a mapping; anything else as it is."""
    if not isinstance(value, str):
        return value
    pairs = [item.partition("=") for item in value.split(",") if item.strip()]
    if any(not sep for _, sep, _ in pairs):
        return value  # msgspec then names the setting: "Expected object, got str"
    accounts = [key.strip() for key, _, _ in pairs]
    if twice := sorted({a for a in accounts if accounts.count(a) > 1}):
        raise ConfigError(f"invalid setting account_roles: account {twice[0]} is given twice")
    return {key.strip(): role.strip() for key, _, role in pairs}


def _from_env(value: str) -> Any:
    # Text as it is: msgspec.convert(strict=False) reads "true"/"false" for bool settings only.
    return value if value != "" else None


def strip_hint(hint: Any) -> Any:
    """The hint without ``Annotated`` and ``None``: ``Annotated[int, ...] | None`` -> ``int``."""
    origin = get_origin(hint)
    if origin is Annotated:
        return strip_hint(get_args(hint)[0])
    if origin in (Union, UnionType):
        return strip_hint(next(a for a in get_args(hint) if a is not type(None)))
    return hint


def allowed_values(hint: Any) -> tuple[str, ...]:
    """The values a ``Literal`` setting allows, as text; empty for other settings."""
    stripped = strip_hint(hint)
    return tuple(str(v) for v in get_args(stripped)) if get_origin(stripped) is Literal else ()


def _hints() -> dict[str, Any]:
    return get_type_hints(Settings, include_extras=True)


def _normalise_case(merged: dict[str, Any]) -> None:
    """A choice given in another case than its values' (``Docker``, ``debug``) is read as theirs
    when they are all of one case."""
    hints = _hints()
    for name, value in merged.items():
        values = allowed_values(hints.get(name))
        if not isinstance(value, str) or not values:
            continue
        if all(v == v.lower() for v in values):
            merged[name] = value.lower()
        elif all(v == v.upper() for v in values):
            merged[name] = value.upper()


def _expected(field: str) -> str:
    """What ``field`` takes, for an error message: its choices, or the form of its text."""
    hint = strip_hint(_hints().get(field))
    if values := allowed_values(hint):
        return f" (one of: {', '.join(values)})"
    if hint is bool:
        return " (true or false)"
    if field == "account_roles":
        return " (ACCOUNT=ROLE_ARN pairs, comma separated: 111122223333=arn:aws:iam::111122223333:role/x)"
    return ""


def _explain(exc: msgspec.ValidationError, origin: Mapping[str, str]) -> str:
    text = str(exc)
    field = text.rpartition("$.")[2].strip("`").split("[")[0].split(".")[0] if "$." in text else None
    if field and field in origin:
        return f"invalid setting {field} (from {origin[field]}): {text.split(' - at ')[0]}{_expected(field)}"
    if field:
        return f"invalid setting {field}: {text}{_expected(field)}"
    return f"invalid settings: {text}"
