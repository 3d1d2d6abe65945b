"""Every close path closes everything, bounded, logs "worker stopped" and exits 0: a SIGTERM during
a broker outage with work in flight (the consumer's close can then raise ``CancelledError``)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from devkit.broker import EmbeddedBroker
from devkit.ecs.faults import Faults
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.proxy import TcpProxy
from devkit.topics import produce_fleet
from tests.proxy_support import broker_behind_proxy, log_lines, topics_at
from tests.support import launched_fleet, spawn_worker, wait_for


@pytest_asyncio.fixture(loop_scope="function")
async def cut_broker() -> AsyncIterator[tuple[EmbeddedBroker, TcpProxy]]:
    async with broker_behind_proxy() as parts:
        yield parts


async def test_sigterm_during_a_broker_outage_with_work_in_flight_is_a_clean_stop(
    cut_broker: tuple[EmbeddedBroker, TcpProxy], endpoint: LocalEcsEndpoint, tmp_path: Path
) -> None:
    broker, proxy = cut_broker
    topics = await topics_at(proxy.address)
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
