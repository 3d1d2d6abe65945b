"""A local Amazon ECS endpoint that serves ``SubmitTaskStateChange`` over AWS JSON 1.1.

Point aiobotocore at it with ``endpoint_url=LocalEcsEndpoint.url``. On the wire it behaves
like ECS: requests need ``X-Amz-Target`` and a SigV4 ``Authorization`` header (present, not
verified); bodies are validated against botocore's own ECS service model; errors are
``{"__type", "message"}`` bodies with an ``x-amzn-ErrorType`` header, which botocore turns
into ``ClientError`` with that code. It is stricter than ECS in three ways, to catch client
bugs: unknown members, enum values outside the model, and non-numeric timestamps are
rejected with ``InvalidParameterException``.

Per call, faults are applied first, in this order: drop (close the connection without an
answer), latency, the token-bucket quota, ``throttle_rate`` (both 400
``ThrottlingException``), ``error_rate`` (500 ``ServerException``). Only then come the
protocol checks, validation and the state update; faults never change task state. Three
random draws are made per call from ``random.Random(seed)``, so outcomes are reproducible.

Accepted calls are folded into per-task state exposed by ``GET /_state`` (and ``state()``).
Tasks are keyed by task ARN; if one ARN is seen in two clusters, those entries are keyed
``"<cluster>|<task>"`` instead. Status regressions (a task or container status whose rank
is lower than its previous status; unknown statuses are not ranked) are recorded, but, as
in ECS, still acknowledged. ``POST /_faults`` replaces the faults, ``POST /_reset`` clears
state and counters.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import botocore.session
import msgspec
from aiohttp import web
from botocore.validate import ParamValidator

__all__ = ["TARGET", "Faults", "LocalEcsEndpoint", "serve"]

log = logging.getLogger(__name__)

TARGET = "AmazonEC2ContainerServiceV20141113.SubmitTaskStateChange"
JSON_11 = "application/x-amz-json-1.1"
HISTORY_LIMIT = 50
REGRESSION_LIMIT = 1000
STATUS_RANK: dict[str, float] = {
    "PROVISIONING": 0, "PENDING": 0, "ACTIVATING": 0, "MANIFEST_PULLED": 0,
    "RUNNING": 1, "DEACTIVATING": 1.5, "STOPPING": 1.5, "DEPROVISIONING": 1.5, "STOPPED": 2,
}  # fmt: skip


class Faults(msgspec.Struct, kw_only=True):
    """Injected failures. Rates are fractions of calls in [0, 1]; quota None = unlimited."""

    throttle_rate: float = 0.0
    error_rate: float = 0.0
    latency_ms: float = 0.0
    drop_rate: float = 0.0
    quota_burst: int | None = None
    quota_refill_per_s: float | None = None


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class _Task:
    cluster: str
    status: str | None = None
    containers: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    history: deque[str] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))


@cache
def _input_shape() -> Any:
    model = botocore.session.get_session().get_service_model("ecs")
    return model.operation_model("SubmitTaskStateChange").input_shape


def _from_wire(value: Any, shape: Any, path: str, problems: list[str]) -> Any:
    """Turn JSON-wire values into botocore parameter values (epoch numbers -> datetime),
    noting wire errors that botocore's client-side validator does not check."""
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {
            k: _from_wire(v, shape.members[k], f"{path}.{k}" if path else k, problems)
            if k in shape.members else v
            for k, v in value.items()
        }  # fmt: skip
    if kind == "list" and isinstance(value, list):
        return [_from_wire(v, shape.member, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if kind == "timestamp" and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            problems.append(f"Invalid timestamp for parameter {path}, value: {value}")
            return None  # keep out-of-range numbers away from botocore's parser
    elif kind == "timestamp" and isinstance(value, str):
        problems.append(f"Invalid type for parameter {path}, value: {value}: expected epoch seconds")
    elif kind in ("integer", "long") and isinstance(value, bool):
        problems.append(f"Invalid type for parameter {path}, value: {value}: expected an integer")
    elif kind == "string" and isinstance(value, str) and shape.enum and value not in shape.enum:
        problems.append(
            f"Invalid value for parameter {path}, value: {value}, valid values: {', '.join(shape.enum)}"
        )
    return value


def _validate(body: dict[str, Any]) -> None:
    problems: list[str] = []
    params = _from_wire(body, _input_shape(), "", problems)
    report = ParamValidator().validate(params, _input_shape())
    if report.has_errors():
        problems.insert(0, str(report.generate_report()))
    for required in ("cluster", "task"):
        if not body.get(required):
            problems.append(f"Missing required parameter in input: {required!r}")
    if problems:
        raise _ApiError(400, "InvalidParameterException", "\n".join(problems))


def _response(status: int, payload: dict[str, Any], code: str | None = None) -> web.Response:
    headers = {"x-amzn-RequestId": str(uuid.uuid4())}
    if code is not None:
        headers["x-amzn-ErrorType"] = code
    return web.Response(
        status=status, body=msgspec.json.encode(payload), headers=headers, content_type=JSON_11
    )


class LocalEcsEndpoint:
    """In-process ECS ``SubmitTaskStateChange`` server (aiohttp), with fault injection."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        seed: int | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self.set_faults(faults or Faults())
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and start serving; with ``port=0`` the chosen port is reflected in ``url``."""
        _input_shape()  # load the service model before the first request
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
        """Clear task state, regressions and counters (faults are kept, bucket refilled)."""
        self._calls = self._accepted = self._dropped = 0
        self._errors: Counter[str] = Counter()
        self._tasks: dict[tuple[str, str], _Task] = {}
        self._regressions: deque[dict[str, Any]] = deque(maxlen=REGRESSION_LIMIT)
        self.set_faults(self._faults)

    def state(self) -> dict[str, Any]:
        """Snapshot of counters, faults and per-task state (same as ``GET /_state``)."""
        arn_count = Counter(task for _, task in self._tasks)
        tasks = {
            (task if arn_count[task] == 1 else f"{cluster}|{task}"): {
                "cluster": rec.cluster,
                "status": rec.status,
                "containers": dict(rec.containers),
                "calls": rec.calls,
                "history": list(rec.history),
            }
            for (cluster, task), rec in self._tasks.items()
        }
        return {
            "calls": self._calls,
            "accepted": self._accepted,
            "dropped": self._dropped,
            "errors": dict(self._errors),
            "faults": msgspec.to_builtins(self._faults),
            "tasks": tasks,
            "regressions": list(self._regressions),
        }

    # -- HTTP handlers -----------------------------------------------------------------------
    async def _handle_state(self, request: web.Request) -> web.Response:
        return _response(200, self.state())

    async def _handle_faults(self, request: web.Request) -> web.Response:
        try:
            faults = msgspec.json.decode(await request.read(), type=Faults)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            return _response(400, {"__type": "SerializationException", "message": str(exc)})
        self.set_faults(faults)
        return _response(200, {"faults": msgspec.to_builtins(faults)})

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return _response(200, {"reset": True})

    async def _handle_api(self, request: web.Request) -> web.Response:
        self._calls += 1
        faults = self._faults
        drop, throttle, error = self._rng.random(), self._rng.random(), self._rng.random()
        try:
            if drop < faults.drop_rate:
                self._dropped += 1
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=500)  # never delivered: the socket is closed
            if faults.latency_ms > 0:
                await asyncio.sleep(faults.latency_ms / 1000)
            if not self._take_token() or throttle < faults.throttle_rate:
                raise _ApiError(400, "ThrottlingException", "Rate exceeded")
            if error < faults.error_rate:
                raise _ApiError(500, "ServerException", "Service unavailable (injected)")
            self._apply(self._parse(request.headers, await request.read()))
        except _ApiError as exc:
            self._errors[exc.code] += 1
            return _response(exc.status, {"__type": exc.code, "message": exc.message}, exc.code)
        self._accepted += 1
        return _response(200, {"acknowledgment": "ACK"})

    # -- internals ---------------------------------------------------------------------------
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

    @staticmethod
    def _parse(headers: Mapping[str, str], raw: bytes) -> dict[str, Any]:
        target = headers.get("X-Amz-Target")
        if target != TARGET:
            raise _ApiError(400, "UnknownOperationException", f"Unknown operation: {target}")
        if not headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 "):
            raise _ApiError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        try:
            body = msgspec.json.decode(raw) if raw.strip() else {}
        except msgspec.DecodeError as exc:
            raise _ApiError(400, "SerializationException", f"Malformed JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "SerializationException", "Request body must be a JSON object")
        _validate(body)
        return body

    def _apply(self, body: dict[str, Any]) -> None:
        cluster, task = str(body["cluster"]), str(body["task"])
        rec = self._tasks.setdefault((cluster, task), _Task(cluster=cluster))
        rec.calls += 1
        status = body.get("status")
        if status is not None:
            self._check_regression(cluster, task, None, rec.status, status, rec.calls)
            rec.status = status
            rec.history.append(status)
        for change in body.get("containers") or ():
            name, cstatus = change.get("containerName"), change.get("status")
            if name is None or cstatus is None:
                continue
            self._check_regression(cluster, task, name, rec.containers.get(name), cstatus, rec.calls)
            rec.containers[name] = cstatus

    def _check_regression(
        self, cluster: str, task: str, container: str | None, old: str | None, new: str, call: int
    ) -> None:
        old_rank = STATUS_RANK.get(old) if old is not None else None
        new_rank = STATUS_RANK.get(new)
        if old_rank is not None and new_rank is not None and new_rank < old_rank:
            self._regressions.append(
                {"cluster": cluster, "task": task, "container": container,
                 "from": old, "to": new, "call": call}
            )  # fmt: skip


async def serve(
    host: str = "127.0.0.1", port: int = 0, faults: Faults | None = None, *, seed: int | None = None
) -> None:
    """Run a :class:`LocalEcsEndpoint` until cancelled, logging the URL it listens on."""
    endpoint = LocalEcsEndpoint(host=host, port=port, faults=faults, seed=seed)
    await endpoint.start()
    log.info("local ECS endpoint listening on %s (state: %s/_state)", endpoint.url, endpoint.url)
    try:
        await asyncio.Event().wait()
    finally:
        await endpoint.stop()
