"""ecs-state-worker: Kafka container-runtime events -> coalesced ECS task state changes.

The pipeline's stages, one module each: ``read`` (Kafka consumer) -> ``decode`` -> ``coalesce``
-> ``submit`` (aiobotocore + tenacity) -> ``record`` (outcome and dead-letter topics) ->
``offsets`` (commit bookkeeping); ``pipeline`` wires them.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
