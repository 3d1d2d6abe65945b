"""Local stand-ins for Kafka and ECS, for development, the demo, the benchmark and the tests."""

from __future__ import annotations

__all__: list[str] = []
