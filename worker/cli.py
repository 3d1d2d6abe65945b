"""Command line: ``python -m worker {run,replay,dlq,produce}``, and in a source checkout the development
commands (``ecs-endpoint``, ``broker``, ``demo``, ``bench``) that ``devkit.cli`` registers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    BinaryIO,
    TypeAlias,
    TypeVar,
)

import msgspec

from worker import __version__
from worker.config import SETTING_HELP, ConfigError, Settings, load_settings
from worker.dlq import register as register_dlq
from worker.logs import configure_logging
from worker.produce import register as register_produce
from worker.setting_flags import add_setting_flags

if TYPE_CHECKING:
    from schemas.ecs import SubmitTaskStateChangeRequest

__all__ = ["DEVELOPMENT_COMMANDS", "Subcommands", "main", "open_input", "run_async"]

log = logging.getLogger("worker")
T = TypeVar("T")
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What ``add_subparsers`` returns (argparse does not export its class)."""
INTERRUPTED = 130
"""Exit status of a command ended by Ctrl-C (SIGINT): 128 + the signal's number, as a shell gives."""

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
    parser = argparse.ArgumentParser(prog="python -m worker", description=(__doc__ or "").replace("``", "`"))
    parser.add_argument("--version", action="version", version=f"ecs-state-worker {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="run the worker",
        usage="python -m worker run [--config FILE] [--SETTING VALUE ...] [--dry-run]",
        description="Run the worker. Each setting: a flag, a WORKER_* variable or a TOML key "
        "(flags win over variables, variables over the file).",
    )
    run.add_argument("--version", action="version", version=f"ecs-state-worker {__version__}")
    run.add_argument("--config", type=Path, help="TOML file of settings (env: WORKER_CONFIG)")
    add_setting_flags(run)
    run.set_defaults(handler=_run)

    replay = commands.add_parser("replay", help="decode and coalesce a captured file offline")
    replay.add_argument(
        "file",
        help="JSON lines, ctr/docker/podman events text or Fluent Bit output; - for standard input",
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


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on uvloop where it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def open_input(file: str) -> BinaryIO | None:
    """``file`` opened for reading bytes (``-``: standard input); None, with one ``error:`` line
    on standard error, when it cannot be opened (the caller exits 2)."""
    try:
        return sys.stdin.buffer if file == "-" else Path(file).open("rb")
    except OSError as exc:
        print(f"error: cannot read {file}: {exc}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    flags = {name: getattr(args, name) for name in SETTING_HELP}
    try:
        settings = load_settings(flags, config_file=args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    from worker.serve import serve

    log.info("starting", extra={"settings": settings.redacted(), "version": __version__})
    return int(run_async(serve(settings)))


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
    stream = open_input(args.file)
    if stream is None:
        return 2
    with stream:
        return _replay_stream(args, stream, settings)


def _replay_stream(args: argparse.Namespace, stream: BinaryIO, settings: Settings) -> int:
    from worker.replay import (
        progress_line,
        read_definitions,
        read_records,
        render_request,
        render_summary,
        replay,
    )

    try:
        definitions = read_definitions(args.task_definitions) if args.task_definitions else []
    except (OSError, ValueError) as exc:
        print(f"error: cannot read --task-definitions {args.task_definitions}: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    show = _show_json if args.json else render_request
    try:
        report = replay(
            read_records(stream),
            settings,
            definitions,
            on_progress=lambda so_far: print(
                progress_line(so_far, time.monotonic() - started), file=sys.stderr, flush=True
            ),
            progress_every=args.progress_every,
            on_submission=lambda request: print(show(request), flush=True),
        )
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    print(msgspec.json.encode(report.summary()).decode() if args.json else render_summary(report), flush=True)
    return INTERRUPTED if report.interrupted else 0


def _show_json(request: SubmitTaskStateChangeRequest) -> str:
    return msgspec.json.encode(request).decode()
