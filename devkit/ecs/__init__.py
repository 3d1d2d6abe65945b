"""A small, faithful local Amazon ECS over AWS JSON 1.1, for tests, the demo and the harness.

Point aiobotocore at it with ``endpoint_url=LocalEcsEndpoint.url``. It serves five operations,
each validated against botocore's own ECS service model, requests and answers alike
(:mod:`~devkit.ecs.wire`):

* ``RegisterTaskDefinition`` / ``DescribeTaskDefinition`` -- revisions numbered per family from 1
  (:mod:`~devkit.ecs.taskdefs`);
* ``RunTask`` (count 1-10) / ``DescribeTasks`` (1-100 tasks, ``MISSING`` failures) -- PENDING
  tasks of a definition (:mod:`~devkit.ecs.state`, :mod:`~devkit.ecs.tasks`);
* ``SubmitTaskStateChange`` -- updates a task made by RunTask in place, or creates a task on its
  first report (:mod:`~devkit.ecs.reports`).

Every call acts in its caller's scope: the Region of its SigV4 credential scope and the account
of its access key -- the endpoint's (``000000000000`` unless configured), or a role's for the
keys that its minimal STS ``AssumeRole`` issued (:mod:`~devkit.ecs.sts`). Each scope has its own
task definitions, tasks and quota bucket (:mod:`~devkit.ecs.arns`, :mod:`~devkit.ecs.quota`);
``GET /_state`` merges the scopes and adds ``scopes`` and ``scope_mismatches`` (reports naming a
task of another account or Region, refused with ``strict_scope``). Faults -- drops,
latency, a token-bucket quota, throttling and 500s for SubmitTaskStateChange; denial,
throttling, latency and 500s for the describe calls -- come before everything else and never
change state (:mod:`~devkit.ecs.faults`).

``GET /_state`` (and ``LocalEcsEndpoint.state()``) answers::

    calls, accepted, dropped, errors{code: n}   the submit path: SubmitTaskStateChange and
                                                requests naming no served operation
    operations{name: {calls, accepted, dropped, errors}}   per served operation
    faults                                      the current Faults
    tasks{task: {cluster, status, containers{name: status}, calls, history,
                 desiredStatus, taskDefinitionArn}}
    regressions[{cluster, task, container, from, to, call}]   the last 1000
    flags{name: {count, examples[first 20]}}    what an ECS user would see as wrong
    task_definitions{arn: [container names]}

The three flags, each counted per SubmitTaskStateChange call and judged after the call's own
changes (a container *of a task* is one of its definition's, else one reported so far):

* ``stopped_while_running`` -- the call reports the task STOPPED while one of its containers
  was not last reported STOPPED (e.g. last RUNNING) or was never reported;
* ``updates_after_stopped`` -- the task was reported STOPPED by an earlier call, and this call
  is not a byte-identical repeat (keys sorted) of a report accepted since;
* ``running_incomplete`` -- the call reports the task RUNNING while one of its containers was
  never reported RUNNING or STOPPED by any report so far.

Status regressions are recorded but, as in ECS, acknowledged.
"""

from __future__ import annotations

from devkit.ecs.arns import DEFAULT_ACCOUNT, Scope
from devkit.ecs.faults import Faults
from devkit.ecs.reports import FLAGS
from devkit.ecs.server import LocalEcsEndpoint, serve
from devkit.ecs.state import MAX_DESCRIBED_TASKS, MAX_RUN_COUNT
from devkit.ecs.wire import OPERATIONS, TARGET, TARGET_PREFIX

__all__ = [
    "DEFAULT_ACCOUNT",
    "FLAGS",
    "MAX_DESCRIBED_TASKS",
    "MAX_RUN_COUNT",
    "OPERATIONS",
    "TARGET",
    "TARGET_PREFIX",
    "Faults",
    "LocalEcsEndpoint",
    "Scope",
    "serve",
]
