"""The garbage collector of a worker process (``python -m worker run``), tuned for what it holds.

A worker keeps many long-lived container objects (the tasks it coalesces, the records it has read
and not yet resolved) while it makes short-lived ones by the thousand (each ECS call builds
botocore's and aiohttp's request and response objects). With CPython's default thresholds
(700, 10, 10) the young collections run so often that full collections follow while the heap
grows: in the saturated benchmark (``devkit.bench``, 6,500 calls) eleven full collections of
0.2-0.3 s each, about a quarter of the process's CPU, and each one a pause of the event loop. A
young generation of 10,000 objects makes those collections rarer (none in that run; the worker's
CPU fell by a fifth) while a collection still comes long before the garbage of reference cycles
amounts to memory that matters (10,000 small objects, a few MB at most).

Only the worker's own process is tuned (``worker.serve``): the library code and the tests run with
the interpreter's defaults.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_GENERATION_THRESHOLD", "tune_collector"]

YOUNG_GENERATION_THRESHOLD = 10_000
"""Allocations of container objects, less deallocations, between two young collections."""


def tune_collector() -> None:
    """Set the young generation's threshold (``gc.set_threshold``), keeping the older ones'."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)
