"""A ``Dispatcher`` running over a coalescer and an offset book against a local ECS endpoint
through real aiobotocore clients (the tests of the dispatch stage without Kafka)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiobotocore.session import get_session

from worker.coalesce import Coalescer
from worker.config import Settings
from worker.dispatch import Dispatcher
from worker.ecs_clients import EcsClients
from worker.metrics import Metrics
from worker.offsets import OffsetBook
from worker.publish import Publisher
from worker.ratelimit import RateBudgets
from worker.routing import Routes
from worker.submit import Submitter

__all__ = ["Outcomes", "dispatching"]


class Outcomes:
    """A sink keeping the outcome records (the publisher's seam)."""

    def __init__(self) -> None:
        self.records: list[bytes] = []

    async def send(self, topic: str, key: bytes | None, value: bytes | None, headers: object) -> None:
        self.records.append(value or b"")


@contextlib.asynccontextmanager
async def dispatching(
    settings: Settings,
    coalescer: Coalescer,
    book: OffsetBook,
    budgets: RateBudgets,
    *,
    metrics: Metrics | None = None,
    outcomes: Outcomes | None = None,
) -> AsyncIterator[Dispatcher]:
    """The dispatcher's loop running, its calls to ``settings.ecs_endpoint_url`` in us-east-1's
    home account with test credentials; on exit the loop is cancelled and its calls with it."""
    session = get_session()
    session.set_credentials("test", "test")
    metrics = metrics if metrics is not None else Metrics()
    routes = Routes(region="us-east-1", home_account=None, account_roles={})
    async with EcsClients(settings, routes, session=session) as clients:
        dispatcher = Dispatcher(
            coalescer=coalescer,
            book=book,
            submitter=Submitter(clients, settings, metrics=metrics, budgets=budgets),
            publisher=Publisher(
                outcomes if outcomes is not None else Outcomes(),
                outcome_topic="o",
                dlq_topic="d",
                worker="test",
                metrics=metrics,
            ),
            metrics=metrics,
            linger_ms=0,
            drain_timeout_ms=settings.drain_timeout_ms,
            on_progress=lambda: None,
        )
        running = asyncio.create_task(dispatcher.run())
        try:
            yield dispatcher
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await dispatcher.cancel_all()
