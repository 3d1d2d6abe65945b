"""Why an item was ignored: a fixed, bounded set of reason strings.

Each ignored item adds one of these strings to ``DecodeResult.ignored``. Nothing taken from the
input is copied into a reason unless it belongs to a known, finite set (Docker object types,
container actions, containerd topics). A metric is labelled with the reason's short code
(``reason_code``: ``docker_no_labels``), never with the sentence. Details of *bad* items (for the
dead-letter topic) are not restricted this way.
"""

from __future__ import annotations

__all__ = [
    "CONTAINERD_EXEC",
    "CONTAINERD_EXEC_EXIT",
    "CONTAINERD_NOT_ATTRIBUTED",
    "CONTAINERD_NOT_CONTAINER",
    "CONTAINERD_NOT_INFERABLE",
    "CONTAINERD_NO_TIME",
    "CONTAINERD_TASK_DELETE",
    "CONTAINERD_UNKNOWN_TOPIC",
    "DOCKER_EXEC",
    "DOCKER_EXEC_AGENT_CREATED",
    "DOCKER_HEALTH",
    "DOCKER_NO_LABELS",
    "DOCKER_RESTART",
    "DOCKER_UNKNOWN_ACTION",
    "ECS_EVENTBRIDGE_OTHER",
    "ECS_EVENTBRIDGE_TASK",
    "ECS_INTERNAL_CONTAINER",
    "ECS_INTERNAL_TASK",
    "ECS_TASK_MISSING",
    "EVENTBRIDGE_NOT_ECS",
    "LATE_EVENT",
    "PODMAN_EXEC",
    "PODMAN_HEALTH",
    "PODMAN_NO_LABELS",
    "PODMAN_RESTART",
    "PODMAN_UNKNOWN_STATUS",
    "REASON_CODES",
    "containerd_not_mapped",
    "docker_no_state_change",
    "docker_not_container",
    "podman_no_state_change",
    "podman_not_container",
    "reason_code",
]

# Docker, Podman, and Docker events shipped by Fluent Bit or Metricbeat.
DOCKER_NO_LABELS = "docker: container without ECS labels"
DOCKER_RESTART = "docker: restart (a status never goes backwards)"
DOCKER_HEALTH = "docker: health_status (not a task state change)"
DOCKER_EXEC = "docker: exec process event (not the container's state)"
DOCKER_EXEC_AGENT_CREATED = "docker: ECS Exec agent exec created (reported RUNNING at its exec_start)"
DOCKER_UNKNOWN_ACTION = "docker: unknown container action"

_DOCKER_TYPES = frozenset(
    {
        "image",
        "network",
        "volume",
        "daemon",
        "plugin",
        "service",
        "node",
        "secret",
        "config",
        "builder",
        "pod",
        "system",
        "machine",
    }
)


def docker_not_container(object_type: str) -> str:
    """``docker: not a container event (image)``; unknown types read ``(other)``."""
    kind = object_type if object_type in _DOCKER_TYPES else "other"
    return f"docker: not a container event ({kind})"


def docker_no_state_change(action: str) -> str:
    """For an action from ``worker.decode.docker.NO_STATE_CHANGE`` only (a finite set)."""
    return f"docker: {action} (no container state change)"


# The ECS agent's own containers and tasks, whatever the format (worker.decode.labels).
ECS_INTERNAL_CONTAINER = "ecs agent: internal container ~internal~ecs... (not reported)"
ECS_INTERNAL_TASK = "ecs agent: internal task, its ARN is not a task ARN (not reported)"

# Podman's native events (podman events --format json, and its text lines).
PODMAN_NO_LABELS = "podman: container without ECS labels"
PODMAN_RESTART = "podman: restart (a status never goes backwards)"
PODMAN_HEALTH = "podman: health_status (not a task state change)"
PODMAN_EXEC = "podman: exec process event (not the container's state)"
PODMAN_UNKNOWN_STATUS = "podman: unknown container status"

_PODMAN_TYPES = frozenset({"pod", "image", "volume", "network", "system", "machine", "secret", "artifact"})


def podman_not_container(object_type: str) -> str:
    """``podman: not a container event (pod)``; unknown types read ``(other)``."""
    kind = object_type if object_type in _PODMAN_TYPES else "other"
    return f"podman: not a container event ({kind})"


def podman_no_state_change(status: str) -> str:
    """For a status from ``worker.decode.podman.PODMAN_NO_STATE_CHANGE`` only (a finite set)."""
    return f"podman: {status} (no container state change)"


# containerd (ctr lines and JSON bodies).
CONTAINERD_NOT_ATTRIBUTED = "containerd: container not attributed to an ECS task"
CONTAINERD_EXEC_EXIT = "containerd: exec process exit (not the container's)"
CONTAINERD_EXEC = "containerd: exec process event"
CONTAINERD_TASK_DELETE = "containerd: task delete (the exit was already reported)"
CONTAINERD_NOT_CONTAINER = "containerd: not a container event"
CONTAINERD_UNKNOWN_TOPIC = "containerd: unknown topic"
CONTAINERD_NOT_INFERABLE = "containerd: event type not inferable from a JSON body alone"
CONTAINERD_NO_TIME = "containerd: event without a timestamp"


def containerd_not_mapped(topic: str) -> str:
    """For a topic from ``worker.decode.containerd.UNMAPPED_TOPICS`` only (a finite set)."""
    return f"containerd: {topic} (no container state change)"


# EventBridge.
ECS_EVENTBRIDGE_TASK = "ecs: EventBridge task state change (ECS's own output)"
ECS_EVENTBRIDGE_OTHER = "ecs: EventBridge event (ECS's own output)"
EVENTBRIDGE_NOT_ECS = "eventbridge: event from a source other than aws.ecs"

# ECS's own view (worker.resolve).
ECS_TASK_MISSING = "ecs: task unknown to ECS (DescribeTasks: MISSING)"

# The worker's own view (worker.intake): an event for a task it has retired.
LATE_EVENT = "task already stopped and reported"


REASON_CODES: dict[str, str] = {
    DOCKER_NO_LABELS: "docker_no_labels",
    DOCKER_RESTART: "docker_restart",
    DOCKER_HEALTH: "docker_health",
    DOCKER_EXEC: "docker_exec",
    DOCKER_EXEC_AGENT_CREATED: "docker_exec_agent_created",
    ECS_INTERNAL_CONTAINER: "ecs_internal_container",
    ECS_INTERNAL_TASK: "ecs_internal_task",
    PODMAN_NO_LABELS: "podman_no_labels",
    PODMAN_RESTART: "podman_restart",
    PODMAN_HEALTH: "podman_health",
    PODMAN_EXEC: "podman_exec",
    PODMAN_UNKNOWN_STATUS: "podman_unknown_status",
    DOCKER_UNKNOWN_ACTION: "docker_unknown_action",
    CONTAINERD_NOT_ATTRIBUTED: "containerd_not_attributed",
    CONTAINERD_EXEC_EXIT: "containerd_exec_exit",
    CONTAINERD_EXEC: "containerd_exec",
    CONTAINERD_TASK_DELETE: "containerd_task_delete",
    CONTAINERD_NOT_CONTAINER: "containerd_not_container",
    CONTAINERD_UNKNOWN_TOPIC: "containerd_unknown_topic",
    CONTAINERD_NOT_INFERABLE: "containerd_not_inferable",
    CONTAINERD_NO_TIME: "containerd_no_time",
    ECS_EVENTBRIDGE_TASK: "ecs_eventbridge_task",
    ECS_EVENTBRIDGE_OTHER: "ecs_eventbridge_other",
    EVENTBRIDGE_NOT_ECS: "eventbridge_not_ecs",
    ECS_TASK_MISSING: "ecs_task_missing",
    LATE_EVENT: "task_already_reported",
}
"""The short code of each fixed reason; the parameterised ones are coded by ``reason_code``."""

_NO_STATE_CHANGE = " (no container state change)"


def reason_code(reason: str) -> str:
    """The metric label of an ignored item's reason: ``docker: container without ECS labels`` ->
    ``docker_no_labels``; the parameterised reasons lose their parameter
    (``docker: pause (no container state change)`` -> ``docker_no_state_change``,
    ``docker: not a container event (image)`` -> ``docker_not_container``); anything else is
    ``other``. The result is one of ``REASON_CODES``' values, ``other``,
    ``{docker,podman,containerd}_no_state_change`` or ``{docker,podman}_not_container``."""
    if (code := REASON_CODES.get(reason)) is not None:
        return code
    for runtime in ("docker", "podman"):
        if reason.startswith(f"{runtime}: not a container event ("):
            return f"{runtime}_not_container"
    if reason.startswith(("docker: ", "podman: ", "containerd: ")) and reason.endswith(_NO_STATE_CHANGE):
        return reason.partition(":")[0] + "_no_state_change"
    return "other"
