"""Records of every input format for one container event, built the way each runtime or shipper
prints them, for the decode tests that run one case through every format.

Each builder takes the ECS labels (the agent's, or an internal container's or task's) and what the
event says; ``RUNTIME_ID`` is the container's id in all of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec

from schemas.events import ContainerChange, TaskEvent
from worker.decode.result import DecodeResult

__all__ = [
    "CLUSTER",
    "LABELS",
    "RUNTIME_ID",
    "STOP_BUILDERS",
    "TASK",
    "TIME_NS",
    "Outcome",
    "canonical",
    "ctr_exit",
    "docker_json",
    "docker_line",
    "fluentbit",
    "labels_for",
    "metricbeat",
    "outcome",
    "podman_compat",
    "podman_json",
    "podman_line",
]

CLUSTER = "prod"
TASK = "arn:aws:ecs:eu-west-1:111122223333:task/prod/0123456789abcdef0123456789abcdef"
RUNTIME_ID = "405efae3b420464a9da7be7cd9de8d2ff160ffcfdac01517d9b686e8137f9053"
TIME_NS = 1704164645_123456789
LABELS = {
    "com.amazonaws.ecs.cluster": CLUSTER,
    "com.amazonaws.ecs.container-name": "web",
    "com.amazonaws.ecs.task-arn": TASK,
}


Outcome = tuple[Any, ...]


def outcome(result: DecodeResult) -> list[Outcome]:
    """A summary of ``result``: ("event", status, exitCode, reason, stopRequested) per container
    change, ("ignored", reason), ("bad", error_class)."""
    out: list[Outcome] = []
    for event in result.events:
        for c in event.containers:
            out.append(("event", c.status, c.exitCode, c.reason, c.stopRequested))
    out += [("ignored", reason) for reason in result.ignored]
    out += [("bad", bad.error_class) for bad in result.bad]
    return out


def labels_for(container: str = "web", task: str = TASK) -> dict[str, str]:
    """The agent's labels of ``container`` in ``task``."""
    return dict(LABELS, **{"com.amazonaws.ecs.container-name": container, "com.amazonaws.ecs.task-arn": task})


def docker_json(action: str, labels: dict[str, str] = LABELS, **attributes: str) -> bytes:
    """A Docker Engine event (API < 1.52: with the legacy status/id/from)."""
    return json.dumps(
        {
            "status": action,
            "id": RUNTIME_ID,
            "from": "nginx",
            "Type": "container",
            "Action": action,
            "Actor": {
                "ID": RUNTIME_ID,
                "Attributes": {"image": "nginx", "name": "web", **labels, **attributes},
            },
            "scope": "local",
            "time": TIME_NS // 10**9,
            "timeNano": TIME_NS,
        }
    ).encode()


def podman_compat(action: str, labels: dict[str, str] = LABELS, **attributes: str) -> bytes:
    """Podman's Docker-compatible event (its socket's ``/events``): ``containerExitCode``, ``died``."""
    doc = json.loads(docker_json(action, labels))
    doc["Actor"]["Attributes"].update({"containerExitCode": "0", **attributes})
    return json.dumps(doc).encode()


def podman_json(
    status: str,
    labels: dict[str, str] = LABELS,
    exit_code: int | None = None,
    **members: Any,
) -> bytes:
    """A ``podman events --format json`` line."""
    doc: dict[str, Any] = {
        "ID": RUNTIME_ID,
        "Image": "docker.io/library/nginx:latest",
        "Name": "web",
        "Status": status,
        "time": TIME_NS // 10**9,
        "timeNano": TIME_NS,
        "Type": "container",
        "Attributes": {"image": "docker.io/library/nginx:latest", "name": "web", **labels},
    }
    if exit_code is not None:
        doc["ContainerExitCode"] = exit_code
    doc.update(members)
    return json.dumps(doc).encode()


def metricbeat(action: str, labels: dict[str, str] = LABELS, **attributes: str) -> bytes:
    """A Metricbeat ``docker.event`` document (label keys de-dotted)."""
    dedotted = {k.replace(".", "_"): v for k, v in {**labels, **attributes}.items()}
    return json.dumps(
        {
            "@timestamp": "2024-01-02T03:04:05.000Z",
            "docker": {
                "event": {
                    "action": action,
                    "actor": {"attributes": {"image": "nginx", **dedotted}, "id": RUNTIME_ID},
                    "from": "nginx",
                    "id": RUNTIME_ID,
                    "status": action,
                    "type": "container",
                }
            },
            "event": {"dataset": "docker.event", "module": "docker"},
            "metricset": {"name": "event"},
        }
    ).encode()


def fluentbit(action: str, labels: dict[str, str] = LABELS, **attributes: str) -> bytes:
    """A Fluent Bit ``docker_events`` record holding the Docker event."""
    message = docker_json(action, labels, **attributes).decode() + "\n"
    return json.dumps({"@timestamp": TIME_NS / 10**9, "message": message}).encode()


def docker_line(action: str, labels: dict[str, str] = LABELS, **attributes: str) -> bytes:
    """A ``docker events`` line: attributes in key order, as the CLI prints them."""
    attrs = {"image": "nginx", "name": "web", **labels, **attributes}
    joined = ", ".join(f"{k}={v}" for k, v in sorted(attrs.items()))
    return f"2024-01-02T03:04:05.123456789Z container {action} {RUNTIME_ID} ({joined})".encode()


def podman_line(status: str, labels: dict[str, str] = LABELS, **attributes: str) -> bytes:
    """A ``podman events`` line: image and name first, then the labels in map order."""
    attrs = {**labels, **attributes}
    tail = "".join(f", {k}={v}" for k, v in reversed(attrs.items()))
    image = "docker.io/library/nginx:latest"
    head = f"2024-01-02 03:04:05.123456789 +0000 UTC container {status} {RUNTIME_ID}"
    return f"{head} (image={image}, name=web{tail})".encode()


def canonical(exit_code: int | None = None, container: str = "web", task: str = TASK) -> bytes:
    """A canonical event of the container's stop."""
    change = ContainerChange(
        containerName=container, runtimeId=RUNTIME_ID, status="STOPPED", exitCode=exit_code
    )
    return msgspec.json.encode(
        TaskEvent(cluster=CLUSTER, task=task, observedAt=TIME_NS, containers=(change,))
    )


def ctr_exit(exit_status: int) -> bytes:
    """A ``ctr events`` line of the container's init process exit (attributed by a labelled event)."""
    body = {"container_id": RUNTIME_ID, "id": RUNTIME_ID, "pid": 4242, "exit_status": exit_status}
    body["exited_at"] = {"seconds": TIME_NS // 10**9, "nanos": TIME_NS % 10**9}
    return b"2024-01-02 03:04:05.2 +0000 UTC moby /tasks/exit " + json.dumps(body).encode()


STOP_BUILDERS: dict[str, Callable[[dict[str, str]], bytes]] = {
    "docker": lambda labels: docker_json("die", labels, exitCode="0"),
    "podman compat": lambda labels: podman_compat("died", labels),
    "podman": lambda labels: podman_json("died", labels, exit_code=0),
    "metricbeat": lambda labels: metricbeat("die", labels, exitCode="0"),
    "fluentbit": lambda labels: fluentbit("die", labels, exitCode="0"),
    "docker-text": lambda labels: docker_line("die", labels, exitCode="0"),
    "podman-text": lambda labels: podman_line("died", labels),
}
"""A container's stop in every format that carries the agent's labels."""
