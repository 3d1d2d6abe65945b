"""The pipeline's wiring: consume -> intake (decode, validate, apply) -> coalesce -> dispatch
(submit, publish) -> partitions (commit), on one event loop.

With ``input_keying = any`` a repartition stage comes first, as in Kafka Streams: the one
consumer (one group) reads the input topic and the repartition topic; input records are re-keyed
by task into the repartition topic (``worker.repartition``), whose records the coalescing stage
takes. The topic is created at start and purged as it is committed (``worker.repartition_topic``).

Three loops share the pure core (``Intake`` with its decoder and ``Coalescer``, the
``OffsetBook``): ``ConsumeLoop`` fetches and admits records, ``Dispatcher`` starts the
submissions that are due, and ``Partitions`` commits what is resolved every
``commit_interval_ms`` and handles rebalances. A record's offset is released when every part of
it is resolved: its events reported (outcome acknowledged by the broker), or dead-lettered
(acknowledged), or ignored. ``Worker`` starts and stops them and answers the health probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Coroutine
from typing import Any

from worker.config import Settings
from worker.consume import ConsumeLoop
from worker.dispatch import Dispatcher
from worker.intake import Intake
from worker.kafka_clients import make_consumer, make_producer
from worker.metrics import Metrics
from worker.offsets import OffsetBook, TopicPartitionKey
from worker.partitions import Partitions
from worker.publish import KafkaSink, Publisher
from worker.ratelimit import AsyncRateLimiter
from worker.repartition import Repartitioner
from worker.repartition_topic import RepartitionTopic
from worker.resolve import Resolver
from worker.submit import Submitter, open_ecs_client

__all__ = ["Worker"]

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 4.0
"""Bound on one Kafka client's stop: after a broker outage aiokafka can wait out its 40 s request
timeout. A stop then takes at most the drain, one commit and two closes (5 s + 3 s + 2 x 4 s with
the test settings)."""


async def _close(client: Any, name: str) -> None:
    """Stop a Kafka client, bounded, never raising: by then the work is drained and committed (or
    left to be re-read), so a failing close must not turn a clean stop into a crash."""
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await client.stop()
    except Exception as exc:
        log.warning("closing the Kafka %s failed: %s", name, exc, extra={"error_class": type(exc).__name__})


class Worker:
    """One worker process's pipeline: ``run()`` until ``request_stop()`` (SIGTERM)."""

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.partitions = Partitions(OffsetBook(), self.metrics)
        self.intake = Intake.from_settings(settings, self.partitions.book)
        self._stopping = asyncio.Event()
        self._dispatcher: Dispatcher | None = None
        self._progress_at = time.monotonic()

    # -- health ----------------------------------------------------------------------------------

    @property
    def ready(self) -> asyncio.Event:
        """Set at the first partition assignment."""
        return self.partitions.ready

    def is_ready(self) -> bool:
        return self.ready.is_set() and not self._stopping.is_set()

    def pending_work(self) -> int:
        """Records this process could resolve but has not yet, and background work: records held
        by tasks that wait (never reported yet, or for ECS) are not counted, since waiting is not
        being stuck."""
        background = 0 if self._dispatcher is None else self._dispatcher.background
        return self.partitions.book.unresolved(self.intake.coalescer.pinned()) + background

    def committed_offsets(self) -> dict[TopicPartitionKey, int]:
        return self.partitions.book.committed()

    def last_progress(self) -> float:
        return self._progress_at

    def _progressed(self) -> None:
        self._progress_at = time.monotonic()
        self.metrics.last_progress.set(time.time())

    # -- lifecycle -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Graceful stop: no more fetching; flush, drain, commit, leave the group."""
        self._stopping.set()
        if self._dispatcher is not None:
            self._dispatcher.wake()

    async def run(self) -> None:
        s = self.settings
        producer = make_producer(s)
        consumer = make_consumer(s)
        try:
            if await self._unless_stopped(producer.start()):
                async with open_ecs_client(s) as client, contextlib.AsyncExitStack() as stack:
                    topic = None
                    if s.input_keying == "any":
                        topic = await stack.enter_async_context(RepartitionTopic(s))
                        if not await self._unless_stopped(topic.ensure()):
                            return
                    consumer.subscribe(
                        [s.input_topic, *([topic.name] if topic else [])], listener=self.partitions
                    )
                    dispatcher, publisher = self._build_stages(client, producer)
                    self._dispatcher = dispatcher
                    resolver = self._resolver_for(client, dispatcher)
                    self.partitions.attach(consumer, dispatcher)
                    if await self._unless_stopped(consumer.start()):
                        stage_one = self._stage_one(producer, dispatcher, topic)
                        await self._run_loops(consumer, dispatcher, publisher, resolver, *stage_one)
        finally:
            # Stopped in every case, started or not: aiokafka warns about clients never closed.
            await _close(consumer, "consumer")
            await _close(producer, "producer")
        log.info("worker stopped", extra={"totals": self.metrics.totals()})

    def _stage_one(
        self, producer: Any, dispatcher: Dispatcher, topic: RepartitionTopic | None
    ) -> tuple[Repartitioner | None, list[Coroutine[Any, Any, None]]]:
        """With ``input_keying = any``: the re-keying writer and the purge loop; else nothing."""
        if topic is None:
            return None, []
        repartitioner = Repartitioner(
            producer,
            topic=topic.name,
            metrics=self.metrics,
            release=self.partitions.book.release,
            spawn=dispatcher.spawn,
            giving_up=dispatcher.past_drain_deadline,
        )
        interval_ms = self.settings.repartition_purge_interval_ms
        loops = [topic.run_purges(interval_ms / 1000, self.partitions.book.committed)] if interval_ms else []
        return repartitioner, loops

    def _build_stages(self, client: Any, producer: Any) -> tuple[Dispatcher, Publisher]:
        s = self.settings
        limiter = AsyncRateLimiter(rate=s.rate_limit_per_s, burst=s.rate_limit_burst)
        dispatcher: Dispatcher | None = None

        def giving_up() -> bool:
            return dispatcher is not None and dispatcher.past_drain_deadline()

        publisher = Publisher(
            KafkaSink(producer),
            outcome_topic=s.outcome_topic,
            dlq_topic=s.dlq_topic,
            worker=s.group_instance_id or s.client_id,
            metrics=self.metrics,
            giving_up=giving_up,
        )
        dispatcher = Dispatcher(
            coalescer=self.intake.coalescer,
            book=self.partitions.book,
            submitter=Submitter(client, s, metrics=self.metrics, limiter=limiter),
            publisher=publisher,
            metrics=self.metrics,
            linger_ms=s.linger_ms,
            drain_timeout_ms=s.drain_timeout_ms,
            on_progress=self._progressed,
        )
        return dispatcher, publisher

    def _resolver_for(self, client: Any, dispatcher: Dispatcher) -> Resolver:
        s = self.settings
        return Resolver(
            client,
            self.intake.coalescer,
            metrics=self.metrics,
            batch_ms=s.describe_batch_ms,
            rate_per_s=s.describe_rate_limit_per_s,
            deadline_ms=s.describe_deadline_ms,
            release=dispatcher.release,
            wake=dispatcher.wake,
        )

    async def _unless_stopped(self, starting: Awaitable[object]) -> bool:
        """Await a client's start unless a stop is requested first: the consumer's start waits for
        the group's first assignment, which a stalled rebalance can hold back indefinitely, and a
        SIGTERM must not wait for it. Nothing is held yet, so nothing needs draining."""
        start = asyncio.ensure_future(starting)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([start, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not start.done():
                start.cancel()
                await asyncio.gather(start, return_exceptions=True)
        if start.cancelled() or self._stopping.is_set():
            if start.done() and not start.cancelled() and start.exception() is not None:
                log.info("stop requested while starting (the start failed too: %s)", start.exception())
            else:
                log.info("stop requested while starting: not started")
            return False
        start.result()  # a failed start raises here
        return True

    async def _run_loops(
        self,
        consumer: Any,
        dispatcher: Dispatcher,
        publisher: Publisher,
        resolver: Resolver,
        repartitioner: Repartitioner | None = None,
        more: list[Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        consume_loop = ConsumeLoop(
            consumer,
            intake=self.intake,
            dispatcher=dispatcher,
            publisher=publisher,
            metrics=self.metrics,
            max_poll_records=self.settings.max_poll_records,
            stopping=self._stopping.is_set,
            on_progress=self._progressed,
            on_wants=resolver.wake,
            repartitioner=repartitioner,
        )
        consume = asyncio.create_task(consume_loop.run(), name="consume")
        others = [
            asyncio.create_task(dispatcher.run(), name="dispatch"),
            asyncio.create_task(resolver.run(), name="resolve"),
            asyncio.create_task(
                self.partitions.run_commits(self.settings.commit_interval_ms / 1000), name="commit"
            ),
            *(asyncio.create_task(loop) for loop in more or ()),
        ]
        stop = asyncio.create_task(self._stopping.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([consume, *others, stop], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            consume.cancel()
            await asyncio.gather(consume, return_exceptions=True)
            # aiokafka does not call the rebalance listener on stop(): drain and commit here.
            await dispatcher.drain(None)
            await self.partitions.commit()
        finally:
            for task in [consume, *others, stop]:
                task.cancel()
            await asyncio.gather(consume, *others, stop, return_exceptions=True)
            await dispatcher.cancel_all()
