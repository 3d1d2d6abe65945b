"""A SIGTERM that reaches ``python -m worker run`` while it is still starting (before the event loop
installs its handlers) stops it cleanly, as a later one does: exit 0, no default signal death."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from devkit.brokers import Broker
from devkit.ecs_endpoint import LocalEcsEndpoint
from tests.conftest import Topics
from tests.support import spawn_worker, wait_for


def catches(pid: int, signum: int) -> bool:
    """The process has a handler for ``signum`` (``SigCgt`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.parametrize("after_s", [0.1, 0.3])
async def test_a_sigterm_while_starting_is_a_clean_stop(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics, tmp_path: Path, after_s: float
) -> None:
    """``after_s`` after the interpreter is up (its own SIGINT handler set, before any of the
    worker's code runs: what comes before is the process's exec and the interpreter's start-up,
    which no Python code can guard, and which a loaded machine can stretch past 0.1 s), while the
    clients are still being imported."""
    log = tmp_path / "worker.log"
    process = spawn_worker(broker, endpoint, topics, log)
    await wait_for(lambda: catches(process.pid, signal.SIGINT), 30, "the interpreter's start-up")
    await asyncio.sleep(after_s)
    process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(process.wait, 30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "worker stopped" in text
