"""The local ECS endpoint, by its historical name: a re-export of :mod:`devkit.ecs`.

See :mod:`devkit.ecs` for the operations served, the faults, the ``/_state`` keys and the flags
(``stopped_while_running``, ``updates_after_stopped``, ``running_incomplete``).
"""

from __future__ import annotations

from devkit.ecs import (
    DEFAULT_ACCOUNT,
    FLAGS,
    MAX_DESCRIBED_TASKS,
    MAX_RUN_COUNT,
    OPERATIONS,
    TARGET,
    TARGET_PREFIX,
    Faults,
    LocalEcsEndpoint,
    Scope,
    serve,
)

__all__ = [
    "DEFAULT_ACCOUNT",
    "FLAGS",
    "MAX_DESCRIBED_TASKS",
    "MAX_RUN_COUNT",
    "OPERATIONS",
    "TARGET",
    "TARGET_PREFIX",
    "Faults",
    "LocalEcsEndpoint",
    "Scope",
    "serve",
]
