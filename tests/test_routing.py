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
    assert r.route_of("prod", "arn:not-an-arn") == Route(HOME, "us-east-1")


def test_credentials_by_account() -> None:
    r = routes()
    assert r.role_for(Route(HOME, "eu-west-1")) is None
    assert r.role_for(Route(OTHER, "eu-west-1")) == ROLE
    with pytest.raises(NoRoute, match="no route to account 333344445555"):
        r.role_for(Route("333344445555", "us-east-1"))


def test_without_home_account_the_default_credentials_call_every_account() -> None:
    r = routes(home=None, roles={})
    assert r.role_for(Route("333344445555", "eu-west-1")) is None
