"""Command line: ``python -m worker {run,ecs-endpoint,broker,demo}``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import msgspec

from worker.config import SETTING_HELP, ConfigError, Settings, flag_name, load_settings
from worker.logs import configure_logging

__all__ = ["main"]

log = logging.getLogger("worker")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler = {
        "run": _run,
        "ecs-endpoint": _ecs_endpoint,
        "broker": _broker,
        "demo": _demo,
        "bench": _bench,
        "replay": _replay,
    }[args.command]
    return handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="run the worker", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    run.add_argument("--config", type=Path, help="TOML file of settings (also WORKER_CONFIG)")
    _add_setting_flags(run)

    endpoint = commands.add_parser("ecs-endpoint", help="the local ECS endpoint (development, tests)")
    endpoint.add_argument("--host", default="127.0.0.1")
    endpoint.add_argument("--port", type=int, default=4566)
    endpoint.add_argument("--throttle-rate", type=float, default=0.0)
    endpoint.add_argument("--error-rate", type=float, default=0.0)
    endpoint.add_argument("--latency-ms", type=float, default=0.0)
    endpoint.add_argument("--drop-rate", type=float, default=0.0)
    endpoint.add_argument("--quota-burst", type=int, default=None)
    endpoint.add_argument("--quota-refill-per-s", type=float, default=None)

    broker = commands.add_parser("broker", help="the embedded development broker (Tansu)")
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int, default=9092)

    demo = commands.add_parser("demo", help="the whole pipeline on embedded parts, with a summary")
    demo.add_argument("--tasks", type=int, default=400)
    demo.add_argument("--partitions", type=int, default=4)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")

    replay = commands.add_parser("replay", help="decode and coalesce a captured file offline")
    replay.add_argument("file", type=Path, help="JSON lines, ctr events text or Fluent Bit output")
    replay.add_argument("--input-format", default="auto", help="force an input format")
    replay.add_argument("--linger-ms", type=int, default=500)
    replay.add_argument("--json", action="store_true", help="JSON lines of requests, then a summary line")

    bench = commands.add_parser("bench", help="the benchmark: JSON and a table")
    bench.add_argument("--json", action="store_true", help="print JSON only")
    bench.add_argument("--quick", action="store_true", help="a quarter of the work, for a smoke run")
    return parser


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


def _run_async(coroutine: Coroutine[Any, Any, Any]) -> Any:
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
    return int(_run_async(_serve(settings)))


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


def _ecs_endpoint(args: argparse.Namespace) -> int:
    from devkit.ecs_endpoint import Faults, serve

    configure_logging("INFO", "text")
    faults = Faults(
        throttle_rate=args.throttle_rate,
        error_rate=args.error_rate,
        latency_ms=args.latency_ms,
        drop_rate=args.drop_rate,
        quota_burst=args.quota_burst,
        quota_refill_per_s=args.quota_refill_per_s,
    )
    with contextlib.suppress(KeyboardInterrupt):
        _run_async(serve(args.host, args.port, faults))
    return 0


def _broker(args: argparse.Namespace) -> int:
    import time

    from devkit.broker import EmbeddedBroker

    configure_logging("INFO", "text")
    with EmbeddedBroker(host=args.host, port=args.port) as broker:
        print(
            f"embedded broker on {broker.bootstrap}; Ctrl-C stops it (its data is in memory)",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def _demo(args: argparse.Namespace) -> int:
    from devkit.demo import run_demo

    configure_logging("WARNING", "text")
    summary = _run_async(run_demo(tasks=args.tasks, partitions=args.partitions, seed=args.seed))
    print(msgspec.json.encode(summary).decode() if args.json else summary.render())
    return 0 if summary.ok else 1


def _bench(args: argparse.Namespace) -> int:
    from devkit.bench import run_bench

    configure_logging("WARNING", "text")
    report = _run_async(run_bench(quick=args.quick))
    print(msgspec.json.encode(report).decode())
    if not args.json:
        print(report.render())
    return 0


def _replay(args: argparse.Namespace) -> int:
    from worker.decode import FORMATS
    from worker.replay import read_records, render, replay

    if args.input_format not in FORMATS:
        print(f"error: --input-format must be one of {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    try:
        records = list(read_records(args.file))
    except (OSError, msgspec.DecodeError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    report = replay(records, input_format=args.input_format, linger_ms=args.linger_ms)
    if args.json:
        for request in report.submissions:
            print(msgspec.json.encode(request).decode())
        print(msgspec.json.encode(report.summary()).decode())
    else:
        print(render(report))
    return 0
