"""Command line: ``python -m worker {run,replay,dlq,produce}``, and in a source checkout the development
commands (``ecs-endpoint``, ``broker``, ``demo``, ``bench``) that ``devkit.cli`` registers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import UnionType
from typing import (
    Annotated,
    Any,
    BinaryIO,
    TypeAlias,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import msgspec

from worker import early_signals
from worker.config import SETTING_HELP, ConfigError, Settings, flag_name, load_settings
from worker.dlq import register as register_dlq
from worker.logs import configure_logging
from worker.produce import register as register_produce

__all__ = ["DEVELOPMENT_COMMANDS", "Subcommands", "main", "run_async"]

log = logging.getLogger("worker")
T = TypeVar("T")
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What ``add_subparsers`` returns (argparse does not export its class)."""

DEVELOPMENT_COMMANDS: tuple[str, ...] = ("ecs-endpoint", "broker", "demo", "bench")
"""What ``devkit.cli.register`` adds when ``devkit`` is importable; named here only to explain
their absence where it is not."""
NO_DEVKIT = (
    "the development commands need a source checkout: run them from the repository root of a "
    "development install (pip install -e '.[dev]'); the installed package has only run, replay, dlq "
    "and produce"
)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] and arguments[0] in DEVELOPMENT_COMMANDS and _devkit_register() is None:
        print(f"error: {NO_DEVKIT}", file=sys.stderr)
        return 2
    args = _parser().parse_args(arguments)
    return int(args.handler(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="run the worker", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    run.add_argument("--config", type=Path, help="TOML file of settings (also WORKER_CONFIG)")
    _add_setting_flags(run)
    run.set_defaults(handler=_run)

    replay = commands.add_parser("replay", help="decode and coalesce a captured file offline")
    replay.add_argument(
        "file", help="JSON lines, ctr events text or Fluent Bit output; - for standard input (streamed)"
    )
    replay.add_argument("--input-format", default="auto", help="force an input format")
    replay.add_argument("--linger-ms", type=int, default=500)
    replay.add_argument(
        "--task-definitions",
        type=Path,
        help="what `aws ecs describe-task-definition` prints (one answer, a JSON array, or JSON lines)",
    )
    replay.add_argument("--json", action="store_true", help="JSON lines of requests, then a summary line")
    replay.add_argument(
        "--progress-every", type=int, default=100_000, help="records between progress lines on stderr"
    )
    replay.set_defaults(handler=_replay)

    register_dlq(commands)
    register_produce(commands)
    register = _devkit_register()
    if register is not None:
        register(commands)
    return parser


def _devkit_register() -> Callable[[Subcommands], None] | None:
    """``devkit.cli.register`` in a source checkout; None where only the wheel is installed."""
    try:
        from devkit.cli import register
    except ModuleNotFoundError as exc:
        if exc.name != "devkit":
            raise
        return None
    return register


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    hints = get_type_hints(Settings, include_extras=True)
    for name in SETTING_HELP:
        kind = _scalar(hints[name])
        if kind is bool:
            parser.add_argument(
                flag_name(name),
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=SETTING_HELP[name],
            )
        else:
            parser.add_argument(flag_name(name), dest=name, type=kind, default=None, help=SETTING_HELP[name])


def _scalar(hint: Any) -> type:
    """The Python type a flag's text converts to (msgspec checks bounds and choices after)."""
    origin = get_origin(hint)
    if origin is Annotated:
        return _scalar(get_args(hint)[0])
    if origin in (Union, UnionType):
        return _scalar(next(a for a in get_args(hint) if a is not type(None)))
    return hint if hint in (bool, int, float) else str


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on uvloop where it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _run(args: argparse.Namespace) -> int:
    flags = {name: getattr(args, name) for name in SETTING_HELP}
    try:
        settings = load_settings(flags, config_file=args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    log.info("starting", extra={"settings": settings.redacted()})
    return int(run_async(_serve(settings)))


async def _serve(settings: Settings) -> int:
    from worker.health import HealthServer
    from worker.pipeline import Worker

    worker = Worker(settings)
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting at once; unresolved records will be re-read")
            os._exit(128 + signum)
        log.info("signal %s: draining", signal.Signals(signum).name)
        worker.request_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    for early in early_signals.take():  # arrived while starting: stop now, cleanly
        log.info("signal %s while starting: stopping", signal.Signals(early).name)
        worker.request_stop()
    stall_after_s = max(300.0, 2 * settings.retry_deadline_ms / 1000)  # well above a retry deadline
    health = (
        HealthServer(worker, port=settings.metrics_port, stall_after_s=stall_after_s)
        if settings.metrics_port
        else None
    )
    if health:
        await health.start()
    try:
        await worker.run()
    finally:
        if health:
            await health.stop()
    return 0


def _replay(args: argparse.Namespace) -> int:
    from worker.decode import FORMATS

    if args.input_format not in FORMATS:
        print(f"error: --input-format must be one of {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    try:
        settings = load_settings({"input_format": args.input_format, "linger_ms": args.linger_ms})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.progress_every < 1:
        print("error: --progress-every must be at least 1", file=sys.stderr)
        return 2
    try:
        stream = sys.stdin.buffer if args.file == "-" else Path(args.file).open("rb")  # noqa: SIM115
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    with stream:
        return _replay_stream(args, stream, settings)


def _replay_stream(args: argparse.Namespace, stream: BinaryIO, settings: Settings) -> int:
    from worker.replay import progress_line, read_definitions, read_records, render, replay

    try:
        definitions = read_definitions(args.task_definitions) if args.task_definitions else []
    except (OSError, ValueError) as exc:
        print(f"error: cannot read --task-definitions {args.task_definitions}: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        report = replay(
            read_records(stream),
            settings,
            definitions,
            on_progress=lambda so_far: print(
                progress_line(so_far, time.monotonic() - started), file=sys.stderr, flush=True
            ),
            progress_every=args.progress_every,
        )
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for request in report.submissions:
            print(msgspec.json.encode(request).decode())
        print(msgspec.json.encode(report.summary()).decode())
    else:
        print(render(report))
    return 0
