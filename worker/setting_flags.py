"""The flags of ``python -m worker run``, one per setting, with a help line that shows what
``SETTING_HELP`` says, the allowed values, the real default and the environment variable.

A flag left out is None, so that the lower sources (environment, file, default) apply; the help
therefore shows the default of ``Settings``, not argparse's. Choices are checked by msgspec after
the merge (``worker.config``), so a choice in another case (``debug``, ``Docker``) passes and is
normalised there.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any, get_type_hints

from worker.config import SETTING_HELP, Settings, allowed_values, env_name, flag_name, strip_hint

__all__ = ["add_setting_flags", "allowed_values", "setting_help"]


def _default_text(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def setting_help(name: str, hint: Any, default: Any) -> str:
    """One flag's help: the setting's text, its allowed values, its default and its variable."""
    parts = [SETTING_HELP[name].replace("%", "%%")]
    if values := allowed_values(hint):
        parts.append(f"One of: {', '.join(values)}.")
    parts.append(f"(default: {_default_text(default)}; env: {env_name(name)})".replace("%", "%%"))
    return " ".join(parts)


def _converter(hint: Any) -> type:
    """What a flag's text converts to before msgspec checks bounds and choices."""
    stripped = strip_hint(hint)
    return stripped if stripped in (int, float) else str


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting to ``parser``; each defaults to None (not given)."""
    hints = get_type_hints(Settings, include_extras=True)
    defaults = Settings()
    for name in SETTING_HELP:
        hint = hints[name]
        text = setting_help(name, hint, getattr(defaults, name))
        values = allowed_values(hint)
        metavar = "{" + ",".join(values) + "}" if values else "TIME" if strip_hint(hint) is datetime else None
        if strip_hint(hint) is bool:
            parser.add_argument(
                flag_name(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        else:
            parser.add_argument(
                flag_name(name), dest=name, type=_converter(hint), default=None, help=text, metavar=metavar
            )
