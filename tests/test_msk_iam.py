"""MSK IAM authentication: the settings, the OAUTHBEARER token and the clients built with it.

The token is a SigV4-presigned URL, made offline by AWS's signer from botocore's credentials; it
is checked here against the SigV4 algorithm computed independently (hashlib, hmac). No broker
here speaks MSK IAM (the embedded broker offers no SASL mechanism the client can use, and MSK is
not reachable), so no test authenticates against a broker end to end.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from worker.config import ConfigError, Settings, load_settings
from worker.kafka_clients import kafka_security, make_consumer, make_producer
from worker.msk_iam import REFRESH_BEFORE_S, MskIamTokenProvider

REPO = Path(__file__).resolve().parents[1]
KEY_ID, SECRET, SESSION = (
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "IQoJb3JpZ2luX2VjE",
)
MSK = {
    "bootstrap_servers": "b-1.events.abc123.c2.kafka.eu-west-1.amazonaws.com:9098",
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "AWS_MSK_IAM",
    "region": "eu-west-1",
}


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Environment credentials only: botocore's default chain finds them first."""
    for name in (
        "AWS_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_query_signature(url: str, secret: str) -> str:
    """The SigV4 signature of a presigned GET (AWS General Reference, "Create a signed request":
    canonical request, string to sign, derived key). The payload hash is that of the empty body:
    botocore's SigV4QueryAuth signs the payload of a presigned URL other than S3's."""
    parts = urlsplit(url)
    params = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("X-Amz-Signature", "User-Agent")]
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params))
    fields = dict(params)
    canonical = "\n".join(
        [
            "GET",
            parts.path or "/",
            query,
            f"host:{parts.hostname}",
            "",
            "host",
            hashlib.sha256(b"").hexdigest(),
        ]
    )
    scope = fields["X-Amz-Credential"].split("/", 1)[1]
    date, region, service, _ = scope.split("/")
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", fields["X-Amz-Date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), date), region), service), "aws4_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def decode_token(token: str) -> str:
    assert "=" not in token, "MSK takes the token unpadded"
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


@pytest.mark.usefixtures("aws_credentials")
async def test_token_is_a_presigned_connect_url_signed_with_botocore_credentials() -> None:
    provider = MskIamTokenProvider("eu-west-1")
    token = await provider.token()
    url = decode_token(token)
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    assert (parts.scheme, parts.hostname, parts.path) == ("https", "kafka.eu-west-1.amazonaws.com", "/")
    assert params["Action"] == "kafka-cluster:Connect"
    assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert params["X-Amz-Credential"].startswith(f"{KEY_ID}/")
    assert params["X-Amz-Credential"].endswith("/eu-west-1/kafka-cluster/aws4_request")
    assert params["X-Amz-Security-Token"] == SESSION
    assert params["X-Amz-Expires"] == "900"
    assert params["X-Amz-SignedHeaders"] == "host"
    assert params["User-Agent"].startswith("aws-msk-iam-sasl-signer-python/")
    assert params["X-Amz-Signature"] == sigv4_query_signature(url, SECRET)
    assert params["X-Amz-Signature"] != sigv4_query_signature(url, SECRET + "x")
    assert provider.extensions() == {}


@pytest.mark.usefixtures("aws_credentials")
async def test_token_is_reused_until_shortly_before_it_expires() -> None:
    now = [0.0]
    provider = MskIamTokenProvider("eu-west-1", clock=lambda: now[0])
    first = await provider.token()
    expires = provider.expires_at_s
    now[0] = expires - 900 + 1  # signed a second ago: valid for 900 s
    assert await provider.token() == first
    assert provider.expires_at_s == expires
    now[0] = expires - REFRESH_BEFORE_S  # too close to the end: signed again
    await provider.token()
    assert provider.expires_at_s >= expires


async def test_no_credentials_fails_the_token_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ValueError, match="no AWS credentials"):
        await MskIamTokenProvider("eu-west-1").token()


@pytest.mark.usefixtures("aws_credentials")
async def test_clients_are_built_with_oauthbearer_and_the_token_provider() -> None:
    settings = Settings(**MSK)  # type: ignore[arg-type]
    options = kafka_security(settings)
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, MskIamTokenProvider)
    assert provider.region == "eu-west-1"
    assert "sasl_plain_username" not in options
    assert options["ssl_context"] is not None
    consumer, producer = make_consumer(settings), make_producer(settings)
    # Each client keeps its security options on its connection factory (AIOKafkaClient).
    for client, kafka in ((consumer, consumer._client), (producer, producer.client)):
        assert kafka._security_protocol == "SASL_SSL"
        assert kafka._sasl_mechanism == "OAUTHBEARER"
        assert isinstance(kafka._sasl_oauth_token_provider, MskIamTokenProvider)
        assert decode_token(await kafka._sasl_oauth_token_provider.token()).startswith(
            "https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"
        )
        await client.stop()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKER_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "AWS_MSK_IAM needs security_protocol SASL_SSL"),
        ({"WORKER_SECURITY_PROTOCOL": "SSL"}, "sasl_mechanism needs security_protocol SASL_SSL"),
        ({"WORKER_SASL_MECHANISM": "AWS_MSK_IAMX"}, "invalid setting sasl_mechanism"),
    ],
)
def test_bad_msk_settings_fail_naming_the_setting(env: dict[str, str], message: str) -> None:
    base = {"WORKER_SECURITY_PROTOCOL": "SASL_SSL", "WORKER_SASL_MECHANISM": "AWS_MSK_IAM"}
    with pytest.raises(ConfigError, match=message):
        load_settings(env={**base, **env})


def test_msk_settings_need_no_user_or_password() -> None:
    settings = load_settings(
        env={"WORKER_SECURITY_PROTOCOL": "SASL_SSL", "WORKER_SASL_MECHANISM": "AWS_MSK_IAM"}
    )
    assert settings.sasl_mechanism == "AWS_MSK_IAM"
    assert settings.sasl_username is None


_MSK_ARN = r"arn:aws:kafka:[a-z0-9-]+:\d{12}:"
_CLUSTER = r"/[\w-]+/[\w-]+"


def _allowed(policy: dict[str, object]) -> dict[str, set[str]]:
    allowed: dict[str, set[str]] = {}
    for statement in policy["Statement"]:  # type: ignore[attr-defined]
        assert statement["Effect"] == "Allow"
        assert not {"NotAction", "NotResource"} & set(statement)
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        for action in actions:
            assert action.startswith("kafka-cluster:"), action
            assert "*" not in action, action
            allowed.setdefault(action, set()).update(resources)
    return allowed


def test_msk_iam_policy_allows_what_the_worker_does_and_no_more() -> None:
    """The kafka-cluster actions the worker needs (Amazon MSK developer guide, IAM access control):
    connect to the cluster; read the input topic as its group; write the outcome and dead-letter
    topics. Never a wildcard action, never a write to the input."""
    allowed = _allowed(json.loads((REPO / "deploy" / "iam-policy-msk.json").read_text()))
    settings = Settings()

    def grants(action: str, kind: str, name: str) -> bool:
        pattern = _MSK_ARN + kind + _CLUSTER + "/" + re.escape(name)
        return any(re.fullmatch(pattern, resource) for resource in allowed.get(action, ()))

    for action in ("kafka-cluster:Connect", "kafka-cluster:DescribeCluster"):
        assert any(re.fullmatch(_MSK_ARN + "cluster" + _CLUSTER, r) for r in allowed[action]), action
    for action in ("kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"):
        assert grants(action, "topic", settings.input_topic), action
    for topic in (settings.outcome_topic, settings.dlq_topic):
        for action in ("kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"):
            assert grants(action, "topic", topic), (action, topic)
    for action in ("kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"):
        assert grants(action, "group", settings.group_id), action
    assert not grants("kafka-cluster:WriteData", "topic", settings.input_topic), "a write to the input"
    assert not grants("kafka-cluster:ReadData", "topic", settings.outcome_topic), "a read it never does"
