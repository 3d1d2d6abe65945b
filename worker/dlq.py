"""``python -m worker dlq list|show|replay``: see and recover what was dead-lettered.

The settings are the worker's (``--config`` or ``WORKER_CONFIG``, ``WORKER_*`` variables; a
few flags here): run it where the worker runs, e.g. ``kubectl exec``. Reading commits nothing and
joins no group (``worker.letters``); ``replay`` is ``worker.dlq_replay``.

- ``list``: one line per letter: partition:offset, time (UTC), stage, error class, reason (its
  first 80 characters), and the ECS task (submit letters) or the record's key.
- ``show PARTITION:OFFSET``: one letter whole, as JSON: its headers and value (JSON when it is
  JSON, else text, else base64).
- ``replay``: the letters selected, back to the input topic or to ECS; ``--dry-run`` says what it
  would do.

Each takes the same filters: ``--stage``, ``--error-class`` and ``--at PARTITION:OFFSET``
(repeatable), ``--from`` and ``--to`` (ISO 8601 times, UTC unless the time says otherwise, on the
letters' timestamps). ``replay`` also takes ``--drop-header NAME`` and ``--set-header NAME=VALUE``
(repeatable): input letters' own headers changed on the way back, for a cause in the headers
themselves (a ``content-type`` naming another format than the value's).
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from worker.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from worker.cli import Subcommands
    from worker.letters import Letter, LetterFilter

__all__ = ["describe", "letter_json", "parse_time", "register"]

_STAGES = ("decode", "validate", "submit")
_REASON_CHARS = 80


def register(commands: Subcommands) -> None:
    """Add ``dlq`` and its ``list``, ``show`` and ``replay`` to ``python -m worker``."""
    dlq = commands.add_parser("dlq", help="list, show and replay dead letters")
    actions = dlq.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML file of settings (also WORKER_CONFIG)")
    common.add_argument("--bootstrap-servers", help="as the worker's setting")
    for setting in ("dlq-topic", "input-topic", "outcome-topic"):
        common.add_argument(f"--{setting}", help="as the worker's setting")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--stage", action="append", choices=_STAGES, help="repeatable")
    filters.add_argument("--error-class", action="append", help="e.g. DecodeError; repeatable")
    filters.add_argument(
        "--at",
        action="append",
        type=_position,
        metavar="PARTITION:OFFSET",
        help="as `list` prints it; repeatable",
    )
    filters.add_argument(
        "--from", dest="since", type=parse_time, metavar="TIME", help="ISO 8601, e.g. 2026-11-30T07:00Z"
    )
    filters.add_argument("--to", dest="until", type=parse_time, metavar="TIME", help="ISO 8601, exclusive")

    listing = actions.add_parser("list", parents=[common, filters], help="one line per letter")
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", parents=[common], help="one letter whole, as JSON")
    show.add_argument("at", metavar="PARTITION:OFFSET", type=_position, help="as `list` prints it")
    show.set_defaults(handler=_show)
    replay = actions.add_parser(
        "replay", parents=[common, filters], help="input letters to the input topic, submit letters to ECS"
    )
    replay.add_argument("--dry-run", action="store_true", help="say what would be done; write nothing")
    replay.add_argument(
        "--drop-header", action="append", metavar="NAME", help="drop this header of input letters; repeatable"
    )
    replay.add_argument(
        "--set-header",
        action="append",
        type=_header,
        metavar="NAME=VALUE",
        help="set this header of input letters (replacing any of the name); repeatable",
    )
    replay.set_defaults(handler=_replay)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time; without an offset it is UTC. Raises ``argparse.ArgumentTypeError``."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _header(text: str) -> tuple[str, bytes]:
    """``NAME=VALUE`` as a Kafka header (the value UTF-8); ``ArgumentTypeError`` without a name."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.encode()


def _position(text: str) -> tuple[int, int]:
    partition, _, offset = text.rpartition(":")
    try:
        return int(partition or 0), int(offset)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PARTITION:OFFSET, e.g. 0:42, not {text!r}") from None


def describe(letter: Letter) -> str:
    """The one line ``list`` prints for ``letter``."""
    errors = letter.errors
    if errors is None:
        return f"{letter.partition}:{letter.offset}  {_iso(letter)}  ?  (no dead-letter headers)"
    reason = errors.message.splitlines()[0] if errors.message else ""
    if len(reason) > _REASON_CHARS:
        reason = reason[: _REASON_CHARS - 1] + "…"
    task = errors.task or f"key={(letter.key or b'').decode('utf-8', 'replace')}"
    return (
        f"{letter.partition}:{letter.offset}  {_iso(letter)}  {errors.pipeline_stage:8}  "
        f"{errors.errorClass}  {reason}  {task}"
    )


def letter_json(letter: Letter, topic: str) -> dict[str, Any]:
    """What ``show`` prints: where the letter is, its time, key, every header (error headers and
    the input record's own, in order) and its value."""
    headers = msgspec.to_builtins(letter.errors) if letter.errors else {}
    return {
        "topic": topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": _iso(letter),
        "key": None if letter.key is None else _text(letter.key),
        "headers": [[name, _text(value)] for name, value in letter.headers]
        + [[name, str(value)] for name, value in headers.items()],
        "stage": letter.stage,
        "value": None if letter.value is None else _json_or_text(letter.value),
    }


def _iso(letter: Letter) -> str:
    return letter.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode()


def _json_or_text(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return _text(raw)


def _settings(args: argparse.Namespace) -> Settings:
    names = ("bootstrap_servers", "dlq_topic", "input_topic", "outcome_topic")
    flags = {name: getattr(args, name) for name in names}
    return load_settings(flags, config_file=args.config)


def _filter(args: argparse.Namespace) -> LetterFilter:
    from worker.letters import LetterFilter

    def ms(moment: datetime | None) -> int | None:
        return None if moment is None else int(moment.timestamp() * 1000)

    return LetterFilter(
        stages=tuple(args.stage or ()),
        error_classes=tuple(args.error_class or ()),
        since_ms=ms(args.since),
        until_ms=ms(args.until),
        positions=tuple(args.at or ()),
    )


def _handle(args: argparse.Namespace, work: Callable[[Settings], Coroutine[Any, Any, int]]) -> int:
    """Run ``work(settings)`` (a coroutine function returning the exit code); bad settings and a
    topic that does not exist exit 2 with one line, a Kafka failure 1."""
    from aiokafka.errors import KafkaError

    from worker.cli import run_async

    try:
        settings = _settings(args)
        return run_async(work(settings))
    except (ConfigError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KafkaError as exc:  # the brokers unreachable, a write refused
        print(f"error: Kafka: {exc!r}", file=sys.stderr)
        return 1


async def _selected(settings: Settings, args: argparse.Namespace) -> list[Letter]:
    from worker.letters import read_letters

    return [letter async for letter in read_letters(settings, _filter(args))]


def _list(args: argparse.Namespace) -> int:
    async def work(settings: Settings) -> int:
        letters = await _selected(settings, args)
        for letter in letters:
            print(describe(letter))
        print(f"{len(letters)} dead letters in {settings.dlq_topic}", file=sys.stderr)
        return 0

    return _handle(args, work)


def _show(args: argparse.Namespace) -> int:
    from worker.letters import read_letter

    partition, offset = args.at

    async def work(settings: Settings) -> int:
        letter = await read_letter(settings, partition, offset)
        if letter is None:
            print(f"error: no record at {partition}:{offset} in {settings.dlq_topic}", file=sys.stderr)
            return 1
        print(msgspec.json.encode(letter_json(letter, settings.dlq_topic)).decode())
        return 0

    return _handle(args, work)


def _replay(args: argparse.Namespace) -> int:
    from worker.dlq_replay import HeaderEdit, replay_letters

    edit = HeaderEdit(drop=tuple(args.drop_header or ()), put=tuple(args.set_header or ()))

    async def work(settings: Settings) -> int:
        letters = await _selected(settings, args)
        tally = await replay_letters(settings, letters, dry_run=args.dry_run, say=print, headers=edit)
        print(("dry run: " if args.dry_run else "") + tally.summary(), file=sys.stderr)
        return 0 if tally.ok() else 1

    return _handle(args, work)
