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

Nor has a task whose ARNs do not name one account and Region plainly, since any guess could be
another account: a task or cluster ARN that cannot be read (no partition, Region or account), a task ARN
and a cluster ARN that disagree (the agent's task and cluster are always in one account and
Region), or an ARN of another partition than the home Region's (``aws-cn``, ``aws-us-gov``: the
credentials and roles of one partition cannot call another, and a role cannot be assumed across
partitions).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache

from botocore.exceptions import UnknownRegionError
from botocore.loaders import create_loader
from botocore.regions import EndpointResolver
from botocore.utils import ArnParser, InvalidArnException

__all__ = ["NO_ROUTE", "NoRoute", "Route", "Routes", "partition_of", "role_partition_problems"]

NO_ROUTE = "NoRouteForAccount"
"""The outcome's ``errorCode`` for a task whose account has no route."""

_PARSER = ArnParser()


@dataclass(frozen=True, slots=True)
class Route:
    """One account and Region: the unit of ECS's quota, of a client and of a rate budget.
    ``account`` is empty when unknown (a task named by id alone, no ``home_account``);
    ``partition`` is the ARN's (``aws``, ``aws-cn``, ``aws-us-gov``...); ``problem``, when not
    empty, says why the task's ARNs name no account to call (module docstring)."""

    account: str
    region: str
    partition: str = "aws"
    problem: str = ""

    def __str__(self) -> str:
        return f"{self.account or 'default'}/{self.region}"


@cache
def _endpoints() -> EndpointResolver:
    """botocore's endpoint data, read without a session (no profile or variable is involved)."""
    return EndpointResolver(create_loader().load_data("endpoints"))


@cache
def partition_of(region: str) -> str | None:
    """The partition of a Region by botocore's endpoint data (``cn-north-1`` -> ``aws-cn``), or
    None for a Region it does not know."""
    try:
        return str(_endpoints().get_partition_for_region(region))
    except UnknownRegionError:
        return None


class NoRoute(Exception):
    """No credentials may call ``route.account``: the message says why (``NO_ROUTE``)."""

    def __init__(self, route: Route, reason: str) -> None:
        super().__init__(reason)
        self.route, self.reason = route, reason


def role_partition_problems(region: str | None, account_roles: Mapping[str, str]) -> Iterator[str]:
    """What is wrong with the partitions of ``account_roles`` (account -> role ARN): a partition
    botocore does not know, or another than ``region``'s (when given): STS assumes a role in its
    own partition only."""
    if not account_roles:
        return
    known = _endpoints().get_available_partitions()
    home = (partition_of(region) or "aws") if region else None
    for account, role in sorted(account_roles.items()):
        partition = role.split(":")[1]
        if partition not in known:
            yield f"the role for account {account} names partition {partition}, none of {', '.join(known)}"
        elif home is not None and partition != home:
            yield (
                f"the role for account {account} is in partition {partition}, and region {region} "
                f"is in {home}: a role cannot be assumed across partitions"
            )


class Routes:
    """Routes of this process: ``region`` and ``home_account`` for tasks named by id alone,
    ``account_roles`` (account -> role ARN) for the accounts reached through a role. The home
    partition is ``region``'s (``partition_of``; ``aws`` for a Region botocore does not know;
    none without a Region, a dry run's: then no partition is refused)."""

    def __init__(self, *, region: str, home_account: str | None, account_roles: Mapping[str, str]) -> None:
        partition = (partition_of(region) or "aws") if region else ""  # "": any (a dry run)
        self.home = Route(home_account or "", region, partition)
        self.account_roles = dict(account_roles)
        self._cache: dict[tuple[str, str], Route] = {}

    def route_of(self, cluster: str, task: str) -> Route:
        """The route of a task: its ARN's account and Region, else its cluster ARN's, else home; a
        route with a ``problem`` when its ARNs cannot be read or disagree (module docstring)."""
        route = self._cache.get((cluster, task))
        if route is None:
            route = self._route(cluster, task)
            if len(self._cache) >= 65_536:
                self._cache.clear()  # a bound, not an LRU: parsing again is cheap
            self._cache[cluster, task] = route
        return route

    def role_for(self, route: Route) -> str | None:
        """The role ARN to assume for ``route``, or None for the default credentials.

        Raises ``NoRoute`` when neither may call its account (see the module docstring)."""
        reason = self.reason(route)
        if reason is not None:
            raise NoRoute(route, reason)
        return self.account_roles.get(route.account)

    def reason(self, route: Route) -> str | None:
        """Why no credentials of this process may call ``route``, or None when some may."""
        if route.problem:
            return f"no route: {route.problem}"
        if self.home.partition and route.partition not in ("", self.home.partition):
            return (
                f"no route to partition {route.partition} (Region {route.region}): this process's "
                f"credentials are in partition {self.home.partition} (Region {self.home.region})"
            )
        if route.account in self.account_roles or not self.home.account:
            return None
        if route.account in ("", self.home.account):
            return None
        return (
            f"no route to account {route.account}: it is neither home_account "
            f"({self.home.account}) nor in account_roles"
        )

    def _route(self, cluster: str, task: str) -> Route:
        of_task, of_cluster = _read(task), _read(cluster)
        for route in (of_task, of_cluster):
            if route is not None and route.problem:
                return route
        if of_task is not None and of_cluster is not None and of_task != of_cluster:
            return _unroutable(
                of_task,
                f"the task ARN {task} and its cluster ARN {cluster} disagree on the account or Region",
            )
        return of_task or of_cluster or self.home


def _read(value: str) -> Route | None:
    """The route an ARN names; None for a name or an id (no ARN); a route with a ``problem`` for
    an ARN that names no partition, no Region or no account."""
    if not value.startswith("arn:"):
        return None
    try:
        arn = _PARSER.parse_arn(value)
    except InvalidArnException:
        return _unroutable(Route("", ""), f"the ARN {value} cannot be read")
    route = Route(arn["account"], arn["region"], arn["partition"])
    if not (arn["partition"] and arn["region"] and arn["account"]):
        return _unroutable(
            route, f"the ARN {value} cannot be read: it names no partition, no Region or no account"
        )
    return route


def _unroutable(route: Route, problem: str) -> Route:
    return Route(route.account, route.region, route.partition, problem)
