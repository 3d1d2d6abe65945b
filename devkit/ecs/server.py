"""The HTTP side of the local ECS: an aiohttp server, its admin routes, faults and counters.

Routes: ``POST /`` (any path) serves the ECS API; ``GET /_state`` answers :meth:`state`;
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

from devkit.ecs.arns import DEFAULT_ACCOUNT
from devkit.ecs.faults import DESCRIBE_OPERATIONS, SETUP_OPERATIONS, Faults, describe_fault
from devkit.ecs.state import EcsState
from devkit.ecs.wire import (
    OPERATIONS,
    ApiError,
    Call,
    api_response,
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
    reproducible; ``account``: the account of every ARN (the Region comes from each request).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        seed: int | None = None,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        self._host, self._port, self._account = host, port, account
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
        """Replace the faults; the quota bucket starts full."""
        self._faults = faults
        self._tokens = float(faults.quota_burst or 0)
        self._refilled_at = time.monotonic()

    def reset(self) -> None:
        """Clear task definitions, tasks, findings and counters (faults kept, bucket refilled)."""
        self._submit_path = _Counts()
        self._operations = {name: _Counts() for name in OPERATIONS}
        self._ecs = EcsState()
        self.set_faults(self._faults)

    def state(self) -> dict[str, Any]:
        """Counters, faults, tasks and findings, as ``GET /_state`` answers (see :mod:`devkit.ecs`)."""
        return {
            **self._submit_path.snapshot(),
            "operations": {name: counts.snapshot() for name, counts in self._operations.items()},
            "faults": msgspec.to_builtins(self._faults),
            **self._ecs.snapshot(),
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
        operation = operation_of(request.headers.get("X-Amz-Target"))
        counters = [self._operations[operation]] if operation is not None else []
        if operation in (None, "SubmitTaskStateChange"):
            counters.append(self._submit_path)
        for counts in counters:
            counts.calls += 1
        try:
            if not await self._pass_faults(request, operation):
                for counts in counters:
                    counts.dropped += 1
                return web.Response(status=500)  # never delivered: the socket is closed
            call = decode_request(operation, request.headers, await request.read(), self._account)
            answer = encode_output(call.operation, self._dispatch(call))
        except ApiError as exc:
            for counts in counters:
                counts.errors[exc.code] += 1
            return error_response(exc)
        for counts in counters:
            counts.accepted += 1
        return api_response(200, answer)

    # -- internals ---------------------------------------------------------------------------
    async def _pass_faults(self, request: web.Request, operation: str | None) -> bool:
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
        if not self._take_token() or throttle < faults.throttle_rate:
            raise ApiError(400, "ThrottlingException", "Rate exceeded")
        if error_draw < faults.error_rate:
            raise ApiError(500, "ServerException", "Service unavailable (injected)")
        return True

    def _take_token(self) -> bool:
        burst = self._faults.quota_burst
        if burst is None:
            return True
        now = time.monotonic()
        refill = (now - self._refilled_at) * (self._faults.quota_refill_per_s or 0.0)
        self._tokens = min(float(burst), self._tokens + refill)
        self._refilled_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _dispatch(self, call: Call) -> dict[str, Any]:
        """The answer payload of one decoded call (raises :class:`ApiError`)."""
        operation, body, scope = call.operation, call.body, call.scope
        if operation == "SubmitTaskStateChange":
            self._apply(body)
            return {"acknowledgment": "ACK"}
        now = datetime.now(UTC)
        handlers: dict[str, Callable[[], dict[str, Any]]] = {
            "RegisterTaskDefinition": lambda: self._ecs.register_task_definition(body, scope, now),
            "DescribeTaskDefinition": lambda: self._ecs.describe_task_definition(body),
            "RunTask": lambda: self._ecs.run_task(body, scope, self._id_rng, now),
            "DescribeTasks": lambda: self._ecs.describe_tasks(body, scope),
        }
        return handlers[operation]()

    def _apply(self, body: dict[str, Any]) -> None:
        """Fold one accepted SubmitTaskStateChange body into the state (a seam for subclasses)."""
        self._ecs.submit(body, datetime.now(UTC))


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    faults: Faults | None = None,
    *,
    seed: int | None = None,
    account: str = DEFAULT_ACCOUNT,
) -> None:
    """Run a :class:`LocalEcsEndpoint` until cancelled, logging the URL it listens on."""
    endpoint = LocalEcsEndpoint(host=host, port=port, faults=faults, seed=seed, account=account)
    await endpoint.start()
    log.info("local ECS endpoint listening on %s (state: %s/_state)", endpoint.url, endpoint.url)
    try:
        await asyncio.Event().wait()
    finally:
        await endpoint.stop()
