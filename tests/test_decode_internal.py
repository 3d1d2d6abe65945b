"""The ECS agent's internal containers and tasks are never reported, in any format, each ignored
with its own counted reason (agent: ``agent/api/statechange.go``, ``IsInternal``)."""

from __future__ import annotations

import msgspec
import pytest

from schemas.events import ContainerChange, TaskEvent
from tests import decode_inputs as inputs
from worker.decode import RecordDecoder
from worker.decode import reasons as r
from worker.decode.labels import is_internal_task

INTERNAL_CONTAINERS = [
    "~internal~ecs~pause",  # NetworkPauseContainerName: awsvpc tasks
    "~internal~ecs~pause~namespace",  # NamespacePauseContainerName: pid or ipc mode
    "~internal~ecs~pause-web",  # ServiceConnectPauseContainerNameFormat: bridge Service Connect
    "~internal~ecs~pause-ecs-service-connect-AbCdE",  # the same for the Service Connect container
    "~internal~ecs-emptyvolume-source",  # emptyHostVolumeName: empty host volumes (Windows)
]
"""Every internal container name the agent creates (``agent/api/task/task.go``)."""

INTERNAL_TASKS = [
    # The Service Connect relay (agent/engine/serviceconnect/manager_linux.go).
    "arn:::::/service-connect-relay-5c3b2d4e-8a1f-4c6b-9e2d-7f0a1b2c3d4e",
    # A managed daemon, e.g. the EBS CSI driver (agent/engine/daemonmanager/daemon_manager.go).
    "arn:::::/ebs-csi-driver-5c3b2d4e-8a1f-4c6b-9e2d-7f0a1b2c3d4e",
]
"""The ARNs the agent gives its internal tasks: ARNs, but not task ARNs."""

NOT_TASK_ARNS = [
    *INTERNAL_TASKS,
    "arn:aws:ecs:eu-west-1:111122223333:service/prod/web",  # another ECS resource
    "arn:aws:ecs:eu-west-1:111122223333:container-instance/prod/0123",
    "arn:aws:s3:eu-west-1:111122223333:task/x",  # not ECS
    "arn:aws:ecs::111122223333:task/x",  # no Region
    "arn:aws:ecs:eu-west-1::task/x",  # no account
    "arn:aws:ecs:eu-west-1:111122223333:extra:task/x",
    "arn:aws:ecs:eu-west-1:111122223333",
]
TASK_ARNS = [
    inputs.TASK,
    "arn:aws:ecs:eu-west-1:111122223333:task/0123456789abcdef",  # the old format, no cluster
    "arn:aws-cn:ecs:cn-north-1:111122223333:task/prod/0123",
    "arn:aws-us-gov:ecs:us-gov-west-1:111122223333:task/prod/0123",
    "0123456789abcdef0123456789abcdef",  # not an ARN: a task id, as ECS accepts one
]


def ignored(record: bytes) -> list[str]:
    result = RecordDecoder().decode(record)
    assert not result.events, result
    assert not result.bad, result
    return result.ignored


@pytest.mark.parametrize("fmt", sorted(inputs.STOP_BUILDERS))
@pytest.mark.parametrize("name", INTERNAL_CONTAINERS)
def test_every_internal_container_is_ignored(fmt: str, name: str) -> None:
    record = inputs.STOP_BUILDERS[fmt](inputs.labels_for(container=name))
    assert ignored(record) == [r.ECS_INTERNAL_CONTAINER]


@pytest.mark.parametrize("fmt", sorted(inputs.STOP_BUILDERS))
@pytest.mark.parametrize("task", NOT_TASK_ARNS)
def test_tasks_whose_arn_is_not_a_task_arn_are_ignored(fmt: str, task: str) -> None:
    # The relay's container is "instance-service-connect-relay", not an ~internal~ name.
    labels = inputs.labels_for(container="instance-service-connect-relay", task=task)
    assert ignored(inputs.STOP_BUILDERS[fmt](labels)) == [r.ECS_INTERNAL_TASK]
    assert is_internal_task(task)


@pytest.mark.parametrize("fmt", sorted(inputs.STOP_BUILDERS))
@pytest.mark.parametrize("task", TASK_ARNS)
def test_task_arns_and_ids_are_reported(fmt: str, task: str) -> None:
    result = RecordDecoder().decode(inputs.STOP_BUILDERS[fmt](inputs.labels_for(task=task)))
    assert [(e.task, e.containers[0].containerName, e.containers[0].status) for e in result.events] == [
        (task, "web", "STOPPED")
    ]
    assert not is_internal_task(task)


@pytest.mark.parametrize("name", ["internal~ecs~pause", "web~internal~ecs~pause", "~internal~ec", "pause"])
def test_names_that_only_look_internal_are_reported(name: str) -> None:
    result = RecordDecoder().decode(inputs.docker_json("start", inputs.labels_for(container=name)))
    assert [e.containers[0].containerName for e in result.events] == [name]


def test_internal_containers_are_not_attributed_for_containerd() -> None:
    decoder = RecordDecoder()
    decoder.decode(inputs.docker_json("start", inputs.labels_for(container="~internal~ecs~pause")))
    result = decoder.decode(inputs.ctr_exit(0))
    assert result.ignored == [r.CONTAINERD_NOT_ATTRIBUTED]


def test_canonical_events_drop_internal_containers_and_tasks() -> None:
    assert ignored(inputs.canonical(0, container="~internal~ecs~pause")) == [r.ECS_INTERNAL_CONTAINER]
    assert ignored(inputs.canonical(0, task=INTERNAL_TASKS[0])) == [r.ECS_INTERNAL_TASK]
    event = TaskEvent(
        cluster=inputs.CLUSTER,
        task=inputs.TASK,
        observedAt=inputs.TIME_NS,
        status="RUNNING",
        containers=(
            ContainerChange(containerName="web", status="RUNNING", exitCode=2**32 - 1),
            ContainerChange(containerName="~internal~ecs~pause~namespace", status="RUNNING"),
        ),
    )
    (decoded,) = RecordDecoder().decode(msgspec.json.encode(event)).events
    assert decoded.containers == (ContainerChange(containerName="web", status="RUNNING", exitCode=-1),)
    assert decoded.status == "RUNNING"
    only_internal = msgspec.structs.replace(event, containers=event.containers[1:])
    (decoded,) = RecordDecoder().decode(msgspec.json.encode(only_internal)).events
    assert (decoded.status, decoded.containers) == ("RUNNING", ())  # the task's status still counts
