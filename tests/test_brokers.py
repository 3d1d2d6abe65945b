"""Choosing the embedded broker (``devkit.brokers``) and resolving Apache Kafka's artifacts
(``devkit.kafka_artifacts``): the choice the tests, the harness and CI rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from devkit.brokers import choose_broker
from devkit.kafka_artifacts import KafkaUnavailable, java_major, kafka_classpath, kafka_prerequisites

HAS_KAFKA_TOOLS = kafka_prerequisites() is None


def test_an_explicit_choice_wins_and_a_wrong_name_is_refused() -> None:
    assert choose_broker({"TEST_BROKER": "tansu", "CI": "true"}).kind == "tansu"
    assert choose_broker({"TEST_BROKER": "kafka"}, requested="tansu").kind == "tansu"
    with pytest.raises(ValueError, match="TEST_BROKER must be one of kafka, tansu, not 'redpanda'"):
        choose_broker({"TEST_BROKER": "redpanda"})


def test_without_java_the_tests_fall_back_to_tansu_and_say_why_but_ci_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn
    choice = choose_broker({})
    assert (choice.kind, choice.reason) == ("tansu", "Apache Kafka cannot run here: no java on the PATH")
    assert choice.describe() == "broker: Tansu (Apache Kafka cannot run here: no java on the PATH)"
    with pytest.raises(
        KafkaUnavailable, match="CI runs the tests on Apache Kafka, which cannot run here: no java"
    ):
        choose_broker({"CI": "true"})
    with pytest.raises(KafkaUnavailable, match="asked for but cannot run"):
        choose_broker({"TEST_BROKER": "kafka"})


@pytest.mark.skipif(not HAS_KAFKA_TOOLS, reason="needs java 17+ and mvn")
def test_with_java_and_maven_the_tests_use_apache_kafka() -> None:
    java = java_major()
    assert java is not None
    assert java >= 17
    choice = choose_broker({})
    assert choice.kind == "kafka"
    assert choice.describe().startswith("broker: Apache Kafka 4.")
    assert choose_broker({"CI": "true"}).reason == "required under CI"


@pytest.mark.skipif(not HAS_KAFKA_TOOLS, reason="needs java 17+ and mvn")
def test_an_unresolvable_version_fails_with_mavens_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ECS_STATE_WORKER_CACHE", str(tmp_path))
    with pytest.raises(
        KafkaUnavailable, match=r"Maven could not resolve org\.apache\.kafka:kafka_2\.13:0\.0\.1"
    ):
        kafka_classpath("0.0.1")
    assert not (tmp_path / "kafka-0.0.1" / "classpath.ok").exists()
    assert not (tmp_path / "kafka-0.0.1" / "libs").exists()
