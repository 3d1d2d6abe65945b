"""Records read again after a handover, on real parts (the tests' broker, the local ECS endpoint,
the real aiokafka and aiobotocore clients): a worker reports a fleet and is killed before it
commits anything, and the next owner reads every record again. It must not report any task again
from its creation (RUNNING after STOPPED), nor repeat what ECS shows: it starts each task from
ECS's view (``OffsetBook.replayed``, ``KnowledgeMixin._known``)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from devkit.brokers import Broker
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.fleet import FleetShape, final_state_mismatches
from devkit.topics import produce_fleet
from tests.conftest import Topics, worker_settings
from tests.support import FLEET_PACE, flags, group_committed, launched_fleet, running, spawn_worker, wait_for
from worker.pipeline import Worker

pytestmark = pytest.mark.timeout(180)

SHAPE = FleetShape(spread_s=12.0, run_s=(4.0, 16.0), stop_gap_s=6.0, running_share=0.25, destroy_share=0.0)
"""Short tasks, a quarter of them still running when the first worker is killed."""


async def quiet(endpoint: LocalEcsEndpoint, for_s: float, timeout_s: float) -> None:
    """Wait until the endpoint has had no call for ``for_s`` seconds."""
    calls, since = endpoint.state()["calls"], asyncio.get_running_loop().time()
    deadline = since + timeout_s
    while (now := asyncio.get_running_loop().time()) < deadline:
        await asyncio.sleep(0.1)
        if endpoint.state()["calls"] != calls:
            calls, since = endpoint.state()["calls"], now
        elif now - since >= for_s:
            return
    raise AssertionError(f"the endpoint was not quiet for {for_s}s within {timeout_s}s")


async def test_a_new_owner_reading_reported_records_again_reports_nothing_again(
    broker: Broker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    fleet = await launched_fleet(endpoint, 60, seed=11, shape=SHAPE)
    timers = fleet.worker_timers(FLEET_PACE)
    first = spawn_worker(
        broker,
        endpoint,
        topics,
        None,
        WORKER_COMMIT_INTERVAL_MS="3600000",  # no commit before the kill
        **{f"WORKER_{k.upper()}": str(v) for k, v in timers.items()},
    )
    try:
        ends = await produce_fleet(broker.bootstrap, topics.input, fleet, pace=FLEET_PACE)
        await wait_for(
            lambda: not final_state_mismatches(fleet.expected, endpoint.state()), 60, "final states"
        )
        await quiet(endpoint, 2.0, 30)
        first.send_signal(signal.SIGKILL)  # no drain, no commit, no leave
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert await group_committed(broker.bootstrap, topics) == dict.fromkeys(range(topics.partitions), 0)
    reported = endpoint.state()["calls"]
    assert endpoint.state()["regressions"] == []
    assert reported > 0

    second = Worker(worker_settings(broker, endpoint, topics, **timers))
    async with running(second):
        await wait_for(
            lambda: all(second.committed_offsets().get((topics.input, p)) == e for p, e in ends.items() if e),
            60,
            "every record read again and committed",
        )
    state = endpoint.state()
    assert state["calls"] == reported  # every task already reported: nothing sent again
    assert state["regressions"] == []
    assert flags(endpoint) == dict.fromkeys(flags(endpoint), 0), state["flags"]
    assert final_state_mismatches(fleet.expected, state) == []
    described = second.metrics.registry.get_sample_value(
        "ecs_state_worker_describe_calls_total", {"operation": "DescribeTasks", "code": "OK"}
    )
    # Every task was first seen below the replay end: ECS was asked, batched (60 tasks, 3
    # clusters: at least one call per cluster, far fewer than one per task).
    assert described is not None
    assert 3 <= described < 60, described
