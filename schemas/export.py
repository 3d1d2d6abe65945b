"""JSON Schema files for the public records: ``python -m schemas [--check] [DIR]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from schemas.events import TaskEvent
from schemas.records import DeadLetter, Outcome

__all__ = ["DEFAULT_DIR", "PUBLIC_RECORDS", "render", "stale", "write"]

PUBLIC_RECORDS: dict[str, type[msgspec.Struct]] = {
    "task-event": TaskEvent,
    "outcome": Outcome,
    "dead-letter-headers": DeadLetter,
}
DEFAULT_DIR = Path(__file__).parent / "json"


def render() -> dict[str, str]:
    """File name -> text of each schema file."""
    files = {}
    for name, struct in PUBLIC_RECORDS.items():
        schema: dict[str, Any] = msgspec.json.schema(struct)
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": name,
            **schema,
        }
        files[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files


def write(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write every schema file to ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path = DEFAULT_DIR) -> list[str]:
    """Names of schema files that are missing or differ from what the structs give."""
    return [
        name
        for name, text in render().items()
        if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != text
    ]
