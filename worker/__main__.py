"""``python -m worker``: see ``worker.cli``."""

from __future__ import annotations

import sys

from worker.cli import main

__all__: list[str] = []

sys.exit(main())
