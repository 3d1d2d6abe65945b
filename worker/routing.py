"""Where a task's calls go: the account and Region in its ARN, and the credentials for that account.

ECS's quota, its state and its permissions are per account and Region, and a task's ARN names
both (``arn:aws:ecs:<region>:<account>:task/<cluster>/<id>``, read with botocore's own
``ArnParser``); a task named by id alone takes its cluster's ARN, and failing that the home route
(``home_account``, ``region``). Pure: no I/O here (the clients are in ``worker.ecs_clients``).

Which credentials may call an account:

- ``account_roles`` maps an account to a role ARN to assume there (STS ``AssumeRole``, from the
  default credentials);
- the default credentials (the SDK's chain, IRSA included) call ``home_account``; when it is unset
  (a single-account deployment need not name it; ``account_roles`` then must be empty, see
  ``worker.config``) they call every account;
- any other account has no route: its tasks get a ``rejected`` outcome with the reason, and no
  call is ever made with another account's credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from botocore.utils import ArnParser, InvalidArnException

__all__ = ["NO_ROUTE", "NoRoute", "Route", "Routes"]

NO_ROUTE = "NoRouteForAccount"
"""The outcome's ``errorCode`` for a task whose account has no route."""

_PARSER = ArnParser()


@dataclass(frozen=True, slots=True)
class Route:
    """One account and Region: the unit of ECS's quota, of a client and of a rate budget.
    ``account`` is empty when unknown (a task named by id alone, no ``home_account``)."""

    account: str
    region: str

    def __str__(self) -> str:
        return f"{self.account or 'default'}/{self.region}"


class NoRoute(Exception):
    """No credentials may call ``route.account``: the message says why (``NO_ROUTE``)."""

    def __init__(self, route: Route, reason: str) -> None:
        super().__init__(reason)
        self.route, self.reason = route, reason


class Routes:
    """Routes of this process: ``region`` and ``home_account`` for tasks named by id alone,
    ``account_roles`` (account -> role ARN) for the accounts reached through a role."""

    def __init__(self, *, region: str, home_account: str | None, account_roles: Mapping[str, str]) -> None:
        self.home = Route(home_account or "", region)
        self.account_roles = dict(account_roles)
        self._cache: dict[tuple[str, str], Route] = {}

    def route_of(self, cluster: str, task: str) -> Route:
        """The route of a task: its ARN's account and Region, else its cluster ARN's, else home."""
        route = self._cache.get((cluster, task))
        if route is None:
            route = self._parsed(task) or self._parsed(cluster) or self.home
            if len(self._cache) >= 65_536:
                self._cache.clear()  # a bound, not an LRU: parsing again is cheap
            self._cache[cluster, task] = route
        return route

    def role_for(self, route: Route) -> str | None:
        """The role ARN to assume for ``route``, or None for the default credentials.

        Raises ``NoRoute`` when neither may call its account (see the module docstring)."""
        role = self.account_roles.get(route.account)
        if role is not None:
            return role
        if not self.home.account or route.account in ("", self.home.account):
            return None
        raise NoRoute(
            route,
            f"no route to account {route.account}: it is neither home_account "
            f"({self.home.account}) nor in account_roles",
        )

    def _parsed(self, value: str) -> Route | None:
        if not value.startswith("arn:"):
            return None
        try:
            arn = _PARSER.parse_arn(value)
        except InvalidArnException:
            return None
        if not arn["region"]:
            return None
        return Route(arn["account"], arn["region"])
