"""A bounded LRU index: runtime container id -> the ECS container it is.

containerd events carry no labels. Docker runs its containers in containerd's ``moby`` namespace
under the same ids, so a containerd event can be attributed to an ECS task when a labelled Docker
(or Podman, or Metricbeat-shipped) event for the same id was decoded earlier by the same decoder.
The index holds at most ``capacity`` ids (least recently used evicted first; about 0.5 KiB each),
is filled by every labelled container event and is never cleared on ``destroy``, because a
runtime's events may be shipped out of order with the Docker ones. An entry also keeps the task's
definition, so that it is worked out once per container, not once per event. The agent's internal
containers and tasks (``worker.decode.labels.internal_reason``) are never held: an id found with
the same task and container name is one the agent reports, with no need to check again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from worker.decode.labels import EcsContainer, ecs_container_from_labels, internal_reason, task_definition_arn

__all__ = ["DEFAULT_CAPACITY", "ContainerIndex", "attribute_labelled"]

DEFAULT_CAPACITY = 65_536


class ContainerIndex:
    """Runtime id -> ``EcsContainer``, LRU-bounded. ``capacity=0`` disables attribution."""

    __slots__ = ("_capacity", "_entries")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self._capacity = capacity
        self._entries: OrderedDict[str, EcsContainer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, runtime_id: object) -> bool:
        return runtime_id in self._entries

    def remember(self, runtime_id: str, container: EcsContainer) -> None:
        """Record that ``runtime_id`` is ``container`` (the most recently used id); an internal
        container or task (``internal_reason``) is not recorded."""
        if not runtime_id or self._capacity == 0:
            return
        entries = self._entries
        if entries.get(runtime_id) == container:  # held already, so not internal
            entries.move_to_end(runtime_id)
            return
        if internal_reason(container.task, container.container_name) is not None:
            return
        entries[runtime_id] = container
        entries.move_to_end(runtime_id)
        if len(entries) > self._capacity:
            entries.popitem(last=False)

    def lookup(self, runtime_id: str) -> EcsContainer | None:
        """The ECS container ``runtime_id`` is, or None when it was not seen (or was evicted)."""
        container = self._entries.get(runtime_id)
        if container is not None:
            self._entries.move_to_end(runtime_id)
        return container

    def remember_labels(
        self,
        runtime_id: str,
        cluster: str,
        task: str,
        container_name: str,
        family: str | None,
        version: str | None,
    ) -> EcsContainer | str:
        """The ECS container of a runtime container with these label values, remembered under
        ``runtime_id`` (its ``task_definition``: ``worker.decode.labels.task_definition_arn``); or
        ``internal_reason``'s ignore reason for the agent's internal containers and tasks.

        The hot path: when the id is known with the same task and container name, its entry is
        returned as is (neither checked nor built again: a task's definition never changes, and an
        internal container is never held). Its ``cluster`` is the one first seen for the id.
        Raises ``InvalidItem`` when the task definition's name is too long.
        """
        entries = self._entries
        entry = entries.get(runtime_id) if runtime_id else None
        if (
            entry is not None
            and entry.task == task
            and entry.container_name == container_name
            and (entry.task_definition is not None or not (family and version))
        ):
            entries.move_to_end(runtime_id)
            return entry
        internal = internal_reason(task, container_name)
        if internal is not None:
            return internal
        container = EcsContainer(cluster, task, container_name, task_definition_arn(task, family, version))
        self.remember(runtime_id, container)
        return container


def attribute_labelled(
    object_type: str,
    runtime_id: str,
    labels: dict[str, str],
    known: ContainerIndex,
    *,
    not_container: Callable[[str], str],
    no_labels: str,
) -> EcsContainer | str:
    """The ECS container of a labelled runtime event (Docker-shaped or Podman), remembered in
    ``known`` under ``runtime_id``; else the event's ignore reason: ``not_container(object_type)``
    for an object that is no container, ``no_labels`` without (complete) ECS labels, or
    ``internal_reason``'s for the agent's internal containers and tasks.

    Raises ``InvalidItem`` for a label value too long for the canonical event.
    """
    if object_type != "container":
        return not_container(object_type)
    container = ecs_container_from_labels(labels)
    if container is None:
        return no_labels
    internal = internal_reason(container.task, container.container_name)
    if internal is not None:
        return internal
    known.remember(runtime_id, container)
    return container
