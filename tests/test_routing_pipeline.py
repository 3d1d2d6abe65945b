"""Routing through the whole worker: canonical events of tasks in two Regions and two accounts
(and one account without a route) read from the embedded broker, submitted to the local ECS
endpoint (strict about scopes, serving STS ``AssumeRole``), outcomes written back. Each task
reaches its own account and Region; the task without a route gets a ``rejected`` outcome with
``NoRouteForAccount`` and costs no call; every offset is committed."""

from __future__ import annotations

import hashlib
import time

import msgspec
from aiokafka import AIOKafkaProducer

from devkit.broker import EmbeddedBroker
from devkit.ecs_endpoint import DEFAULT_ACCOUNT, LocalEcsEndpoint
from devkit.topics import read_all
from schemas.events import ContainerChange, TaskEvent
from schemas.records import Outcome
from tests.conftest import Topics, worker_settings
from tests.support import group_committed, running, wait_for
from worker.pipeline import Worker

OTHER = "222233334444"
STRANGER = "333344445555"
ROLE = f"arn:aws:iam::{OTHER}:role/ecs-state-worker"
REGIONS = ("us-east-1", "eu-west-1")


def arn(account: str, region: str) -> str:
    task_id = hashlib.md5(f"{account}/{region}".encode()).hexdigest()
    return f"arn:aws:ecs:{region}:{account}:task/prod/{task_id}"


async def test_every_task_is_reported_in_its_own_account_and_region(
    broker: EmbeddedBroker, topics: Topics
) -> None:
    endpoint = LocalEcsEndpoint(seed=9, strict_scope=True)
    await endpoint.start()
    try:
        routed = [arn(account, region) for account in (DEFAULT_ACCOUNT, OTHER) for region in REGIONS]
        stranger = arn(STRANGER, "eu-west-1")
        settings = worker_settings(
            broker,
            endpoint,
            topics,
            home_account=DEFAULT_ACCOUNT,
            account_roles={OTHER: ROLE},
            sts_endpoint_url=endpoint.url,
            describe_tasks=False,
        )
        async with running(Worker(settings)):
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            try:
                for status in ("PENDING", "RUNNING"):
                    for task in [*routed, stranger]:
                        change = ContainerChange(containerName="app", status=status)
                        event = TaskEvent(
                            cluster="prod", task=task, observedAt=time.time_ns(), containers=(change,)
                        )
                        await producer.send_and_wait(
                            topics.input, msgspec.json.encode(event), key=task.encode()
                        )
            finally:
                await producer.stop()
            await wait_for(
                lambda: endpoint.state()["accepted"] == len(routed), 30, "the routed tasks reported"
            )
            outcomes = [
                msgspec.json.decode(r.value, type=Outcome)
                for r in await read_all(broker.bootstrap, topics.outcome)
            ]
        by_task = {o.task: o for o in outcomes}
        assert {task: by_task[task].result for task in routed} == dict.fromkeys(routed, "acknowledged")
        assert (by_task[stranger].result, by_task[stranger].errorCode) == ("rejected", "NoRouteForAccount")
        scopes = {scope: view["tasks"] for scope, view in endpoint.state()["scopes"].items()}
        assert scopes == {
            f"{account}/{region}": {arn(account, region): "RUNNING"}
            for account in (DEFAULT_ACCOUNT, OTHER)
            for region in REGIONS
        }
        state = endpoint.state()
        assert (state["calls"], state["scope_mismatches"]) == (len(routed), 0)
        assert endpoint.identities.assumed.get(ROLE, 0) >= 1
        committed = await group_committed(broker.bootstrap, topics)
        assert sum(committed.values()) == 2 * (len(routed) + 1)
    finally:
        await endpoint.stop()


async def test_a_task_without_a_route_is_rejected_at_once_and_is_no_describe_fallback(
    broker: EmbeddedBroker, topics: Topics
) -> None:
    """A task met mid-life (ECS's view wanted) in an account with no route: neither described nor
    reported, rejected without waiting for settle_ms, and not counted as a knowledge fallback
    (whose alert is about describe permissions)."""
    endpoint = LocalEcsEndpoint(seed=9, strict_scope=True)
    await endpoint.start()
    try:
        stranger = arn(STRANGER, "eu-west-1")
        settings = worker_settings(broker, endpoint, topics, home_account=DEFAULT_ACCOUNT, settle_ms=600_000)
        async with running(Worker(settings)) as worker:
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            try:
                change = ContainerChange(containerName="app", status="RUNNING")
                event = TaskEvent(
                    cluster="prod", task=stranger, observedAt=time.time_ns(), containers=(change,)
                )
                await producer.send_and_wait(topics.input, msgspec.json.encode(event), key=stranger.encode())
            finally:
                await producer.stop()
            await wait_for(
                lambda: worker.metrics.totals().get("submissions_rejected", 0) >= 1, 30, "the rejection"
            )
            await wait_for(lambda: worker.pending_work() == 0, 30, "the stranger's record resolved")
            fallbacks = sum(
                sample.value
                for family in worker.metrics.registry.collect()
                if family.name == "ecs_state_worker_knowledge_fallbacks"
                for sample in family.samples
                if sample.name.endswith("_total")
            )
        outcomes = [
            msgspec.json.decode(r.value, type=Outcome)
            for r in await read_all(broker.bootstrap, topics.outcome)
        ]
        assert [(o.task, o.result, o.errorCode) for o in outcomes] == [
            (stranger, "rejected", "NoRouteForAccount")
        ]
        assert fallbacks == 0
        assert endpoint.state()["calls"] == 0
        described = endpoint.state()["operations"].get("DescribeTasks", {"calls": 0})
        assert described["calls"] == 0
    finally:
        await endpoint.stop()
