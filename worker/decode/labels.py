"""ECS attribution from the labels the ECS agent puts on every container it starts.

Docker (and Podman) copy a container's labels into every event's ``Actor.Attributes``. The agent
sets ``com.amazonaws.ecs.cluster`` (a short name or an ARN, passed through as is: ECS accepts
both), ``com.amazonaws.ecs.task-arn``, ``com.amazonaws.ecs.container-name`` and the task
definition's family and version. Metricbeat de-dots label keys by default
(``com_amazonaws_ecs_task-arn``); both spellings are accepted.
"""

from __future__ import annotations

from typing import NamedTuple

from worker.decode.errors import InvalidItem

__all__ = [
    "CLUSTER_LABEL",
    "CONTAINER_NAME_LABEL",
    "PAUSE_CONTAINER_NAME",
    "TASK_ARN_LABEL",
    "EcsContainer",
    "ecs_container_from_labels",
]

TASK_ARN_LABEL = "com.amazonaws.ecs.task-arn"
CLUSTER_LABEL = "com.amazonaws.ecs.cluster"
CONTAINER_NAME_LABEL = "com.amazonaws.ecs.container-name"
PAUSE_CONTAINER_NAME = "~internal~ecs~pause"
"""The container name of the agent's pause container (awsvpc tasks); it is never reported."""

_MAX_NAME = 2048  # schemas.events.Name


_TASK_DEDOTTED = TASK_ARN_LABEL.replace(".", "_")
_CLUSTER_DEDOTTED = CLUSTER_LABEL.replace(".", "_")
_CONTAINER_NAME_DEDOTTED = CONTAINER_NAME_LABEL.replace(".", "_")


class EcsContainer(NamedTuple):
    """Where a runtime container belongs: the members that address it in ``SubmitTaskStateChange``."""

    cluster: str
    task: str
    container_name: str


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
    if len(task) > _MAX_NAME or len(cluster) > _MAX_NAME or len(name) > _MAX_NAME:
        raise InvalidItem(f"an ECS label value is longer than {_MAX_NAME} characters")
    return EcsContainer(cluster, task, name)
