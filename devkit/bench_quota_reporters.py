"""The quota benchmark's two reference reporters, beside the worker: an agent-like reporter and a
naive consumer. Both send each of a task's requests in order (a FIFO per task), retry a throttled
call after a backoff, and count their calls.

* **Agent-like** (aws/amazon-ecs-agent ``agent/eventhandler/task_handler.go``): one reporter per
  host, at most ``AGENT_IN_FLIGHT`` calls in flight per host (``concurrentEventCalls``), one call
  per task status change (RUNNING, STOPPED) carrying the container changes batched since the last
  one, and on failure the same event again after a backoff of ``submitStateBackoffMin`` 1 s,
  times ``submitStateBackoffMultiple`` 1.3 per retry up to ``submitStateBackoffMax`` 30 s, with
  ``submitStateBackoffJitterMultiple`` 0.2 of jitter; the semaphore is not held while backing off.
* **Naive**: one call per container event (the task's status as seen then, that container's
  change), ``NAIVE_IN_FLIGHT`` in flight, retrying throttled calls with the worker's default
  exponential backoff (0.2 s doubling to 20 s, jitter 0.2 s).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from worker.errors import classify

__all__ = ["AGENT_BACKOFF", "AGENT_IN_FLIGHT", "NAIVE_BACKOFF", "NAIVE_IN_FLIGHT", "Backoff", "FifoReporter"]

AGENT_IN_FLIGHT = 10
NAIVE_IN_FLIGHT = 64


@dataclass(frozen=True)
class Backoff:
    """``first_s`` times ``multiple`` per retry up to ``max_s``; jitter: a fraction of the delay
    (``jitter_fraction``, as the agent's ``SimpleBackoff``) plus up to ``jitter_s`` seconds."""

    first_s: float
    max_s: float
    multiple: float
    jitter_fraction: float = 0.0
    jitter_s: float = 0.0

    def delay(self, retry: int, rng: random.Random) -> float:
        base = min(self.max_s, self.first_s * self.multiple**retry)
        return base + rng.uniform(0, base * self.jitter_fraction + self.jitter_s)


AGENT_BACKOFF = Backoff(first_s=1.0, max_s=30.0, multiple=1.3, jitter_fraction=0.2)
NAIVE_BACKOFF = Backoff(first_s=0.2, max_s=20.0, multiple=2.0, jitter_s=0.2)


class FifoReporter:
    """Sends requests (botocore keyword arguments) per task in order: at most ``in_flight`` calls
    at once, a throttled or failed call retried after ``backoff``. ``calls``/``throttled`` count
    the calls made and the throttling answers."""

    def __init__(self, client: Any, *, in_flight: int, backoff: Backoff, seed: int = 0) -> None:
        self._client = client
        self._slots = asyncio.Semaphore(in_flight)
        self._backoff = backoff
        self._rng = random.Random(seed)
        self._queues: dict[str, deque[dict[str, Any]]] = {}
        self._senders: set[asyncio.Task[None]] = set()
        self.calls = 0
        self.throttled = 0

    def send(self, task: str, request: dict[str, Any]) -> None:
        queue = self._queues.get(task)
        if queue is not None:
            queue.append(request)  # its sender is running: it takes this one after the others
            return
        self._queues[task] = deque([request])
        sender = asyncio.create_task(self._send_all(task))
        self._senders.add(sender)
        sender.add_done_callback(self._senders.discard)

    async def idle(self) -> None:
        """Until every request sent so far is acknowledged."""
        while self._senders:
            await asyncio.gather(*list(self._senders))

    async def close(self) -> None:
        for sender in list(self._senders):
            sender.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)

    async def _send_all(self, task: str) -> None:
        queue = self._queues[task]
        try:
            while queue:
                retry = 0
                while not await self._call(queue[0]):
                    await asyncio.sleep(self._backoff.delay(retry, self._rng))
                    retry += 1
                queue.popleft()
        finally:
            del self._queues[task]

    async def _call(self, request: dict[str, Any]) -> bool:
        async with self._slots:
            self.calls += 1
            try:
                await self._client.submit_task_state_change(**request)
            except (ClientError, OSError) as exc:
                if classify(exc).throttled:
                    self.throttled += 1
                return False
        return True


def per_host(client: Any, hosts: int, seed: int) -> tuple[list[FifoReporter], Callable[[int], FifoReporter]]:
    """One agent-like reporter per host, and the reporter of a host."""
    reporters = [
        FifoReporter(client, in_flight=AGENT_IN_FLIGHT, backoff=AGENT_BACKOFF, seed=seed + host)
        for host in range(hosts)
    ]
    return reporters, reporters.__getitem__
