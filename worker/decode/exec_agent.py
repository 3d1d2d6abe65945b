"""ECS Exec from Docker's exec events: the managed agent the ECS agent starts in a container.

For a container of a task with ECS Exec enabled, the ECS agent starts the SSM agent inside the
container with a Docker exec of the binary it bind-mounts there, and no argument (agent:
``agent/engine/execcmd/manager_start.go``, ``doStartAgent``: ``CreateContainerExec`` then
``StartContainerExec`` of ``<deps dir>/amazon-ssm-agent``; the directory is
``/ecs-execute-command-<uuid>`` on Linux, ``manager_init_task_linux.go``
``ContainerDepsDirPrefix``, and ``C:\\Program Files\\Amazon\\SSM`` on Windows,
``manager_init_task_windows.go``). Once it runs, the agent reports the ``ExecuteCommandAgent``
RUNNING with the reason ``EXEC_AGENT_STARTED_REASON`` (``agent/engine/docker_task_engine.go``);
it reports it STOPPED when the container stops (``worker.task_state``).

Docker names the exec's command in the action (``exec_start: /ecs-execute-command-<uuid>/amazon-ssm-agent``):

============================================  ==================================================
exec_start of the managed agent's binary      ``managedAgents`` ``ExecuteCommandAgent`` RUNNING
exec_create of the managed agent's binary     ignored, ``EXEC_AGENT_CREATED`` (it runs once started)
any other exec event (a user's ``docker       ignored, "docker: exec process event (not the
exec``, an exec's death or detach)            container's state)"
============================================  ==================================================

The SSM agent's own death is not reported: the agent restarts it (``RestartAgentIfStopped``).
"""

from __future__ import annotations

import re
from typing import Final

from schemas.events import ManagedAgentChange, TaskEvent
from worker.decode import reasons
from worker.decode.result import DecodeResult

__all__ = [
    "EXECUTE_COMMAND_AGENT",
    "EXEC_AGENT_CREATED",
    "EXEC_AGENT_STARTED_REASON",
    "apply_exec_event",
    "is_exec_agent_command",
]

EXECUTE_COMMAND_AGENT: Final = "ExecuteCommandAgent"
EXEC_AGENT_STARTED_REASON = "ExecuteCommandAgent started"
"""The reason the agent reports with the managed agent's RUNNING (``docker_task_engine.go``)."""
EXEC_AGENT_CREATED = reasons.DOCKER_EXEC_AGENT_CREATED

_AGENT_COMMAND = re.compile(
    r"/ecs-execute-command-[^/\s]+/amazon-ssm-agent"
    r"|[A-Za-z]:\\Program Files\\Amazon\\SSM\\amazon-ssm-agent\.exe",
    re.ASCII | re.IGNORECASE,
)


def is_exec_agent_command(action: str) -> bool:
    """Whether an exec event's action (``exec_start: <command>``) runs the managed agent's binary."""
    _, _, command = action.partition(": ")
    return _AGENT_COMMAND.fullmatch(command.strip()) is not None


def apply_exec_event(
    action: str,
    cluster: str,
    task: str,
    container: str,
    observed_at: int,
    task_definition: str | None,
    into: DecodeResult,
) -> None:
    """Map one labelled container's exec event onto ``into``: the managed agent's RUNNING, or an
    ignored item with its reason."""
    verb = action.partition(":")[0]
    if verb not in ("exec_start", "exec_create") or not is_exec_agent_command(action):
        into.ignored.append(reasons.DOCKER_EXEC)
        return
    if verb == "exec_create":
        into.ignored.append(EXEC_AGENT_CREATED)
        return
    agent = ManagedAgentChange(
        containerName=container,
        managedAgentName=EXECUTE_COMMAND_AGENT,
        status="RUNNING",
        reason=EXEC_AGENT_STARTED_REASON,
    )
    into.events.append(
        TaskEvent(
            cluster=cluster,
            task=task,
            observedAt=observed_at,
            managedAgents=(agent,),
            taskDefinitionArn=task_definition,
        )
    )
