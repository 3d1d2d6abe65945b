"""Local stand-ins for Kafka and ECS, for development, the demo, the benchmark, the fault harness
and the tests.

Not in the production wheel: a source checkout imports it from the repository root, where
``python -m worker`` adds the development commands of ``devkit.cli``.
"""

from __future__ import annotations

__all__: list[str] = []
