"""``python -m devkit.harness [--full] [--json] [--only NAME] [--keep-logs] [--broker kafka|tansu]``:
run the fault scenarios and print their reports (a table, or JSON); exit 1 when a scenario failed.
Without ``--broker``, ``devkit.brokers.choose_broker`` decides (``TEST_BROKER``, then Apache Kafka
where Java 17+ and Maven are present, else Tansu)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import msgspec

from devkit import harness
from devkit.brokers import BROKER_KINDS, BrokerKind, choose_broker
from devkit.harness import FAST_SCENARIOS, SLOW_SCENARIOS, Report, Scenario, render_table, run_scenario

__all__ = ["main"]


async def _run_all(scenarios: Sequence[Scenario], keep_logs: bool, broker: BrokerKind) -> list[Report]:
    reports = []
    for scenario in scenarios:
        print(f"running {scenario.name} on {broker} ...", file=sys.stderr, flush=True)
        reports.append(await run_scenario(scenario, keep_logs=keep_logs, broker=broker))
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.harness", description=(harness.__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--full", action="store_true", help="also the long scenarios")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument("--only", action="append", default=[], help="run only this scenario (repeatable)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs of passing scenarios too")
    parser.add_argument(
        "--broker", choices=BROKER_KINDS, help="the embedded broker (default: Apache Kafka if it can run)"
    )
    args = parser.parse_args(argv)
    choice = choose_broker(os.environ, args.broker)
    print(choice.describe(), file=sys.stderr, flush=True)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("aiokafka", "botocore", "aiobotocore", "aiohttp.server", "devkit.proxy"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    scenarios = [*FAST_SCENARIOS, *(SLOW_SCENARIOS if args.full else ())]
    if args.only:
        known = {s.name: s for s in [*FAST_SCENARIOS, *SLOW_SCENARIOS]}
        unknown = [n for n in args.only if n not in known]
        if unknown:
            parser.error(f"unknown scenario {unknown[0]!r}; known: {', '.join(known)}")
        scenarios = [known[n] for n in args.only]
    reports = asyncio.run(_run_all(scenarios, args.keep_logs, choice.kind))
    if args.json:
        print(msgspec.json.encode(reports).decode())
    else:
        print(render_table(reports))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
