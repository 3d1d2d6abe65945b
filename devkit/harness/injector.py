"""Fault injection: the local ECS endpoint, recording what it accepts, and the injector that
applies a scenario's faults on schedule to the workers, the endpoint and the broker proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import msgspec

from devkit.ecs.arns import Scope
from devkit.ecs.quota import QuotaBuckets
from devkit.ecs_endpoint import Faults, LocalEcsEndpoint
from devkit.harness.scenarios import Fault
from devkit.harness.workers import Run
from devkit.proxy import TcpProxy

__all__ = ["Injector", "RecordingEndpoint"]


class RecordingEndpoint(LocalEcsEndpoint):
    """The local endpoint, also recording each accepted request per task (to count duplicates)
    and each quota refusal; fault windows keep the quota bucket's level instead of refilling it."""

    def __init__(self, *, faults: Faults, seed: int) -> None:
        self.accepted_requests: dict[tuple[str, str], list[bytes]] = defaultdict(list)
        self.quota_refusals = 0
        super().__init__(faults=faults, seed=seed)

    def set_faults(self, faults: Faults) -> None:
        previous: Faults | None = getattr(self, "_faults", None)
        buckets: QuotaBuckets | None = getattr(self, "quota", None)
        super().set_faults(faults)
        quota = (faults.quota_burst, faults.quota_refill_per_s)
        same = previous is not None and (previous.quota_burst, previous.quota_refill_per_s) == quota
        if same and buckets is not None:
            self.quota = buckets

    def _take_token(self, scope: Scope) -> bool:
        taken = super()._take_token(scope)
        if not taken:
            self.quota_refusals += 1
        return taken

    def _apply(self, body: dict[str, Any], scope: Scope) -> None:
        super()._apply(body, scope)
        key = (str(body["cluster"]), str(body["task"]))
        self.accepted_requests[key].append(msgspec.json.encode(body, order="sorted"))


def _combine(base: Faults, windows: Sequence[Faults]) -> Faults:
    return Faults(
        throttle_rate=max([base.throttle_rate, *(w.throttle_rate for w in windows)]),
        error_rate=max([base.error_rate, *(w.error_rate for w in windows)]),
        latency_ms=max([base.latency_ms, *(w.latency_ms for w in windows)]),
        drop_rate=max([base.drop_rate, *(w.drop_rate for w in windows)]),
        quota_burst=base.quota_burst,
        quota_refill_per_s=base.quota_refill_per_s,
    )


def _describe(faults: Faults) -> str:
    parts = [
        f"{name} {value:g}"
        for name, value in (
            ("throttle", faults.throttle_rate),
            ("errors", faults.error_rate),
            ("latency_ms", faults.latency_ms),
            ("drops", faults.drop_rate),
        )
        if value
    ]
    return ", ".join(parts) or "none"


class Injector:
    """Applies each fault at its time after production starts (``Run.t0``). Endpoint fault windows
    may overlap: the endpoint gets the strongest of each rate over the open windows."""

    def __init__(self, run: Run, endpoint: RecordingEndpoint, proxy: TcpProxy, base: Faults) -> None:
        self._run = run
        self._endpoint = endpoint
        self._proxy = proxy
        self._base = base
        self._windows: list[Faults] = []

    async def inject(self, fault: Fault) -> None:
        run = self._run
        await asyncio.sleep(max(0.0, run.t0 + fault.at_s - time.monotonic()))
        if fault.kind in ("kill", "term", "leave"):
            await self._stop_worker(fault)
        elif fault.kind == "join":
            run.note(f"join: {run.spawn().name}")
        elif fault.kind == "endpoint":
            await self._endpoint_window(fault.endpoint or Faults(), fault.duration_s)
        elif fault.kind == "freeze":
            await self._freeze_worker(fault)
        elif fault.kind == "broker_cut":
            aborted = self._proxy.cut(fault.cut_mode)
            run.note(f"broker cut ({fault.cut_mode}) for {fault.duration_s:g}s: {aborted} connections")
            await asyncio.sleep(fault.duration_s)
            self._proxy.restore()
            run.note("broker connections restored")

    async def _stop_worker(self, fault: Fault) -> None:
        """SIGKILL or SIGTERM a worker; unless it leaves for good, restart one after a while."""
        run = self._run
        victim = run.pick(fault.worker)
        if victim is None:
            run.note(f"{fault.kind}: no live worker")
            return
        kill = fault.kind == "kill"
        run.note(f"{'SIGKILL' if kill else 'SIGTERM'} {victim.name} (pid {victim.process.pid})")
        if not kill:
            run.signalled.append((victim.name, time.time()))
        await run.terminate(victim, kill=kill)
        if fault.kind != "leave" and fault.restart_after_s is not None:
            await asyncio.sleep(fault.restart_after_s)
            run.note(f"restart: {run.spawn().name} replaces {victim.name}")

    async def _freeze_worker(self, fault: Fault) -> None:
        """SIGSTOP a worker for ``duration_s``, then SIGCONT it."""
        run = self._run
        victim = run.pick(fault.worker)
        if victim is None:
            run.note("freeze: no live worker")
            return
        pid = victim.process.pid
        run.note(f"SIGSTOP {victim.name} (pid {pid}) for {fault.duration_s:g}s")
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(fault.duration_s)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        run.note(f"SIGCONT {victim.name}")

    async def _endpoint_window(self, window: Faults, duration_s: float) -> None:
        self._windows.append(window)
        self._endpoint.set_faults(_combine(self._base, self._windows))
        self._run.note(f"endpoint faults for {duration_s:g}s: {_describe(window)}")
        await asyncio.sleep(duration_s)
        self._windows.remove(window)
        self._endpoint.set_faults(_combine(self._base, self._windows))
        self._run.note(f"endpoint faults over: {_describe(window)}")
