"""``python -m worker produce``: records to a topic, to try the worker without writing a producer.

The records come from a file or standard input (``-``), read as they come (``worker.replay``'s
reader: one a line, or a JSON array), or, in a source checkout, from the synthetic fleet
(``--fleet N``: its task definitions registered and tasks run at the local ECS endpoint, then
their events produced, keyed by task ARN as ``make demo`` does, or with ``--key none`` without a
key, the partitions in turn: an unkeyed stream, to try ``input_keying = any``).

Keys (``--key``), so that the events of one task land in one partition as the worker needs:

- ``task`` (the default): the ECS task ARN the worker's own decoder finds in the record (its first
  event's), else the first task ARN in the record's text (a labelled event the worker ignores,
  such as a health check, still goes with its task); a record that names none goes without a key;
- ``none``: no key;
- ``tab``: each line is ``KEY<TAB>VALUE``.

The brokers, their security and the topic are the worker's settings (``--config``,
``WORKER_*``; ``--topic`` defaults to ``input_topic``). ``--header NAME=VALUE`` adds a header to
every record, e.g. ``content-type=application/vnd.docker.event+json``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal

from worker.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from worker.cli import Subcommands
    from worker.decode import RecordDecoder

__all__ = ["KeyMode", "keyed", "register"]

KeyMode = Literal["task", "none", "tab"]
_TASK_ARN = re.compile(rb"arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:task/[A-Za-z0-9_-]+/[0-9a-f]{32}")
"""A task ARN of the long format (``arn:aws:ecs:region:account:task/cluster/id``)."""
NO_FLEET = (
    "--fleet needs a source checkout (the synthetic fleet is in devkit/, not in the installed "
    "package): run it from the repository root of a development install"
)


def register(commands: Subcommands) -> None:
    """Add ``produce`` to ``python -m worker``."""
    produce = commands.add_parser(
        "produce", help="records from a file, stdin or the synthetic fleet to a topic"
    )
    source = produce.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", help="JSON lines, ctr text or a JSON array; - for stdin")
    source.add_argument("--fleet", type=int, metavar="TASKS", help="the synthetic fleet (source checkout)")
    produce.add_argument("--config", type=Path, help="TOML file of settings (also WORKER_CONFIG)")
    produce.add_argument("--bootstrap-servers", help="as the worker's setting")
    produce.add_argument("--topic", help="default: the input_topic setting")
    produce.add_argument(
        "--key", choices=("task", "none", "tab"), default="task", help="how records are keyed"
    )
    produce.add_argument("--header", action="append", default=[], metavar="NAME=VALUE", type=_header)
    produce.add_argument("--seed", type=int, default=7, help="fleet: its random seed")
    produce.add_argument(
        "--format", choices=("docker", "canonical"), default="docker", help="fleet: event format"
    )
    produce.add_argument("--ecs-endpoint-url", help="fleet: the local ECS endpoint that runs its tasks")
    produce.add_argument("--pace", type=float, default=None, help="fleet: 1.0 real time; default all at once")
    produce.set_defaults(handler=_produce)


def _header(text: str) -> tuple[str, bytes]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value.encode()


def keyed(
    records: Iterable[bytes], mode: KeyMode, decoder: RecordDecoder
) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) of each record under ``mode`` (see the module docstring). Raises ``ValueError``
    for a ``tab`` line without a tab."""
    for record in records:
        if mode == "tab":
            key, tab, value = record.partition(b"\t")
            if not tab:
                raise ValueError(f"--key tab: a line without a tab: {record[:80]!r}")
            yield key, value
        elif mode == "task":
            events = decoder.decode(record).events
            found = _TASK_ARN.search(record)
            yield (events[0].task.encode() if events else found[0] if found else None), record
        else:
            yield None, record


def _produce(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from worker.cli import open_input, run_async

    try:
        flags = {"bootstrap_servers": args.bootstrap_servers, "ecs_endpoint_url": args.ecs_endpoint_url}
        settings = load_settings(flags, config_file=args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    topic = args.topic or settings.input_topic
    if args.fleet is not None:
        return _fleet(args, settings, topic)
    stream = open_input(args.file)
    if stream is None:
        return 2
    with stream:
        try:
            sent = run_async(_send(settings, topic, stream, args))
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KafkaError as exc:  # the brokers unreachable, a write refused
            print(f"error: Kafka: {exc!r}", file=sys.stderr)
            return 1
    print(f"{sent[0]} records to {topic} ({sent[1]} without a key)", file=sys.stderr)
    return 0


async def _send(
    settings: Settings, topic: str, stream: BinaryIO, args: argparse.Namespace
) -> tuple[int, int]:
    """Send every record of ``stream``; (records sent, of which without a key)."""
    from worker.decode import RecordDecoder
    from worker.kafka_clients import make_producer
    from worker.replay import read_records

    decoder = RecordDecoder(input_format=settings.input_format, max_record_bytes=settings.max_record_bytes)
    producer = make_producer(settings)
    sent = unkeyed = 0
    try:
        await producer.start()
        pending = []
        for key, value in keyed(read_records(stream), args.key, decoder):
            pending.append(await producer.send(topic, value, key=key, headers=args.header or None))
            sent, unkeyed = sent + 1, unkeyed + (key is None)
            if len(pending) >= 1000:  # bounded: a long input is never held whole
                for delivered in pending:
                    await delivered
                pending.clear()
        for delivered in pending:
            await delivered
    finally:
        await producer.stop()
    return sent, unkeyed


def _fleet(args: argparse.Namespace, settings: Settings, topic: str) -> int:
    from worker.cli import run_async

    try:
        from devkit.fleet import launch, synthetic_fleet
        from devkit.topics import produce_fleet
    except ModuleNotFoundError as exc:
        if exc.name != "devkit":
            raise
        print(f"error: {NO_FLEET}", file=sys.stderr)
        return 2
    if not settings.ecs_endpoint_url:
        print(
            "error: --fleet runs its tasks at the local ECS endpoint: give --ecs-endpoint-url",
            file=sys.stderr,
        )
        return 2
    if args.key == "tab":
        print("error: --key tab reads KEY<TAB>VALUE lines: the fleet takes task or none", file=sys.stderr)
        return 2
    endpoint, unkeyed = settings.ecs_endpoint_url, args.key == "none"

    async def run() -> int:
        fleet = await launch(synthetic_fleet(args.fleet, seed=args.seed, fmt=args.format), endpoint)
        await produce_fleet(settings.bootstrap_servers, topic, fleet, pace=args.pace, unkeyed=unkeyed)
        return len(fleet.steps)

    sent = run_async(run())
    keying = "without a key, the partitions in turn" if unkeyed else "keyed by task ARN"
    print(f"fleet of {args.fleet} tasks: {sent} records to {topic}, {keying}", file=sys.stderr)
    return 0
