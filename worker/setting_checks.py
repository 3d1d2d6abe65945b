"""Checks of settings that their types cannot express: addresses, URLs, times, and the
``WORKER_*`` environment variables that are no setting (files are checked at start, where they
are mounted: ``worker.start_checks``).

Each check returns ``(setting, problem)`` pairs; ``worker.config.load_settings`` turns the first
into a ``ConfigError`` naming the setting and where it came from. Pure.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from worker.routing import role_partition_problems

if TYPE_CHECKING:
    from worker.config import Settings

__all__ = ["NOT_SETTINGS", "problems", "unknown_variables"]

NOT_SETTINGS = frozenset({"WORKER_CONFIG"})
"""``WORKER_*`` variables that are read but are no setting."""
_PREFIX = "WORKER_"


def _bootstrap_problems(servers: str) -> Iterator[str]:
    """``host:port`` pairs, comma separated (IPv6 hosts in brackets), each port in 1..65535."""
    for server in servers.split(","):
        host, colon, port = server.strip().rpartition(":")
        if not colon or not host.strip("[]"):
            yield f"{server.strip()!r} is not host:port"
        elif not port.isdigit() or not 1 <= int(port) <= 65535:
            yield f"{server.strip()!r} has no valid port (1-65535)"


def _url_problem(url: str) -> str | None:
    """An http(s) URL with a host; None when it is one."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"{url!r} needs a scheme: http:// or https://"
    if not parts.hostname:
        return f"{url!r} has no host"
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        return f"{url!r} has no valid port"
    return None


def problems(settings: Settings) -> Iterator[tuple[str, str]]:
    """Every ``(setting, problem)`` of ``settings`` that its type does not catch."""
    for problem in _bootstrap_problems(settings.bootstrap_servers):
        yield "bootstrap_servers", problem
    if settings.ecs_endpoint_url is not None and (bad_url := _url_problem(settings.ecs_endpoint_url)):
        yield "ecs_endpoint_url", bad_url
    if settings.start_time is not None and settings.start_time.tzinfo is None:
        yield "start_time", "needs a time zone (e.g. 2026-11-30T08:00:00Z or +01:00)"
    yield from (("account_roles", problem) for problem in _role_problems(settings))


def _role_problems(settings: Settings) -> Iterator[str]:
    """A role must be in the account it reports for (ECS answers a caller about its own account's
    clusters only), and the home account takes the default credentials."""
    for account, role in sorted(settings.account_roles.items()):
        role_account = role.split(":")[4]
        if role_account != account:
            yield f"the role for account {account} is in account {role_account}: {role}"
        if account == settings.home_account:
            yield f"account {account} is home_account, whose tasks take the default credentials"
    yield from role_partition_problems(settings.region, settings.account_roles)


def unknown_variables(env: Mapping[str, str], settings: Collection[str]) -> Iterator[tuple[str, str]]:
    """``(variable, problem)`` for each ``WORKER_*`` variable that is no setting, with the closest
    setting's variable suggested (difflib) when one is close."""
    known = {_PREFIX + name.upper() for name in settings} | NOT_SETTINGS
    for variable in sorted(env):
        if variable.startswith(_PREFIX) and variable not in known:
            close = difflib.get_close_matches(variable, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            yield variable, f"{variable} is not a setting{hint}"
