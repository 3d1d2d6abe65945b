"""``python -m worker run`` once the settings are loaded: signals, start checks, the operations
port, the worker, and the exit code.

Exit codes (the README's operations section lists them too)::

    0    stopped by SIGTERM or SIGINT (drained, committed, both Kafka clients closed)
    1    failed while running: the error and its traceback are logged (``exc_info``)
    2    a bad setting (``worker.cli``, before anything starts)
    3    a start check failed (``worker.start_checks``; the repartition topic), or the operations
         port could not be listened on (``metrics_port`` in use): one line says what to set
    128+n  a second signal n: exited at once, unresolved records are re-read by the next owner

A stop signal is honoured from the interpreter's first moments (``worker.early_signals``) through
the start checks to the drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from worker import early_signals
from worker.collector import tune_collector
from worker.config import Settings, env_name
from worker.start_checks import StartCheckFailed, check_start
from worker.stopping import race_stop

if TYPE_CHECKING:
    from worker.health import HealthServer

__all__ = ["EXIT_CRASHED", "EXIT_START_CHECK", "EXIT_STOPPED", "serve"]

log = logging.getLogger("worker")
T = TypeVar("T")

EXIT_STOPPED = 0
EXIT_CRASHED = 1
EXIT_START_CHECK = 3
_HEALTH_STOP_TIMEOUT_S = 2.0


class _Stop:
    """The stop requests: the first drains (through ``on_stop``), a second exits at once."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.signals = 0

    def signal(self, signum: int, *, early: bool = False) -> None:
        self.signals += 1
        if self.signals > 1 and not early:
            log.warning("second signal: exiting at once; unresolved records will be re-read")
            os._exit(128 + signum)
        name = signal.Signals(signum).name
        log.info("signal %s%s: stopping", name, " while starting" if early else "")
        self.requested.set()

    async def unless_stopped(self, work: Awaitable[T]) -> T | None:
        """``work``'s result, or None if a stop is requested first (``work`` is then cancelled)."""
        task = await race_stop(work, self.requested)
        return None if task.cancelled() else task.result()


async def serve(settings: Settings) -> int:
    """Run the worker until a stop signal; return the exit code (see the module docstring)."""
    tune_collector()
    stop = _Stop()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.signal, signum)
    for early in early_signals.take():  # arrived while starting: stop now, cleanly
        stop.signal(early, early=True)
    try:
        checked = await stop.unless_stopped(check_start(settings))
    except StartCheckFailed as exc:
        log.error("cannot start: %s", exc)
        return EXIT_START_CHECK
    if checked is None:
        log.info("worker stopped", extra={"while": "start checks"})
        return EXIT_STOPPED
    try:
        await _run_worker(checked, stop)
    except StartCheckFailed as exc:  # the operations port, the repartition topic: nothing consumed yet
        log.error("cannot start: %s", exc)
        return EXIT_START_CHECK
    except Exception as exc:
        log.critical("worker failed: %s", exc, exc_info=True, extra={"error_class": type(exc).__name__})
        return EXIT_CRASHED
    return EXIT_STOPPED


async def _run_worker(settings: Settings, stop: _Stop) -> None:
    from worker.health import HealthServer
    from worker.pipeline import Worker

    worker = Worker(settings)
    stopper = asyncio.create_task(stop.requested.wait())
    stopper.add_done_callback(lambda _: worker.request_stop())
    stall_after_s = max(300.0, 2 * settings.retry_deadline_ms / 1000)  # well above a retry deadline
    health = (
        HealthServer(worker, port=settings.metrics_port, stall_after_s=stall_after_s)
        if settings.metrics_port
        else None
    )
    try:
        if health:
            await _start_health(health, settings.metrics_port)
        await worker.run()
    finally:
        stopper.cancel()
        if health:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_HEALTH_STOP_TIMEOUT_S):
                    await health.stop()


async def _start_health(health: HealthServer, port: int) -> None:
    """Listen on the operations port; raises ``StartCheckFailed`` naming ``metrics_port`` when it
    cannot be (``OSError``: the port is in use, or below 1024 without the right)."""
    try:
        await health.start()
    except OSError as exc:
        raise StartCheckFailed(
            f"metrics_port ({env_name('metrics_port')}): cannot listen on port {port}: {exc}"
        ) from None
