"""Podman's native events (``podman events --format json``): detection, every status, times."""

from __future__ import annotations

import json

import pytest

from tests import decode_inputs as inputs
from tests.decode_inputs import Outcome, outcome
from worker.decode import RecordDecoder
from worker.decode import reasons as r
from worker.decode.event_builder import OOM_REASON
from worker.decode.podman import PODMAN_NO_STATE_CHANGE
from worker.decode.result import DecodeResult


def decode(record: bytes) -> DecodeResult:
    result = RecordDecoder().decode(record)
    assert result.format in ("podman", "unknown"), result.format
    return result


STATUSES: list[tuple[str, Outcome]] = [
    ("create", ("event", "PENDING", None, None, False)),
    ("start", ("event", "RUNNING", None, None, False)),
    ("stop", ("event", "STOPPED", None, None, False)),
    ("remove", ("event", "STOPPED", None, None, False)),  # without the ContainerExitCode Podman sets
    ("kill", ("event", None, None, None, True)),
    ("restart", ("ignored", r.PODMAN_RESTART)),
    ("health_status", ("ignored", r.PODMAN_HEALTH)),
    ("exec", ("ignored", r.PODMAN_EXEC)),
    ("exec_died", ("ignored", r.PODMAN_EXEC)),
    ("auto-update", ("ignored", r.PODMAN_UNKNOWN_STATUS)),
    ("frobnicate", ("ignored", r.PODMAN_UNKNOWN_STATUS)),
    *(
        (status, ("ignored", f"podman: {status} (no container state change)"))
        for status in sorted(PODMAN_NO_STATE_CHANGE)
    ),
]


@pytest.mark.parametrize(("status", "expected"), STATUSES)
def test_every_status(status: str, expected: Outcome) -> None:
    result = decode(inputs.podman_json(status))
    assert outcome(result) == [expected]
    for event in result.events:
        assert (event.cluster, event.task, event.observedAt) == (inputs.CLUSTER, inputs.TASK, inputs.TIME_NS)
        assert event.containers[0].runtimeId == inputs.RUNTIME_ID
        assert event.containers[0].containerName == "web"


def test_every_documented_container_status_is_mapped() -> None:
    # podman-events(1): "The container event type reports the follow statuses".
    documented = [
        "attach",
        "checkpoint",
        "cleanup",
        "commit",
        "connect",
        "create",
        "died",
        "disconnect",
        "exec",
        "exec_died",
        "exited",
        "export",
        "import",
        "init",
        "kill",
        "mount",
        "pause",
        "prune",
        "remove",
        "rename",
        "restart",
        "restore",
        "start",
        "stop",
        "sync",
        "unmount",
        "unpause",
        "update",
    ]
    for status in documented:
        assert outcome(decode(inputs.podman_json(status, exit_code=0))) != [
            ("ignored", r.PODMAN_UNKNOWN_STATUS)
        ], status


@pytest.mark.parametrize("status", ["died", "exited"])
def test_died_carries_the_exit_code_and_the_oom_kill(status: str) -> None:
    assert outcome(decode(inputs.podman_json(status, exit_code=137))) == [
        ("event", "STOPPED", 137, None, False)
    ]
    oom = inputs.podman_json(status, exit_code=137, OOMKilled=True)
    assert outcome(decode(oom)) == [("event", "STOPPED", 137, OOM_REASON, False)]
    # Podman before 4.4 left ContainerExitCode out when it was 0 (int with omitempty).
    no_code = inputs.podman_json(status, OOMKilled=False)
    assert outcome(decode(no_code)) == [("event", "STOPPED", 0, None, False)]


def test_remove_carries_the_exit_code_too() -> None:
    # libpod/events.go sets ContainerExitCode on remove events from the state database.
    assert outcome(decode(inputs.podman_json("remove", exit_code=3221225477))) == [
        ("event", "STOPPED", -1073741819, None, False)
    ]


DIGEST = "sha256:" + "0f" * 32
INSPECT = {
    "Id": inputs.RUNTIME_ID,
    "Image": "sha256:" + "1e" * 32,  # the image's config digest: not what ECS reports
    "ImageDigest": DIGEST,
    "ImageName": "docker.io/library/nginx:latest",
    "NetworkSettings": {
        "Ports": {
            "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
            "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
            "443/tcp": None,
            "9/sctp": [{"HostIp": "", "HostPort": "9"}],
            "²/tcp": [{"HostIp": "", "HostPort": "²"}],
            "81/tcp": [{"HostIp": "", "HostPort": ""}],
        }
    },
}


def test_inspect_data_gives_the_digest_and_the_port_bindings() -> None:
    create = inputs.podman_json("create", ContainerInspectData=json.dumps(INSPECT))
    (event,) = decode(create).events
    (change,) = event.containers
    assert (change.status, change.imageDigest) == ("PENDING", DIGEST)
    assert [(b.bindIP, b.containerPort, b.hostPort, b.protocol) for b in change.networkBindings or ()] == [
        ("127.0.0.1", 53, 5353, "udp"),
        ("0.0.0.0", 80, 8080, "tcp"),
        ("::", 80, 8080, "tcp"),
    ]


def test_without_inspect_data_nothing_is_invented() -> None:
    (event,) = decode(inputs.podman_json("create")).events
    assert (event.containers[0].imageDigest, event.containers[0].networkBindings) == (None, None)
    bare = dict(INSPECT, ImageDigest="", NetworkSettings={"Ports": {}})
    (event,) = decode(inputs.podman_json("create", ContainerInspectData=json.dumps(bare))).events
    assert (event.containers[0].imageDigest, event.containers[0].networkBindings) == (None, None)
    result = decode(inputs.podman_json("create", ContainerInspectData="{not json"))
    assert outcome(result) == [("bad", "DecodeError")]


def test_times() -> None:
    doc = json.loads(inputs.podman_json("start"))
    del doc["timeNano"]
    assert decode(json.dumps(doc).encode()).events[0].observedAt == (inputs.TIME_NS // 10**9) * 10**9
    # Podman 3 wrote the libpod event: "Time" as RFC 3339 with the local offset, no time/timeNano.
    del doc["time"]
    doc["Time"] = "2019-04-27T22:47:00.849932843-04:00"
    assert decode(json.dumps(doc).encode()).events[0].observedAt == 1556419620_849932843
    del doc["Time"]
    result = decode(json.dumps(doc).encode())
    assert outcome(result) == [("bad", "ValidationError")]
    assert "podman" in result.bad[0].reason


def test_other_types_unlabelled_and_null_attributes() -> None:
    # From Podman's own tests (test/system/090-events.bats): an image pull, Attributes null.
    pull = (
        b'{"Name":"busybox","Status":"pull","time":1649237202,"timeNano":1649237202723000000,'
        b'"Type":"image","Attributes":null}'
    )
    assert outcome(decode(pull)) == [("ignored", "podman: not a container event (image)")]
    rotate = (
        b'{"Name":"/tmp/events.log","Status":"log-rotation","time":1649237202,"timeNano":1649237202723000000,'
        b'"Type":"system","Attributes":{"io.podman.event.rotate":"begin"}}'
    )
    assert outcome(decode(rotate)) == [("ignored", "podman: not a container event (system)")]
    pod = inputs.podman_json("create", Type="pod")
    assert outcome(decode(pod)) == [("ignored", "podman: not a container event (pod)")]
    assert outcome(decode(inputs.podman_json("start", labels={}))) == [("ignored", r.PODMAN_NO_LABELS)]
    assert outcome(decode(inputs.podman_json("start", Attributes=None))) == [("ignored", r.PODMAN_NO_LABELS)]


def test_the_documented_json_lines_are_podman_events() -> None:
    # podman-events(1), "Show Podman events in JSON Lines format" (no labels: not ECS containers).
    line = (
        b'{"ID":"683b0909d556a9c02fa8cd2b61c3531a965db42158627622d1a67b391964d519",'
        b'"Image":"localhost/myshdemo:latest","Name":"agitated_diffie","Status":"cleanup",'
        b'"Time":"2019-04-27T22:47:00.849932843-04:00","Type":"container"}'
    )
    result = decode(line)
    assert result.format == "podman"
    assert outcome(result) == [("ignored", r.PODMAN_NO_LABELS)]


def test_image_digest_from_a_pinned_image() -> None:
    digest = "sha256:" + "ab" * 32
    event = decode(inputs.podman_json("start", Image=f"docker.io/library/nginx@{digest}")).events[0]
    assert event.containers[0].imageDigest == digest
    assert decode(inputs.podman_json("start")).events[0].containers[0].imageDigest is None


def test_the_docker_compatible_shape_stays_docker() -> None:
    result = RecordDecoder().decode(inputs.podman_compat("died", containerExitCode="143"))
    assert result.format == "docker"
    assert outcome(result) == [("event", "STOPPED", 143, None, False)]
