"""The metrics: prometheus-client's collectors, build info, bounded label values (reason codes, a
topic on every per-partition series), the lifecycle state and the rebalance counter; scraped from
the registry and from the ``/metrics`` endpoint of a worker running against the embedded broker."""

from __future__ import annotations

import ast
import asyncio
import importlib
import importlib.metadata
import json
import platform
import re
import signal
import sys

import aiohttp
from aiokafka import AIOKafkaProducer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import worker
from devkit.broker import EmbeddedBroker, free_port
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.harness.workers import wait_exit
from tests.conftest import Topics, worker_settings
from tests.support import ROOT, launched_fleet, spawn_worker, wait_for
from tests.test_pipeline import produce
from worker.decode import reasons
from worker.decode.docker import NO_STATE_CHANGE
from worker.decode.reasons import REASON_CODES, reason_code
from worker.health import HealthServer
from worker.metrics import OTHER_CODE, STATES, Metrics, code_label
from worker.pipeline import Worker

P = "ecs_state_worker_"
CODE = re.compile(r"[a-z][a-z0-9_]*")
# Labels whose values are versions or names of the build, not codes.
_BUILD_SERIES = frozenset({P + "build_info", "python_info"})


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(found: list[Sample], name: str, **labels: str) -> float | None:
    matching = [s.value for s in found if s.name == name and s.labels == labels]
    assert len(matching) <= 1, f"{name}{labels} appears {len(matching)} times"
    return matching[0] if matching else None


def test_registry_has_the_collectors_build_info_and_one_state() -> None:
    found = samples(generate_latest(Metrics().registry).decode())
    names = {s.name for s in found}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= names
    assert "python_gc_collections_total" in names
    assert (
        value(
            found,
            "python_info",
            implementation=platform.python_implementation(),
            major=str(sys.version_info.major),
            minor=str(sys.version_info.minor),
            patchlevel=platform.python_version_tuple()[2],
            version=platform.python_version(),
        )
        == 1.0
    )
    build = {
        "version": worker.__version__,
        "python": platform.python_version(),
        "aiokafka": importlib.metadata.version("aiokafka"),
        "aiobotocore": importlib.metadata.version("aiobotocore"),
    }
    assert value(found, P + "build_info", **build) == 1.0
    assert {s.labels["state"]: s.value for s in found if s.name == P + "state"} == {
        "starting": 1.0,
        "running": 0.0,
        "draining": 0.0,
        "stopped": 0.0,
    }


def test_set_state_leaves_exactly_one_state_at_one() -> None:
    metrics = Metrics()
    for state in STATES:
        metrics.set_state(state)
        found = samples(generate_latest(metrics.registry).decode())
        at_one = [s.labels["state"] for s in found if s.name == P + "state" and s.value == 1.0]
        assert at_one == [state]
        assert metrics.lifecycle == state


def test_code_label_keeps_codes_and_bounds_anything_else() -> None:
    assert code_label("ThrottlingException") == "ThrottlingException"
    assert code_label("OK") == "OK"
    assert code_label("Throttling: rate exceeded for account 1234") == OTHER_CODE
    assert code_label("") == OTHER_CODE
    assert code_label("A" * 65) == OTHER_CODE
    assert code_label("A" * 64) == "A" * 64


def test_every_reason_the_worker_counts_as_ignored_has_a_short_code() -> None:
    """Outside the decoders too: every ``<x>.ignored[REASON]`` in the worker's modules (intake's
    late events) names a reason with its own code, not one counted under ``other``."""
    counted: dict[str, str] = {}
    for path in sorted(p for p in (ROOT / "worker").rglob("*.py") if p.name != "__main__.py"):
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "ignored"
                and isinstance(node.slice, ast.Name)
            ):
                counted[f"{path.name}:{node.slice.id}"] = getattr(module, node.slice.id)
    assert counted, "no reason counted outside the decoders: the scan found nothing"
    without = {where: reason for where, reason in counted.items() if reason not in REASON_CODES}
    assert without == {}, "a reason counted under 'other'"
    assert reason_code(reasons.LATE_EVENT) == "task_already_reported"


def test_every_ignore_reason_has_a_short_code() -> None:
    fixed = [getattr(reasons, k) for k in reasons.__all__ if k.isupper() and k != "REASON_CODES"]
    assert set(fixed) == set(REASON_CODES), "a reason without a code"
    codes = [reason_code(r) for r in fixed]
    assert len(set(codes)) == len(codes), "two reasons share a code"
    assert all(CODE.fullmatch(code) for code in codes)
    for action in NO_STATE_CHANGE:
        assert reason_code(reasons.docker_no_state_change(action)) == "docker_no_state_change"
    assert reason_code(reasons.containerd_not_mapped("/images/create")) == "containerd_no_state_change"
    assert reason_code(reasons.docker_not_container("image")) == "docker_not_container"
    assert reason_code(reasons.docker_not_container("something-new")) == "docker_not_container"
    assert reason_code(reasons.podman_no_state_change("pause")) == "podman_no_state_change"
    assert reason_code(reasons.podman_not_container("pod")) == "podman_not_container"
    assert reason_code("a sentence from nowhere") == "other"


async def scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as answer,
    ):
        assert answer.status == 200
        return await answer.text()


def _unlabelled_docker_event() -> bytes:
    """A Docker container event without the ECS agent's labels: ignored, not dead-lettered."""
    return json.dumps(
        {
            "Type": "container",
            "Action": "start",
            "Actor": {"ID": "f" * 64, "Attributes": {"image": "alpine", "name": "sidecar"}},
            "scope": "local",
            "time": 1473107901,
            "timeNano": 1473107901922774300,
        }
    ).encode()


async def test_running_worker_serves_bounded_labels_state_and_rebalances(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    worker_ = Worker(worker_settings(broker, endpoint, topics))
    health = HealthServer(worker_, port=0, host="127.0.0.1")
    await health.start()
    try:
        before = samples(await scrape(health.port))
        assert value(before, P + "state", state="starting") == 1.0
        fleet = await launched_fleet(endpoint, 4, seed=7)
        run = asyncio.create_task(worker_.run())
        await asyncio.wait_for(worker_.ready.wait(), 30)
        await produce(broker.bootstrap, topics.input, fleet)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topics.input, _unlabelled_docker_event(), partition=1)
        finally:
            await producer.stop()
        await wait_for(
            lambda: worker_.metrics.totals().get("records_consumed") == len(fleet.steps) + 1, 30, "all read"
        )
        await wait_for(lambda: worker_.pending_work() == 0, 30, "work resolved")
        await asyncio.sleep(0.5)  # a commit interval or two, for the offset gauges
        found = samples(await scrape(health.port))
        worker_.request_stop()
        assert worker_.metrics.lifecycle == "draining"
        await asyncio.wait_for(run, 30)
        after = samples(await scrape(health.port))
    finally:
        await health.stop()

    assert value(found, P + "state", state="running") == 1.0
    assert value(found, P + "state", state="starting") == 0.0
    assert value(after, P + "state", state="stopped") == 1.0
    assert value(found, P + "rebalances_total", event="assigned") == 1.0
    # aiokafka calls the listener's revocation (of nothing) before the first assignment.
    assert value(found, P + "rebalances_total", event="revoked") == 1.0
    assert value(found, P + "ignored_total", reason="docker_no_labels") == 1.0
    consumed = [s for s in found if s.name == P + "records_consumed_total"]
    assert {s.labels["topic"] for s in consumed} == {topics.input}
    assert sum(s.value for s in consumed) == len(fleet.steps) + 1
    per_partition = [s for s in found if "partition" in s.labels]
    assert {s.name for s in per_partition} >= {
        P + "records_consumed_total",
        P + "committed_offset",
        P + "consumer_lag",
        P + "incomplete_offsets",
    }
    assert all(s.labels.get("topic") == topics.input for s in per_partition)
    for s in found:
        if s.name in _BUILD_SERIES:
            continue
        for label, text in s.labels.items():
            if label not in ("topic", "le", "quantile"):
                assert re.fullmatch(r"[A-Za-z0-9_.]{1,64}", text), f"{s.name}{{{label}={text!r}}}"


async def _scrape_when(port: int, wanted: str, timeout_s: float) -> list[Sample]:
    """Scrape ``port`` until the state ``wanted`` is 1 (the port opens once the worker starts)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            found = samples(await scrape(port))
        except aiohttp.ClientConnectionError:
            found = []
        if value(found, P + "state", state=wanted) == 1.0:
            return found
        assert asyncio.get_running_loop().time() < deadline, f"state {wanted} never reached"
        await asyncio.sleep(0.2)


async def test_worker_process_serves_the_collectors_build_info_and_its_state(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """``python -m worker run`` as deployed: its /metrics carries the process collector's series
    of that process, the build info and the lifecycle state."""
    port = free_port()
    process = spawn_worker(broker, endpoint, topics, WORKER_METRICS_PORT=str(port))
    try:
        found = await _scrape_when(port, "running", 60)
        assert value(found, "process_start_time_seconds") is not None
        assert (value(found, "process_open_fds") or 0) > 0
        infos = [s for s in found if s.name == P + "build_info"]
        assert [s.labels["version"] for s in infos] == [worker.__version__]
        assert infos[0].labels["aiokafka"] == importlib.metadata.version("aiokafka")
        for _ in range(150):  # the first assignment may follow the start of the loops
            assigned = value(samples(await scrape(port)), P + "rebalances_total", event="assigned")
            if assigned:
                break
            await asyncio.sleep(0.2)
        assert assigned == 1.0
    finally:
        process.send_signal(signal.SIGTERM)
        assert await wait_exit(process, 30) == 0
