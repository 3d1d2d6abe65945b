"""``python -m worker``: see ``worker.cli``."""

from __future__ import annotations

import sys

from worker import early_signals

if sys.argv[1:2] in (["run"], ["broker"]):
    early_signals.catch()  # before the heavy imports: a SIGTERM while starting is a clean stop

from worker.cli import main

__all__: list[str] = []

sys.exit(main())
