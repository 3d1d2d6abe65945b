"""The ECS clients of a process: one per Region and credentials, built when first needed, closed at
stop.

The default credentials come from the SDK's chain (environment, IRSA's web identity, the
container or instance role). An account of ``account_roles`` is called with that role's
credentials: botocore's own assume-role machinery, as a ``role_arn`` profile uses it
(aiobotocore's ``AioAssumeRoleCredentialFetcher`` behind ``AioDeferredRefreshableCredentials``),
so the role is assumed at the first call and again before its credentials expire. STS is called
with the default credentials, in ``region`` (``sts_endpoint_url`` overrides it, for the local
endpoint), like the ECS calls: no retries of botocore's own (the worker's are the only ones) and
``call_timeout_ms`` at most. ``credentials_ready`` assumes the role (when due) before a call takes
its concurrency slot, so that an account whose STS is slow or down holds back no other account.
"""

from __future__ import annotations

import asyncio
import functools
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioAssumeRoleCredentialFetcher, AioDeferredRefreshableCredentials
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import NoCredentialsError

from worker.config import Settings, env_name
from worker.dry_run import DryRunEcs
from worker.routing import Route, Routes, role_partition_problems
from worker.start_checks import StartCheckFailed, resolve_region
from worker.submit import open_ecs_client

__all__ = ["ROLE_SESSION_NAME", "EcsClients", "routes_of"]

ROLE_SESSION_NAME = "ecs-state-worker"
"""``RoleSessionName`` of the assumed roles: CloudTrail shows the worker's calls under it."""


def routes_of(settings: Settings) -> Routes:
    """The routes of ``settings``, the home Region resolved as at start (``region``, else
    ``AWS_REGION`` and the SDK's). Raises ``worker.start_checks.StartCheckFailed`` without a
    Region, except for a dry run (no call is made: tasks named by id alone get no Region), and for
    a role of ``account_roles`` in another partition than that Region's."""
    try:
        region = resolve_region(settings)
    except StartCheckFailed:
        if not settings.dry_run:
            raise
        region = ""
    for problem in role_partition_problems(region or None, settings.account_roles):
        raise StartCheckFailed(f"account_roles ({env_name('account_roles')}): {problem}")
    return Routes(region=region, home_account=settings.home_account, account_roles=settings.account_roles)


class EcsClients:
    """``client_for(route)`` -> the aiobotocore ECS client for that account and Region.

    Raises ``worker.routing.NoRoute`` for an account that may not be called, and
    ``botocore.exceptions.NoCredentialsError`` when a role must be assumed without default
    credentials. ``aclose()`` closes every client built; use as ``async with``.
    """

    def __init__(self, settings: Settings, routes: Routes, *, session: AioSession | None = None) -> None:
        self._settings = settings
        self.routes = routes
        self._session = session or get_session()
        self._stack = AsyncExitStack()
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._role_sessions: dict[str, AioSession] = {}
        self._role_credentials: dict[str, AioDeferredRefreshableCredentials] = {}
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> EcsClients:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def built(self) -> list[tuple[str, str | None]]:
        """(Region, role ARN or None) of every client built so far."""
        return list(self._clients)

    async def client_for(self, route: Route) -> Any:
        """The client of ``route``; a ``DryRunEcs`` (no call) under ``dry_run``."""
        role = self.routes.role_for(route)  # NoRoute before anything is built
        key = (route.region, role)
        if self._settings.dry_run:
            return self._clients.setdefault(key, DryRunEcs())
        client = self._clients.get(key)
        if client is not None:
            return client
        async with self._lock:
            if key not in self._clients:
                session = self._session if role is None else await self._role_session(role)
                opened = open_ecs_client(self._settings, region=route.region, session=session)
                self._clients[key] = await self._stack.enter_async_context(opened)
        return self._clients[key]

    async def credentials_ready(self, route: Route) -> None:
        """Assume ``route``'s role now if its credentials are missing or due for renewal (nothing
        for the default credentials, nor under ``dry_run``). Raises what STS or botocore raised
        (``botocore.exceptions.ClientError``, ``EndpointConnectionError``...), and ``NoRoute``."""
        role = self.routes.role_for(route)
        if role is None or self._settings.dry_run:
            return
        await self._role_session(role)
        await self._role_credentials[role].get_frozen_credentials()

    async def aclose(self) -> None:
        self._clients.clear()
        await self._stack.aclose()

    async def _role_session(self, role: str) -> AioSession:
        session = self._role_sessions.get(role)
        if session is not None:
            return session
        source = await self._session.get_credentials()
        if source is None:
            raise NoCredentialsError()
        fetcher = AioAssumeRoleCredentialFetcher(
            client_creator=functools.partial(
                self._session.create_client,
                region_name=self._settings.region,
                endpoint_url=self._settings.sts_endpoint_url,
                config=_sts_config(self._settings),
            ),
            source_credentials=source,
            role_arn=role,
            extra_args={"RoleSessionName": ROLE_SESSION_NAME},
        )
        session = AioSession()
        # The session's credentials, as botocore's resolver would set them for a role profile.
        credentials = AioDeferredRefreshableCredentials(
            refresh_using=fetcher.fetch_credentials, method="assume-role"
        )
        session._credentials = credentials
        self._role_sessions[role], self._role_credentials[role] = session, credentials
        return session


def _sts_config(settings: Settings) -> AioConfig:
    """STS's client as the ECS clients: one attempt (the worker retries), ``call_timeout_ms``."""
    return AioConfig(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=settings.call_timeout_ms / 1000,
        read_timeout=settings.call_timeout_ms / 1000,
    )
