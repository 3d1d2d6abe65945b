"""The fault harness (``devkit.harness``): the worker's promises under crashes, graceful stops,
rebalances, ECS throttling, errors, latency and dropped connections, and broker outages.

The scenarios run one after the other on one embedded broker of this module (each on topics and
a group of its own, behind a TCP proxy of its own that is what the broker advertises), the local
ECS endpoint with a quota, and worker processes. The fast scenarios run in ``make test``; the long
ones are marked ``slow`` (``make test-full``; ``python -m devkit.harness --full`` runs each on a
broker of its own). They run on the tests' kind of broker (``tests.conftest.BROKER``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devkit.ecs_endpoint import FLAGS
from devkit.harness import (
    FAST_SCENARIOS,
    SLOW_SCENARIOS,
    ProxiedBroker,
    Report,
    Scenario,
    proxied_broker,
    render_table,
)
from devkit.harness import run_scenario as run_on_any
from tests.conftest import BROKER

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def scenario_broker() -> Iterator[ProxiedBroker]:
    """One broker for the module's scenarios: a broker's start is seconds of each scenario."""
    shared = proxied_broker(BROKER.kind)
    shared.broker.start()
    try:
        yield shared
    finally:
        shared.broker.stop(timeout_s=0)  # its data goes with it: no controlled shutdown


def check_promises(report: Report) -> None:
    detail = "\n" + render_table([report])
    assert report.lost == 0, (
        detail
    )  # every task's final state acknowledged, every poison record dead-lettered
    assert report.regressions == 0, detail  # no status ever went backwards at ECS
    # Nothing an ECS user would see as wrong: no STOPPED before the last container stopped, no
    # update after STOPPED, no RUNNING before every container ran.
    assert report.flags == dict.fromkeys(FLAGS, 0), detail
    assert report.uncommitted == 0, detail  # the group's offsets reached the end: every record resolved
    assert report.drain_s is not None, detail
    assert report.records_dead_lettered == 3, detail
    assert report.records_covered + report.records_dead_lettered + report.records_other == report.events
    assert report.max_duplicates_per_task <= report.duplicate_bound_per_task, detail
    assert report.tasks_over_distinct_bound == 0, detail
    assert report.unclean_exits == 0, detail  # every SIGTERM drained and exited 0
    assert report.ok, detail


async def run_scenario(scenario: Scenario, on: ProxiedBroker) -> Report:
    report = await run_on_any(scenario, on=on)
    assert report.broker == BROKER.kind
    return report


def by_name(name: str) -> Scenario:
    return next(s for s in (*FAST_SCENARIOS, *SLOW_SCENARIOS) if s.name == name)


async def test_sigkill_and_restart(scenario_broker: ProxiedBroker) -> None:
    report = await run_scenario(by_name("sigkill-restart"), scenario_broker)
    check_promises(report)
    assert any("SIGKILL" in r.what for r in report.faults)
    assert any("restart" in r.what for r in report.faults)


async def test_graceful_sigterm_and_join_and_leave_rebalances(scenario_broker: ProxiedBroker) -> None:
    report = await run_scenario(by_name("sigterm-join-leave"), scenario_broker)
    check_promises(report)
    assert sum("exited 0" in r.what for r in report.faults) >= 2, render_table([report])
    assert any(r.what.startswith("join") for r in report.faults)


async def test_endpoint_throttling_errors_latency_and_drops(scenario_broker: ProxiedBroker) -> None:
    report = await run_scenario(by_name("endpoint-faults"), scenario_broker)
    check_promises(report)
    detail = render_table([report])
    # The faults did happen, and were ridden through by retries...
    assert report.throttled > 0, detail
    assert report.server_errors > 0, detail
    assert report.dropped > 0, detail
    assert report.calls > report.submissions, detail
    # ... without a group disruption: no call repeated, and the quota (shared evenly) respected.
    assert report.duplicate_submissions == 0, detail
    assert report.quota_throttled == 0, detail
    assert report.records_replayed == 0, detail
    assert report.outcome_records == report.submissions, "one outcome per acknowledged call"


async def test_rolling_restarts_while_long_running_tasks_run(scenario_broker: ProxiedBroker) -> None:
    """Two workers restarted with SIGTERM one after the other while 60 tasks of 2-6 containers
    run; then the tasks stop. The new owners ask ECS about the tasks they meet mid-life (batched
    DescribeTasks) and repeat nothing."""
    scenario = by_name("rolling-long-tasks")
    report = await run_scenario(scenario, scenario_broker)
    check_promises(report)
    detail = render_table([report])
    assert sum("exited 0" in r.what for r in report.faults) >= 2, detail
    assert report.duplicate_submissions == 0, detail
    # A worker leaving on SIGTERM hands its partitions over at once on Apache Kafka: well within
    # the drain deadline, never a session timeout (Tansu waits for it: the issue saw 83 s).
    assert report.handover_s is not None, detail
    if BROKER.kind == "kafka":
        assert report.handover_s < scenario.drain_timeout_ms / 1000, detail
    assert report.describe_calls > 0, detail  # the new owners asked ECS about what they missed
    processes = report.workers + sum("restart:" in r.what for r in report.faults)
    revisions = by_name("rolling-long-tasks").shape.definitions
    assert report.definition_calls <= revisions * processes, detail  # once per revision and process


async def test_broker_connections_cut_for_eight_seconds(scenario_broker: ProxiedBroker) -> None:
    report = await run_scenario(by_name("broker-cut"), scenario_broker)
    check_promises(report)
    cut = next(r.what for r in report.faults if r.what.startswith("broker cut"))
    assert not cut.endswith(": 0 connections"), "the cut aborted live client connections"


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("name", [s.name for s in SLOW_SCENARIOS])
async def test_long_scenario(name: str, scenario_broker: ProxiedBroker) -> None:
    check_promises(await run_scenario(by_name(name), scenario_broker))
