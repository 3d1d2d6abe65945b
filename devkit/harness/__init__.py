"""The fault harness: run the worker under scheduled faults on real parts, then check its promises.

A ``Scenario`` runs on its own embedded broker (Apache Kafka, or Tansu: ``devkit.brokers``), or
on a ``ProxiedBroker`` shared by scenarios run one after the other (on topics and a group of their
own), whose *advertised* listener is a ``TcpProxy`` in front of it, so that cutting the proxy cuts every
client's broker connection; the local ECS endpoint runs in-process with a token-bucket quota like
ECS's. N worker processes (``python -m worker run``) share one consumer group. A synthetic fleet
(``devkit.fleet``) is launched at the endpoint (its task definitions registered, its tasks started
with RunTask: ECS takes reports only of tasks it knows), then its Docker events are produced at the
scenario's pace, keyed by task ARN, with a few poison records, while faults are injected at
scheduled moments: SIGKILL or SIGTERM of a worker and its restart, a worker joining or leaving,
endpoint fault windows (throttling, server errors, latency, dropped connections) and broker cuts.

Once production and faults are over, the harness waits for quiescence (every task final at the
endpoint and the group's committed offsets at the produced end offsets), stops the workers with
SIGTERM, and checks the invariants from the broker's and the endpoint's own records:

1. every task's final state is acknowledged by the endpoint, its containers' exit codes included
   (DescribeTasks);
2. the endpoint saw no status regression, and raised none of its flags: no task reported STOPPED
   before its last container stopped (``stopped_while_running``), no update after a task's
   STOPPED (``updates_after_stopped``), no RUNNING before every container ran
   (``running_incomplete``);
3. every input record is accounted for: the group's committed offsets reached the produced end
   offsets, every poison record is in the dead-letter topic (by its ``__connect.errors.*`` headers), and
   (1) holds. Records covered by outcome records' ``sources`` are counted apart from the others
   (resolved without a call: unchanged, duplicate, late or still-PENDING events);
4. submissions stay within bounds: a *duplicate* is an acknowledged call whose request equals the
   previous acknowledged one for that task (recorded by the endpoint). Without a group
   disruption there is none; each disruption (SIGKILL, SIGTERM, join, leave, restart, broker
   cut) may replay or forget a task's last state once, so a task may see at most one duplicate
   per disruption (none at all in a scenario with ``repeats_allowed=False``); a broker cut longer
   than the session drops every member, so it counts once per worker. Distinct requests
   per task: 2 per lifecycle (RUNNING, STOPPED) as a rule; at most one RUNNING plus one per
   container exit (exits further apart than the linger, with delivery jitter, are not
   coalesced), plus one per disruption (a drain flushes an intermediate state, a new owner
   reports from a partial view).

``python -m devkit.harness [--full] [--json] [--broker kafka|tansu]`` runs the scenarios and prints
a table. The report's ``handover_s`` is the rolling-restart figure: from a worker's SIGTERM until
its partitions are assigned again (``handover``).

Modules: ``scenarios`` (what to run), ``runner`` (``run_scenario``), ``workers`` (the worker
processes), ``injector`` (the faults, and the endpoint recording what it accepts), ``report`` (the
promises checked), ``handover`` (the rolling-restart figure, from the workers' logs), ``table``
(the table), ``__main__`` (the command line).
"""

from __future__ import annotations

from devkit.harness.report import FaultRecord, Report
from devkit.harness.runner import ProxiedBroker, proxied_broker, run_scenario
from devkit.harness.scenarios import FAST_SCENARIOS, SLOW_SCENARIOS, Fault, Scenario
from devkit.harness.table import render_table

__all__ = [
    "FAST_SCENARIOS",
    "SLOW_SCENARIOS",
    "Fault",
    "FaultRecord",
    "ProxiedBroker",
    "Report",
    "Scenario",
    "proxied_broker",
    "render_table",
    "run_scenario",
]
