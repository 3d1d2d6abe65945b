"""Settings that their types cannot check fail at start naming the setting: addresses, URLs,
files, times, misspelt WORKER_* variables; and `run --help` shows what each setting is."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from tests.support import ROOT
from worker import __version__
from worker.config import ConfigError, load_settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"WORKER_BOOTSTRAP_SERVERS": "kafka:abc"},
            "invalid setting bootstrap_servers (from WORKER_BOOTSTRAP_SERVERS): "
            "'kafka:abc' has no valid port",
        ),
        (
            {"WORKER_BOOTSTRAP_SERVERS": "kafka-1:9092,kafka-2"},
            "invalid setting bootstrap_servers (from WORKER_BOOTSTRAP_SERVERS): 'kafka-2' is not host:port",
        ),
        ({"WORKER_BOOTSTRAP_SERVERS": "kafka:70000"}, "'kafka:70000' has no valid port (1-65535)"),
        (
            {"WORKER_ECS_ENDPOINT_URL": "127.0.0.1:4566"},
            "invalid setting ecs_endpoint_url (from WORKER_ECS_ENDPOINT_URL): "
            "'127.0.0.1:4566' needs a scheme",
        ),
        (
            {"WORKER_ECS_ENDPOINT_URL": "http://"},
            "invalid setting ecs_endpoint_url (from WORKER_ECS_ENDPOINT_URL): 'http://' has no host",
        ),
        (
            {"WORKER_START_TIME": "2026-11-30T08:00:00"},
            "invalid setting start_time (from WORKER_START_TIME): needs a time zone",
        ),
        ({"WORKER_START_TIME": "yesterday"}, "invalid setting start_time (from WORKER_START_TIME)"),
        (
            {"WORKER_AUTO_OFFSET_RESET": "none"},
            "invalid setting auto_offset_reset (from WORKER_AUTO_OFFSET_RESET)",
        ),
        (
            {"WORKER_LINGER": "100"},
            "unknown environment variable WORKER_LINGER is not a setting; did you mean WORKER_LINGER_MS?",
        ),
        ({"WORKER_BOOTSTRAP_SERVER": "k:9092"}, "did you mean WORKER_BOOTSTRAP_SERVERS?"),
    ],
)
def test_a_bad_setting_fails_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env=env)
    assert message in str(raised.value)


def test_good_addresses_times_and_any_case_log_levels_pass() -> None:
    s = load_settings(
        env={
            "WORKER_BOOTSTRAP_SERVERS": "kafka-1:9092, [::1]:9093",
            "WORKER_ECS_ENDPOINT_URL": "https://ecs.eu-west-1.amazonaws.com",
            "WORKER_START_TIME": "2026-11-30T08:00:00Z",
            "WORKER_LOG_LEVEL": "debug",
            "WORKER_AUTO_OFFSET_RESET": "latest",
            "WORKER_CONFIG": "",
        }
    )
    assert s.log_level == "DEBUG"
    assert s.start_time == datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert s.auto_offset_reset == "latest"
    assert load_settings({"log_level": "warning"}, env={}).log_level == "WARNING"


def _worker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_help_shows_defaults_variables_and_allowed_values() -> None:
    result = _worker("run", "--help")
    text = " ".join(result.stdout.split())  # argparse wraps lines
    assert result.returncode == 0
    assert "(default: None)" not in text
    assert "(default: 500; env: WORKER_LINGER_MS)" in text
    assert "(default: unset; env: WORKER_GROUP_INSTANCE_ID)" in text
    assert "--log-level {DEBUG,INFO,WARNING,ERROR}" in text
    assert "One of: earliest, latest." in text
    assert "--dry-run, --no-dry-run" in text


@pytest.mark.parametrize("args", [("--version",), ("run", "--version")])
def test_version(args: tuple[str, ...]) -> None:
    result = _worker(*args)
    assert (result.returncode, result.stdout.strip()) == (0, f"ecs-state-worker {__version__}")


def test_a_misspelt_variable_stops_run_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker", "run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "WORKER_DRAIN_TIMEOUT": "1000"},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: unknown environment variable WORKER_DRAIN_TIMEOUT is not a setting; "
        "did you mean WORKER_DRAIN_TIMEOUT_MS?"
    ]
