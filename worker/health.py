"""The operations port: ``/metrics`` (Prometheus), ``/healthz`` (liveness) and ``/readyz``.

Liveness is judged by progress, not by whether the broker answers: the worker is unhealthy only
when it holds unresolved work and has made no progress for ``stall_after_s``. A broker outage
makes it stall too, but a restart would not help then, so the threshold sits well above the
retry deadline.
"""

from __future__ import annotations

import time
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.metrics import Metrics

__all__ = ["HealthServer", "Progress"]


class Progress(Protocol):
    metrics: Metrics

    def is_ready(self) -> bool: ...

    def pending_work(self) -> int: ...

    def last_progress(self) -> float:
        """``time.monotonic()`` of the last unit of progress."""
        ...


class HealthServer:
    def __init__(
        self, worker: Progress, *, port: int, host: str = "0.0.0.0", stall_after_s: float = 300.0
    ) -> None:
        self._worker = worker
        self._host, self._port = host, port
        self._stall_after = stall_after_s
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        if self._port == 0:  # learn the port the system chose
            for address in self._runner.addresses:
                self.port = int(address[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._worker.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        pending = self._worker.pending_work()
        idle_s = time.monotonic() - self._worker.last_progress()
        healthy = pending == 0 or idle_s < self._stall_after
        body = {"healthy": healthy, "pending": pending, "seconds_since_progress": round(idle_s, 3)}
        return web.json_response(body, status=200 if healthy else 503)

    async def _readyz(self, _: web.Request) -> web.Response:
        ready = self._worker.is_ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)
