"""ecs-state-worker: Kafka container-runtime events -> coalesced ECS task state changes.

The pipeline's stages, one owner module each: ``consume`` (fetch from Kafka) -> ``decode`` ->
``intake`` (validate, apply) -> ``resolve`` (what a task is, from ECS) -> ``coalesce`` (per-task
state, the agent's rules) -> ``dispatch``/``submit`` (aiobotocore + tenacity) -> ``publish``
(outcome and dead-letter topics) -> ``partitions``/``offsets`` (epochs, commits); ``pipeline``
wires them and ``work`` holds the units of work they hand each other. With ``input_keying = any``,
``repartition`` re-keys the decoded events by task through an internal topic first, and
``reorder`` merges them in observation order.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
