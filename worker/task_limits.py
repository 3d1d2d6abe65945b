"""The per-task bounds: how many containers, attachments and managed agents one task may hold. Pure.

An event that would pass them is refused (the caller dead-letters it with the reason), so that one
hostile or broken stream cannot make a task's state, or its request, grow without limit.
"""

from __future__ import annotations

from schemas.events import TaskEvent
from worker.task_state import TaskState

__all__ = ["over_limits"]


def over_limits(
    state: TaskState | None, event: TaskEvent, max_containers: int, max_attachments: int
) -> str | None:
    """Why merging ``event`` into ``state`` (None: a new task) would pass ``max_containers`` or
    ``max_attachments`` (attachments; managed agents), or None."""
    count = len(event.containers) + len(event.attachments) + len(event.managedAgents)
    if state is not None:
        count += len(state.containers) + len(state.attachments or ()) + len(state.managed_agents or ())
    if count <= max_containers and count <= max_attachments:
        return None  # the common case: far below every bound, no sets to build
    if event.containers:
        known = state.containers if state is not None else {}
        names = {c.containerName for c in event.containers} | known.keys()
        if len(names) > max_containers:
            return (
                f"task would have {len(names)} containers, more than max_containers_per_task={max_containers}"
            )
    for kind, items, held in (
        (
            "attachments",
            {a.attachmentArn for a in event.attachments},
            (state.attachments if state else None) or {},
        ),
        (
            "managed agents",
            {(m.containerName, m.managedAgentName) for m in event.managedAgents},
            (state.managed_agents if state else None) or {},
        ),
    ):
        if items and len(items | held.keys()) > max_attachments:
            return f"task would have more than max_attachments_per_task={max_attachments} {kind}"
    return None
