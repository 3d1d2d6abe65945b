"""The task definitions of a synthetic fleet: realistic shapes, planned before any endpoint. Pure.

Each definition has one essential ``app`` container and, by its template, some of:

``init``        non-essential, runs to completion; ``app`` ``dependsOn`` it ``SUCCESS`` (created
                seconds after it exits)
``envoy``       essential, with a ``healthCheck``; ``app`` ``dependsOn`` it ``HEALTHY`` (created
                after its ``health_status: healthy``)
``log-router``  non-essential; ``app`` ``dependsOn`` it ``START`` (FireLens)
``metrics``     non-essential, with a ``restartPolicy`` (``ignoredExitCodes`` [0],
                ``restartAttemptPeriod`` 60 s): some tasks see it restarted once
``sidecar-N``   non-essential fillers, every other one ``dependsOn`` ``app`` ``START``

Templates (``plain``, ``api``, ``job``, ``service``, ``mesh``, ``wide``) are cycled so that a fleet of
a few definitions has every feature; each definition's container count is drawn within the
fleet's range (1 to 10, ECS's limit), the first ``plain`` one taking the smallest and the first
``wide`` one the largest. Containers are listed dependencies first.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "PLACEHOLDER_ACCOUNT",
    "PLACEHOLDER_REGION",
    "RESTART_ATTEMPT_PERIOD_S",
    "ContainerShape",
    "FleetDefinition",
    "Role",
    "plan_definitions",
]

PLACEHOLDER_ACCOUNT = "000000000000"
"""The account of planned ARNs (the local endpoint's default); ``launch`` swaps in the real ones."""
PLACEHOLDER_REGION = "us-east-1"
RESTART_ATTEMPT_PERIOD_S = 60
"""The ``restartAttemptPeriod`` of ``metrics`` (ECS's minimum): an exit after running this long
is restarted by the agent."""

Role = Literal["app", "init", "envoy", "log-router", "metrics", "sidecar"]
_IMAGES: dict[Role, str] = {
    "app": "public.ecr.aws/nginx/nginx:1.27",
    "init": "public.ecr.aws/docker/library/busybox:1.36",
    "envoy": "public.ecr.aws/appmesh/aws-appmesh-envoy:v1.29.6.0-prod",
    "log-router": "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable",
    "metrics": "public.ecr.aws/cloudwatch-agent/cloudwatch-agent:latest",
    "sidecar": "public.ecr.aws/docker/library/busybox:1.36",
}
_TEMPLATES: tuple[tuple[str, tuple[Role, ...]], ...] = (
    ("plain", ("app",)),
    ("api", ("envoy", "app")),
    ("job", ("init", "app")),
    ("service", ("app", "metrics")),
    ("mesh", ("init", "envoy", "log-router", "app", "metrics")),
    ("wide", ("log-router", "app")),
)
_HEALTH_CHECK = {
    "command": ["CMD-SHELL", "curl -fs http://localhost:9901/ready || exit 1"],
    "interval": 5, "timeout": 2, "retries": 3, "startPeriod": 10,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ContainerShape:
    """One container definition and how its containers behave (``role``)."""

    name: str
    role: Role
    essential: bool
    depends_on: tuple[tuple[str, str], ...] = ()
    """(container name, condition: START | HEALTHY | SUCCESS)"""

    @property
    def image(self) -> str:
        return _IMAGES[self.role]

    @property
    def health_check(self) -> bool:
        return self.role == "envoy"

    @property
    def restart_policy(self) -> bool:
        return self.role == "metrics"

    def definition(self) -> dict[str, Any]:
        """The ``containerDefinitions`` member of RegisterTaskDefinition (botocore's shape)."""
        body: dict[str, Any] = {"name": self.name, "image": self.image, "essential": self.essential,
                                "memory": 128 if self.role == "sidecar" else 256}  # fmt: skip
        if self.role == "app":
            body["portMappings"] = [{"containerPort": 8080, "protocol": "tcp"}]
        if self.depends_on:
            body["dependsOn"] = [{"containerName": c, "condition": k} for c, k in self.depends_on]
        if self.health_check:
            body["healthCheck"] = dict(_HEALTH_CHECK)
        if self.restart_policy:
            body["restartPolicy"] = {
                "enabled": True, "ignoredExitCodes": [0], "restartAttemptPeriod": RESTART_ATTEMPT_PERIOD_S,
            }  # fmt: skip
        return body


@dataclass(frozen=True, slots=True)
class FleetDefinition:
    """A task definition revision: ``arn`` is planned (revision 1 in the placeholder account)
    until ``Fleet.bind`` swaps in the ARN RegisterTaskDefinition returned."""

    family: str
    arn: str
    containers: tuple[ContainerShape, ...]

    @property
    def revision(self) -> str:
        return self.arn.rsplit(":", 1)[-1]

    def register_params(self) -> dict[str, Any]:
        """RegisterTaskDefinition's parameters (aiobotocore keyword arguments)."""
        return {
            "family": self.family,
            "networkMode": "bridge",
            "requiresCompatibilities": ["EC2"],
            "containerDefinitions": [c.definition() for c in self.containers],
        }

    def describe_answer(self) -> dict[str, Any]:
        """What DescribeTaskDefinition answers for it: ``{"taskDefinition": {...}}`` (offline use:
        ``worker.replay``, the benchmark's in-process coalescer)."""
        return {
            "taskDefinition": {
                "taskDefinitionArn": self.arn,
                "family": self.family,
                "revision": int(self.revision),
                "status": "ACTIVE",
                "containerDefinitions": [c.definition() for c in self.containers],
            }
        }


def plan_definitions(
    rng: random.Random, count: int, containers: tuple[int, int], prefix: str
) -> list[FleetDefinition]:
    """``count`` definitions of ``containers`` = (fewest, most) containers each (1-10)."""
    fewest, most = containers
    if not 1 <= fewest <= most <= 10:
        raise ValueError(f"containers must be within 1-10 and ordered, got {containers}")
    usable = [t for t in _TEMPLATES if len(t[1]) <= most]
    planned: list[FleetDefinition] = []
    firsts: set[str] = set()
    for index in range(count):
        template, roles = usable[index % len(usable)]
        low = max(fewest, len(roles))
        size = rng.randint(low, most)
        if template not in firsts:
            size = {"plain": low, "wide": most}.get(template, size)
            firsts.add(template)
        family = f"{prefix}-{template}-{index}"
        arn = f"arn:aws:ecs:{PLACEHOLDER_REGION}:{PLACEHOLDER_ACCOUNT}:task-definition/{family}:1"
        planned.append(FleetDefinition(family, arn, _shapes(roles, size)))
    return planned


def _shapes(roles: tuple[Role, ...], size: int) -> tuple[ContainerShape, ...]:
    """The containers of a template's ``roles`` plus sidecars up to ``size``, dependencies first."""
    app_needs: list[tuple[str, str]] = []
    shapes: list[ContainerShape] = []
    for role in roles:
        if role == "init":
            shapes.append(ContainerShape("init", "init", essential=False))
            app_needs.append(("init", "SUCCESS"))
        elif role == "envoy":
            shapes.append(ContainerShape("envoy", "envoy", essential=True))
            app_needs.append(("envoy", "HEALTHY"))
        elif role == "log-router":
            shapes.append(ContainerShape("log-router", "log-router", essential=False))
            app_needs.append(("log-router", "START"))
        elif role == "app":
            shapes.append(ContainerShape("app", "app", essential=True, depends_on=tuple(app_needs)))
        else:
            shapes.append(ContainerShape("metrics", "metrics", essential=False))
    for number in range(1, size - len(shapes) + 1):
        needs = (("app", "START"),) if number % 2 == 0 else ()
        shapes.append(ContainerShape(f"sidecar-{number}", "sidecar", essential=False, depends_on=needs))
    return tuple(shapes)
