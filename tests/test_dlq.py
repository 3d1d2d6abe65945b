"""Dead letters recovered (``worker.letters``, ``worker.dlq_replay``, ``python -m worker dlq``): a
round trip for each stage against the embedded broker and the local ECS endpoint. Tasks are
registered and run at the endpoint first; a worker dead-letters their events or requests; the
letters are read back with Kafka Connect's headers and the input record's own; after the cause is
fixed they are replayed and the tasks reach ECS in their final state."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from devkit.broker import EmbeddedBroker
from devkit.ecs_endpoint import Faults, LocalEcsEndpoint
from devkit.topics import end_offsets, read_all
from schemas.events import ContainerChange, TaskEvent
from schemas.records import Outcome, Stage
from tests.conftest import Topics, worker_settings
from tests.ecs_tasks import DockerTask, ecs_tasks
from tests.support import ROOT, flags, running, wait_for
from worker.config import Settings
from worker.dlq_replay import REPLAY_WORKER, replay_letters
from worker.letters import Letter, LetterFilter, read_letters
from worker.pipeline import Worker

pytestmark = pytest.mark.timeout(120)

TWO: list[dict[str, Any]] = [{"name": "app"}, {"name": "log", "essential": False}]
OWN_HEADERS = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
_S = 1_000_000_000


async def started(
    endpoint: LocalEcsEndpoint, count: int, containers: list[dict[str, Any]] = TWO
) -> list[DockerTask]:
    async with ecs_tasks(endpoint.url) as ecs:
        arn = await ecs.register("web", containers)
        return await ecs.run("prod", arn, count=count)


def docker_lifecycle(task: DockerTask, base: int) -> list[bytes]:
    """Both containers created and started; app exits 0, then the agent stops log."""
    steps: list[tuple[str, str, float, int | None]] = [
        ("app", "create", 0.0, None),
        ("log", "create", 0.0, None),
        ("app", "start", 0.1, None),
        ("log", "start", 0.1, None),
        ("app", "die", 5.0, 0),
        ("log", "kill", 5.5, None),
        ("log", "die", 5.6, 143),
    ]
    return [task.event(name, action, at, exit_code=code, base_ns=base) for name, action, at, code in steps]


def canonical_lifecycle(task: DockerTask, base: int, names: tuple[str, ...] = ("app", "log")) -> list[bytes]:
    """Events of the canonical format, each naming every container in ``names``."""

    def event(at_s: float, status: str, exit_codes: dict[str, int] | None = None) -> bytes:
        containers = tuple(
            ContainerChange(
                containerName=name,
                status=status,  # type: ignore[arg-type]  # a ContainerStatus literal
                exitCode=None if exit_codes is None else exit_codes[name],
            )
            for name in names
        )
        return msgspec.json.encode(
            TaskEvent(
                cluster=task.cluster,
                task=task.arn,
                observedAt=base + int(at_s * _S),
                containers=containers,
                taskDefinitionArn=task.definition_arn,
            )
        )

    stopped = event(5.0, "STOPPED", {"app": 0, "log": 143})
    return [event(0.0, "CREATED"), event(0.1, "RUNNING"), stopped]


async def send(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key, headers=OWN_HEADERS)
    finally:
        await producer.stop()


async def letters_of(settings: Settings, *stages: Stage) -> list[Letter]:
    return [x async for x in read_letters(settings, LetterFilter(stages=stages))]


def stopped_everywhere(endpoint: LocalEcsEndpoint, tasks: list[DockerTask], names: tuple[str, ...]) -> bool:
    state: dict[str, Any] = endpoint.state()["tasks"]
    return all(
        state.get(t.arn, {}).get("status") == "STOPPED"
        and state[t.arn].get("containers") == dict.fromkeys(names, "STOPPED")
        for t in tasks
    )


async def dead_letter_then_replay(
    broker: EmbeddedBroker,
    endpoint: LocalEcsEndpoint,
    topics: Topics,
    records: list[tuple[bytes, bytes]],
    failing: Settings,
    stage: Stage,
) -> list[Letter]:
    """``failing`` dead-letters every one of ``records`` at ``stage``; the letters read back keep
    the records' key, value and headers; a dry run writes nothing; the replay puts them back on
    the input topic as they were. Returns the letters."""
    async with running(Worker(failing)) as worker:
        await send(broker.bootstrap, topics.input, records)
        await wait_for(
            lambda: worker.metrics.totals().get("dead_lettered", 0) >= len(records), 30, "dead letters"
        )
        await wait_for(lambda: worker.pending_work() == 0, 30, "resolved")
    letters = await letters_of(failing, stage)
    assert sorted((x.key or b"", x.value or b"") for x in letters) == sorted(records)
    for letter in letters:
        assert letter.headers == OWN_HEADERS, "the input record's own headers, nothing else"
        assert letter.errors is not None
        assert (letter.errors.topic, letter.errors.connector) == (topics.input, topics.group)
    assert await letters_of(failing, *({"decode", "validate", "submit"} - {stage})) == []  # type: ignore[arg-type]
    before = sum((await end_offsets(broker.bootstrap, topics.input)).values())
    dry = await replay_letters(failing, letters, dry_run=True, say=lambda _: None)
    assert dry.requeued == len(records)
    assert sum((await end_offsets(broker.bootstrap, topics.input)).values()) == before
    tally = await replay_letters(failing, letters, dry_run=False, say=lambda _: None)
    assert (tally.requeued, tally.ok()) == (len(records), True)
    replayed = (await read_all(broker.bootstrap, topics.input))[len(records) :]
    assert sorted((r.key, r.value, list(r.headers)) for r in replayed) == sorted(
        (key, value, OWN_HEADERS) for key, value in records
    )
    return letters


async def test_decode_letters_replayed_once_the_format_is_right(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """Docker events read by a worker set to the canonical format fail at decode; replayed, a
    worker that detects the format reports both tasks to the end."""
    tasks = await started(endpoint, 2)
    base = time.time_ns()
    records = [(t.arn.encode(), value) for t in tasks for value in docker_lifecycle(t, base)]
    failing = worker_settings(broker, endpoint, topics, input_format="canonical")
    letters = await dead_letter_then_replay(broker, endpoint, topics, records, failing, "decode")
    assert {x.errors.stage for x in letters if x.errors} == {"VALUE_CONVERTER"}
    assert endpoint.state()["tasks"][tasks[0].arn]["history"] == []
    async with running(Worker(worker_settings(broker, endpoint, topics))):
        await wait_for(lambda: stopped_everywhere(endpoint, tasks, ("app", "log")), 30, "STOPPED")
    assert not any(flags(endpoint).values()), endpoint.state()["flags"]


async def test_validate_letters_replayed_once_the_bound_is_raised(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """Events naming two containers pass max_containers_per_task=1 and are dead-lettered at
    validate; replayed to a worker with the default bound, the task reaches ECS whole."""
    (task,) = await started(endpoint, 1)
    records = [(task.arn.encode(), value) for value in canonical_lifecycle(task, time.time_ns())]
    failing = worker_settings(broker, endpoint, topics, max_containers_per_task=1, input_format="canonical")
    letters = await dead_letter_then_replay(broker, endpoint, topics, records, failing, "validate")
    assert {(x.errors.stage, x.errors.className) for x in letters if x.errors} == {
        ("TRANSFORMATION", "worker.intake.Intake")
    }
    async with running(Worker(worker_settings(broker, endpoint, topics))):
        await wait_for(lambda: stopped_everywhere(endpoint, [task], ("app", "log")), 30, "STOPPED")
    assert not any(flags(endpoint).values()), endpoint.state()["flags"]


async def test_submit_letters_resubmitted_unless_newer_state_was_reported(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """ECS fails every call: the requests are dead-lettered (keyed by task ARN, the request as
    value). Replayed once ECS answers: the last letter of each task goes through the submission
    path (an acknowledged outcome by dlq-replay); replayed again, every letter is superseded by
    that outcome and ECS gets no call."""
    tasks = await started(endpoint, 2, [{"name": "app"}])
    base = time.time_ns()
    records = [(t.arn.encode(), v) for t in tasks for v in canonical_lifecycle(t, base, ("app",))]
    endpoint.set_faults(Faults(error_rate=1.0))
    settings = worker_settings(broker, endpoint, topics, max_attempts=2, input_format="canonical")
    async with running(Worker(settings)) as worker:
        await send(broker.bootstrap, topics.input, records)
        await wait_for(lambda: worker.metrics.totals().get("submissions_failed", 0) >= 2, 30, "failures")
        await wait_for(lambda: worker.pending_work() == 0, 30, "resolved")
    letters = await letters_of(settings, "submit")
    assert {x.key for x in letters} == {t.arn.encode() for t in tasks}
    assert all(x.errors and x.errors.task == (x.key or b"").decode() for x in letters)
    assert all(x.errors and x.errors.errorClass == "ServerException" for x in letters)
    endpoint.set_faults(Faults())
    said: list[str] = []
    tally = await replay_letters(settings, letters, dry_run=False, say=said.append)
    assert tally.submitted == {"acknowledged": len(tasks)}, said
    assert tally.superseded == len(letters) - len(tasks)
    assert stopped_everywhere(endpoint, tasks, ("app",))
    outcomes = [
        msgspec.json.decode(r.value, type=Outcome) for r in await read_all(broker.bootstrap, topics.outcome)
    ]
    replayed = [o for o in outcomes if o.worker == REPLAY_WORKER]
    assert sorted(o.task for o in replayed) == sorted(t.arn for t in tasks)
    assert all(o.result == "acknowledged" and o.status == "STOPPED" for o in replayed)
    accepted = endpoint.state()["accepted"]
    again = await replay_letters(settings, letters, dry_run=False, say=said.append)
    assert (again.superseded, dict(again.submitted)) == (len(letters), {})
    assert endpoint.state()["accepted"] == accepted
    assert not any(flags(endpoint).values()), endpoint.state()["flags"]


async def test_the_dlq_command_lists_shows_and_dry_runs(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """``python -m worker dlq`` from the worker's environment: ``list`` one line per letter,
    filtered; ``show`` one letter's headers and value as JSON; ``replay --dry-run`` writes
    nothing."""
    (task,) = await started(endpoint, 1)
    records = [(task.arn.encode(), b"\xff not an event"), (task.arn.encode(), b'{"cluster":"c"}')]
    settings = worker_settings(broker, endpoint, topics)
    async with running(Worker(settings)) as worker:
        await send(broker.bootstrap, topics.input, records)
        await wait_for(lambda: worker.metrics.totals().get("dead_lettered", 0) >= 2, 30, "dead letters")
    env = {"WORKER_BOOTSTRAP_SERVERS": broker.bootstrap, "WORKER_DLQ_TOPIC": topics.dlq}
    listed = await dlq_command(env, "list")
    lines = listed.splitlines()
    assert len(lines) == 2
    assert all(line.startswith(("0:0 ", "0:1 ")) and "decode" in line for line in lines)
    assert f"key={task.arn}" in lines[0]
    assert await dlq_command(env, "list", "--error-class", "NoSuchClass") == ""
    assert await dlq_command(env, "list", "--from", "2999-01-01T00:00:00Z") == ""
    assert await dlq_command(env, "list", "--from", "2000-01-01T00:00", "--stage", "decode") == listed
    assert await dlq_command(env, "list", "--to", "2000-01-01T00:00:00+01:00") == ""
    shown = msgspec.json.decode(await dlq_command(env, "show", "0:1"))
    assert (shown["offset"], shown["key"], shown["value"]) == (1, task.arn, {"cluster": "c"})
    assert [OWN_HEADERS[0][0], OWN_HEADERS[0][1].decode()] in shown["headers"]
    assert ["__connect.errors.stage", "VALUE_CONVERTER"] in shown["headers"]
    assert "no record at 0:9 in " in await dlq_command(env, "show", "0:9", code=1)
    before = await end_offsets(broker.bootstrap, topics.input)
    dry = await dlq_command(env, "replay", "--dry-run")
    assert dry.count("would requeue to " + topics.input) == 2
    assert await end_offsets(broker.bootstrap, topics.input) == before


async def dlq_command(env: dict[str, str], *arguments: str, code: int = 0) -> str:
    """What ``python -m worker dlq ARGUMENTS`` prints: standard output, or standard error when it
    exits non-zero (``code``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker",
        "dlq",
        *arguments,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == code, err.decode()
    return (out if code == 0 else err).decode()


async def test_replay_fixes_the_headers_that_caused_the_letters(
    broker: EmbeddedBroker, endpoint: LocalEcsEndpoint, topics: Topics
) -> None:
    """Docker events produced with ``content-type: application/x-ctr-events`` are dead-lettered
    (FormatMismatch). ``dlq replay --at ... --drop-header --set-header`` puts back only the letters
    named, with the header fixed; the worker then decodes them and both tasks reach STOPPED. A
    letter not named stays where it is."""
    tasks = await started(endpoint, 2)
    records = [(t.arn.encode(), value) for t in tasks for value in docker_lifecycle(t, time.time_ns())]
    wrong = [("content-type", b"application/x-ctr-events"), *OWN_HEADERS]
    settings = worker_settings(broker, endpoint, topics)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for key, value in [(b"other", b"\xff not an event"), *records]:
            await producer.send_and_wait(topics.input, value, key=key, headers=wrong)
    finally:
        await producer.stop()
    async with running(Worker(settings)) as worker:
        await wait_for(
            lambda: worker.metrics.totals().get("dead_lettered", 0) >= len(records) + 1, 30, "dead letters"
        )
    letters = await letters_of(settings, "decode")
    assert {x.errors.errorClass for x in letters if x.key != b"other" and x.errors} == {"FormatMismatch"}
    picked = [f"{x.partition}:{x.offset}" for x in letters if x.key != b"other"]
    assert len(picked) == len(records)
    env = {"WORKER_BOOTSTRAP_SERVERS": broker.bootstrap, "WORKER_DLQ_TOPIC": topics.dlq}
    fix = ["--drop-header", "traceparent", "--set-header", "content-type=application/vnd.docker.event+json"]
    out = await dlq_command(env, "replay", *(f"--at={at}" for at in picked), *fix)
    assert out.count("requeued to " + topics.input) == len(records)
    on_input = await read_all(broker.bootstrap, topics.input)  # partitions interleave originals
    replayed = [r for r in on_input if list(r.headers) != wrong]
    assert len(on_input) == 2 * len(records) + 1
    assert sorted((r.key, r.value, list(r.headers)) for r in replayed) == sorted(
        (key, value, [("content-type", b"application/vnd.docker.event+json")]) for key, value in records
    )
    async with running(Worker(settings)) as worker:
        await wait_for(lambda: stopped_everywhere(endpoint, tasks, ("app", "log")), 30, "STOPPED")
    assert len(await letters_of(settings, "decode")) == len(records) + 1, "no new letters"
