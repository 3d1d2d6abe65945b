"""What the worker cannot run without fails at start, as one clear line and exit 3: no AWS
credentials, no region, brokers out of reach; the region comes from AWS_REGION when the setting
is unset. Real `python -m worker run` processes, the embedded broker and the local ECS endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devkit.broker import EmbeddedBroker, free_port
from devkit.ecs_endpoint import LocalEcsEndpoint
from tests.conftest import Topics, worker_settings
from tests.support import ROOT
from worker.start_checks import check_start


def _bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No AWS configuration at all: no variables, no files, no instance metadata."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "WORKER_METRICS_PORT": "0",
        **extra,
    }


def _run(env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _errors(stderr: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stderr.splitlines()]
    return [line for line in lines if line["level"] in ("ERROR", "CRITICAL")]


def test_missing_credentials_fail_at_start_with_one_clear_line(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    result = _run(_bare_env(tmp_path, AWS_REGION="eu-west-1", WORKER_BOOTSTRAP_SERVERS=broker.bootstrap))
    assert result.returncode == 3, result.stderr
    (error,) = _errors(result.stderr)
    assert str(error["message"]).startswith("cannot start: no AWS credentials found: set AWS_ACCESS_KEY_ID")
    assert "exc_info" not in error
    assert "Traceback" not in result.stderr


def test_missing_region_fails_at_start_naming_what_to_set(broker: EmbeddedBroker, tmp_path: Path) -> None:
    result = _run(_bare_env(tmp_path, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s"))
    assert result.returncode == 3, result.stderr
    (error,) = _errors(result.stderr)
    assert str(error["message"]).startswith("cannot start: no AWS region: set WORKER_REGION")


def test_unreachable_brokers_fail_after_start_timeout_with_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    env = _bare_env(
        tmp_path,
        AWS_REGION="eu-west-1",
        AWS_ACCESS_KEY_ID="k",
        AWS_SECRET_ACCESS_KEY="s",
        WORKER_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
        WORKER_START_TIMEOUT_MS="2000",
    )
    began = time.monotonic()
    result = _run(env)
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - began < 30
    (error,) = _errors(result.stderr)
    assert str(error["message"]).startswith(
        f"cannot start: cannot reach the Kafka brokers 127.0.0.1:{port} (WORKER_BOOTSTRAP_SERVERS) "
        "within 2000 ms (start_timeout_ms)"
    )
    retries = [line for line in map(json.loads, result.stderr.splitlines()) if line["level"] == "WARNING"]
    assert retries
    assert all("retrying in" in str(line["message"]) for line in retries)
    assert "Traceback" not in result.stderr


def test_a_role_in_another_partition_than_aws_region_fails_at_start(tmp_path: Path) -> None:
    """The Region from AWS_REGION (the setting unset, so the settings alone could not tell):
    a China role cannot be assumed from the aws partition's credentials; said before the brokers
    are even tried, naming the setting."""
    env = _bare_env(
        tmp_path,
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="k",
        AWS_SECRET_ACCESS_KEY="s",
        WORKER_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        WORKER_START_TIMEOUT_MS="0",
        WORKER_HOME_ACCOUNT="111122223333",
        WORKER_ACCOUNT_ROLES="222233334444=arn:aws-cn:iam::222233334444:role/reporter",
    )
    result = _run(env)
    assert result.returncode == 3, result.stderr
    (error,) = _errors(result.stderr)
    assert str(error["message"]) == (
        "cannot start: account_roles (WORKER_ACCOUNT_ROLES): the role for account 222233334444 is in "
        "partition aws-cn, and region us-east-1 is in aws: a role cannot be assumed across partitions"
    )


async def test_the_region_comes_from_aws_region_when_unset(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings = worker_settings(broker, endpoint, topics, region=None)
    checked = await check_start(settings)
    assert checked.region == "ap-southeast-2"
    # the setting wins over the environment
    assert (
        await check_start(worker_settings(broker, endpoint, topics, region="eu-north-1"))
    ).region == "eu-north-1"


def test_a_sigterm_while_waiting_for_the_brokers_is_a_clean_stop(tmp_path: Path) -> None:
    env = _bare_env(
        tmp_path,
        AWS_REGION="eu-west-1",
        AWS_ACCESS_KEY_ID="k",
        AWS_SECRET_ACCESS_KEY="s",
        WORKER_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        WORKER_START_TIMEOUT_MS="600000",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "run"], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    for line in process.stderr:  # wait until it is waiting for the brokers
        if "brokers not reachable yet" in line:
            break
    process.send_signal(signal.SIGTERM)
    rest = process.communicate(timeout=20)[1]
    assert process.returncode == 0, rest
    messages = [json.loads(line)["message"] for line in rest.splitlines()]
    assert messages[-1] == "worker stopped"
    assert "signal SIGTERM: stopping" in messages


async def test_a_missing_output_topic_is_a_warning_at_start(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="worker.start_checks")
    settings = worker_settings(broker, endpoint, topics, dlq_topic="not-created-dlq")
    assert (await check_start(settings)).dlq_topic == "not-created-dlq"
    (warning,) = caplog.records
    assert warning.getMessage().startswith("topic 'not-created-dlq' (WORKER_DLQ_TOPIC) does not exist yet")


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"AWS_ACCESS_KEY_ID": "x"}, "PartialCredentialsError"),
        ({"AWS_PROFILE": "nope"}, "ProfileNotFound"),
        ({"AWS_CONFIG_FILE": "{config}", "AWS_PROFILE": "loop"}, "InfiniteLoopConfigError"),
    ],
)
def test_an_unusable_aws_setup_fails_at_start_with_one_line(
    broker: EmbeddedBroker, tmp_path: Path, extra: dict[str, str], error: str | None
) -> None:
    config = tmp_path / "config"  # a profile whose role's source profile is itself
    config.write_text("[profile loop]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = loop\n")
    extra = {name: value.format(config=config) for name, value in extra.items()}
    env = _bare_env(tmp_path, AWS_REGION="eu-west-1", WORKER_BOOTSTRAP_SERVERS=broker.bootstrap, **extra)
    result = _run(env)
    assert result.returncode == 3, result.stderr
    (line,) = _errors(result.stderr)
    message = str(line["message"])
    assert message.startswith("cannot start: the AWS configuration cannot be used: "), message
    assert f"({error})" in message
    assert "exc_info" not in line
    assert "Traceback" not in result.stderr


async def test_a_metrics_port_in_use_fails_at_start_with_one_line_naming_it(
    broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _bare_env(
            tmp_path,
            AWS_REGION="eu-west-1",
            AWS_ACCESS_KEY_ID="k",
            AWS_SECRET_ACCESS_KEY="s",
            WORKER_BOOTSTRAP_SERVERS=broker.bootstrap,
            WORKER_INPUT_TOPIC=topics.input,
            WORKER_METRICS_PORT=str(port),
        )
        result = await asyncio.to_thread(_run, env)
    assert result.returncode == 3, result.stderr
    (error,) = _errors(result.stderr)
    message = str(error["message"])
    expected = f"cannot start: metrics_port (WORKER_METRICS_PORT): cannot listen on port {port}:"
    assert message.startswith(expected), message
    assert "Traceback" not in result.stderr


@pytest.mark.kafka  # Tansu does not check a replication factor against its brokers
async def test_a_repartition_topic_the_brokers_cannot_create_fails_at_start_naming_the_settings(
    broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    """``input_keying = any`` with a replication factor above the broker count: one line naming the
    settings, exit 3, no traceback (not a crash of the running worker, exit 1)."""
    env = _bare_env(
        tmp_path,
        AWS_REGION="eu-west-1",
        AWS_ACCESS_KEY_ID="k",
        AWS_SECRET_ACCESS_KEY="s",
        WORKER_BOOTSTRAP_SERVERS=broker.bootstrap,
        WORKER_INPUT_TOPIC=topics.input,
        WORKER_GROUP_ID=topics.group,
        WORKER_INPUT_KEYING="any",
        WORKER_REPARTITION_REPLICATION_FACTOR="3",
    )
    result = await asyncio.to_thread(_run, env)
    assert result.returncode == 3, result.stderr
    (error,) = _errors(result.stderr)
    message = str(error["message"])
    expected = (
        f"cannot start: cannot create the repartition topic '{topics.group}-repartition' with "
        f"{topics.partitions} partitions and replication factor 3 (repartition_partitions, "
        "WORKER_REPARTITION_PARTITIONS; repartition_replication_factor, "
        "WORKER_REPARTITION_REPLICATION_FACTOR; or create it beforehand): error "
    )
    assert message.startswith(expected), message
    assert "exc_info" not in error
    assert "Traceback" not in result.stderr
