"""Which embedded broker to run: Apache Kafka (``devkit.kafka_broker``) or Tansu
(``devkit.broker``), and the interface both give.

The tests, the fault harness and the demo choose with ``choose_broker``: an explicit choice
(``TEST_BROKER=kafka|tansu``, or the caller's own flag) wins; under CI (``CI=true``) Apache Kafka
is required; otherwise Apache Kafka when Java 17+ and Maven are present, else Tansu.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol

from devkit.broker import EmbeddedBroker
from devkit.kafka_artifacts import KAFKA_VERSION, KafkaUnavailable, kafka_prerequisites
from devkit.kafka_broker import KafkaBroker

__all__ = ["BROKER_KINDS", "Broker", "BrokerChoice", "BrokerKind", "choose_broker", "make_broker"]

BrokerKind = Literal["kafka", "tansu"]
BROKER_KINDS: tuple[BrokerKind, ...] = ("kafka", "tansu")


class Broker(Protocol):
    """What the fixtures, the harness and the demo use of an embedded broker."""

    kind: str
    die_with_parent: bool
    host: str
    port: int
    advertised: str

    @property
    def bootstrap(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def returncode(self) -> int | None: ...

    def start(self, timeout_s: float = ...) -> Broker: ...

    def stop(self, *, timeout_s: float = ...) -> None: ...

    def __enter__(self) -> Broker: ...

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None: ...


@dataclass(frozen=True)
class BrokerChoice:
    kind: BrokerKind
    reason: str

    def describe(self) -> str:
        """One line for a report header, e.g. ``broker: Apache Kafka 4.1.2 (java 17+ and mvn found)``."""
        name = f"Apache Kafka {KAFKA_VERSION}" if self.kind == "kafka" else "Tansu"
        return f"broker: {name} ({self.reason})"


def choose_broker(env: Mapping[str, str], requested: str | None = None) -> BrokerChoice:
    """The broker to run, from ``requested`` (a flag) or ``TEST_BROKER``, ``CI`` and the machine.

    Raises ``KafkaUnavailable`` when Apache Kafka is required (asked for, or under ``CI=true``)
    but Java 17+ or Maven is missing, and ``ValueError`` for an unknown name."""
    asked = requested or env.get("TEST_BROKER") or None
    if asked is not None and asked not in BROKER_KINDS:
        raise ValueError(f"TEST_BROKER must be one of {', '.join(BROKER_KINDS)}, not {asked!r}")
    missing = kafka_prerequisites() if asked != "tansu" else None
    if asked is not None:
        if asked == "kafka" and missing:
            raise KafkaUnavailable(f"Apache Kafka was asked for but cannot run: {missing}")
        return BrokerChoice(asked, "asked for")
    if env.get("CI", "").lower() == "true":
        if missing:
            raise KafkaUnavailable(f"CI runs the tests on Apache Kafka, which cannot run here: {missing}")
        return BrokerChoice("kafka", "required under CI")
    if missing:
        return BrokerChoice("tansu", f"Apache Kafka cannot run here: {missing}")
    return BrokerChoice("kafka", "java 17+ and mvn found")


def make_broker(
    kind: BrokerKind,
    *,
    advertised: str | None = None,
    log_file: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Broker:
    """An embedded broker of ``kind``, not yet started."""
    if kind == "kafka":
        return KafkaBroker(host=host, port=port, advertised=advertised, log_file=log_file)
    return EmbeddedBroker(host=host, port=port, advertised=advertised, log_file=log_file)
