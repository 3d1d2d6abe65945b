"""Stage 2, decode: Kafka record bytes -> canonical ``TaskEvent`` structs.

``RecordDecoder.decode`` never raises on input: every record ends as events, as ignored items
(with a reason) or as bad items (with a reason, for the dead-letter topic). It decodes the
canonical format, Docker events (alone or shipped by Fluent Bit or Metricbeat), Podman's events
(Docker-compatible or native JSON), the text lines of ``docker events`` and ``podman events`` and
containerd events (``ctr events`` lines or JSON bodies); see ``worker.decode.registry`` for the
formats and how the format of an item is chosen, ``worker.decode.docker``,
``worker.decode.podman`` and ``worker.decode.containerd`` for the mapping onto container
statuses, ``worker.decode.exit_codes`` for exit codes, ``worker.decode.labels`` for attribution
and the agent's internal containers and tasks, ``worker.decode.reasons`` for why items are
ignored and ``worker.decode.bad_items`` for why they are refused.
"""

from __future__ import annotations

from worker.decode.decoder import RecordDecoder
from worker.decode.registry import FORMATS, InputFormat
from worker.decode.result import BadItem, DecodeResult

__all__ = ["FORMATS", "BadItem", "DecodeResult", "InputFormat", "RecordDecoder"]
