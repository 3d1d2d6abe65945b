"""The development commands of ``python -m worker``: ``ecs-endpoint``, ``broker``, ``demo``, ``bench``.

``worker.cli`` registers them when this package is importable (a source checkout, run from the
repository root); the production wheel holds neither this module nor what it runs. Each handler
imports its stand-in only when called, so ``python -m worker run`` never loads them.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable

import msgspec

from worker.cli import Subcommands, run_async
from worker.logs import configure_logging

__all__ = ["QUOTA_REPORTERS", "register"]

QUOTA_REPORTERS = ("worker", "agent-like", "naive")
"""The quota benchmark's reporters (``devkit.bench_quota.REPORTERS``), named here so that the
command line is checked without importing the benchmark."""


def register(commands: Subcommands) -> None:
    """Add ``worker.cli.DEVELOPMENT_COMMANDS`` to ``python -m worker``; each sets its ``handler``."""
    endpoint = commands.add_parser("ecs-endpoint", help="the local ECS endpoint (development, tests)")
    endpoint.add_argument("--host", default="127.0.0.1")
    endpoint.add_argument("--port", type=int, default=4566)
    endpoint.add_argument("--throttle-rate", type=float, default=0.0)
    endpoint.add_argument("--error-rate", type=float, default=0.0)
    endpoint.add_argument("--latency-ms", type=float, default=0.0)
    endpoint.add_argument("--drop-rate", type=float, default=0.0)
    endpoint.add_argument("--quota-burst", type=int, default=None)
    endpoint.add_argument("--quota-refill-per-s", type=float, default=None)
    endpoint.add_argument(
        "--strict-scope", action="store_true", help="refuse a report of a task of another account or Region"
    )
    endpoint.set_defaults(handler=_ecs_endpoint)

    broker = commands.add_parser("broker", help="the embedded development broker (Tansu, or Apache Kafka)")
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument("--port", type=int, default=9092)
    broker.add_argument("--kind", choices=("tansu", "kafka"), default="tansu", help="Tansu, or Apache Kafka")
    broker.set_defaults(handler=_broker)

    demo = commands.add_parser("demo", help="the whole pipeline on embedded parts, with a summary")
    demo.add_argument("--tasks", type=int, default=400)
    demo.add_argument("--partitions", type=int, default=4)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--format", choices=("docker", "canonical"), default="docker", help="event format")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--broker", choices=("tansu", "kafka"), default="tansu", help="Tansu, or Apache Kafka")
    demo.set_defaults(handler=_demo)

    bench = commands.add_parser("bench", help="the benchmark: JSON and a table")
    bench.add_argument("--json", action="store_true", help="print JSON only")
    bench.add_argument("--quick", action="store_true", help="a quarter of the work, for a smoke run")
    bench.add_argument("--quota", action="store_true", help="the quota benchmark only: a deployment burst")
    bench.add_argument("--quota-tasks", type=_positive(int), default=3000, help="tasks of the burst")
    bench.add_argument(
        "--quota-start-window-s",
        type=_positive(float, zero=True),
        default=10.0,
        help="the tasks start within this",
    )
    bench.add_argument(
        "--quota-stop-window-s",
        type=_positive(float, zero=True),
        default=60.0,
        help="a third stop within this",
    )
    bench.add_argument(
        "--quota-deadline-s", type=_positive(float), default=300.0, help="longest run of one reporter"
    )
    bench.add_argument(
        "--quota-reporters",
        type=_reporters,
        default=list(QUOTA_REPORTERS),
        help=f"comma separated: {', '.join(QUOTA_REPORTERS)}",
    )
    bench.set_defaults(handler=_bench)


def _positive(kind: type[int] | type[float], *, zero: bool = False) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` above 0 (or at least 0 with ``zero``)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"{text} must be {'at least 0' if zero else 'above 0'}")
        return value

    return parse


def _reporters(text: str) -> list[str]:
    """An argparse type: reporters of the quota benchmark, comma separated, at least one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in QUOTA_REPORTERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or 'none'} given: name some of {', '.join(QUOTA_REPORTERS)}"
        )
    return names


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
        run_async(serve(args.host, args.port, faults, strict_scope=args.strict_scope))
    return 0


def _broker(args: argparse.Namespace) -> int:
    from devkit.broker_process import serve_until_stopped
    from devkit.brokers import make_broker

    configure_logging("INFO", "text")
    broker = make_broker(args.kind, host=args.host, port=args.port)
    broker.die_with_parent = True  # no orphan, even when this wrapper is killed (SIGKILL)
    return serve_until_stopped(broker, f"embedded broker ({broker.kind})")


def _demo(args: argparse.Namespace) -> int:
    from devkit.demo import run_demo

    configure_logging("WARNING", "text")
    summary = run_async(
        run_demo(
            tasks=args.tasks,
            partitions=args.partitions,
            seed=args.seed,
            fmt=args.format,
            broker_kind=args.broker,
        )
    )
    print(msgspec.json.encode(summary).decode() if args.json else summary.render())
    return 0 if summary.ok else 1


def _bench(args: argparse.Namespace) -> int:
    from devkit.bench import machine, run_bench

    configure_logging("WARNING", "text")
    if args.quota:
        from devkit.bench_quota import BurstShape, run_quota_bench

        shape = BurstShape(
            tasks=args.quota_tasks,
            start_window_s=args.quota_start_window_s,
            stop_window_s=args.quota_stop_window_s,
        )
        only = args.quota_reporters
        quota = run_async(
            run_quota_bench(shape, machine=machine(), deadline_s=args.quota_deadline_s, only=only)
        )
        print(msgspec.json.encode(quota).decode())
        if not args.json:
            print(quota.render())
        return 0
    report = run_async(run_bench(quick=args.quick))
    print(msgspec.json.encode(report).decode())
    if not args.json:
        print(report.render())
    return 0
