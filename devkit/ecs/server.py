"""The HTTP side of the local ECS: an aiohttp server, its admin routes, faults and counters.

Every call acts in its caller's scope, the account of its access key (the endpoint's ``account``,
or a role's account for keys its STS issued) and the Region of its SigV4 credential scope: each
scope has its own state (task definitions, tasks) and its own quota bucket, as ECS's are per
account and Region. A SubmitTaskStateChange naming a task or cluster ARN of another account or
Region is counted (``scope_mismatches``) and, with ``strict_scope``, refused as ECS refuses it
(400 ``AccessDeniedException``).

Routes: ``POST /`` (any path) serves the ECS API, and STS ``AssumeRole`` for a form-encoded body
without ``X-Amz-Target`` (:mod:`devkit.ecs.sts`); ``GET /_state`` answers :meth:`state`;
``POST /_faults`` replaces the faults with a JSON :class:`Faults` (400 ``SerializationException``
if it does not fit); ``POST /_reset`` clears state and counters, keeping the faults.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from devkit.ecs.arns import DEFAULT_ACCOUNT, Scope
from devkit.ecs.faults import DESCRIBE_OPERATIONS, SETUP_OPERATIONS, Faults, describe_fault
from devkit.ecs.quota import QuotaBuckets
from devkit.ecs.state import EcsState
from devkit.ecs.sts import FORM, Identities, sts_error
from devkit.ecs.wire import (
    OPERATIONS,
    ApiError,
    Call,
    api_response,
    credential_of,
    decode_request,
    encode_output,
    error_response,
    load_model,
    operation_of,
)

__all__ = ["LocalEcsEndpoint", "serve"]

log = logging.getLogger(__name__)


@dataclass
class _Counts:
    calls: int = 0
    accepted: int = 0
    dropped: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        return {"calls": self.calls, "accepted": self.accepted, "dropped": self.dropped,
                "errors": dict(self.errors)}  # fmt: skip


class LocalEcsEndpoint:
    """An in-process local ECS (aiohttp) with fault injection; see :mod:`devkit.ecs`.

    ``host``/``port``: where to listen (``port=0``: any free port, see :attr:`url`);
    ``faults``: the initial :class:`Faults`; ``seed``: makes fault draws and task ids
    reproducible; ``account``: the account of callers whose keys the endpoint's STS did not
    issue (the Region comes from each request); ``strict_scope``: refuse a report of another
    scope's task; ``sts_expiry_s``: lifetime of the credentials ``AssumeRole`` issues.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        seed: int | None = None,
        account: str = DEFAULT_ACCOUNT,
        strict_scope: bool = False,
        sts_expiry_s: float = 3600.0,
    ) -> None:
        self._host, self._port, self._account = host, port, account
        self._strict_scope = strict_scope
        self.identities = Identities(account, expiry_s=sts_expiry_s)
        self._rng = random.Random(seed)
        self._describe_rng = random.Random(None if seed is None else f"describe/{seed}")
        self._id_rng = random.Random(None if seed is None else f"ids/{seed}")
        self._runner: web.AppRunner | None = None
        self.set_faults(faults or Faults())
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and start serving; with ``port=0`` the chosen port is reflected in ``url``."""
        load_model()  # load the service model before the first request
        app = web.Application()
        app.router.add_get("/_state", self._handle_state)
        app.router.add_post("/_faults", self._handle_faults)
        app.router.add_post("/_reset", self._handle_reset)
        app.router.add_post("/{tail:.*}", self._handle_api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """Base URL for ``endpoint_url``, e.g. ``http://127.0.0.1:8123``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    # -- control -----------------------------------------------------------------------------
    def set_faults(self, faults: Faults) -> None:
        """Replace the faults; the quota buckets start full."""
        self._faults = faults
        self.quota = QuotaBuckets(faults.quota_burst, faults.quota_refill_per_s or 0.0)

    def reset(self) -> None:
        """Clear task definitions, tasks, findings and counters (faults kept, buckets refilled)."""
        self._submit_path = _Counts()
        self._operations = {name: _Counts() for name in OPERATIONS}
        self._scopes: dict[Scope, EcsState] = {}
        self._by_scope: dict[Scope, _Counts] = {}
        self._mismatches = 0
        self.set_faults(self._faults)

    def ecs(self, scope: Scope) -> EcsState:
        """The state of one account and Region."""
        state = self._scopes.get(scope)
        if state is None:
            state = self._scopes[scope] = EcsState()
        return state

    def state(self) -> dict[str, Any]:
        """Counters, faults, tasks and findings, as ``GET /_state`` answers (see :mod:`devkit.ecs`):
        the scopes' tasks, findings and definitions merged, and ``scopes`` per
        ``"<account>/<region>"`` (the submit path's counters and its tasks' statuses)."""
        merged = EcsState.merged(list(self._scopes.values()))
        return {
            **self._submit_path.snapshot(),
            "operations": {name: counts.snapshot() for name, counts in self._operations.items()},
            "faults": msgspec.to_builtins(self._faults),
            **merged,
            "scope_mismatches": self._mismatches,
            "scopes": {
                f"{scope.account}/{scope.region}": {
                    **self._by_scope.get(scope, _Counts()).snapshot(),
                    "tasks": {task: view["status"] for task, view in state.snapshot()["tasks"].items()},
                }
                for scope, state in self._scopes.items()
            },
        }

    # -- HTTP handlers -----------------------------------------------------------------------
    async def _handle_state(self, request: web.Request) -> web.Response:
        return api_response(200, msgspec.json.encode(self.state()))

    async def _handle_faults(self, request: web.Request) -> web.Response:
        try:
            faults = msgspec.json.decode(await request.read(), type=Faults)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            return error_response(ApiError(400, "SerializationException", str(exc)))
        self.set_faults(faults)
        return api_response(200, msgspec.json.encode({"faults": msgspec.to_builtins(faults)}))

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return api_response(200, b'{"reset":true}')

    async def _handle_api(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target")
        if target is None and request.content_type == FORM:
            return await self._handle_sts(request)
        operation = operation_of(target)
        scope = self._scope_of(request)
        counters = [self._operations[operation]] if operation is not None else []
        if operation in (None, "SubmitTaskStateChange"):
            counters.append(self._submit_path)
            counters.append(self._by_scope.setdefault(scope, _Counts()))
        for counts in counters:
            counts.calls += 1
        try:
            if not await self._pass_faults(request, operation, scope):
                for counts in counters:
                    counts.dropped += 1
                return web.Response(status=500)  # never delivered: the socket is closed
            raw = await request.read()
            call = decode_request(operation, request.headers, raw, self.identities.account_of)
            answer = encode_output(call.operation, self._dispatch(call))
        except ApiError as exc:
            for counts in counters:
                counts.errors[exc.code] += 1
            return error_response(exc)
        for counts in counters:
            counts.accepted += 1
        return api_response(200, answer)

    async def _handle_sts(self, request: web.Request) -> web.Response:
        try:
            body = self.identities.assume_role(await request.read(), datetime.now(UTC))
        except ApiError as exc:
            return web.Response(status=exc.status, body=sts_error(exc), content_type="text/xml")
        return web.Response(status=200, body=body, content_type="text/xml")

    # -- internals ---------------------------------------------------------------------------
    def _scope_of(self, request: web.Request) -> Scope:
        """The caller's scope, before the protocol checks (a request without a credential counts
        against the endpoint's account in us-east-1; it is refused afterwards)."""
        credential = credential_of(request.headers.get("Authorization", ""))
        if credential is None:
            return Scope(self._account, "us-east-1")
        return Scope(self.identities.account_of(credential[0]), credential[1])

    async def _pass_faults(self, request: web.Request, operation: str | None, scope: Scope) -> bool:
        """Apply the faults of ``operation`` (see :mod:`devkit.ecs.faults`); False: dropped."""
        faults = self._faults
        if operation in SETUP_OPERATIONS:
            return True
        if operation is not None and operation in DESCRIBE_OPERATIONS:
            draws = (self._describe_rng.random(), self._describe_rng.random(), self._describe_rng.random())
            if faults.describe_latency_ms > 0:
                await asyncio.sleep(faults.describe_latency_ms / 1000)
            error = describe_fault(faults, operation, self._account, draws)
            if error is not None:
                raise error
            return True
        drop, throttle, error_draw = self._rng.random(), self._rng.random(), self._rng.random()
        if drop < faults.drop_rate:
            if request.transport is not None:
                request.transport.close()
            return False
        if faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000)
        if not self._take_token(scope) or throttle < faults.throttle_rate:
            raise ApiError(400, "ThrottlingException", "Rate exceeded")
        if error_draw < faults.error_rate:
            raise ApiError(500, "ServerException", "Service unavailable (injected)")
        return True

    def _take_token(self, scope: Scope) -> bool:
        return self.quota.take(scope, time.monotonic())

    def _dispatch(self, call: Call) -> dict[str, Any]:
        """The answer payload of one decoded call (raises :class:`ApiError`)."""
        operation, body, scope = call.operation, call.body, call.scope
        ecs = self.ecs(scope)
        if operation == "SubmitTaskStateChange":
            self._check_scope(body, scope)
            self._apply(body, scope)
            return {"acknowledgment": "ACK"}
        now = datetime.now(UTC)
        handlers: dict[str, Callable[[], dict[str, Any]]] = {
            "RegisterTaskDefinition": lambda: ecs.register_task_definition(body, scope, now),
            "DescribeTaskDefinition": lambda: ecs.describe_task_definition(body),
            "RunTask": lambda: ecs.run_task(body, scope, self._id_rng, now),
            "DescribeTasks": lambda: ecs.describe_tasks(body, scope),
        }
        return handlers[operation]()

    def _check_scope(self, body: dict[str, Any], scope: Scope) -> None:
        """A report naming an ARN of another account or Region is counted; with ``strict_scope``
        refused, as ECS refuses a caller acting on another account's resource."""
        for arn in (str(body.get("task", "")), str(body.get("cluster", ""))):
            named = Scope.of_arn(arn)
            if named is not None and named != scope:
                self._mismatches += 1
                if self._strict_scope:
                    raise ApiError(
                        400,
                        "AccessDeniedException",
                        f"User: arn:aws:iam::{scope.account}:user/local is not authorized to perform: "
                        f"ecs:SubmitTaskStateChange on resource: {arn} (caller in {scope.region})",
                    )
                return

    def _apply(self, body: dict[str, Any], scope: Scope) -> None:
        """Fold one accepted SubmitTaskStateChange body into the scope's state (a seam for
        subclasses)."""
        self.ecs(scope).submit(body, datetime.now(UTC))


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    faults: Faults | None = None,
    *,
    seed: int | None = None,
    account: str = DEFAULT_ACCOUNT,
    strict_scope: bool = False,
) -> None:
    """Run a :class:`LocalEcsEndpoint` until cancelled, logging the URL it listens on."""
    endpoint = LocalEcsEndpoint(
        host=host, port=port, faults=faults, seed=seed, account=account, strict_scope=strict_scope
    )
    await endpoint.start()
    log.info("local ECS endpoint listening on %s (state: %s/_state)", endpoint.url, endpoint.url)
    try:
        await asyncio.Event().wait()
    finally:
        await endpoint.stop()
