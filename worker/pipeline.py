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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from worker.broker_checks import BrokerFacts, check_brokers
from worker.broker_watch import BrokerWatch
from worker.config import Settings
from worker.consume import ConsumeLoop
from worker.dispatch import Dispatcher
from worker.dry_run import DiscardSink, dry_run_settings
from worker.ecs_clients import EcsClients, routes_of
from worker.fence import StallFence
from worker.group_log import announce_join, log_until_assigned
from worker.intake import Intake
from worker.kafka_clients import close_client, make_consumer, make_producer
from worker.metrics import Metrics
from worker.offsets import OffsetBook, TopicPartitionKey
from worker.partitions import Partitions
from worker.publish import KafkaSink, Publisher
from worker.ratelimit import RateBudgets
from worker.repartition import Repartitioner
from worker.repartition_topic import RepartitionTopic
from worker.resolve import Resolver
from worker.stopping import race_stop
from worker.submit import Submitter

__all__ = ["Worker"]

log = logging.getLogger(__name__)


async def _checked_into(facts: list[BrokerFacts], settings: Settings) -> None:
    """``check_brokers`` whose answer lands in ``facts``: awaited by ``Worker._unless_stopped``."""
    facts.append(await check_brokers(settings))


class Worker:
    """One worker process's pipeline: ``run()`` until ``request_stop()`` (SIGTERM)."""

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings = dry_run_settings(settings)
        self.metrics = metrics or Metrics()
        self.partitions = Partitions(
            OffsetBook(), self.metrics, start_time=settings.start_time, commits=not settings.dry_run
        )
        self.intake = Intake.from_settings(settings, self.partitions.book)
        self.fence = StallFence.for_session(settings.session_timeout_ms, on_close=self.metrics.stalls.inc)
        self.partitions.fence = self.fence
        self._stopping = asyncio.Event()
        self._dispatcher: Dispatcher | None = None
        self._progress_at = time.monotonic()
        self.brokers = BrokerWatch(settings, on_change=self.partitions.lag_known)

    # -- health ----------------------------------------------------------------------------------

    @property
    def ready(self) -> asyncio.Event:
        """Set at the first partition assignment."""
        return self.partitions.ready

    def is_ready(self) -> bool:
        """Assigned, not stopping, and the brokers answer (``worker.broker_watch``)."""
        return self.ready.is_set() and not self._stopping.is_set() and not self.brokers.outage

    def pending_work(self) -> int:
        """Records this process could resolve but has not yet, and background work: records held
        by tasks that wait (never reported yet, or for ECS) are not counted, since waiting is not
        being stuck."""
        background = 0 if self._dispatcher is None else self._dispatcher.background + self._dispatcher.queued
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
        if self.metrics.lifecycle != "stopped":
            self.metrics.set_state("draining")
        if self._dispatcher is not None:
            self._dispatcher.wake()

    async def run(self) -> None:
        s = self.settings
        facts: list[BrokerFacts] = []
        if not await self._unless_stopped(_checked_into(facts, s)):
            log.info("worker stopped", extra={"totals": self.metrics.totals()})
            return
        producer = make_producer(s, idempotent=facts[0].idempotent)
        consumer = make_consumer(s)
        try:
            if await self._unless_stopped(producer.start()):
                async with EcsClients(s, routes_of(s)) as clients, contextlib.AsyncExitStack() as stack:
                    topic = None
                    if s.input_keying == "any":
                        topic = await stack.enter_async_context(RepartitionTopic(s))
                        if not await self._unless_stopped(topic.ensure()):
                            return
                    consumer.subscribe(
                        [s.input_topic, *([topic.name] if topic else [])], listener=self.partitions
                    )
                    dispatcher, publisher, budgets = self._build_stages(clients, producer)
                    self._dispatcher = dispatcher
                    resolver = self._resolver_for(clients, dispatcher)
                    self.partitions.attach(
                        consumer,
                        dispatcher,
                        self._share_of(budgets),
                        share_topic=None if topic is None else topic.name,
                    )
                    if await self._unless_stopped(self._join(consumer)):
                        stage_one = self._stage_one(consumer, producer, dispatcher, topic)
                        await self._run_loops(consumer, dispatcher, publisher, resolver, *stage_one)
        finally:
            # Stopped in every case, started or not: aiokafka warns about clients never closed.
            # Together: a stop then fits a pod's grace period (drain + commit + one close).
            await asyncio.gather(close_client(consumer, "consumer"), close_client(producer, "producer"))
            self.metrics.set_state("stopped")
            log.info("worker stopped", extra={"totals": self.metrics.totals()})

    def _share_of(self, budgets: RateBudgets) -> Callable[[int, int], None]:
        def on_share(owned: int, partitions: int) -> None:
            budgets.set_share(owned, partitions)
            self.metrics.quota_share.set(budgets.share)
            self.metrics.rate_limit.set(budgets.limits()[0])
            log.info(
                "quota share",
                extra={"owned": owned, "partitions": partitions, "rate_per_s": budgets.limits()[0]},
            )

        return on_share

    def _stage_one(
        self, consumer: Any, producer: Any, dispatcher: Dispatcher, topic: RepartitionTopic | None
    ) -> tuple[Repartitioner | None, list[Coroutine[Any, Any, None]]]:
        """With ``input_keying = any``: the re-keying writer, its progress markers (a quarter of
        the reorder window apart) and the purge loop; else nothing."""
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
        s, book = self.settings, self.partitions.book
        interval_ms = s.repartition_purge_interval_ms
        loops = [topic.run_purges(interval_ms / 1000, book.committed)] if interval_ms else []
        watermarks = self.intake.coalescer.watermarks
        every_s = max(0.02, s.repartition_reorder_ms / 4000)
        loops.append(repartitioner.run_progress(consumer, book, s.input_topic, watermarks, every_s))
        return repartitioner, loops

    def _build_stages(self, clients: EcsClients, producer: Any) -> tuple[Dispatcher, Publisher, RateBudgets]:
        s = self.settings
        budgets = RateBudgets(
            rate_cap=s.rate_limit_per_s,
            burst_cap=s.rate_limit_burst,
            quota_per_s=s.account_quota_per_s,
            quota_burst=s.account_quota_burst,
        )
        dispatcher: Dispatcher | None = None

        def giving_up() -> bool:
            return dispatcher is not None and dispatcher.past_drain_deadline()

        publisher = Publisher(
            DiscardSink() if s.dry_run else KafkaSink(producer),
            outcome_topic=s.outcome_topic,
            dlq_topic=s.dlq_topic,
            worker=s.group_instance_id or s.client_id,
            connector=s.group_id,
            metrics=self.metrics,
            giving_up=giving_up,
        )
        dispatcher = Dispatcher(
            coalescer=self.intake.coalescer,
            book=self.partitions.book,
            submitter=Submitter(clients, s, metrics=self.metrics, budgets=budgets, fence=self.fence),
            publisher=publisher,
            metrics=self.metrics,
            linger_ms=s.linger_ms,
            drain_timeout_ms=s.drain_timeout_ms,
            on_progress=self._progressed,
        )
        return dispatcher, publisher, budgets

    def _resolver_for(self, clients: EcsClients, dispatcher: Dispatcher) -> Resolver:
        s = self.settings
        return Resolver(
            clients,
            self.intake.coalescer,
            metrics=self.metrics,
            batch_ms=s.describe_batch_ms,
            rate_per_s=s.describe_rate_limit_per_s,
            deadline_ms=s.describe_deadline_ms,
            release=dispatcher.release,
            wake=dispatcher.wake,
        )

    async def _join(self, consumer: Any) -> None:
        """Start the consumer (it returns at the first assignment), saying what it waits for."""
        announce_join(self.settings)
        waiting = asyncio.create_task(log_until_assigned(self.settings, self.ready))
        try:
            await consumer.start()
        finally:
            waiting.cancel()

    async def _unless_stopped(self, starting: Awaitable[object]) -> bool:
        """Await a client's start unless a stop is requested first: the consumer's start waits for
        the group's first assignment, which a stalled rebalance can hold back indefinitely, and a
        SIGTERM must not wait for it. Nothing is held yet, so nothing needs draining."""
        start = await race_stop(starting, self._stopping)
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
            asyncio.create_task(self.brokers.run(), name="brokers"),
            asyncio.create_task(
                self.partitions.run_commits(self.settings.commit_interval_ms / 1000), name="commit"
            ),
            asyncio.create_task(self.fence.run(self.partitions.confirm_membership), name="fence"),
            *(asyncio.create_task(loop) for loop in more or ()),
        ]
        stop = asyncio.create_task(self._stopping.wait(), name="stop")
        if not self._stopping.is_set():
            self.metrics.set_state("running")
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
