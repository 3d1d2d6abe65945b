"""A minimal STS for the local endpoint: ``AssumeRole`` (AWS query protocol), and which account a
request's access key belongs to.

``AssumeRole`` takes the form body botocore sends (``Action=AssumeRole&Version=2011-06-15&
RoleArn=...&RoleSessionName=...``), checks it against botocore's own STS model (required members,
types), and answers the XML botocore's query parser reads: temporary credentials whose access key
the endpoint then attributes to the role's account (:meth:`Identities.account_of`), so that ECS
calls signed with them act in that account. The answer is checked against the output shape before
it is sent. Errors (``ApiError``): 400 ``ValidationError`` for a body that does not fit, 400
``InvalidAction`` for any other action. No signature or trust policy is verified.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import botocore.session
from botocore.utils import ArnParser, InvalidArnException
from botocore.validate import ParamValidator

from devkit.ecs.wire import ApiError

__all__ = ["FORM", "Identities", "assume_role_answer", "sts_error"]

FORM = "application/x-www-form-urlencoded"
_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"


@cache
def _model() -> Any:
    return botocore.session.get_session().get_service_model("sts")


class Identities:
    """Access keys the local STS issued, and the account each acts in; any other key acts in
    ``default_account``. ``expiry_s``: lifetime of issued credentials. ``assumed`` counts
    ``AssumeRole`` answers per role ARN."""

    def __init__(self, default_account: str, *, expiry_s: float = 3600.0) -> None:
        self.default_account = default_account
        self.expiry_s = expiry_s
        self._accounts: dict[str, str] = {}
        self.assumed: dict[str, int] = {}

    def account_of(self, access_key: str) -> str:
        return self._accounts.get(access_key, self.default_account)

    def assume_role(self, raw: bytes, now: datetime) -> bytes:
        """The XML answer of one ``AssumeRole`` form body (raises ``ApiError``)."""
        form = {key: values[-1] for key, values in parse_qs(raw.decode("utf-8", "replace")).items()}
        action = form.pop("Action", None)
        form.pop("Version", None)
        if action != "AssumeRole":
            raise ApiError(400, "InvalidAction", f"Could not find operation {action}")
        params: dict[str, Any] = dict(form)
        duration = params.get("DurationSeconds")
        if duration is not None:
            params["DurationSeconds"] = int(duration) if duration.isdigit() else duration
        shape = _model().operation_model("AssumeRole").input_shape
        report = ParamValidator().validate(params, shape)
        if report.has_errors():
            raise ApiError(400, "ValidationError", str(report.generate_report()))
        account = _role_account(params["RoleArn"])
        key = "ASIA" + secrets.token_hex(8).upper()
        self._accounts[key] = account
        self.assumed[params["RoleArn"]] = self.assumed.get(params["RoleArn"], 0) + 1
        role_name = params["RoleArn"].rsplit("/", 1)[-1]
        answer = {
            "Credentials": {
                "AccessKeyId": key,
                "SecretAccessKey": secrets.token_hex(20),
                "SessionToken": secrets.token_hex(32),
                "Expiration": now + timedelta(seconds=self.expiry_s),
            },
            "AssumedRoleUser": {
                "AssumedRoleId": f"AROA{secrets.token_hex(8).upper()}:{params['RoleSessionName']}",
                "Arn": f"arn:aws:sts::{account}:assumed-role/{role_name}/{params['RoleSessionName']}",
            },
        }
        return assume_role_answer(answer)


def assume_role_answer(answer: dict[str, Any]) -> bytes:
    """The ``AssumeRoleResponse`` XML of ``answer`` (checked against the output shape)."""
    shape = _model().operation_model("AssumeRole").output_shape
    report = ParamValidator().validate(answer, shape)
    if report.has_errors():
        raise ApiError(500, "InternalFailure", f"answer does not fit the model: {report.generate_report()}")
    return (
        f'<AssumeRoleResponse xmlns="{_NAMESPACE}"><AssumeRoleResult>{_xml(answer)}</AssumeRoleResult>'
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></AssumeRoleResponse>"
    ).encode()


def sts_error(error: ApiError) -> bytes:
    """The query protocol's ``ErrorResponse`` XML for ``error``."""
    return (
        f'<ErrorResponse xmlns="{_NAMESPACE}"><Error><Type>Sender</Type><Code>{escape(error.code)}</Code>'
        f"<Message>{escape(error.message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    ).encode()


def _xml(value: dict[str, Any]) -> str:
    parts = []
    for name, member in value.items():
        if isinstance(member, dict):
            text = _xml(member)
        elif isinstance(member, datetime):
            text = member.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        else:
            text = escape(str(member))
        parts.append(f"<{name}>{text}</{name}>")
    return "".join(parts)


def _role_account(role_arn: str) -> str:
    try:
        arn = ArnParser().parse_arn(role_arn)
    except InvalidArnException:
        arn = {}
    if arn.get("service") != "iam" or not arn.get("resource", "").startswith("role/"):
        raise ApiError(400, "ValidationError", f"{role_arn} is not a valid role ARN")
    return str(arn["account"])
