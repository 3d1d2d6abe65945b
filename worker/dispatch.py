"""Dispatch: start the submissions that are due, finish them, and drain on demand.

The schedule loop asks the coalescer for the tasks that are due (sleeping until the next due time
or a wake-up) and queues each on its route, the account and Region of its ARN. One sender per
route takes the route's next token, and only then has the coalescer build the task's request
(``Coalescer.take``: late binding): a task that waits for quota carries its newest state, and the
changes that arrive while it waits cost no extra call. Each submission then runs as its own
asyncio task: submit (``worker.submit``), publish its outcome and, when retries ran out, its dead
letter (``worker.publish``), then hand the result back to the coalescer and release the records it
resolves in the offset book. A first attempt that ECS throttles goes back to the coalescer unsent
(``Coalescer.requeue``) and is built anew at its next turn, so under pressure calls per task fall.
Background work (dead letters of input records too) is tracked so that a drain and a stop can wait
for it or cancel it.

A submission still under way when its partitions are given up (the drain deadline passed: ECS
throttling, a slow endpoint) is cancelled then, retries included: its partitions' next owner
reads its records again and starts their tasks from ECS's view, and a call this process made
after that view was taken could contradict it (an older RUNNING landing after the next owner's
STOPPED, or a STOPPED the next owner then repeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from worker.coalesce import Coalescer
from worker.metrics import Metrics
from worker.offsets import OffsetBook, TopicPartitionKey
from worker.publish import Publisher
from worker.routing import Route
from worker.submit import Submitter, Throttled
from worker.work import NS_PER_MS, SourceRef, Submission, TaskKey

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)
_DRAIN_POLL_S = 0.02


class Dispatcher:
    """Runs submissions for the tasks of ``coalescer``; ``on_progress`` is called per finished one.

    ``drain_timeout_ms`` bounds a drain; ``linger_ms`` is restored after it (a drain sends with no
    linger, so that changes arriving meanwhile go at once).
    """

    def __init__(
        self,
        *,
        coalescer: Coalescer,
        book: OffsetBook,
        submitter: Submitter,
        publisher: Publisher,
        metrics: Metrics,
        linger_ms: int,
        drain_timeout_ms: int,
        on_progress: Callable[[], None],
    ) -> None:
        self._coalescer = coalescer
        self._book = book
        self._submitter = submitter
        self._publisher = publisher
        self._metrics = metrics
        self._linger_ns = linger_ms * NS_PER_MS
        self._drain_timeout_s = drain_timeout_ms / 1000
        self._on_progress = on_progress
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._queues: dict[Route, deque[TaskKey]] = {}
        self._senders: dict[Route, asyncio.Task[None]] = {}
        self._requeue_limit = max(0, submitter.max_attempts - 1)
        self._submitting: dict[TaskKey, asyncio.Task[None]] = {}
        """The asyncio task of each submission under way (one per ECS task at most)."""
        self._draining = False
        self._drain_deadline = 0.0

    @property
    def background(self) -> int:
        """Submissions and dead letters under way."""
        return len(self._tasks)

    @property
    def queued(self) -> int:
        """Tasks due and waiting for their route's token."""
        return sum(len(queue) for queue in self._queues.values())

    def wake(self) -> None:
        self._wake.set()

    def past_drain_deadline(self) -> bool:
        """True once a drain has run out of time: writes stop retrying then."""
        return self._draining and time.monotonic() >= self._drain_deadline

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run background work; a failure is logged and its offsets stay uncommitted."""
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    async def cancel_all(self) -> None:
        senders = list(self._senders.values())
        for task in [*senders, *self._tasks]:
            task.cancel()
        await asyncio.gather(*senders, *self._tasks, return_exceptions=True)

    def release(self, sources: Iterable[SourceRef]) -> None:
        for source in sources:
            self._book.release(source)

    # -- the schedule loop -----------------------------------------------------------------------

    async def run(self) -> None:
        coalescer = self._coalescer
        while True:
            keys, resolved = coalescer.due_keys(time.monotonic_ns())
            if resolved:
                self._metrics.skipped_unchanged.inc()
            self.release(resolved)
            for key in keys:
                self._enqueue(key)
            due_at = coalescer.next_due_at()
            timeout = None if due_at is None else max(0.0, (due_at - time.monotonic_ns()) / 1e9)
            self._wake.clear()
            # asyncio.timeout, not wait_for: no task is made per wake-up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _enqueue(self, key: TaskKey) -> None:
        route = self._submitter.route_of(key)
        queue = self._queues.get(route)
        if queue is None:
            queue = self._queues[route] = deque()
        queue.append(key)
        sender = self._senders.get(route)
        if sender is None or sender.done():
            sender = self._senders[route] = asyncio.create_task(
                self._send(route, queue), name=f"send {route}"
            )
            sender.add_done_callback(self._task_done)

    async def _send(self, route: Route, queue: deque[TaskKey]) -> None:
        """Send the route's queued tasks in order, each built when its token is granted. A route
        that may not be called takes no token: its tasks are rejected at once (``NO_ROUTE``)."""
        limiter = None if self._submitter.no_route(route) else self._submitter.budgets.for_route(route)
        while queue:
            if limiter is not None:
                await limiter.acquire()
            submission, resolved = self._coalescer.take(queue.popleft())
            self.release(resolved)
            if submission is None:
                if resolved:
                    self._metrics.skipped_unchanged.inc()
                if limiter is not None:
                    limiter.refund()
                continue
            self._submitting[submission.key] = self.spawn(
                self._finish(submission, token_held=limiter is not None)
            )

    async def _finish(self, submission: Submission, *, token_held: bool = False) -> None:
        try:
            await self._submit(submission, token_held=token_held)
        finally:
            if self._submitting.get(submission.key) is asyncio.current_task():
                del self._submitting[submission.key]

    async def _submit(self, submission: Submission, *, token_held: bool) -> None:
        try:
            result = await self._submitter.submit(
                submission,
                token_held=token_held,
                requeue_throttled=submission.throttled < self._requeue_limit,
            )
        except Throttled:
            self._coalescer.requeue(submission, time.monotonic_ns())
            self._wake.set()
            return
        await self._publisher.outcome(submission, result)
        if result.result == "failed":
            await self._publisher.dead_letter_submission(submission, result)
        if result.result == "acknowledged":
            self._metrics.event_to_ack.observe(max(0, result.finished_at - submission.first_event_at) / 1e9)
        else:
            log.error(
                "submission %s: %s %s",
                result.result,
                result.error_code,
                result.error_message,
                extra={"task": submission.key[1], "cluster": submission.key[0], "attempts": result.attempts},
            )
        self._metrics.submissions.labels(result.result).inc()
        self._on_progress()
        self.release(self._coalescer.complete(submission, result.result, time.monotonic_ns()))
        self._wake.set()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed; its offsets stay uncommitted", exc_info=task.exception())

    # -- drain (rebalance, shutdown) -------------------------------------------------------------

    async def drain(self, partitions: set[TopicPartitionKey] | None) -> None:
        """Send every pending change now and wait, up to the drain deadline, until the work of
        ``partitions`` (all when None, background work included) is resolved."""
        self._drain_deadline = time.monotonic() + self._drain_timeout_s
        self._draining = True
        try:
            self._coalescer.set_linger(0)
            self._coalescer.set_draining(True)
            self.release(self._coalescer.flush_all(time.monotonic_ns()))
            self._wake.set()
            while time.monotonic() < self._drain_deadline:
                if self._drained(partitions):
                    return
                await asyncio.sleep(_DRAIN_POLL_S)
            log.warning("drain deadline passed with work unresolved: it will be re-read")
        finally:
            self._coalescer.set_linger(self._linger_ns)
            self._coalescer.set_draining(False)
            self._draining = False
            self._wake.set()  # the settle checks the drain held back are due again

    def _drained(self, partitions: set[TopicPartitionKey] | None) -> bool:
        """Nothing left that a drain can resolve: every record still claimed (of ``partitions``)
        is held by a task that waits (``Coalescer.pinned``), and no submission is under way."""
        settled = partitions is not None or not (self._tasks or self.queued)
        if not self._book.unresolved(partitions=partitions):
            return settled
        if self._coalescer.in_flight() or self.queued:
            return False
        return not self._book.unresolved(self._coalescer.pinned(), partitions) and settled

    def drop(self, owns: Callable[[SourceRef], bool]) -> list[SourceRef]:
        """Give up the work of the sources ``owns`` names (``Coalescer.drop``), and cancel the
        submissions under way that answer for those sources only (see the module docstring)."""
        cancelled = 0
        for submission in self._coalescer.in_flight():
            task = self._submitting.get(submission.key)
            if task is not None and all(owns(s) for s in submission.sources):
                task.cancel()
                cancelled += 1
        if cancelled:
            log.warning(
                "%d submissions of revoked partitions still under way are cancelled: their next owner "
                "reads their records again and reports from ECS's view",
                cancelled,
            )
        return self._coalescer.drop(owns)
