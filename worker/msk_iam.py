"""Amazon MSK IAM authentication: SASL OAUTHBEARER tokens signed with the process's AWS credentials.

An MSK cluster with IAM access control takes, as the OAUTHBEARER token, a SigV4-presigned URL of
``https://kafka.<region>.amazonaws.com/?Action=kafka-cluster:Connect`` (base64url, unpadded,
valid 900 s), signed for the service ``kafka-cluster``. AWS's ``aws-msk-iam-sasl-signer-python``
builds it; this module hands it to aiokafka as its ``AbstractTokenProvider``.

The credentials come from botocore's default chain, as the ECS client's do: on EKS, IRSA's web
identity token (``AWS_ROLE_ARN``, ``AWS_WEB_IDENTITY_TOKEN_FILE``), which botocore exchanges with
STS and refreshes. The brokers then authorise each ``kafka-cluster:*`` action against the role's
policy (``deploy/iam-policy-msk.json``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import botocore.session
from aiokafka.abc import AbstractTokenProvider
from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
from botocore.credentials import CredentialProvider, Credentials

__all__ = ["REFRESH_BEFORE_S", "MskIamTokenProvider"]

REFRESH_BEFORE_S = 60.0
"""A token is signed again when it has less than this left of its 900 s: a connection opened with
it must still authenticate."""


class _DefaultChain(CredentialProvider):  # type: ignore[misc]
    """botocore's default credential chain, resolved once: its refreshable credentials renew
    themselves (an IRSA web identity before the STS session ends), so each token needs no new
    session and no new STS call."""

    METHOD = "default-chain"

    def __init__(self) -> None:
        super().__init__()
        self._credentials: Credentials | None = None

    def load(self) -> Credentials:
        if self._credentials is None:
            self._credentials = botocore.session.Session().get_credentials()
        if self._credentials is None:
            raise ValueError("AWS_MSK_IAM: no AWS credentials found by botocore's default chain")
        return self._credentials


class MskIamTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """aiokafka's OAUTHBEARER token provider for MSK IAM in ``region`` (the cluster's Region).

    ``token()`` returns the base64url presigned URL (a ``str``), reusing it until
    ``REFRESH_BEFORE_S`` before it expires; signing runs in a thread, since refreshing the
    credentials may call STS. Raises ``ValueError`` when the default chain finds no credentials
    (aiokafka then fails the connection's authentication). ``clock`` gives Unix seconds."""

    def __init__(self, region: str, *, clock: Callable[[], float] = time.time) -> None:
        self.region = region
        self._clock = clock
        self._credentials = _DefaultChain()
        self._token: str | None = None
        self._expires_at_s = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        async with self._lock:
            if self._token is not None and self._clock() < self._expires_at_s - REFRESH_BEFORE_S:
                return self._token
            token, expiry_ms = await asyncio.to_thread(self._sign)
            self._token, self._expires_at_s = token, expiry_ms / 1000
            return token

    @property
    def expires_at_s(self) -> float:
        """Unix time at which the current token expires (0 before the first)."""
        return self._expires_at_s

    def _sign(self) -> tuple[str, int]:
        signed: tuple[str, int] = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(
            self.region, self._credentials
        )
        return signed

    def extensions(self) -> dict[str, Any]:
        """No SASL extensions: MSK reads everything from the token."""
        return {}
