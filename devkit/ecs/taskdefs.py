"""Task definitions: RegisterTaskDefinition's rules, revisions per family, and lookups.

A family's revisions are numbered from 1 in registration order; all are ``ACTIVE`` (there is no
DeregisterTaskDefinition yet). A reference is an ARN
``arn:aws:ecs:<region>:<account>:task-definition/<family>:<revision>``, ``<family>:<revision>``
or ``<family>`` (its latest ACTIVE revision); an ARN is matched by family and revision alone.

Beyond botocore's model, registration enforces these ECS rules, each a 400 ``ClientException``:
1 to 10 container definitions; family and container names of 1-255 letters, digits, ``-`` and
``_``; every container has a unique name and an image; at least one is essential (``essential``
defaults to true); ``dependsOn`` names another container of the definition, never an essential
one with condition ``COMPLETE`` or ``SUCCESS``, and ``HEALTHY`` only a container with a
``healthCheck``; ``restartPolicy`` has at most 50 ``ignoredExitCodes`` and a
``restartAttemptPeriod`` of 60-1800 s; ``healthCheck`` ranges (interval 5-300, timeout 2-60,
retries 1-10, startPeriod 0-300).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devkit.ecs.arns import Scope
from devkit.ecs.wire import ApiError

__all__ = ["MAX_CONTAINERS", "ContainerSpec", "TaskDefinition", "TaskDefinitions"]

MAX_CONTAINERS = 10
_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
_HEALTH_RANGES = {"interval": (5, 300), "timeout": (2, 60), "retries": (1, 10), "startPeriod": (0, 300)}
# Members of the request that the TaskDefinition answer carries as given.
_ECHOED = (
    "taskRoleArn", "executionRoleArn", "networkMode", "requiresCompatibilities", "cpu", "memory",
    "pidMode", "ipcMode", "proxyConfiguration", "inferenceAccelerators", "ephemeralStorage",
    "runtimePlatform", "enableFaultInjection",
)  # fmt: skip
# What ECS fills in for a container definition that leaves them out.
_CONTAINER_DEFAULTS: dict[str, Any] = {
    "cpu": 0, "portMappings": [], "essential": True, "environment": [], "mountPoints": [],
    "volumesFrom": [], "systemControls": [],
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """One container of a definition, as the tasks of that definition start it."""

    name: str
    image: str
    essential: bool


@dataclass(frozen=True, slots=True)
class TaskDefinition:
    """One registered revision; ``payload`` is its ``TaskDefinition`` answer (datetimes)."""

    arn: str
    family: str
    revision: int
    containers: tuple[ContainerSpec, ...]
    payload: dict[str, Any]
    tags: tuple[dict[str, str], ...]


def _client_error(message: str) -> ApiError:
    return ApiError(400, "ClientException", message)


class TaskDefinitions:
    """The registry of task definitions, by family and revision."""

    def __init__(self) -> None:
        self._families: dict[str, list[TaskDefinition]] = {}

    def register(self, body: dict[str, Any], scope: Scope, now: datetime) -> TaskDefinition:
        """Register a validated ``RegisterTaskDefinition`` body as the family's next revision.

        Raises :class:`ApiError` ``ClientException`` for the rules in the module docstring.
        """
        family = str(body["family"])
        if not _NAME.fullmatch(family):
            raise _client_error(
                "Family must be up to 255 letters (uppercase and lowercase), numbers, hyphens, "
                "and underscores."
            )
        definitions: list[dict[str, Any]] = body["containerDefinitions"]
        _check_containers(definitions)
        revisions = self._families.setdefault(family, [])
        revision = len(revisions) + 1
        arn = scope.task_definition_arn(family, revision)
        payload: dict[str, Any] = {
            "taskDefinitionArn": arn,
            "containerDefinitions": [{**_CONTAINER_DEFAULTS, **d} for d in definitions],
            "family": family,
            "revision": revision,
            "volumes": body.get("volumes", []),
            "status": "ACTIVE",
            "placementConstraints": body.get("placementConstraints", []),
            "compatibilities": sorted({"EC2", *body.get("requiresCompatibilities", ())}),
            "registeredAt": now,
            "registeredBy": f"arn:aws:iam::{scope.account}:root",
        }
        payload.update((key, body[key]) for key in _ECHOED if key in body)
        specs = tuple(
            ContainerSpec(name=d["name"], image=d["image"], essential=d.get("essential", True))
            for d in definitions
        )
        tags = tuple(body.get("tags", ()))
        definition = TaskDefinition(arn, family, revision, specs, payload, tags)
        revisions.append(definition)
        return definition

    def find(self, reference: str) -> TaskDefinition | None:
        """The definition a reference names (see the module docstring), or None."""
        if reference.startswith("arn:"):
            if ":task-definition/" not in reference:
                return None
            reference = reference.split(":task-definition/", 1)[1]
            if ":" not in reference:
                return None
        family, _, revision = reference.partition(":")
        revisions = self._families.get(family)
        if not revisions:
            return None
        if not revision:
            return revisions[-1]
        if not revision.isdecimal() or not 1 <= int(revision) <= len(revisions):
            return None
        return revisions[int(revision) - 1]

    def snapshot(self) -> dict[str, list[str]]:
        """``{task definition ARN: [container names]}`` in registration order per family."""
        return {d.arn: [c.name for c in d.containers] for revs in self._families.values() for d in revs}


def _check_containers(definitions: list[dict[str, Any]]) -> None:
    if not definitions:
        raise _client_error("Container list cannot be empty.")
    if len(definitions) > MAX_CONTAINERS:
        raise _client_error(
            f"Too many containers: a task definition has at most {MAX_CONTAINERS} container definitions."
        )
    by_name: dict[str, dict[str, Any]] = {}
    for definition in definitions:
        name, image = definition.get("name"), definition.get("image")
        if not name:
            raise _client_error("Container.name should not be null or empty.")
        if not _NAME.fullmatch(name):
            raise _client_error(
                f"Invalid container name '{name}': up to 255 letters (uppercase and lowercase), "
                "numbers, hyphens, and underscores are allowed."
            )
        if not image:
            raise _client_error("Container.image should not be null or empty.")
        if name in by_name:
            raise _client_error(f"Container names must be unique: '{name}' is defined twice.")
        by_name[name] = definition
    if not any(d.get("essential", True) for d in definitions):
        raise _client_error("A task definition must have at least one essential container.")
    for name, definition in by_name.items():
        _check_dependencies(name, definition, by_name)
        _check_restart_policy(name, definition.get("restartPolicy"))
        _check_health_check(name, definition.get("healthCheck"))


def _check_dependencies(name: str, definition: dict[str, Any], by_name: dict[str, dict[str, Any]]) -> None:
    for dependency in definition.get("dependsOn", ()):
        other, condition = dependency["containerName"], dependency["condition"]
        prefix = f"Invalid setting for container '{name}': dependsOn"
        if other == name:
            raise _client_error(f"{prefix} names the container itself.")
        target = by_name.get(other)
        if target is None:
            raise _client_error(f"{prefix} names '{other}', which is not in the task definition.")
        if condition in ("COMPLETE", "SUCCESS") and target.get("essential", True):
            raise _client_error(
                f"{prefix} condition {condition} cannot be set on essential container '{other}'."
            )
        if condition == "HEALTHY" and "healthCheck" not in target:
            raise _client_error(f"{prefix} condition HEALTHY requires a healthCheck on container '{other}'.")


def _check_restart_policy(name: str, policy: dict[str, Any] | None) -> None:
    if policy is None:
        return
    if len(policy.get("ignoredExitCodes", ())) > 50:
        raise _client_error(f"Invalid restartPolicy for container '{name}': at most 50 ignoredExitCodes.")
    period = policy.get("restartAttemptPeriod")
    if period is not None and not 60 <= period <= 1800:
        raise _client_error(
            f"Invalid restartPolicy for container '{name}': restartAttemptPeriod must be 60-1800 seconds."
        )


def _check_health_check(name: str, check: dict[str, Any] | None) -> None:
    if check is None:
        return
    for member, (low, high) in _HEALTH_RANGES.items():
        value = check.get(member)
        if value is not None and not low <= value <= high:
            raise _client_error(f"Invalid healthCheck for container '{name}': {member} must be {low}-{high}.")
