"""Who and where a request acts, and the ARNs and identifiers of the local ECS.

A :class:`Scope` is the (account, Region) pair of one request: the Region comes from the SigV4
credential scope, the account from the endpoint's configuration. ARNs have ECS's shapes::

    cluster          arn:aws:ecs:<region>:<account>:cluster/<name>
    task             arn:aws:ecs:<region>:<account>:task/<cluster-name>/<32 hex id>
    container        arn:aws:ecs:<region>:<account>:container/<cluster-name>/<task id>/<uuid>
    task definition  arn:aws:ecs:<region>:<account>:task-definition/<family>:<revision>

State is keyed by scope (``LocalEcsEndpoint.ecs``): each account and Region has its own task
definitions and tasks, as in ECS.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.utils import ArnParser, InvalidArnException

__all__ = ["DEFAULT_ACCOUNT", "DEFAULT_CLUSTER", "Scope", "cluster_name", "resource_id"]

DEFAULT_ACCOUNT = "000000000000"
DEFAULT_CLUSTER = "default"


@dataclass(frozen=True, slots=True)
class Scope:
    """The account and Region of one request; builds ECS ARNs in them."""

    account: str
    region: str

    @classmethod
    def of_arn(cls, value: str) -> Scope | None:
        """The account and Region an ARN names (botocore's ``ArnParser``), or None for a name."""
        if not value.startswith("arn:"):
            return None
        try:
            arn = ArnParser().parse_arn(value)
        except InvalidArnException:
            return None
        return cls(arn["account"], arn["region"]) if arn["region"] else None

    def arn(self, resource: str) -> str:
        """``arn:aws:ecs:<region>:<account>:<resource>``."""
        return f"arn:aws:ecs:{self.region}:{self.account}:{resource}"

    def cluster_arn(self, cluster: str) -> str:
        """The ARN of a cluster given by name or ARN (an ARN is returned as given)."""
        return cluster if cluster.startswith("arn:") else self.arn(f"cluster/{cluster}")

    def task_arn(self, cluster: str, task_id: str) -> str:
        return self.arn(f"task/{cluster_name(cluster)}/{task_id}")

    def container_arn(self, cluster: str, task_id: str, container_id: str) -> str:
        return self.arn(f"container/{cluster_name(cluster)}/{task_id}/{container_id}")

    def task_definition_arn(self, family: str, revision: int) -> str:
        return self.arn(f"task-definition/{family}:{revision}")


def cluster_name(cluster: str | None) -> str:
    """A cluster's short name from its name or ARN; ``None`` or empty is ECS's ``default``."""
    if not cluster:
        return DEFAULT_CLUSTER
    if cluster.startswith("arn:") and ":cluster/" in cluster:
        return cluster.split(":cluster/", 1)[1]
    return cluster


def resource_id(value: str) -> str:
    """The last path segment: a task's id from its ARN (either ARN format) or the id itself."""
    return value.rsplit("/", 1)[-1]
