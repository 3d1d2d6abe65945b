"""``python -m worker produce`` against the embedded broker: a file or standard input to a topic,
keyed by the task ARN the worker's decoder finds (or by the line's own key, or none), and the
synthetic fleet launched at the local ECS endpoint."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from devkit.broker import EmbeddedBroker
from devkit.ecs_endpoint import LocalEcsEndpoint
from devkit.fleet import synthetic_fleet
from devkit.topics import read_all
from tests.conftest import Topics
from tests.support import ROOT

pytestmark = pytest.mark.timeout(120)

CONTENT_TYPE = ("content-type", b"application/vnd.docker.event+json")


async def produce(broker: EmbeddedBroker, *arguments: str, stdin: bytes | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "worker", "produce", *arguments,
        cwd=ROOT,
        env={**os.environ, "WORKER_BOOTSTRAP_SERVERS": broker.bootstrap},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(stdin), 90)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_a_file_keyed_by_the_task_its_events_name(
    broker: EmbeddedBroker, topics: Topics, tmp_path: Path
) -> None:
    """Docker events of a fleet and one undecodable line: every event goes keyed by its task's
    ARN (so a task's events share a partition, in their order), the bad line without a key, each
    with the header given."""
    fleet = synthetic_fleet(6, seed=3, fmt="docker")
    lines = [fleet.render(step, fleet.observed_ns(step, 1_764_598_461_000_000_000)) for step in fleet.steps]
    capture = tmp_path / "events.jsonl"
    capture.write_bytes(b"\n".join([*lines, b"{not json"]) + b"\n")
    header = f"{CONTENT_TYPE[0]}={CONTENT_TYPE[1].decode()}"
    code, said = await produce(broker, str(capture), "--topic", topics.input, "--header", header)
    assert code == 0, said
    assert said.strip() == f"{len(lines) + 1} records to {topics.input} (1 without a key)"
    records = await read_all(broker.bootstrap, topics.input)
    assert sorted(r.value for r in records) == sorted([*lines, b"{not json"])
    assert all(list(r.headers) == [CONTENT_TYPE] for r in records)
    by_task: dict[bytes | None, list[tuple[int, int, bytes]]] = defaultdict(list)
    for r in records:
        by_task[r.key].append((r.partition, r.offset, r.value))
    assert [value for _, _, value in by_task.pop(None)] == [b"{not json"]
    expected: dict[bytes | None, list[bytes]] = {step.task.encode(): [] for step in fleet.steps}
    for step, line in zip(fleet.steps, lines, strict=True):
        expected[step.task.encode()].append(line)
    assert set(by_task) == set(expected)
    for key, sent in by_task.items():
        assert len({partition for partition, _, _ in sent}) == 1, "one task, one partition"
        assert [value for _, _, value in sorted(sent)] == expected[key], "in the order given"


async def test_standard_input_with_keys_of_its_own_or_none(broker: EmbeddedBroker, topics: Topics) -> None:
    code, said = await produce(
        broker, "-", "--topic", topics.input, "--key", "tab", stdin=b"k1\tv1\n\nk2\tv2\n"
    )
    assert code == 0, said
    assert sorted((r.key, r.value) for r in await read_all(broker.bootstrap, topics.input)) == [
        (b"k1", b"v1"),
        (b"k2", b"v2"),
    ]
    code, said = await produce(broker, "-", "--topic", topics.dlq, "--key", "none", stdin=b"a\nb\n")
    assert code == 0, said
    assert sorted((r.key, r.value) for r in await read_all(broker.bootstrap, topics.dlq)) == [
        (None, b"a"),
        (None, b"b"),
    ]
    code, said = await produce(broker, "-", "--topic", topics.input, "--key", "tab", stdin=b"no tab here\n")
    assert (code, said.startswith("error: --key tab: a line without a tab")) == (2, True)


async def test_the_synthetic_fleet_launched_at_the_endpoint(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """``--fleet N``: its tasks are run at the endpoint (ECS knows them), then its events go to
    the topic keyed by task ARN; without an endpoint it says what is missing."""
    arguments = ("--fleet", "5", "--seed", "2", "--topic", topics.input)
    code, said = await produce(broker, *arguments, "--ecs-endpoint-url", endpoint.url)
    assert code == 0, said
    records = await read_all(broker.bootstrap, topics.input)
    assert said.strip() == f"fleet of 5 tasks: {len(records)} records to {topics.input}, keyed by task ARN"
    tasks = {r.key.decode() for r in records}
    assert len(tasks) == 5
    assert tasks <= set(endpoint.state()["tasks"]), "every task was run at the endpoint first"
    code, said = await produce(broker, *arguments)
    assert code == 2
    assert "give --ecs-endpoint-url" in said


async def test_the_synthetic_fleet_without_a_key_goes_round_robin(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """``--fleet N --key none``: the unkeyed stream ``input_keying = any`` is for, no key and the
    partitions in turn, so that a task's events span partitions; ``--key tab`` is refused."""
    arguments = ("--fleet", "4", "--seed", "3", "--topic", topics.input, "--ecs-endpoint-url", endpoint.url)
    code, said = await produce(broker, *arguments, "--key", "none")
    assert code == 0, said
    records = await read_all(broker.bootstrap, topics.input)
    expected = f"{len(records)} records to {topics.input}, without a key, the partitions in turn"
    assert said.strip() == f"fleet of 4 tasks: {expected}"
    assert {r.key for r in records} == {None}
    counts = Counter(record.partition for record in records)
    assert sorted(counts) == list(range(topics.partitions))
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    code, said = await produce(broker, *arguments, "--key", "tab")
    refused = "error: --key tab reads KEY<TAB>VALUE lines: the fleet takes task or none"
    assert (code, said.strip()) == (2, refused)
