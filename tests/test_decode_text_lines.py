"""The default text lines of ``docker events`` and ``podman events``; ``ctr`` lines stay ``ctr``."""

from __future__ import annotations

import pytest

from tests import decode_inputs as inputs
from tests.decode_inputs import Outcome, outcome
from worker.decode import RecordDecoder
from worker.decode import reasons as r
from worker.decode.registry import detect
from worker.decode.result import DecodeResult
from worker.decode.text_events import parse_attributes

ID = inputs.RUNTIME_ID
ECS = (
    "com.amazonaws.ecs.cluster=prod, com.amazonaws.ecs.container-name=web, "
    f"com.amazonaws.ecs.task-arn={inputs.TASK}"
)


def decode(line: str | bytes, fmt: str) -> DecodeResult:
    result = RecordDecoder().decode(line.encode() if isinstance(line, str) else line)
    assert result.format == fmt, result
    return result


# docker events -------------------------------------------------------------------------------


def test_a_docker_line() -> None:
    attributes = f"{ECS}, execDuration=3, exitCode=137, image=nginx, name=web"
    line = f"2024-01-02T03:04:05.123456789Z container die {ID} ({attributes})"
    result = decode(line, "docker-text")
    assert outcome(result) == [("event", "STOPPED", 137, None, False)]
    (event,) = result.events
    assert (event.cluster, event.task, event.observedAt) == ("prod", inputs.TASK, 1704164645_123456789)
    assert event.containers[0].runtimeId == ID


def test_the_clients_zone_offset() -> None:
    line = f"2024-01-02T04:04:05.123456789+01:00 container start {ID} ({ECS}, image=nginx, name=web)"
    assert decode(line, "docker-text").events[0].observedAt == 1704164645_123456789


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("create", ("event", "PENDING", None, None, False)),
        ("start", ("event", "RUNNING", None, None, False)),
        ("kill", ("event", None, None, None, True)),
        ("oom", ("event", None, None, "OutOfMemoryError: Container killed due to memory usage", False)),
        ("destroy", ("event", "STOPPED", None, None, False)),
        ("health_status: healthy", ("ignored", r.DOCKER_HEALTH)),
        ("exec_create: /bin/sh -c echo (a, b=c) done", ("ignored", r.DOCKER_EXEC)),
        ("exec_start: /bin/sh -c curl -f http://localhost", ("ignored", r.DOCKER_EXEC)),
        ("pause", ("ignored", "docker: pause (no container state change)")),
    ],
)
def test_docker_actions_with_spaces_and_parentheses(action: str, expected: Outcome) -> None:
    line = f"2024-01-02T03:04:05.123456789Z container {action} {ID} ({ECS}, image=nginx, name=web)"
    assert outcome(decode(line, "docker-text")) == [expected]


def test_values_with_commas_equals_and_parentheses() -> None:
    # Sorted keys: "a.note" sorts before "com.amazonaws...", and its value holds ", (x=y)" and ")".
    line = (
        f"2024-01-02T03:04:05.123456789Z container die {ID} "
        f"(a.note=one, two (x=y), and a=b), {ECS}, exitCode=1, image=nginx, name=web (prod))"
    )
    result = decode(line, "docker-text")
    assert outcome(result) == [("event", "STOPPED", 1, None, False)]
    attributes = parse_attributes(line[line.index("(") + 1 : -1], sorted_keys=True)
    assert attributes["a.note"] == "one, two (x=y), and a=b)"
    assert attributes["name"] == "web (prod)"
    assert attributes["com.amazonaws.ecs.task-arn"] == inputs.TASK


def test_a_label_value_holding_a_task_arn_key_cannot_fool_the_sorted_split() -> None:
    # "zz" sorts after every ECS key: a ", com.amazonaws.ecs.task-arn=" inside its value is a value.
    line = (
        f"2024-01-02T03:04:05.123456789Z container start {ID} ({ECS}, image=nginx, name=web, "
        f"zz=x, com.amazonaws.ecs.task-arn=arn:aws:ecs:eu-west-1:999999999999:task/evil/1)"
    )
    (event,) = decode(line, "docker-text").events
    assert event.task == inputs.TASK


def test_docker_lines_of_other_objects_and_without_attributes() -> None:
    network = "2024-01-02T03:04:05.123456789Z network connect 7dc8ac97d5d2 (container=abc, name=bridge)"
    assert outcome(decode(network, "docker-text")) == [("ignored", "docker: not a container event (network)")]
    image = "2024-01-02T03:04:05.123456789Z image pull nginx:latest (name=nginx)"
    assert outcome(decode(image, "docker-text")) == [("ignored", "docker: not a container event (image)")]
    bare = f"2024-01-02T03:04:05.123456789Z container start {ID}"
    assert outcome(decode(bare, "docker-text")) == [("ignored", r.DOCKER_NO_LABELS)]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"2024-01-02T03:04:05Z container start {ID} (name=web", "not closed"),
        ("2024-01-02T03:04:05Z container start web (name=web)", "no container id"),
        (f"2024-01-02T03:04:05Z container start {ID} (=web)", "do not open with key=value"),
        (f"2024-13-02T03:04:05Z container start {ID} (name=web)", "invalid"),
    ],
)
def test_malformed_docker_lines_are_bad(line: str, reason: str) -> None:
    result = decode(line, "unknown")
    assert len(result.bad) == 1
    assert reason in result.bad[0].reason
    assert not result.events


def test_docker_line_with_invalid_utf8_is_bad() -> None:
    result = RecordDecoder().decode(b"2024-01-02T03:04:05Z container start \xff\xfe")
    assert [b.error_class for b in result.bad] == ["DecodeError"]


# podman events -------------------------------------------------------------------------------


def test_a_podman_line() -> None:
    result = decode(inputs.podman_line("died"), "podman-text")
    assert outcome(result) == [("event", "STOPPED", None, None, False)]  # the text has no exit code
    (event,) = result.events
    assert (event.task, event.observedAt, event.containers[0].runtimeId) == (inputs.TASK, inputs.TIME_NS, ID)


def test_the_documented_podman_lines() -> None:
    # podman-events(1), "Show Podman events": truncated ids, a zone other than UTC; no ECS labels.
    lines = [
        b"2019-03-02 10:33:42.312377447 -0600 CST container create 34503c192940 "
        b"(image=docker.io/library/alpine:latest, name=friendly_allen)",
        b"2019-03-02 10:33:46.958768077 -0600 CST container init 34503c192940 "
        b"(image=docker.io/library/alpine:latest, name=friendly_allen)",
        b"2019-03-02 10:36:13.146899437 -0600 CST volume create cad6dc50e087 (image=, name=cad6dc50e087)",
        b"2019-03-02 10:44:29.601746633 -0600 CST pod create 1df5ebca7b44 (image=, name=confident_hawking)",
    ]
    result = RecordDecoder().decode(b"\n".join(lines))
    assert result.format == "podman-text"
    assert not result.bad
    assert result.ignored == [
        r.PODMAN_NO_LABELS,
        r.PODMAN_NO_LABELS,
        "podman: not a container event (volume)",
        "podman: not a container event (pod)",
    ]
    labelled = lines[0][:-1] + b", " + ECS.encode() + b")"
    (event,) = RecordDecoder().decode(labelled).events
    assert event.containers[0].runtimeId == "34503c192940"
    assert event.observedAt == 1551544422_312377447  # 16:33:42 UTC


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("create", ("event", "PENDING", None, None, False)),
        ("start", ("event", "RUNNING", None, None, False)),
        ("kill", ("event", None, None, None, True)),
        ("remove", ("event", "STOPPED", None, None, False)),
        ("init", ("ignored", "podman: init (no container state change)")),
        ("cleanup", ("ignored", "podman: cleanup (no container state change)")),
    ],
)
def test_podman_statuses(status: str, expected: Outcome) -> None:
    assert outcome(decode(inputs.podman_line(status), "podman-text")) == [expected]


def test_podman_health_line_with_a_log_full_of_punctuation() -> None:
    line = inputs.podman_line(
        "health_status", health_status="unhealthy", health_failing_streak="3", health_log="curl: (7) x, y=z)"
    )
    assert outcome(decode(line, "podman-text")) == [("ignored", r.PODMAN_HEALTH)]
    # Unsorted keys: ECS labels after a value holding ", k=" are still found.
    line = inputs.podman_line("start", note="a, b=c (d)")
    (event,) = decode(line, "podman-text").events
    assert (event.cluster, event.task, event.containers[0].containerName) == ("prod", inputs.TASK, "web")


def test_the_monotonic_reading_of_go_times() -> None:
    line = inputs.podman_line("start").replace(b" UTC ", b" UTC m=+12.000000001 ")
    assert decode(line, "podman-text").events[0].observedAt == inputs.TIME_NS


# Detection keeps ctr lines -------------------------------------------------------------------


def test_text_detection() -> None:
    ctr = b'2024-12-11 05:54:19.191684944 +0000 UTC moby /tasks/exit {"container_id":"x","id":"x"}'
    assert detect(ctr) == "ctr"
    # A containerd namespace named like a Podman type is still ctr: its topic starts with "/".
    assert detect(ctr.replace(b" moby ", b" container ")) == "ctr"
    assert detect(ctr.replace(b" UTC ", b" UTC m=+0.5 ")) == "ctr"
    assert detect(inputs.docker_line("start")) == "docker-text"
    assert detect(inputs.podman_line("start")) == "podman-text"
    assert detect(b"123") == "ctr"  # claimed by none: refused as a malformed ctr line


def test_a_record_of_all_three_kinds_of_lines() -> None:
    decoder = RecordDecoder()
    ctr = inputs.ctr_exit(3221225477)
    result = decoder.decode(b"\n".join([inputs.docker_line("start"), inputs.podman_line("kill"), ctr]))
    assert result.format == "mixed"
    assert outcome(result) == [
        ("event", "RUNNING", None, None, False),
        ("event", None, None, None, True),
        ("event", "STOPPED", -1073741819, None, False),  # attributed by the docker line
    ]
