"""The real samples in tests/data/samples (a copy of /work/shared/samples): what each line becomes.

The samples carry no ECS labels, so every container event of them is ignored as unlabelled;
labelled variants (the labels the ECS agent sets, added to the real lines) check the
mapping onto statuses, exit codes and reasons, Metricbeat's de-dotted labels, the Fluent Bit record
that carried eight events, and containerd attribution through a labelled Docker event.
"""

from __future__ import annotations

import calendar
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from schemas.events import ContainerChange, TaskEvent
from worker.decode import RecordDecoder
from worker.decode import reasons as r
from worker.decode.bad_items import BAD_ITEM_CLASSES
from worker.decode.result import DecodeResult

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "samples"
_LOCAL = Path(__file__).resolve().parent / "data" / "samples"
SAMPLES = _LOCAL if _LOCAL.is_dir() else _SHARED
SAMPLE_FILES = (
    "docker_events.jsonl",
    "podman_compat_events.jsonl",
    "shipped_metricbeat_docker_event.jsonl",
    "containerd_ctr_events.txt",
    "ecs_task_state_change_events.jsonl",
)

CLUSTER = "arn:aws:ecs:us-west-2:111122223333:cluster/prod"
TASK = "arn:aws:ecs:us-west-2:111122223333:task/prod/0123456789abcdef0123456789abcdef"
LABELS = {
    "com.amazonaws.ecs.cluster": CLUSTER,
    "com.amazonaws.ecs.task-arn": TASK,
    "com.amazonaws.ecs.container-name": "web",
    "com.amazonaws.ecs.task-definition-family": "web",
    "com.amazonaws.ecs.task-definition-version": "7",
}
OOM = "OutOfMemoryError: Container killed due to memory usage"
MOBY_ID = "f66234e7b80d027b586b17e5001a197cad5a8a5b0cb1d86ee879143b1fd829ef"
K8S_ID = "22289fcb84d31745188db683631c7e49a92b4539fb1b49d5e46a3021ef724ece"

Outcome = tuple[Any, ...]


def lines(name: str) -> list[bytes]:
    return (SAMPLES / name).read_bytes().splitlines()


def line(name: str, number: int) -> bytes:
    """Line ``number`` (1-based, as in SOURCES.md) of a sample file."""
    return lines(name)[number - 1]


def utc_ns(y: int, mo: int, d: int, h: int, mi: int, s: int, nanos: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1_000_000_000 + nanos


def labelled(raw: bytes, labels: dict[str, str] = LABELS, **changes: Any) -> bytes:
    """A Docker/Podman line with ECS labels added to ``Actor.Attributes``; ``changes`` set
    top-level members (``Action``...) or, with an ``attr_`` prefix, attributes."""
    doc = json.loads(raw)
    attributes = doc["Actor"]["Attributes"]
    attributes.update(labels)
    for key, value in changes.items():
        if key.startswith("attr_"):
            attributes[key[5:]] = value
        else:
            doc[key] = value
    return json.dumps(doc).encode()


def with_id(raw: bytes, runtime_id: str) -> bytes:
    doc = json.loads(raw)
    doc["Actor"]["ID"] = doc["id"] = runtime_id
    return json.dumps(doc).encode()


def outcome(result: DecodeResult) -> list[Outcome]:
    """A summary: ("event", containerName, status, exitCode, reason), ("ignored", reason),
    ("bad", error_class)."""
    out: list[Outcome] = []
    for event in result.events:
        for c in event.containers:
            stop = ("stop requested",) * c.stopRequested
            out.append(("event", c.containerName, c.status, c.exitCode, c.reason, *stop))
    out += [("ignored", reason) for reason in result.ignored]
    out += [("bad", bad.error_class) for bad in result.bad]
    return out


def check(result: DecodeResult) -> DecodeResult:
    """Invariants of every result: bad items explained, events valid per schemas.events."""
    assert result.events or result.ignored or result.bad
    for bad in result.bad:
        assert bad.reason
        assert bad.error_class in BAD_ITEM_CLASSES
    for event in result.events:
        assert msgspec.json.decode(msgspec.json.encode(event), type=TaskEvent) == event
    return result


def decode(raw: bytes, decoder: RecordDecoder | None = None, **kwargs: Any) -> DecodeResult:
    return check((decoder or RecordDecoder()).decode(raw, **kwargs))


def only_change(result: DecodeResult) -> tuple[TaskEvent, ContainerChange]:
    assert len(result.events) == 1, outcome(result)
    (event,) = result.events
    assert len(event.containers) == 1
    return event, event.containers[0]


NO_LABELS = ("ignored", r.DOCKER_NO_LABELS)
NOT_ATTRIBUTED = ("ignored", r.CONTAINERD_NOT_ATTRIBUTED)

# What every line of every sample file becomes, decoded alone by a fresh decoder.
SAMPLE_TABLE: dict[str, list[tuple[str, Outcome]]] = {
    "docker_events.jsonl": [
        ("docker", NO_LABELS),  # create
        ("docker", NO_LABELS),  # attach
        ("docker", ("ignored", "docker: not a container event (network)")),
        ("docker", NO_LABELS),  # start
        ("docker", ("ignored", "docker: not a container event (network)")),
        ("docker", NO_LABELS),  # die
        ("docker", NO_LABELS),  # destroy
        ("docker", ("ignored", "docker: not a container event (image)")),
        ("docker", NO_LABELS),  # die 0
        ("docker", NO_LABELS),  # health_status: healthy
        ("docker", NO_LABELS),  # kill
        ("docker", NO_LABELS),  # die 137
    ],
    "podman_compat_events.jsonl": [
        ("docker", ("ignored", "docker: not a container event (image)")),
        ("docker", NO_LABELS),  # create
        ("docker", NO_LABELS),  # exec_died
    ],
    "shipped_metricbeat_docker_event.jsonl": [("metricbeat", NO_LABELS)],
    "containerd_ctr_events.txt": [
        ("ctr", ("ignored", r.CONTAINERD_EXEC_EXIT)),
        ("ctr", ("ignored", r.CONTAINERD_EXEC)),
        ("ctr", ("ignored", r.CONTAINERD_EXEC)),
        ("ctr", ("ignored", r.CONTAINERD_EXEC_EXIT)),
        ("ctr", NOT_ATTRIBUTED),  # init exit, 137: no labelled docker event seen
        ("ctr", ("ignored", r.CONTAINERD_TASK_DELETE)),
        ("ctr", ("ignored", "containerd: /containers/delete (no container state change)")),
        ("ctr", NOT_ATTRIBUTED),  # /containers/create
    ],
    "ecs_task_state_change_events.jsonl": [("eventbridge", ("ignored", r.ECS_EVENTBRIDGE_TASK))] * 5,
}

SAMPLE_CASES = [
    pytest.param(name, number, fmt, expected, id=f"{name}:{number}")
    for name, rows in SAMPLE_TABLE.items()
    for number, (fmt, expected) in enumerate(rows, 1)
]


def test_samples_are_found_and_all_covered() -> None:
    assert (SAMPLES / "SOURCES.md").is_file()
    assert sorted(p.name for p in SAMPLES.glob("*") if p.name != "SOURCES.md") == sorted(SAMPLE_FILES)
    for name in SAMPLE_FILES:
        assert len(lines(name)) == len(SAMPLE_TABLE[name]), name


@pytest.mark.skipif(not _SHARED.is_dir(), reason="no shared samples next to this clone")
def test_local_copy_matches_shared_samples() -> None:
    for path in _SHARED.iterdir():
        assert (_LOCAL / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.parametrize(("name", "number", "fmt", "expected"), SAMPLE_CASES)
def test_every_sample_line(name: str, number: int, fmt: str, expected: Outcome) -> None:
    result = decode(line(name, number))
    assert outcome(result) == [expected]
    assert result.format == fmt


@pytest.mark.parametrize("name", SAMPLE_FILES)
def test_each_sample_file_as_one_record(name: str) -> None:
    result = decode((SAMPLES / name).read_bytes())
    assert outcome(result) == [
        expected for fmt, expected in SAMPLE_TABLE[name] if expected[0] == "ignored"
    ] + [expected for fmt, expected in SAMPLE_TABLE[name] if expected[0] == "bad"]


# Labelled variants ---------------------------------------------------------------------------

DOCKER_LABELLED = [
    ("event", "web", "PENDING", None, None),  # create
    ("ignored", "docker: attach (no container state change)"),
    ("ignored", "docker: not a container event (network)"),  # labels on a network event
    ("event", "web", "RUNNING", None, None),  # start
    ("ignored", "docker: not a container event (network)"),
    ("event", "web", "STOPPED", 0, None),  # die, exitCode "0"
    ("event", "web", "STOPPED", None, None),  # destroy
    ("ignored", "docker: not a container event (image)"),
    ("event", "web", "STOPPED", 0, None),  # die
    ("ignored", r.DOCKER_HEALTH),  # health_status: healthy
    ("event", "web", None, None, None, "stop requested"),  # kill, signal 3 (not kept)
    ("event", "web", "STOPPED", 137, None),  # die, exitCode "137"
]


@pytest.mark.parametrize(
    ("number", "expected"), list(enumerate(DOCKER_LABELLED, 1)), ids=lambda v: str(v)[:20]
)
def test_labelled_docker_lines(number: int, expected: Outcome) -> None:
    raw = line("docker_events.jsonl", number)
    result = decode(labelled(raw))
    assert outcome(result) == [expected]
    if expected[0] == "event":
        event, change = only_change(result)
        doc = json.loads(raw)
        assert (event.cluster, event.task) == (CLUSTER, TASK)
        assert event.observedAt == doc["timeNano"]
        assert change.runtimeId == doc["Actor"]["ID"]


def test_time_nano_beyond_2_53_is_exact() -> None:
    event, change = only_change(decode(labelled(line("docker_events.jsonl", 1))))
    assert event.observedAt == 1764598461000012944
    assert float(event.observedAt) != event.observedAt  # not representable as a double
    assert change.runtimeId == "598100eb4e301ea850e9ef5243e3051fc340d9c1c5ec961c08b420e8cd18e412"


def test_exit_code_137() -> None:
    event, change = only_change(decode(labelled(line("docker_events.jsonl", 12))))
    assert (change.status, change.exitCode) == ("STOPPED", 137)
    assert event.observedAt == 1473107901922774300


@pytest.mark.parametrize("number", range(1, 13))
def test_docker_29_shape_without_legacy_fields(number: int) -> None:
    doc = json.loads(labelled(line("docker_events.jsonl", number)))
    for legacy in ("status", "id", "from"):
        doc.pop(legacy, None)
    assert outcome(decode(json.dumps(doc).encode())) == [DOCKER_LABELLED[number - 1]]


def test_podman_labelled() -> None:
    decoder = RecordDecoder()
    got = [outcome(decode(labelled(raw), decoder)) for raw in lines("podman_compat_events.jsonl")]
    assert got == [
        [("ignored", "docker: not a container event (image)")],
        [("event", "web", "PENDING", None, None)],  # containerExitCode "0" is not read on create
        [("ignored", r.DOCKER_EXEC)],  # exec_died
    ]


def test_podman_died_uses_container_exit_code() -> None:
    raw = labelled(line("podman_compat_events.jsonl", 2), Action="died", status="died")
    doc = json.loads(raw)
    doc["Actor"]["Attributes"]["containerExitCode"] = "143"
    _, change = only_change(decode(json.dumps(doc).encode()))
    assert (change.status, change.exitCode) == ("STOPPED", 143)


def test_oom_gives_the_ecs_reason_only() -> None:
    raw = labelled(line("docker_events.jsonl", 12), Action="oom", status="oom")
    _, change = only_change(decode(raw))
    assert change == ContainerChange(
        containerName="web",
        runtimeId="405efae3b420464a9da7be7cd9de8d2ff160ffcfdac01517d9b686e8137f9053",
        reason=OOM,
    )


def test_pause_container_is_not_reported() -> None:
    pause = dict(LABELS, **{"com.amazonaws.ecs.container-name": "~internal~ecs~pause"})
    for number in (1, 4, 6, 7):
        result = decode(labelled(line("docker_events.jsonl", number), pause))
        assert outcome(result) == [("ignored", r.ECS_INTERNAL_CONTAINER)]


def test_short_cluster_name_passes_through() -> None:
    short = dict(LABELS, **{"com.amazonaws.ecs.cluster": "default"})
    event, _ = only_change(decode(labelled(line("docker_events.jsonl", 4), short)))
    assert event.cluster == "default"


@pytest.mark.parametrize("missing", sorted(k for k in LABELS if "definition" not in k))
def test_incomplete_labels_are_unlabelled(missing: str) -> None:
    partial = {k: v for k, v in LABELS.items() if k != missing}
    assert outcome(decode(labelled(line("docker_events.jsonl", 4), partial))) == [NO_LABELS]


# Fluent Bit ----------------------------------------------------------------------------------


def fluentbit_record(events: list[bytes], timestamp: float | str = 1764598483.494424) -> bytes:
    message = b"\n".join(events).decode() + "\n"
    return json.dumps({"@timestamp": timestamp, "message": message}).encode()


def test_fluentbit_record_holding_the_8_events() -> None:
    eight = lines("docker_events.jsonl")[:8]
    result = decode(fluentbit_record(eight))
    assert result.format == "fluentbit"
    assert len(result.ignored) == 8
    assert outcome(result) == [expected for _, expected in SAMPLE_TABLE["docker_events.jsonl"][:8]]

    result = decode(fluentbit_record([labelled(e) for e in eight]))
    assert len(result.events) + len(result.ignored) == 8
    assert not result.bad
    assert [c[2:4] for c in outcome(result) if c[0] == "event"] == [
        ("PENDING", None),
        ("RUNNING", None),
        ("STOPPED", 0),
        ("STOPPED", None),
    ]
    assert [e.observedAt for e in result.events] == [
        1764598461000012944,
        1764598465490355732,
        1764598468191876214,
        1764598468200884059,
    ]


def test_fluentbit_timestamp_is_the_fallback_time() -> None:
    doc = json.loads(labelled(line("docker_events.jsonl", 4)))
    del doc["timeNano"], doc["time"]
    raw = json.dumps(doc).encode()
    event, _ = only_change(decode(fluentbit_record([raw], 1764598483.494424)))
    assert event.observedAt == 1764598483494424000
    event, _ = only_change(decode(fluentbit_record([raw], "2025-12-01T14:14:43.494424123Z")))
    assert event.observedAt == utc_ns(2025, 12, 1, 14, 14, 43, 494424123)
    # The docker event alone, without any time, is bad.
    assert outcome(decode(raw)) == [("bad", "ValidationError")]


def test_fluentbit_bad_event_inside_message() -> None:
    good = labelled(line("docker_events.jsonl", 4))
    bad = labelled(line("docker_events.jsonl", 12), attr_exitCode="killed")
    result = decode(b"[]\n" + fluentbit_record([good, bad, b"{not json"]))
    assert outcome(result) == [
        ("event", "web", "RUNNING", None, None),
        ("bad", "UnrecognisedFormat"),
        ("bad", "ValidationError"),
        ("bad", "DecodeError"),
    ]
    assert [b.index for b in result.bad] == [0, 1, 1]
    assert "killed" in result.bad[1].reason


# Metricbeat ----------------------------------------------------------------------------------


def metricbeat(dedot: bool = True, labels: dict[str, str] = LABELS, **changes: str) -> bytes:
    doc = json.loads(line("shipped_metricbeat_docker_event.jsonl", 1))
    attributes = doc["docker"]["event"]["actor"]["attributes"]
    attributes.update({(k.replace(".", "_") if dedot else k): v for k, v in labels.items()})
    for key, value in changes.items():
        if key.startswith("attr_"):
            attributes[key[5:]] = value
        else:
            doc["docker"]["event"][key] = value
    return json.dumps(doc).encode()


METRICBEAT_ID = "b7bd093f744ec9e2da9aea475c19c3a7fd9a4bdb392d79c7f1745498a7cc5415"
METRICBEAT_TIME = utc_ns(2017, 10, 12, 8, 5, 34, 853_000_000)


def test_metricbeat_dedotted_labels() -> None:
    assert outcome(decode(metricbeat())) == [("ignored", r.DOCKER_EXEC)]  # exec_create: ...
    result = decode(metricbeat(status="die", attr_exitCode="137"))
    event, change = only_change(result)
    assert result.format == "metricbeat"
    assert (event.cluster, event.task, event.observedAt) == (CLUSTER, TASK, METRICBEAT_TIME)
    assert (change.status, change.exitCode, change.runtimeId) == ("STOPPED", 137, METRICBEAT_ID)


def test_metricbeat_action_and_type_members() -> None:
    # docker.event.action (newer Metricbeat) wins over status; type "image" is not a container.
    assert outcome(decode(metricbeat(action="start", status=""))) == [("event", "web", "RUNNING", None, None)]
    assert outcome(decode(metricbeat(type="image", action="pull"))) == [
        ("ignored", "docker: not a container event (image)")
    ]
    # Labels left dotted (metricbeat labels.dedot: false) work too.
    assert outcome(decode(metricbeat(dedot=False, status="start"))) == [
        ("event", "web", "RUNNING", None, None)
    ]


# containerd attribution ----------------------------------------------------------------------

CTR = "containerd_ctr_events.txt"


def moby_docker_event(number: int = 4) -> bytes:
    """A labelled Docker event for the container of the ``moby`` ctr lines."""
    return labelled(with_id(line("docker_events.jsonl", number), MOBY_ID))


def test_containerd_attributed_after_a_labelled_docker_event_and_not_before() -> None:
    decoder = RecordDecoder()
    assert outcome(decode(line(CTR, 5), decoder)) == [NOT_ATTRIBUTED]
    assert outcome(decode(line(CTR, 8), decoder)) == [NOT_ATTRIBUTED]

    assert outcome(decode(moby_docker_event(), decoder)) == [("event", "web", "RUNNING", None, None)]

    event, change = only_change(decode(line(CTR, 5), decoder))
    assert (event.cluster, event.task) == (CLUSTER, TASK)
    assert (change.status, change.exitCode, change.runtimeId) == ("STOPPED", 137, MOBY_ID)
    assert event.observedAt == 1733896459_191647544  # exited_at {"seconds", "nanos"}
    assert outcome(decode(line(CTR, 6), decoder)) == [("ignored", r.CONTAINERD_TASK_DELETE)]
    event, change = only_change(decode(line(CTR, 8), decoder))
    assert (change.status, change.runtimeId) == ("PENDING", MOBY_ID)
    assert event.observedAt == utc_ns(2024, 12, 11, 5, 54, 21, 798737247)  # the line's time


def test_unlabelled_docker_event_does_not_attribute() -> None:
    decoder = RecordDecoder()
    decode(with_id(line("docker_events.jsonl", 4), MOBY_ID), decoder)
    assert outcome(decode(line(CTR, 5), decoder)) == [NOT_ATTRIBUTED]


def test_metricbeat_event_attributes_too() -> None:
    decoder = RecordDecoder()
    doc = json.loads(metricbeat(status="start"))
    doc["docker"]["event"]["actor"]["id"] = MOBY_ID
    decode(json.dumps(doc).encode(), decoder)
    assert outcome(decode(line(CTR, 5), decoder)) == [("event", "web", "STOPPED", 137, None)]


def k8s_init_exit(number: int) -> bytes:
    """Lines 1 and 4 are exec exits; the same with ``id`` == ``container_id`` is the init's."""
    head, _, body = line(CTR, number).partition(b" {")
    doc = json.loads(b"{" + body)
    doc["id"] = doc["container_id"]
    return head + b" " + json.dumps(doc).encode()


def test_both_exited_at_forms_and_omitted_exit_status() -> None:
    decoder = RecordDecoder()
    decode(labelled(with_id(line("docker_events.jsonl", 4), K8S_ID)), decoder)
    # Exec exits stay ignored even for an attributed container.
    assert outcome(decode(line(CTR, 1), decoder)) == [("ignored", r.CONTAINERD_EXEC_EXIT)]
    assert outcome(decode(line(CTR, 4), decoder)) == [("ignored", r.CONTAINERD_EXEC_EXIT)]

    event, change = only_change(decode(k8s_init_exit(1), decoder))
    assert (change.status, change.exitCode) == ("STOPPED", 137)
    assert event.observedAt == utc_ns(2020, 4, 9, 17, 6, 55, 897861206)  # RFC 3339 string
    event, change = only_change(decode(k8s_init_exit(4), decoder))
    assert (change.status, change.exitCode) == ("STOPPED", 0)  # exit_status omitted
    assert event.observedAt == utc_ns(2020, 4, 9, 17, 6, 58, 213351983)

    event, change = only_change(decode(line(CTR, 5), _attributed(MOBY_ID)))
    assert event.observedAt == 1733896459_191647544  # {"seconds", "nanos"}


def _attributed(runtime_id: str) -> RecordDecoder:
    decoder = RecordDecoder()
    decode(labelled(with_id(line("docker_events.jsonl", 1), runtime_id)), decoder)
    assert runtime_id in decoder.known_containers
    return decoder


def body(number: int) -> bytes:
    """The JSON body of a ctr line, alone."""
    raw = line(CTR, number)
    return raw[raw.index(b"{") :]


def test_containerd_json_bodies_alone() -> None:
    decoder = _attributed(MOBY_ID)
    result = decode(body(5), decoder)
    assert result.format == "containerd"
    assert outcome(result) == [("event", "web", "STOPPED", 137, None)]
    assert result.events[0].observedAt == 1733896459_191647544
    assert outcome(decode(body(6), decoder)) == [("ignored", r.CONTAINERD_TASK_DELETE)]
    assert outcome(decode(body(1), decoder)) == [("ignored", r.CONTAINERD_EXEC_EXIT)]
    assert outcome(decode(body(2), decoder)) == [("ignored", r.CONTAINERD_EXEC)]
    # /containers/create has no time of its own: the record timestamp dates it.
    assert outcome(decode(body(8), decoder)) == [("ignored", r.CONTAINERD_NO_TIME)]
    result = decode(body(8), decoder, record_timestamp_ns=1733896461_798000000)
    assert outcome(result) == [("event", "web", "PENDING", None, None)]
    assert result.events[0].observedAt == 1733896461_798000000
    # {"id": ...} alone (/containers/delete) could be anything: unrecognised unless forced.
    assert outcome(decode(body(7), decoder)) == [("bad", "UnrecognisedFormat")]
    forced = RecordDecoder(input_format="containerd")
    assert outcome(decode(body(7), forced)) == [
        ("ignored", "containerd: /containers/delete (no container state change)")
    ]


def test_containerd_body_task_start_and_ambiguous() -> None:
    decoder = _attributed(MOBY_ID)
    start = json.dumps({"container_id": MOBY_ID, "pid": 42}).encode()
    result = decode(start, decoder, record_timestamp_ns=5)
    assert outcome(result) == [("event", "web", "RUNNING", None, None)]
    oom_or_pause = json.dumps({"container_id": MOBY_ID}).encode()
    assert outcome(decode(oom_or_pause, decoder)) == [("ignored", r.CONTAINERD_NOT_INFERABLE)]


def test_ctr_oom_and_other_topics() -> None:
    decoder = _attributed(MOBY_ID)
    prefix = b"2024-12-11 05:54:19.191684944 +0000 UTC moby "
    oom = prefix + b'/tasks/oom {"container_id":"' + MOBY_ID.encode() + b'"}'
    assert outcome(decode(oom, decoder)) == [("event", "web", None, None, OOM)]
    assert outcome(decode(prefix + b'/images/create {"name":"x"}', decoder)) == [
        ("ignored", r.CONTAINERD_NOT_CONTAINER)
    ]
    assert outcome(decode(prefix + b"/tasks/frobnicate {}", decoder)) == [
        ("ignored", r.CONTAINERD_UNKNOWN_TOPIC)
    ]
    # Go's String() of a time.Now() value ends with the monotonic reading.
    mono = b"2024-12-11 05:54:19.5 +0100 CET m=+12.000000001 moby /tasks/start "
    result = decode(mono + b'{"container_id":"' + MOBY_ID.encode() + b'","pid":1}', decoder)
    assert outcome(result) == [("event", "web", "RUNNING", None, None)]
    assert result.events[0].observedAt == utc_ns(2024, 12, 11, 4, 54, 19, 500_000_000)


def test_container_index_is_a_bounded_lru() -> None:
    decoder = RecordDecoder(known_containers_cap=2)
    ids = [f"{n:064x}" for n in range(3)]
    for runtime_id in ids:
        decode(labelled(with_id(line("docker_events.jsonl", 4), runtime_id)), decoder)
    assert len(decoder.known_containers) == 2
    assert ids[0] not in decoder.known_containers
    exit_line = b'2024-12-11 05:54:19 +0000 UTC moby /tasks/exit {"container_id":"%s","id":"%s"}'
    assert outcome(decode(exit_line % (ids[0].encode(), ids[0].encode()), decoder)) == [NOT_ATTRIBUTED]
    assert outcome(decode(exit_line % (ids[2].encode(), ids[2].encode()), decoder)) == [
        ("event", "web", "STOPPED", 0, None)
    ]
    disabled = RecordDecoder(known_containers_cap=0)
    decode(moby_docker_event(), disabled)
    assert outcome(decode(line(CTR, 5), disabled)) == [NOT_ATTRIBUTED]


# Stop requests and task definitions ----------------------------------------------------------

STOP_REQUESTED = ("event", "web", None, None, None, "stop requested")
TASK_DEFINITION = "arn:aws:ecs:us-west-2:111122223333:task-definition/web:7"


def test_kill_is_a_stop_request_before_the_die() -> None:
    kill, die = (labelled(line("docker_events.jsonl", n)) for n in (11, 12))
    result = decode(kill + b"\n" + die)
    assert outcome(result) == [STOP_REQUESTED, ("event", "web", "STOPPED", 137, None)]
    stop = result.events[0].containers[0]
    assert stop == ContainerChange(containerName="web", runtimeId=stop.runtimeId, stopRequested=True)
    assert not result.events[1].containers[0].stopRequested


def test_podman_and_metricbeat_kill_are_stop_requests_too() -> None:
    podman = labelled(line("podman_compat_events.jsonl", 2), Action="kill", status="kill")
    assert outcome(decode(podman)) == [STOP_REQUESTED]
    assert outcome(decode(metricbeat(status="kill", attr_signal="15"))) == [STOP_REQUESTED]


def test_task_definition_from_the_labels_of_every_docker_shape() -> None:
    docker = labelled(line("docker_events.jsonl", 4))
    podman = labelled(line("podman_compat_events.jsonl", 2))
    for raw in (docker, podman, metricbeat(status="start"), metricbeat(dedot=False, status="start")):
        event, _ = only_change(decode(raw))
        assert event.taskDefinitionArn == TASK_DEFINITION
    result = decode(fluentbit_record([docker]))
    assert [e.taskDefinitionArn for e in result.events] == [TASK_DEFINITION]


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (TASK, TASK_DEFINITION),
        (  # the older task ARN, without the cluster
            "arn:aws:ecs:us-west-2:111122223333:task/0123456789abcdef",
            TASK_DEFINITION,
        ),
        (
            "arn:aws-cn:ecs:cn-north-1:111122223333:task/prod/0123",
            "arn:aws-cn:ecs:cn-north-1:111122223333:task-definition/web:7",
        ),
        ("0123456789abcdef0123456789abcdef", "web:7"),  # not an ARN: a task id
        # ARNs that are not task ARNs are the agent's internal tasks: tests/test_decode_internal.py
    ],
)
def test_task_definition_name(task: str, expected: str) -> None:
    labels = dict(LABELS, **{"com.amazonaws.ecs.task-arn": task})
    for raw in (labelled(line("docker_events.jsonl", 4), labels), metricbeat(labels=labels, status="start")):
        event, _ = only_change(decode(raw))
        assert (event.task, event.taskDefinitionArn) == (task, expected)


@pytest.mark.parametrize("missing", ["family", "version"])
def test_task_definition_needs_both_labels(missing: str) -> None:
    key = f"com.amazonaws.ecs.task-definition-{missing}"
    for labels in ({k: v for k, v in LABELS.items() if k != key}, dict(LABELS, **{key: ""})):
        event, _ = only_change(decode(labelled(line("docker_events.jsonl", 4), labels)))
        assert event.taskDefinitionArn is None


def test_task_definition_once_labels_appear_and_for_attributed_containerd_events() -> None:
    decoder = RecordDecoder()
    bare = {k: v for k, v in LABELS.items() if "definition" not in k}
    event, _ = only_change(decode(labelled(with_id(line("docker_events.jsonl", 1), MOBY_ID), bare), decoder))
    assert event.taskDefinitionArn is None
    event, _ = only_change(decode(moby_docker_event(), decoder))
    assert event.taskDefinitionArn == TASK_DEFINITION
    event, _ = only_change(decode(line(CTR, 5), decoder))  # remembered with the container
    assert event.taskDefinitionArn == TASK_DEFINITION


def test_task_definition_longer_than_a_name_is_bad() -> None:
    # Each label fits in a name, the ARN made of them does not.
    long = dict(LABELS, **{"com.amazonaws.ecs.task-definition-family": "f" * 2000})
    for raw in (labelled(line("docker_events.jsonl", 4), long), metricbeat(labels=long, status="start")):
        result = decode(raw)
        assert outcome(result) == [("bad", "ValidationError")]
        assert "task definition" in result.bad[0].reason
    too_long = dict(LABELS, **{"com.amazonaws.ecs.task-definition-version": "9" * 3000})
    assert outcome(decode(labelled(line("docker_events.jsonl", 4), too_long))) == [("bad", "ValidationError")]
