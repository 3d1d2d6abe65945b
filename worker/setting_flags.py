"""The flags of ``python -m worker run``, one per setting, with a help line that shows what
``SETTING_HELP`` says, the allowed values, the real default and the environment variable.

A flag left out is None, so that the lower sources (environment, file, default) apply; the help
therefore shows the default of ``Settings``, not argparse's. Choices are checked by msgspec after
the merge (``worker.config``), so a lowercase log level passes and is normalised there.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

from worker.config import SETTING_HELP, Settings, env_name, flag_name

__all__ = ["add_setting_flags", "allowed_values", "setting_help"]


def _strip(hint: Any) -> Any:
    """The hint without ``Annotated`` and ``None``: ``Annotated[int, ...] | None`` -> ``int``."""
    origin = get_origin(hint)
    if origin is Annotated:
        return _strip(get_args(hint)[0])
    if origin in (Union, UnionType):
        return _strip(next(a for a in get_args(hint) if a is not type(None)))
    return hint


def allowed_values(hint: Any) -> tuple[str, ...]:
    """The values a ``Literal`` setting allows, as text; empty for other settings."""
    stripped = _strip(hint)
    return tuple(str(v) for v in get_args(stripped)) if get_origin(stripped) is Literal else ()


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
        parts.append(f"One of: {', '.join(values)}{' (any case)' if name == 'log_level' else ''}.")
    parts.append(f"(default: {_default_text(default)}; env: {env_name(name)})".replace("%", "%%"))
    return " ".join(parts)


def _converter(hint: Any) -> type:
    """What a flag's text converts to before msgspec checks bounds and choices."""
    stripped = _strip(hint)
    return stripped if stripped in (int, float) else str


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting to ``parser``; each defaults to None (not given)."""
    hints = get_type_hints(Settings, include_extras=True)
    defaults = Settings()
    for name in SETTING_HELP:
        hint = hints[name]
        text = setting_help(name, hint, getattr(defaults, name))
        values = allowed_values(hint)
        metavar = "{" + ",".join(values) + "}" if values else "TIME" if _strip(hint) is datetime else None
        if _strip(hint) is bool:
            parser.add_argument(
                flag_name(name), dest=name, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        else:
            parser.add_argument(
                flag_name(name), dest=name, type=_converter(hint), default=None, help=text, metavar=metavar
            )
