"""The worker's ECS client configuration (worker.submit.client_config), which the benchmark's bare
loop shares: the pool sized to the concurrency, botocore's retries and validation off."""

from __future__ import annotations

import pytest
from botocore.exceptions import EndpointConnectionError

from devkit.broker import free_port
from worker.config import Settings
from worker.submit import USER_AGENT, client_config, open_ecs_client


async def test_the_clients_are_built_with_client_config() -> None:
    settings = Settings(concurrency=17, call_timeout_ms=2_500, region="eu-west-1")
    expected = client_config(settings, region="ap-south-1")
    async with open_ecs_client(settings, region="ap-south-1") as client:
        config = client.meta.config
        assert client.meta.region_name == "ap-south-1"
    for name in ("max_pool_connections", "retries", "connect_timeout", "read_timeout"):
        assert getattr(config, name) == getattr(expected, name), name
    assert config.max_pool_connections == 17
    assert config.user_agent.startswith(USER_AGENT)  # botocore appends its own name
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (config.connect_timeout, config.read_timeout) == (2.5, 2.5)


async def test_parameters_are_not_validated_again() -> None:
    """A request botocore would refuse (a number where the model has a string) is sent as it is:
    the worker's requests are validated when they are built (``schemas.ecs``)."""
    settings = Settings(region="us-east-1", ecs_endpoint_url=f"http://127.0.0.1:{free_port()}")
    async with open_ecs_client(settings) as client:
        with pytest.raises(EndpointConnectionError):  # nobody listens: it got as far as sending
            await client.submit_task_state_change(cluster=5, task="t", status="RUNNING")


def test_the_region_defaults_to_the_setting() -> None:
    assert client_config(Settings(region="eu-west-1")).region_name == "eu-west-1"
