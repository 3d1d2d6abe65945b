"""Is the worker cut off from its brokers? A probe, one log line per outage and per recovery.

Every ``PROBE_INTERVAL_S`` a metadata request (a client of its own, whose library lines are
silenced: see ``worker.log_filters``) asks the brokers for the cluster's layout, bounded by
``PROBE_TIMEOUT_S``. Failures for ``OUTAGE_GRACE_S`` make an outage: one WARNING line with how long
the brokers have been unreachable and the last error, readiness fails, and the lag gauges are
removed (``on_change(False)``) since the lag is unknown. The first answer after it ends the
outage: one INFO line with its duration, and ``on_change(True)``. Shorter blips (a broker
restarting in a rolling upgrade) say nothing.

States::

    reachable --probe fails--> failing (since t) --OUTAGE_GRACE_S--> outage --probe answers--> reachable
                 failing --probe answers--> reachable (nothing logged)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka.client import AIOKafkaClient

from worker.config import Settings
from worker.kafka_clients import kafka_security
from worker.log_filters import quiet_clients

__all__ = ["OUTAGE_GRACE_S", "PROBE_INTERVAL_S", "PROBE_TIMEOUT_S", "BrokerWatch"]

log = logging.getLogger("worker.brokers")

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 2.0
OUTAGE_GRACE_S = 5.0
"""How long the brokers must fail before the worker reports an outage and turns unready."""


class BrokerWatch:
    """``run()`` probes until cancelled; ``observe`` is the state machine (no I/O but the log).
    ``on_change(reachable)`` is called at each outage and recovery; ``clock`` gives seconds."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_change: Callable[[bool], None],
        grace_s: float = OUTAGE_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._on_change = on_change
        self._grace_s = grace_s
        self._clock = clock
        self._failing_since: float | None = None
        self.outage = False

    def observe(self, problem: str | None) -> None:
        """One probe's result: None when the brokers answered, else what went wrong."""
        now = self._clock()
        if problem is None:
            if self.outage:
                assert self._failing_since is not None
                duration = now - self._failing_since
                log.info("Kafka brokers reachable again after an outage of %.1f s", duration,
                         extra={"outage_s": round(duration, 1)})  # fmt: skip
                self.outage = False
                self._on_change(True)
            self._failing_since = None
            return
        if self._failing_since is None:
            self._failing_since = now
        if not self.outage and now - self._failing_since >= self._grace_s:
            self.outage = True
            unreachable_s = now - self._failing_since
            log.warning(
                "Kafka brokers unreachable for %.1f s: not ready, lag unknown until they answer (%s)",
                unreachable_s,
                problem,
                extra={
                    "unreachable_s": round(unreachable_s, 1),
                    "bootstrap_servers": self._settings.bootstrap_servers,
                },
            )
            self._on_change(False)

    async def run(self, interval_s: float = PROBE_INTERVAL_S) -> None:
        """Probe every ``interval_s`` until cancelled."""
        with quiet_clients():
            client = AIOKafkaClient(
                bootstrap_servers=self._settings.bootstrap_servers,
                client_id=f"{self._settings.client_id}-probe",
                request_timeout_ms=int(PROBE_TIMEOUT_S * 1000),
                **kafka_security(self._settings),
            )
            try:
                while True:
                    self.observe(await self._probe(client))
                    await asyncio.sleep(interval_s)
            finally:
                await client.close()

    async def _probe(self, client: AIOKafkaClient) -> str | None:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                if not client.cluster.brokers():
                    await client.bootstrap()
                else:
                    await client.fetch_all_metadata()
        except Exception as exc:  # aiokafka's errors, TimeoutError, OSError
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None
