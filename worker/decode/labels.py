"""ECS attribution from the labels the ECS agent puts on every container it starts.

Docker (and Podman) copy a container's labels into every event's ``Actor.Attributes``. The agent
sets ``com.amazonaws.ecs.cluster`` (a short name or an ARN, passed through as is: ECS accepts
both), ``com.amazonaws.ecs.task-arn``, ``com.amazonaws.ecs.container-name`` and the task
definition's family and version. Metricbeat de-dots label keys by default
(``com_amazonaws_ecs_task-arn``); both spellings are accepted.

The agent reports neither its internal containers nor its internal tasks (agent:
``agent/api/statechange.go``, ``NewTaskStateChangeEvent`` refuses ``task.IsInternal`` and
``newUncheckedContainerStateChangeEvent`` refuses ``Container.IsInternal()``, any container type
but ``ContainerNormal``, ``agent/api/container/containertype.go``). ``internal_reason`` tells
them by their labels:

- internal containers are named ``~internal~ecs...`` (``agent/api/task/task.go``: the pause
  container ``~internal~ecs~pause`` of awsvpc tasks, ``~internal~ecs~pause-<container>`` of
  Service Connect bridge tasks, ``~internal~ecs~pause~namespace`` of tasks with a pid or ipc
  mode, ``~internal~ecs-emptyvolume-source`` of empty host volumes); ECS container names cannot
  start with ``~``, so the prefix names only them;
- internal tasks (the Service Connect relay, ``agent/engine/serviceconnect/manager_linux.go``,
  and managed daemons, ``agent/engine/daemonmanager/daemon_manager.go``) have an ARN that is not
  a task ARN, ``arn:::::/<name>-<uuid>``. A ``task-arn`` label that is an ARN
  (``arn:...``) but not an ECS task ARN (``arn:<partition>:ecs:<region>:<account>:task/...``)
  is such a task; a value that is no ARN at all is taken as a task id, as ECS accepts one.

The task definition is named by its ARN when the task's ARN is one
(``arn:<partition>:ecs:<region>:<account>:task/...`` gives
``arn:<partition>:ecs:<region>:<account>:task-definition/<family>:<version>``), else by
``<family>:<version>``; without both labels it is unknown (None).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from botocore.utils import ArnParser, InvalidArnException

from schemas.bounds import MAX_NAME_LENGTH
from worker.decode import reasons
from worker.decode.bad_items import InvalidItem

__all__ = [
    "CLUSTER_LABEL",
    "CONTAINER_NAME_LABEL",
    "INTERNAL_CONTAINER_PREFIX",
    "PAUSE_CONTAINER_NAME",
    "TASK_ARN_LABEL",
    "TASK_DEFINITION_FAMILY_LABEL",
    "TASK_DEFINITION_VERSION_LABEL",
    "EcsContainer",
    "ecs_container_from_labels",
    "internal_reason",
    "is_internal_task",
    "task_definition_arn",
]

TASK_ARN_LABEL = "com.amazonaws.ecs.task-arn"
CLUSTER_LABEL = "com.amazonaws.ecs.cluster"
CONTAINER_NAME_LABEL = "com.amazonaws.ecs.container-name"
TASK_DEFINITION_FAMILY_LABEL = "com.amazonaws.ecs.task-definition-family"
TASK_DEFINITION_VERSION_LABEL = "com.amazonaws.ecs.task-definition-version"
PAUSE_CONTAINER_NAME = "~internal~ecs~pause"
"""The container name of the agent's pause container (awsvpc tasks); it is never reported."""
INTERNAL_CONTAINER_PREFIX = "~internal~ecs"
"""The start of every internal container's name (``agent/api/task/task.go``); never reported."""


_TASK_DEDOTTED = TASK_ARN_LABEL.replace(".", "_")
_CLUSTER_DEDOTTED = CLUSTER_LABEL.replace(".", "_")
_CONTAINER_NAME_DEDOTTED = CONTAINER_NAME_LABEL.replace(".", "_")
_FAMILY_DEDOTTED = TASK_DEFINITION_FAMILY_LABEL.replace(".", "_")
_VERSION_DEDOTTED = TASK_DEFINITION_VERSION_LABEL.replace(".", "_")
_TASK_RESOURCE = ":task/"
_ARNS = ArnParser()


class EcsContainer(NamedTuple):
    """Where a runtime container belongs: the members that address it in ``SubmitTaskStateChange``,
    and its task's definition when the labels name it."""

    cluster: str
    task: str
    container_name: str
    task_definition: str | None = None


def ecs_container_from_labels(labels: dict[str, str]) -> EcsContainer | None:
    """The ECS container a labelled runtime container is, or None without (complete) ECS labels.

    Raises ``InvalidItem`` for a label value too long for the canonical event.
    """
    get = labels.get
    task = get(TASK_ARN_LABEL) or get(_TASK_DEDOTTED)
    if not task:
        return None
    cluster = get(CLUSTER_LABEL) or get(_CLUSTER_DEDOTTED)
    name = get(CONTAINER_NAME_LABEL) or get(_CONTAINER_NAME_DEDOTTED)
    if not cluster or not name:
        return None
    if len(task) > MAX_NAME_LENGTH or len(cluster) > MAX_NAME_LENGTH or len(name) > MAX_NAME_LENGTH:
        raise InvalidItem(f"an ECS label value is longer than {MAX_NAME_LENGTH} characters")
    family = get(TASK_DEFINITION_FAMILY_LABEL) or get(_FAMILY_DEDOTTED)
    version = get(TASK_DEFINITION_VERSION_LABEL) or get(_VERSION_DEDOTTED)
    return EcsContainer(cluster, task, name, task_definition_arn(task, family, version))


def internal_reason(task: str, container_name: str) -> str | None:
    """Why the agent would not report this container (its ignore reason), or None when it would."""
    if container_name.startswith(INTERNAL_CONTAINER_PREFIX):
        return reasons.ECS_INTERNAL_CONTAINER
    if task.startswith("arn:") and is_internal_task(task):
        return reasons.ECS_INTERNAL_TASK
    return None


@lru_cache(maxsize=4096)
def is_internal_task(task_arn: str) -> bool:
    """Whether ``task_arn`` is an ARN (``arn:...``) but not an ECS task ARN: the agent's internal
    tasks (``arn:::::/service-connect-relay-<uuid>``). Cached: each event of a task repeats it."""
    if not task_arn.startswith("arn:"):
        return False
    at = task_arn.find(_TASK_RESOURCE)
    return at <= 0 or _definition_arn_prefix(task_arn[:at]) is None


def task_definition_arn(task: str, family: str | None, version: str | None) -> str | None:
    """The task definition of ``task`` (its ARN or ``family:version``); None without both labels.

    Raises ``InvalidItem`` when the result is longer than a name may be (``schemas.bounds``).
    """
    if not family or not version:
        return None
    at = task.find(_TASK_RESOURCE)
    return _task_definition(task[:at] if at > 0 else "", family, version)


@lru_cache(maxsize=1024)
def _task_definition(task_arn_head: str, family: str, version: str) -> str:
    """``task_definition_arn`` given the part of the task's ARN before ``:task/``. Cached: a fleet
    has few accounts, Regions and task definitions, and each event of a task repeats them (one
    string shared by all its events, and no ARN parsing per event)."""
    prefix = _definition_arn_prefix(task_arn_head) if task_arn_head else None
    name = f"{prefix}{family}:{version}" if prefix else f"{family}:{version}"
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidItem(f"task definition {name[:64]!r}... is longer than {MAX_NAME_LENGTH} characters")
    return name


def _definition_arn_prefix(task_arn_head: str) -> str | None:
    """``arn:<partition>:ecs:<region>:<account>:task-definition/`` for the part of a task ARN before
    ``:task/``, or None when it is not an ECS ARN."""
    try:
        arn = _ARNS.parse_arn(task_arn_head + _TASK_RESOURCE)
    except InvalidArnException:
        return None
    partition, region, account = arn["partition"], arn["region"], arn["account"]
    if not (
        task_arn_head.startswith("arn:")
        and arn["service"] == "ecs"
        and arn["resource"] == _TASK_RESOURCE[1:]
        and partition
        and region
        and account
    ):
        return None
    return f"arn:{partition}:ecs:{region}:{account}:task-definition/"
