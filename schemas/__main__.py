"""``python -m schemas [--check]``: write (or check) the JSON Schema files of the public records."""

from __future__ import annotations

import sys

from schemas.export import DEFAULT_DIR, stale, write

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Write the schema files, or with ``--check`` exit 1 when they are stale."""
    if "--check" in argv:
        names = stale()
        if names:
            print(f"stale JSON Schema files in {DEFAULT_DIR}: {', '.join(names)}; run python -m schemas")
            return 1
        print("JSON Schema files are current")
        return 0
    for path in write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
