"""A broker outage, as an operator sees it: one worker line when it starts (after the grace) and
one when it ends, with the duration; readiness fails meanwhile; the lag gauges are removed rather
than frozen; the client library's repeated lines are summarised, not thousands."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest_asyncio

from devkit.broker import EmbeddedBroker, free_port
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.proxy import TcpProxy
from devkit.topics import produce_fleet
from tests.proxy_support import broker_behind_proxy, log_lines, topics_at
from tests.support import launched_fleet, spawn_worker
from worker.broker_watch import OUTAGE_GRACE_S, BrokerWatch
from worker.config import Settings
from worker.log_filters import RepeatFilter


@pytest_asyncio.fixture(loop_scope="function")
async def cut_broker() -> AsyncIterator[tuple[EmbeddedBroker, TcpProxy]]:
    async with broker_behind_proxy() as parts:
        yield parts


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    try:
        async with session.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientError:
        return 0, ""


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def test_a_broker_outage_is_reported_unready_and_its_lag_unknown(
    cut_broker: tuple[EmbeddedBroker, TcpProxy], endpoint: LocalEcsEndpoint, tmp_path: Path
) -> None:
    broker, proxy = cut_broker
    topics = await topics_at(proxy.address)
    port = free_port()
    log = tmp_path / "worker.log"
    process = spawn_worker(
        broker, endpoint, topics, log, WORKER_BOOTSTRAP_SERVERS=proxy.address, WORKER_METRICS_PORT=str(port)
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:

            async def ready() -> bool:
                return (await _get(session, f"{base}/readyz"))[0] == 200

            async def unready() -> bool:
                return (await _get(session, f"{base}/readyz"))[0] == 503

            async def lag_reported() -> bool:
                return "ecs_state_worker_consumer_lag{" in (await _get(session, f"{base}/metrics"))[1]

            await _until(ready, 30, "ready")
            fleet = await launched_fleet(endpoint, 6, seed=4)
            await produce_fleet(proxy.address, topics.input, fleet, pace=None)
            await _until(lag_reported, 20, "the lag gauges")
            proxy.cut("refuse")
            cut_at = asyncio.get_running_loop().time()
            await _until(unready, OUTAGE_GRACE_S + 10, "unready during the outage")
            assert asyncio.get_running_loop().time() - cut_at >= OUTAGE_GRACE_S - 0.5  # the grace
            metrics = (await _get(session, f"{base}/metrics"))[1]
            assert "ecs_state_worker_consumer_lag{" not in metrics
            await asyncio.sleep(8)
            proxy.restore()
            await _until(ready, 30, "ready again")
            await _until(lag_reported, 20, "the lag gauges again")
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 40)
    except (AssertionError, subprocess.TimeoutExpired):
        process.kill()
        raise
    lines = log_lines(log)
    assert code == 0
    worker_lines = [line for line in lines if line["logger"] == "worker.brokers"]
    assert [line["level"] for line in worker_lines] == ["WARNING", "INFO"], worker_lines
    down, up = worker_lines
    assert str(down["message"]).startswith("Kafka brokers unreachable for ")
    assert str(up["message"]).startswith("Kafka brokers reachable again after an outage of ")
    assert up["outage_s"] >= 8 + OUTAGE_GRACE_S - 1
    client_lines = [line for line in lines if str(line["logger"]).startswith("aiokafka")]
    assert len(client_lines) < 60, len(client_lines)  # was about 1,000 in a cut this long


def test_repeated_client_lines_pass_once_a_window_with_the_count() -> None:
    now = [0.0]
    repeat = RepeatFilter(window_s=60, clock=lambda: now[0])

    def line(name: str, msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)

    passed = []
    for second in range(120):
        now[0] = float(second)
        for node in (1, 2):
            record = line("aiokafka.conn", 'Unable connect to "%s": %s', f"node-{node}", "refused")
            if repeat.filter(record):
                passed.append(record)
    assert [r.getMessage() for r in passed] == [
        'Unable connect to "node-1": refused',
        'Unable connect to "node-1": refused (and 119 more like it in the last 60 s)',
    ]
    assert passed[1].repeated == 119  # type: ignore[attr-defined]
    assert repeat.filter(line("worker", "the worker's own lines always pass"))
    assert repeat.filter(line("worker", "the worker's own lines always pass"))


def test_an_outage_is_declared_after_the_grace_and_ended_by_an_answer() -> None:
    now = [0.0]
    changes: list[bool] = []
    watch = BrokerWatch(Settings(), on_change=changes.append, grace_s=5.0, clock=lambda: now[0])
    for second in (0.0, 2.0, 4.0):  # a blip shorter than the grace
        now[0] = second
        watch.observe("KafkaConnectionError")
    now[0] = 4.5
    watch.observe(None)
    assert (watch.outage, changes) == (False, [])
    for second in (10.0, 13.0, 15.0, 20.0):
        now[0] = second
        watch.observe("KafkaConnectionError")
    assert (watch.outage, changes) == (True, [False])
    now[0] = 31.0
    watch.observe(None)
    assert (watch.outage, changes) == (False, [False, True])
