"""The worker process's garbage collector (worker.collector)."""

from __future__ import annotations

import gc

from worker.collector import YOUNG_GENERATION_THRESHOLD, tune_collector


def test_only_the_young_generation_threshold_changes() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 11, 12)
        tune_collector()
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, 11, 12)
        assert YOUNG_GENERATION_THRESHOLD == 10_000
    finally:
        gc.set_threshold(*before)
