"""A broker of a test's own behind a ``devkit.proxy.TcpProxy`` that it advertises (cutting the
proxy then cuts every client), and reading a worker process's JSON log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from devkit.broker import EmbeddedBroker, free_port
from devkit.proxy import TcpProxy
from devkit.topics import create_topics
from tests.conftest import Topics

__all__ = ["broker_behind_proxy", "log_lines", "topics_at"]


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


async def topics_at(bootstrap: str, partitions: int = 2) -> Topics:
    """Fresh input, outcome and dead-letter topics and a group name."""
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(f"in-{suffix}", f"out-{suffix}", f"dlq-{suffix}", f"group-{suffix}", partitions)
    await create_topics(bootstrap, {topics.input: partitions, topics.outcome: 1, topics.dlq: 1})
    return topics


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a worker process (other output skipped)."""
    lines = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                lines.append(record)
    return lines
