"""The container index (``worker.decode.attribution``) holds only containers the agent reports,
so that a known id needs no internal check; and it hands back the container's task definition."""

from __future__ import annotations

import pytest

from tests import decode_inputs as inputs
from worker.decode import reasons as r
from worker.decode.attribution import ContainerIndex
from worker.decode.labels import EcsContainer

RELAY = "arn:::::/service-connect-relay-5c3b2d4e-8a1f-4c6b-9e2d-7f0a1b2c3d4e"


@pytest.mark.parametrize(
    ("task", "name", "reason"),
    [
        (inputs.TASK, "~internal~ecs~pause", r.ECS_INTERNAL_CONTAINER),
        (RELAY, "envoy", r.ECS_INTERNAL_TASK),
    ],
)
def test_internal_containers_are_never_held(task: str, name: str, reason: str) -> None:
    index = ContainerIndex(4)
    assert index.remember_labels(inputs.RUNTIME_ID, inputs.CLUSTER, task, name, "web", "3") == reason
    index.remember(inputs.RUNTIME_ID, EcsContainer(inputs.CLUSTER, task, name))
    assert inputs.RUNTIME_ID not in index
    assert len(index) == 0


def test_a_known_id_returns_its_entry_with_the_task_definition() -> None:
    index = ContainerIndex(4)
    first = index.remember_labels(inputs.RUNTIME_ID, inputs.CLUSTER, inputs.TASK, "web", "web", "3")
    expected = EcsContainer(
        inputs.CLUSTER, inputs.TASK, "web", "arn:aws:ecs:eu-west-1:111122223333:task-definition/web:3"
    )
    assert first == expected
    again = index.remember_labels(inputs.RUNTIME_ID, "other-cluster", inputs.TASK, "web", "web", "3")
    assert again is first  # found, not built again
    assert index.lookup(inputs.RUNTIME_ID) == expected


def test_an_id_seen_with_another_container_is_checked_again() -> None:
    index = ContainerIndex(4)
    index.remember_labels(inputs.RUNTIME_ID, inputs.CLUSTER, inputs.TASK, "web", None, None)
    reused = index.remember_labels(
        inputs.RUNTIME_ID, inputs.CLUSTER, inputs.TASK, "~internal~ecs~pause", None, None
    )
    assert reused == r.ECS_INTERNAL_CONTAINER
    assert index.lookup(inputs.RUNTIME_ID) == EcsContainer(inputs.CLUSTER, inputs.TASK, "web")
