"""Routing by the task's ARN (worker.routing): the account and Region a call goes to, and which
credentials may call that account. Pure."""

from __future__ import annotations

import pytest

from worker.routing import NoRoute, Route, Routes

HOME = "111122223333"
OTHER = "222233334444"
ROLE = f"arn:aws:iam::{OTHER}:role/ecs-state-worker"


def routes(home: str | None = HOME, roles: dict[str, str] | None = None) -> Routes:
    return Routes(
        region="us-east-1", home_account=home, account_roles={OTHER: ROLE} if roles is None else roles
    )


def test_the_task_arn_names_account_and_region() -> None:
    r = routes()
    task = f"arn:aws:ecs:eu-west-1:{OTHER}:task/prod/0f2c"
    assert r.route_of("prod", task) == Route(OTHER, "eu-west-1")
    # The old task ARN format too (no cluster in it).
    assert r.route_of("prod", f"arn:aws:ecs:ap-south-1:{HOME}:task/0f2c") == Route(HOME, "ap-south-1")


def test_a_task_named_by_id_takes_its_cluster_arn_then_home() -> None:
    r = routes()
    assert r.route_of(f"arn:aws:ecs:eu-central-1:{OTHER}:cluster/prod", "0f2c") == Route(
        OTHER, "eu-central-1"
    )
    assert r.route_of("prod", "0f2c") == Route(HOME, "us-east-1")


def test_credentials_by_account() -> None:
    r = routes()
    assert r.role_for(Route(HOME, "eu-west-1")) is None
    assert r.role_for(Route(OTHER, "eu-west-1")) == ROLE
    with pytest.raises(NoRoute, match="no route to account 333344445555"):
        r.role_for(Route("333344445555", "us-east-1"))


def test_without_home_account_the_default_credentials_call_every_account() -> None:
    r = routes(home=None, roles={})
    assert r.role_for(Route("333344445555", "eu-west-1")) is None


def test_an_arn_that_cannot_be_read_is_no_route_to_the_home_account() -> None:
    """A cluster ARN with no Region names an account all the same: falling back to the home route
    would call the home account about another account's cluster."""
    r = routes()
    for cluster, task in [
        ("arn:aws:ecs::333344445555:cluster/prod", "0f2c"),
        ("arn:aws:ecs:eu-west-1::cluster/prod", "0f2c"),
        ("prod", "arn:not-an-arn"),
        ("prod", f"arn::ecs:eu-west-1:{HOME}:task/prod/0f2c"),  # no partition: not aws's by default
    ]:
        with pytest.raises(NoRoute, match="cannot be read"):
            r.role_for(r.route_of(cluster, task))


def test_task_and_cluster_arns_that_disagree_have_no_route() -> None:
    """The agent's cluster and task are in one account and Region: ARNs that disagree are bad
    input, and neither names the account to call."""
    r = routes()
    task = f"arn:aws:ecs:eu-west-1:{HOME}:task/prod/0f2c"
    for cluster in (
        f"arn:aws:ecs:us-west-2:{HOME}:cluster/prod",
        f"arn:aws:ecs:eu-west-1:{OTHER}:cluster/prod",
    ):
        with pytest.raises(NoRoute, match="disagree"):
            r.role_for(r.route_of(cluster, task))
    assert r.role_for(r.route_of(f"arn:aws:ecs:eu-west-1:{HOME}:cluster/prod", task)) is None


def test_a_task_in_another_partition_has_no_route() -> None:
    """Credentials (and roles) of one partition cannot call another's: China and GovCloud tasks
    are rejected by a process whose Region is in the aws partition, and the other way round."""
    r = routes()
    china = f"arn:aws-cn:ecs:cn-north-1:{HOME}:task/prod/0f2c"
    gov = f"arn:aws-us-gov:ecs:us-gov-west-1:{OTHER}:task/prod/0f2c"
    for task in (china, gov):
        with pytest.raises(NoRoute, match=r"partition aws-(cn|us-gov)"):
            r.role_for(r.route_of("prod", task))
    in_china = Routes(region="cn-north-1", home_account=HOME, account_roles={})
    assert in_china.role_for(in_china.route_of("prod", china)) is None
    assert in_china.route_of("prod", china) == Route(HOME, "cn-north-1", "aws-cn")
    with pytest.raises(NoRoute, match="partition aws "):
        in_china.role_for(in_china.route_of("prod", f"arn:aws:ecs:eu-west-1:{HOME}:task/prod/0f2c"))


def test_without_a_region_no_partition_is_refused() -> None:
    """A dry run may go without a Region (no call is made): then no partition is the home one,
    and a China task is routed like any other."""
    r = Routes(region="", home_account=None, account_roles={})
    china = f"arn:aws-cn:ecs:cn-north-1:{HOME}:task/prod/0f2c"
    assert r.role_for(r.route_of("prod", china)) is None
