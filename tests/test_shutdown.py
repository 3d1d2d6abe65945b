"""Every close path closes everything, bounded, logs "worker stopped" and exits 0: a SIGTERM during
a broker outage with work in flight (the consumer's close can then raise ``CancelledError``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from devkit.broker import EmbeddedBroker, free_port
from devkit.ecs.faults import Faults
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.proxy import TcpProxy
from devkit.topics import create_topics, produce_fleet
from tests.conftest import Topics
from tests.support import launched_fleet, spawn_worker, wait_for


@contextlib.asynccontextmanager
async def broker_behind_proxy() -> AsyncIterator[tuple[EmbeddedBroker, TcpProxy]]:
    """A broker of its own that advertises a proxy: cutting the proxy cuts every client."""
    proxy_port = free_port()
    broker = EmbeddedBroker(advertised=f"127.0.0.1:{proxy_port}")
    await asyncio.to_thread(broker.start)
    try:
        async with TcpProxy(target_port=broker.port, port=proxy_port) as proxy:
            yield broker, proxy
    finally:
        await asyncio.to_thread(broker.stop)


@pytest_asyncio.fixture(loop_scope="function")
async def cut_broker() -> AsyncIterator[tuple[EmbeddedBroker, TcpProxy]]:
    async with broker_behind_proxy() as parts:
        yield parts


def log_lines(path: Path) -> list[dict[str, object]]:
    """The JSON log lines of a worker process (other output skipped)."""
    lines = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                lines.append(record)
    return lines


async def test_sigterm_during_a_broker_outage_with_work_in_flight_is_a_clean_stop(
    cut_broker: tuple[EmbeddedBroker, TcpProxy], endpoint: LocalEcsEndpoint, tmp_path: Path
) -> None:
    broker, proxy = cut_broker
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(f"in-{suffix}", f"out-{suffix}", f"dlq-{suffix}", f"group-{suffix}", 2)
    await create_topics(proxy.address, {topics.input: 2, topics.outcome: 1, topics.dlq: 1})
    fleet = await launched_fleet(endpoint, 10, seed=5)
    endpoint.set_faults(Faults(latency_ms=2_500))  # calls still in flight when the broker goes
    log = tmp_path / "worker.log"
    process = spawn_worker(broker, endpoint, topics, log, WORKER_BOOTSTRAP_SERVERS=proxy.address)
    try:
        await produce_fleet(proxy.address, topics.input, fleet, pace=None)
        await wait_for(lambda: endpoint.state()["calls"] > 0, 30, "the first ECS calls")
        proxy.cut("refuse")
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 40)
    except (subprocess.TimeoutExpired, AssertionError):
        process.kill()
        raise
    lines = log_lines(log)
    text = log.read_text()[-3000:]
    messages = [str(line.get("message")) for line in lines]
    assert code == 0, text
    assert "worker stopped" in messages, text
    closes = {str(line.get("client")): str(line.get("message")) for line in lines if "client" in line}
    assert set(closes) == {"consumer", "producer"}, text
