"""Settings (worker.config): defaults < TOML file < WORKER_* environment < flags, and validation."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from worker.config import SETTING_HELP, ConfigError, Settings, env_name, flag_name, load_settings

SASL = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "worker",
    "sasl_password": "s3cret",
}


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    s = load_settings(env={})
    assert s == Settings()
    assert s.linger_ms == 500
    assert s.security_protocol == "PLAINTEXT"


def test_every_setting_is_documented() -> None:
    assert set(SETTING_HELP) == {f.name for f in msgspec.structs.fields(Settings)}
    assert all(text.strip() for text in SETTING_HELP.values())


def test_names() -> None:
    assert env_name("linger_ms") == "WORKER_LINGER_MS"
    assert flag_name("linger_ms") == "--linger-ms"


def test_flat_toml_file(tmp_path: Path) -> None:
    path = toml(tmp_path, 'linger_ms = 250\ninput-topic = "events"\nenable_idempotence = true\n')
    s = load_settings(env={}, config_file=path)
    assert (s.linger_ms, s.input_topic, s.enable_idempotence) == (250, "events", True)


def test_worker_table_in_toml_file(tmp_path: Path) -> None:
    path = toml(tmp_path, '[worker]\nlinger_ms = 250\nregion = "eu-west-1"\n')
    s = load_settings(env={}, config_file=path)
    assert (s.linger_ms, s.region) == (250, "eu-west-1")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('linger_ms = 100\n[worker]\nregion = "eu-west-1"\n', "linger_ms"),
        ('lingr_ms = 100\n[worker]\nregion = "eu-west-1"\n', "lingr_ms"),
        ('[worker]\nregion = "eu-west-1"\n[kafka]\nacks = "all"\n', "kafka"),
    ],
)
def test_top_level_key_beside_worker_table_is_rejected(tmp_path: Path, text: str, key: str) -> None:
    path = toml(tmp_path, text)
    with pytest.raises(ConfigError, match=f"top-level key '{key}' beside the \\[worker\\] table") as info:
        load_settings(env={}, config_file=path)
    assert str(path) in str(info.value)


def test_worker_key_must_be_a_table(tmp_path: Path) -> None:
    path = toml(tmp_path, "worker = 3\n")
    with pytest.raises(ConfigError, match=r"'worker' must be a table") as info:
        load_settings(env={}, config_file=path)
    assert str(path) in str(info.value)


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = toml(tmp_path, "linger_ms = 42\n")
    assert load_settings(env={"WORKER_CONFIG": str(path)}).linger_ms == 42


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = toml(tmp_path, 'linger_ms = 1\nconcurrency = 2\nregion = "from-file"\nclient_id = "file"\n')
    env = {"WORKER_LINGER_MS": "10", "WORKER_CONCURRENCY": "20", "WORKER_CLIENT_ID": "env"}
    flags = {"linger_ms": 100, "client_id": None}
    s = load_settings(flags=flags, env=env, config_file=path)
    assert s.linger_ms == 100  # flag > env > file
    assert s.concurrency == 20  # env > file
    assert s.region == "from-file"  # file > default
    assert s.client_id == "env"  # a flag left unset (None) does not count


def test_environment_values_are_converted() -> None:
    s = load_settings(
        env={
            "WORKER_MAX_POLL_RECORDS": "42",
            "WORKER_RATE_LIMIT_PER_S": "12.5",
            "WORKER_ENABLE_IDEMPOTENCE": "FALSE",
            "WORKER_ECS_ENDPOINT_URL": "",
            "WORKER_ACKS": "1",
            "OTHER": "x",
        }
    )
    assert (s.max_poll_records, s.rate_limit_per_s, s.enable_idempotence) == (42, 12.5, False)
    assert s.ecs_endpoint_url is None  # empty means unset
    assert s.acks == "1"


@pytest.mark.parametrize(
    ("source", "needles"),
    [
        ("file", ["linger_ms", "worker.toml: linger_ms"]),
        ("env", ["linger_ms", "WORKER_LINGER_MS"]),
        ("flag", ["linger_ms", "--linger-ms"]),
    ],
)
def test_bad_value_names_setting_and_origin(tmp_path: Path, source: str, needles: list[str]) -> None:
    path = toml(tmp_path, "linger_ms = 999999\n") if source == "file" else None
    env = {"WORKER_LINGER_MS": "999999"} if source == "env" else {}
    flags = {"linger_ms": 999_999} if source == "flag" else None
    with pytest.raises(ConfigError) as info:
        load_settings(flags=flags, env=env, config_file=path)
    for needle in needles:
        assert needle in str(info.value)


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"WORKER_CONCURRENCY": "many"}, "concurrency"),
        ({"WORKER_ACKS": "2"}, "acks"),
        ({"WORKER_BOOTSTRAP_SERVERS": ""}, "bootstrap_servers"),
        ({"WORKER_METRICS_PORT": "70000"}, "metrics_port"),
        ({"WORKER_RATE_LIMIT_PER_S": "0"}, "rate_limit_per_s"),
    ],
)
def test_bad_environment_values(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting) as info:
        load_settings(env=env)
    assert env_name(setting) in str(info.value)


def test_unknown_key_in_toml_is_rejected(tmp_path: Path) -> None:
    path = toml(tmp_path, "linger_ms = 5\nlinger = 5\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'linger'") as info:
        load_settings(env={}, config_file=path)
    assert str(path) in str(info.value)


def test_unknown_flag_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'bogus' \(from --bogus\)"):
        load_settings(flags={"bogus": 1}, env={})


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(env={}, config_file=tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(env={}, config_file=toml(tmp_path, "linger_ms = = 3\n"))


def test_sasl_needs_credentials() -> None:
    for missing in ("sasl_mechanism", "sasl_username", "sasl_password"):
        flags = {k: v for k, v in SASL.items() if k != missing}
        with pytest.raises(ConfigError, match="SASL"):
            load_settings(flags=flags, env={})
    s = load_settings(flags=SASL, env={})
    assert s.sasl_username == "worker"


def test_drain_timeout_must_be_shorter_than_rebalance_timeout() -> None:
    with pytest.raises(ConfigError, match="drain_timeout_ms"):
        load_settings(flags={"drain_timeout_ms": 60_000, "rebalance_timeout_ms": 60_000}, env={})
    s = load_settings(flags={"drain_timeout_ms": 59_999, "rebalance_timeout_ms": 60_000}, env={})
    assert s.drain_timeout_ms == 59_999


def test_other_cross_checks() -> None:
    with pytest.raises(ConfigError, match="retry_initial_ms"):
        load_settings(flags={"retry_initial_ms": 500, "retry_max_ms": 100}, env={})
    with pytest.raises(ConfigError, match="ssl_certfile"):
        load_settings(flags={"ssl_certfile": "/c.pem"}, env={})
    assert (
        load_settings(flags={"ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem"}, env={}).ssl_keyfile
        == "/k.pem"
    )


def test_redacted_masks_the_password() -> None:
    s = load_settings(flags=SASL, env={})
    data = s.redacted()
    assert data["sasl_password"] == "***"
    assert "s3cret" not in repr(data)
    assert data["sasl_username"] == "worker"
    assert data["linger_ms"] == s.linger_ms
    assert set(data) == set(SETTING_HELP)
    assert s.sasl_password == "s3cret"  # the settings themselves are untouched
    assert Settings().redacted()["sasl_password"] is None


def test_string_setting_may_be_true_or_false_from_environment() -> None:
    env = {env_name(k): v for k, v in SASL.items()}
    env["WORKER_SASL_PASSWORD"] = "false"
    assert load_settings(env=env).sasl_password == "false"


def test_input_format_accepts_the_registered_formats() -> None:
    from worker.decode import FORMATS

    for name in FORMATS:
        assert load_settings(env={"WORKER_INPUT_FORMAT": name}).input_format == name
    for name in FORMATS[1:]:
        assert name in SETTING_HELP["input_format"]
    for bad in ("nerdctl", "eventbridge"):
        with pytest.raises(ConfigError, match=r"input_format \(from WORKER_INPUT_FORMAT\).*one of: auto, "):
            load_settings(env={"WORKER_INPUT_FORMAT": bad})
    # a choice in another case is read as the choices' case
    assert load_settings(env={"WORKER_INPUT_FORMAT": "Docker-Text"}).input_format == "docker-text"
    assert load_settings(env={"WORKER_AUTO_OFFSET_RESET": "LATEST"}).auto_offset_reset == "latest"


def test_a_bad_value_says_what_the_setting_takes() -> None:
    with pytest.raises(ConfigError, match=r"dry_run \(from WORKER_DRY_RUN\).*\(true or false\)"):
        load_settings(env={"WORKER_DRY_RUN": "on"})
    with pytest.raises(ConfigError, match=r"account_roles .*ACCOUNT=ROLE_ARN pairs"):
        load_settings(env={"WORKER_ACCOUNT_ROLES": "111122223333"})


def test_input_keying_is_task_or_any() -> None:
    assert load_settings(env={}).input_keying == "task"
    assert load_settings(env={"WORKER_INPUT_KEYING": "any"}).input_keying == "any"
    with pytest.raises(ConfigError, match=r"invalid setting input_keying \(from WORKER_INPUT_KEYING\)"):
        load_settings(env={"WORKER_INPUT_KEYING": "host"})


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"WORKER_GROUP_ID": "ecs state/worker"}, "group_id 'ecs state/worker' makes the repartition topic"),
        (
            {"WORKER_GROUP_ID": "in", "WORKER_INPUT_TOPIC": "in-repartition"},
            "a topic the worker uses already",
        ),
        ({"WORKER_REPARTITION_RETENTION_MS": "60000"}, "repartition_retention_ms must be -1"),
        ({"WORKER_DRY_RUN": "true"}, "dry_run cannot run with input_keying any"),
    ],
)
def test_repartition_settings_are_checked_in_any_mode_only(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(env={"WORKER_INPUT_KEYING": "any", **env})
    assert load_settings(env=env).input_keying == "task"  # task keying has no repartition topic


def test_repartition_sizes_are_bounded() -> None:
    with pytest.raises(ConfigError, match=r"invalid setting repartition_partitions \(from --repartition"):
        load_settings({"repartition_partitions": -1}, env={})
    assert load_settings(env={"WORKER_REPARTITION_RETENTION_MS": "-1", "WORKER_INPUT_KEYING": "any"})


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), ("true", True), ("false", False)])
def test_enable_idempotence_takes_auto_or_a_boolean(value: str, expected: object) -> None:
    assert load_settings(env={"WORKER_ENABLE_IDEMPOTENCE": value}).enable_idempotence == expected


def test_enable_idempotence_true_needs_acks_all() -> None:
    with pytest.raises(ConfigError, match="enable_idempotence true needs acks all"):
        load_settings(env={"WORKER_ENABLE_IDEMPOTENCE": "true", "WORKER_ACKS": "1"})


def test_account_roles_are_checked_against_the_accounts_they_serve() -> None:
    home = {"WORKER_HOME_ACCOUNT": "000000000000"}
    role = "arn:aws:iam::111122223333:role/reporter"
    assert load_settings(env={**home, "WORKER_ACCOUNT_ROLES": f"111122223333={role}"}).account_roles == {
        "111122223333": role
    }
    with pytest.raises(
        ConfigError, match=r"account_roles.*role for account 444455556666 is in account 111122223333"
    ):
        load_settings(env={**home, "WORKER_ACCOUNT_ROLES": f"444455556666={role}"})
    own = "arn:aws:iam::000000000000:role/reporter"
    with pytest.raises(ConfigError, match=r"account_roles.*account 000000000000 is home_account"):
        load_settings(env={**home, "WORKER_ACCOUNT_ROLES": f"000000000000={own}"})
    with pytest.raises(ConfigError, match=r"account_roles: account 111122223333 is given twice"):
        load_settings(env={**home, "WORKER_ACCOUNT_ROLES": f"111122223333={role},111122223333={role}"})


def test_a_role_in_another_partition_than_the_region_fails_at_start() -> None:
    home = {"WORKER_HOME_ACCOUNT": "000000000000", "WORKER_REGION": "us-east-1"}
    china = "arn:aws-cn:iam::111122223333:role/reporter"
    with pytest.raises(ConfigError, match=r"account_roles.*partition aws-cn.*region us-east-1 is in aws"):
        load_settings(env={**home, "WORKER_ACCOUNT_ROLES": f"111122223333={china}"})
    in_china = {**home, "WORKER_REGION": "cn-north-1", "WORKER_ACCOUNT_ROLES": f"111122223333={china}"}
    assert load_settings(env=in_china).account_roles == {"111122223333": china}
    with pytest.raises(ConfigError, match=r"account_roles.*partition awsfoo"):
        load_settings(
            env={**home, "WORKER_ACCOUNT_ROLES": "111122223333=arn:awsfoo:iam::111122223333:role/x"}
        )
