"""The README stays true: its configuration table is the settings' own, and its layout names
modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

from worker.config import SETTING_HELP, Settings, env_name, flag_name

README = Path(__file__).resolve().parents[1] / "README.md"


def _default(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def test_the_configuration_table_lists_every_setting_as_the_worker_has_it() -> None:
    defaults = Settings()
    expected = [
        f"| `{flag_name(n)}` | `{env_name(n)}` | {_default(getattr(defaults, n))} | {SETTING_HELP[n]} |"
        for n in Settings.__struct_fields__
    ]
    text = README.read_text()
    table = text[text.index("| flag | environment | default | meaning |") :].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert rows == expected


def test_the_layout_names_modules_that_exist() -> None:
    text = README.read_text()
    layout = text[text.index("## Layout") : text.index("## Configuration")]
    root = README.parent
    named = set(re.findall(r"`((?:worker|schemas|devkit)/[\w/.]*)`", layout))
    assert named, "the layout names no module"
    for path in named:
        assert (root / path).exists(), f"README's layout names {path}, which does not exist"
    for cell in re.findall(r"\| `worker/[\w.]+`((?:, `[\w.]+`)+) \|", layout):
        for module in re.findall(r"`([\w.]+)`", cell):
            assert (root / "worker" / module).exists(), f"README's layout names worker/{module}"
