"""Format selection (the registry: headers, forced formats, detection, precedence), framing, Docker
details, bad records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest

from schemas.events import ContainerChange, TaskEvent
from worker.decode import FORMATS, InputFormat, RecordDecoder
from worker.decode import reasons as r
from worker.decode.bad_items import BAD_ITEM_CLASSES
from worker.decode.registry import SPECS, FormatSpec, JsonSpec, detect, format_from_headers
from worker.decode.result import DecodeResult

_LOCAL = Path(__file__).resolve().parent / "data" / "samples"
SAMPLES = _LOCAL if _LOCAL.is_dir() else Path(__file__).resolve().parents[2] / "shared" / "samples"

LABELS = {
    "com.amazonaws.ecs.cluster": "prod",
    "com.amazonaws.ecs.task-arn": "arn:aws:ecs:eu-west-1:111122223333:task/prod/abc",
    "com.amazonaws.ecs.container-name": "app",
}
CID = "405efae3b420464a9da7be7cd9de8d2ff160ffcfdac01517d9b686e8137f9053"
CTR_EXIT = (
    b"2024-12-11 05:54:19.191684944 +0000 UTC moby /tasks/exit "
    b'{"container_id":"%s","id":"%s","exit_status":137}' % (CID.encode(), CID.encode())
)
DOCKER_LINE = (
    b"2016-09-05T20:38:21.922774300Z container start %s (com.amazonaws.ecs.cluster=prod, "
    b"com.amazonaws.ecs.container-name=app, "
    b"com.amazonaws.ecs.task-arn=arn:aws:ecs:eu-west-1:111122223333:task/prod/abc, image=alpine)"
) % CID.encode()
PODMAN_LINE = (
    b"2016-09-05 20:38:21.922774300 +0000 UTC container start %s (image=alpine, name=app, "
    b"com.amazonaws.ecs.task-arn=arn:aws:ecs:eu-west-1:111122223333:task/prod/abc, "
    b"com.amazonaws.ecs.cluster=prod, com.amazonaws.ecs.container-name=app)"
) % CID.encode()
PODMAN_JSON = json.dumps(
    {
        "ID": CID,
        "Image": "alpine",
        "Name": "app",
        "Status": "start",
        "Type": "container",
        "time": 1473107901,
        "timeNano": 1473107901922774300,
        "Attributes": LABELS,
    }
).encode()
CANONICAL = TaskEvent(
    cluster="prod",
    task="arn:aws:ecs:eu-west-1:111122223333:task/prod/abc",
    observedAt=1,
    containers=(ContainerChange(containerName="app", status="RUNNING", exitCode=None),),
)
Outcome = tuple[Any, ...]


def docker_event(
    action: str = "start",
    *,
    object_type: str = "container",
    labels: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    **attributes: str,
) -> dict[str, Any]:
    """A Docker 29 event (no legacy status/id/from)."""
    doc: dict[str, Any] = {
        "Type": object_type,
        "Action": action,
        "Actor": {"ID": CID, "Attributes": {"image": "alpine", **(labels or LABELS), **attributes}},
        "scope": "local",
        "time": 1473107901,
        "timeNano": 1473107901922774300,
    }
    for key in drop:
        del doc[key]
    return doc


def raw(doc: dict[str, Any], **dumps: Any) -> bytes:
    return json.dumps(doc, **dumps).encode()


def outcome(result: DecodeResult) -> list[Outcome]:
    out: list[Outcome] = []
    for event in result.events:
        for c in event.containers:
            out.append(("event", c.status, c.exitCode, c.reason, *(("stop requested",) * c.stopRequested)))
    out += [("ignored", reason) for reason in result.ignored]
    out += [("bad", bad.error_class) for bad in result.bad]
    return out


def decode(value: bytes | None, decoder: RecordDecoder | None = None, **kw: Any) -> DecodeResult:
    result = (decoder or RecordDecoder()).decode(value, **kw)
    for bad in result.bad:
        assert bad.reason
        assert bad.error_class in BAD_ITEM_CLASSES
    return result


# Docker action mapping -----------------------------------------------------------------------

ACTIONS: list[tuple[str, Outcome]] = [
    ("create", ("event", "PENDING", None, None)),
    ("start", ("event", "RUNNING", None, None)),
    ("stop", ("event", "STOPPED", None, None)),
    ("destroy", ("event", "STOPPED", None, None)),
    ("remove", ("event", "STOPPED", None, None)),  # Podman's destroy
    ("oom", ("event", None, None, "OutOfMemoryError: Container killed due to memory usage")),
    ("kill", ("event", None, None, None, "stop requested")),  # its signal is not kept
    ("restart", ("ignored", r.DOCKER_RESTART)),
    ("health_status: healthy", ("ignored", r.DOCKER_HEALTH)),
    ("health_status: unhealthy", ("ignored", r.DOCKER_HEALTH)),
    ("health_status", ("ignored", r.DOCKER_HEALTH)),
    ("exec_create: /bin/sh -c curl -f http://localhost", ("ignored", r.DOCKER_EXEC)),
    ("exec_start: /bin/sh -c curl -f http://localhost", ("ignored", r.DOCKER_EXEC)),
    ("exec_die", ("ignored", r.DOCKER_EXEC)),
    ("exec_died", ("ignored", r.DOCKER_EXEC)),
    ("attach", ("ignored", "docker: attach (no container state change)")),
    ("pause", ("ignored", "docker: pause (no container state change)")),
    ("unpause", ("ignored", "docker: unpause (no container state change)")),
    ("rename", ("ignored", "docker: rename (no container state change)")),
    ("update", ("ignored", "docker: update (no container state change)")),
    ("commit", ("ignored", "docker: commit (no container state change)")),
    ("copy", ("ignored", "docker: copy (no container state change)")),
    ("export", ("ignored", "docker: export (no container state change)")),
    ("top", ("ignored", "docker: top (no container state change)")),
    ("resize", ("ignored", "docker: resize (no container state change)")),
    ("frobnicate", ("ignored", r.DOCKER_UNKNOWN_ACTION)),
    ("health_status:healthy", ("ignored", r.DOCKER_UNKNOWN_ACTION)),  # no ": " separator
]


@pytest.mark.parametrize(("action", "expected"), ACTIONS)
def test_docker_action_mapping(action: str, expected: Outcome) -> None:
    result = decode(raw(docker_event(action)))
    assert outcome(result) == [expected]
    for event in result.events:
        assert event.containers[0].runtimeId == CID
        assert event.observedAt == 1473107901922774300


def test_die_exit_codes() -> None:
    assert outcome(decode(raw(docker_event("die", exitCode="137")))) == [("event", "STOPPED", 137, None)]
    assert outcome(decode(raw(docker_event("die", exitCode="-1")))) == [("event", "STOPPED", -1, None)]
    assert outcome(decode(raw(docker_event("die")))) == [("event", "STOPPED", None, None)]
    # Docker's exitCode wins over Podman's containerExitCode.
    both = docker_event("die", exitCode="2", containerExitCode="0")
    assert outcome(decode(raw(both))) == [("event", "STOPPED", 2, None)]


@pytest.mark.parametrize(
    "code", ["abc", "", "1.5", " 1", "0x10", "1_0", "1e3", "9223372036854775808", "-9223372036854775809", "٣"]
)
def test_bad_exit_code_is_a_bad_item(code: str) -> None:
    result = decode(raw(docker_event("die", exitCode=code)))
    assert outcome(result) == [("bad", "ValidationError")]
    assert "exit code" in result.bad[0].reason


def test_time_falls_back_to_seconds() -> None:
    doc = docker_event()
    del doc["timeNano"]
    assert decode(raw(doc)).events[0].observedAt == 1473107901 * 10**9
    del doc["time"]
    assert outcome(decode(raw(doc))) == [("bad", "ValidationError")]
    doc["timeNano"] = -5
    assert outcome(decode(raw(doc))) == [("bad", "ValidationError")]
    doc["timeNano"] = 2**63
    assert outcome(decode(raw(doc))) == [("bad", "ValidationError")]


def test_image_digest() -> None:
    digest = "sha256:" + "ab" * 32
    event = decode(raw(docker_event("start", image=f"repo/app:1@{digest}"))).events[0]
    assert event.containers[0].imageDigest == digest
    assert decode(raw(docker_event("start"))).events[0].containers[0].imageDigest is None
    odd = docker_event("start", image="repo/app@sha256:not-a-digest")
    assert decode(raw(odd)).events[0].containers[0].imageDigest is None


@pytest.mark.parametrize(
    ("object_type", "reason"),
    [
        ("image", "docker: not a container event (image)"),
        ("volume", "docker: not a container event (volume)"),
        ("daemon", "docker: not a container event (daemon)"),
        ("somethingnew", "docker: not a container event (other)"),
    ],
)
def test_non_container_events_are_ignored(object_type: str, reason: str) -> None:
    assert outcome(decode(raw(docker_event("pull", object_type=object_type)))) == [("ignored", reason)]


def test_attribute_values_must_be_strings() -> None:
    doc = docker_event("die")
    doc["Actor"]["Attributes"]["exitCode"] = 137
    result = decode(raw(doc))
    assert outcome(result) == [("bad", "ValidationError")]
    assert result.bad[0].reason.startswith("invalid docker event")


def test_null_attributes_and_empty_actor_id() -> None:
    doc = docker_event()
    doc["Actor"]["Attributes"] = None
    assert outcome(decode(raw(doc))) == [("ignored", r.DOCKER_NO_LABELS)]
    doc = docker_event()
    doc["Actor"]["ID"] = ""
    event = decode(raw(doc)).events[0]
    assert event.containers[0].runtimeId is None


def test_overlong_label_is_bad() -> None:
    labels = dict(LABELS, **{"com.amazonaws.ecs.task-arn": "x" * 3000})
    assert outcome(decode(raw(docker_event(labels=labels)))) == [("bad", "ValidationError")]


# Detection, forced formats and headers -------------------------------------------------------


def one_of_each_format() -> dict[str, bytes]:
    """A valid item of every format, by the name detection gives it."""
    return {
        "docker": raw(docker_event()),
        "canonical": msgspec.json.encode(CANONICAL),
        "metricbeat": (SAMPLES / "shipped_metricbeat_docker_event.jsonl").read_bytes().strip(),
        "fluentbit": raw({"@timestamp": 1.5, "message": json.dumps(docker_event())}),
        "containerd": b'{"container_id":"%s","id":"x","exited_at":{"seconds":1}}' % CID.encode(),
        "ctr": CTR_EXIT,
        "eventbridge": raw({"detail-type": "ECS Task State Change", "source": "aws.ecs", "detail": {}}),
        "podman": PODMAN_JSON,
        "docker-text": DOCKER_LINE,
        "podman-text": PODMAN_LINE,
    }


def test_detection_of_each_format() -> None:
    cases = one_of_each_format()
    assert set(cases) == {spec.name for spec in SPECS}
    for fmt, value in cases.items():
        assert decode(value).format == fmt, value
    decoder = RecordDecoder()  # the same with a decoder that saw every other format before
    for _ in range(2):
        for fmt, value in cases.items():
            assert decode(value, decoder).format == fmt, value


def test_canonical_event_round_trips() -> None:
    assert decode(msgspec.json.encode(CANONICAL)).events == [CANONICAL]
    doc = json.loads(msgspec.json.encode(CANONICAL))
    del doc["observedAt"]
    result = decode(raw(doc))
    assert outcome(result) == [("bad", "ValidationError")]
    assert result.bad[0].reason.startswith("invalid canonical event")


@pytest.mark.parametrize(
    "value",
    [b'{"foo": 1}', b"[1, 2]", b'"text"', b"null", b"true", b"{}", b'{"message": 5}', b'{"id": "x"}'],
)
def test_unrecognised_json_is_bad(value: bytes) -> None:
    result = decode(value)
    assert outcome(result) == [("bad", "UnrecognisedFormat")]
    assert result.bad[0].reason == "unrecognised event format"


@pytest.mark.parametrize("value", [b"{not json", b"garbage", b"\xff\xfe", b'{"Type": "container"'])
def test_malformed_json_is_bad(value: bytes) -> None:
    result = decode(value)
    assert outcome(result) == [("bad", "DecodeError")]
    assert result.bad[0].reason.startswith("malformed JSON")


def test_deep_nesting_is_bad_not_a_crash() -> None:
    for value in (b'{"Type":' + b"[" * 100_000, b'{"x":' + b'{"a":' * 100_000):
        assert outcome(decode(value)) == [("bad", "RecursionError")]
    assert outcome(decode(b"[" * 100_000)) == [("bad", "UnrecognisedFormat")]  # not an object


@pytest.mark.parametrize(
    ("value", "error_class", "reason"),
    [
        (b"2024-12-11 moby /tasks/exit {}", "DecodeError", "ctr: malformed line"),
        (b"2024-12-11 05:54:19 +0000 UTC moby /tasks/exit", "DecodeError", "ctr: malformed line"),
        (b"123", "DecodeError", "ctr: malformed line"),
        (b"2024-1-1 05:54:19 +0000 UTC moby /tasks/exit {}", "DecodeError", "invalid Go time"),
        (b"2024-13-45 05:54:19 +0000 UTC moby /tasks/exit {}", "ValidationError", "invalid time"),
        (b"1969-12-31 23:59:59 +0000 UTC moby /tasks/exit {}", "ValidationError", "outside 1970"),
        (b'2024-12-11 05:54:19 +0000 UTC moby /tasks/exit {"exit_status": -1}', "ValidationError", ">= 0"),
        (b'2024-12-11 05:54:19 +0000 UTC moby /tasks/exit {"id": "x"', "DecodeError", "malformed JSON"),
    ],
)
def test_malformed_ctr_lines_are_bad(value: bytes, error_class: str, reason: str) -> None:
    result = decode(value)
    assert outcome(result) == [("bad", error_class)]
    assert reason in result.bad[0].reason


def test_precedence_does_not_depend_on_history() -> None:
    # Docker keys plus cluster and task: canonical by the precedence rules, so a bad canonical
    # event, whether or not the decoder just decoded a Docker event.
    mixed = raw(dict(docker_event(), cluster="c", task="t"))
    fresh = decode(mixed)
    warmed = RecordDecoder()
    decode(raw(docker_event()), warmed)
    assert outcome(fresh) == outcome(decode(mixed, warmed)) == [("bad", "ValidationError")]
    assert "canonical" in fresh.bad[0].reason
    with_detail_type = raw(dict(docker_event(), **{"detail-type": "X", "source": "aws.ecs"}))
    assert outcome(decode(with_detail_type, warmed)) == [("ignored", r.ECS_EVENTBRIDGE_OTHER)]


def test_eventbridge_sources() -> None:
    other = raw({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2"})
    assert outcome(decode(other)) == [("ignored", r.EVENTBRIDGE_NOT_ECS)]
    bad = raw({"detail-type": 5, "source": "aws.ecs"})
    assert outcome(decode(bad)) == [("bad", "ValidationError")]


def test_forced_formats() -> None:
    docker = raw(docker_event())
    assert outcome(decode(docker, RecordDecoder(input_format="docker"))) == [("event", "RUNNING", None, None)]
    # An item of another format is refused with the mismatch (tests/test_decode_forced.py), and
    # one no format claims is left to the forced format's decoder, which says what is wrong.
    result = decode(raw({"Type": "container"}), RecordDecoder(input_format="docker"))
    assert outcome(result) == [("bad", "ValidationError")]
    assert result.bad[0].reason.startswith("invalid docker event")
    result = decode(docker, RecordDecoder(input_format="canonical"))
    assert outcome(result) == [("bad", "FormatMismatch")]
    assert result.format == "canonical"
    with pytest.raises(ValueError, match="unknown input format"):
        RecordDecoder(input_format="nerdctl")


# The format registry ----------------------------------------------------------------------


def test_input_format_names_derive_from_the_registry() -> None:
    assert FORMATS == (
        "auto",
        "canonical",
        "podman",
        "docker",
        "metricbeat",
        "fluentbit",
        "containerd",
        "docker-text",
        "podman-text",
        "ctr",
    )
    assert get_args(InputFormat) == FORMATS
    assert FORMATS[1:] == tuple(spec.name for spec in SPECS if spec.selectable)
    for name in FORMATS:
        RecordDecoder(input_format=name)
    with pytest.raises(ValueError, match="unknown input format"):
        RecordDecoder(input_format="eventbridge")  # detected (and ignored), never forced


def _keys_of(spec: FormatSpec) -> dict[str, Any]:
    """A document holding the keys of the first way ``spec`` is detected (string values)."""
    assert isinstance(spec, JsonSpec)
    return {member.key: "x" for member in spec.detected_by[0]}


JSON_SPECS = [spec for spec in SPECS if isinstance(spec, JsonSpec)]


@pytest.mark.parametrize(
    ("higher", "lower"),
    [(h, low) for i, h in enumerate(JSON_SPECS) for low in JSON_SPECS[i + 1 :]],
    ids=lambda spec: spec.name,
)
def test_precedence_is_the_order_of_the_registry(higher: FormatSpec, lower: FormatSpec) -> None:
    # A valid document of the lower format (its typed decoder accepts it), with the keys of the
    # higher one: the higher format's, and the fast path agrees whichever format it saw last.
    valid = one_of_each_format()
    mixed = raw({**json.loads(valid[lower.name]), **_keys_of(higher)})
    assert detect(mixed) == higher.name
    reference = outcome(decode(mixed))
    for value in valid.values():
        primed = RecordDecoder()
        primed.decode(value)
        assert outcome(decode(mixed, primed)) == reference


def test_each_json_format_is_detected_by_its_keys_alone() -> None:
    for spec in JSON_SPECS:
        assert isinstance(spec, JsonSpec)
        for alternative in spec.detected_by:
            assert detect(raw({member.key: "x" for member in alternative})) == spec.name
    assert detect(CTR_EXIT) == "ctr"
    assert detect(b'{"foo": 1}') is None
    assert detect(b"[1]") is None


def test_every_content_type_names_its_format() -> None:
    named = [(ct, spec.name) for spec in SPECS for ct in spec.content_types]
    assert len(named) == 3
    for content_type, name in named:
        assert format_from_headers([("content-type", content_type.upper() + "; x=y")], "auto") == name
    for generic in ("application/json", "application/x-ndjson", "application/json-seq", "x/y"):
        assert format_from_headers([("content-type", generic)], "docker") == "docker"


@pytest.mark.parametrize(
    ("content_type", "fmt"),
    [
        (b"application/vnd.docker.event+json", "docker"),
        (b"Application/Vnd.Docker.Event+JSON; charset=utf-8", "docker"),
        (b"application/x-ctr-events", "ctr"),
        (b"text/plain; charset=utf-8", "auto"),  # any text lines: detected
        (b"application/vnd.ecs-state.event+json", "canonical"),
        (b"application/json", "auto"),
        (b"application/x-ndjson", "auto"),
        (b"application/octet-stream", "auto"),
    ],
)
def test_content_type_header(content_type: bytes, fmt: str) -> None:
    values = {
        "docker": raw(docker_event()),
        "ctr": CTR_EXIT,
        "canonical": msgspec.json.encode(CANONICAL),
    }
    for value_format, value in values.items():
        result = decode(value, headers=[("content-type", content_type)])
        if fmt in ("auto", value_format):
            assert not result.bad, (value_format, result.bad)
            assert result.format == value_format
        else:
            assert result.bad, value_format
            assert result.format == fmt
    # The header name is case-insensitive; a generic type keeps a forced setting.
    forced = RecordDecoder(input_format="docker")
    result = decode(CTR_EXIT, forced, headers=[("Content-Type", content_type)])
    assert bool(result.bad) == (fmt not in ("ctr",))


def test_odd_headers_do_not_break_decode() -> None:
    result = RecordDecoder().decode(raw(docker_event()), [("content-type", None), ("x", b"\xff")])
    assert outcome(result) == [("event", "RUNNING", None, None)]


# Framing -------------------------------------------------------------------------------------


def test_several_newline_separated_events_with_blank_lines() -> None:
    events = [raw(docker_event(a)) for a in ("create", "start", "kill", "die")]
    record = b"\n\n" + b"\n".join(events[:2]) + b"\n\n  \r\n" + b"\r\n".join(events[2:]) + b"\n"
    result = decode(record)
    assert outcome(result) == [
        ("event", "PENDING", None, None),
        ("event", "RUNNING", None, None),
        ("event", None, None, None, "stop requested"),
        ("event", "STOPPED", None, None),
    ]
    assert result.format == "docker"


def test_rfc7464_json_text_sequence() -> None:
    events = [raw(docker_event(a)) for a in ("create", "start")]
    record = b"".join(b"\x1e" + e + b"\n" for e in events)
    assert outcome(decode(record)) == [("event", "PENDING", None, None), ("event", "RUNNING", None, None)]
    # A pretty-printed document inside an RFC 7464 record.
    pretty = b"\x1e" + raw(docker_event("stop"), indent=2) + b"\n\x1e" + events[0]
    assert outcome(decode(pretty)) == [("event", "STOPPED", None, None), ("event", "PENDING", None, None)]


def test_pretty_printed_single_documents() -> None:
    assert outcome(decode(raw(docker_event("die", exitCode="1"), indent=2))) == [
        ("event", "STOPPED", 1, None)
    ]
    pretty = json.dumps(json.loads(msgspec.json.encode(CANONICAL)), indent=4).encode()
    assert decode(pretty).events == [CANONICAL]


def test_bad_items_carry_their_index_and_good_ones_survive() -> None:
    record = b"\n".join(
        [raw(docker_event("start")), b"{oops", raw(docker_event("die", exitCode="x")), CTR_EXIT]
    )
    result = decode(record)
    assert [(b.error_class, b.index) for b in result.bad] == [("DecodeError", 1), ("ValidationError", 2)]
    assert outcome(result)[:2] == [("event", "RUNNING", None, None), ("event", "STOPPED", 137, None)]
    assert result.format == "mixed"  # docker and ctr items in one record


def test_empty_tombstone_and_oversized_records() -> None:
    assert outcome(decode(None)) == [("bad", "EmptyRecord")]
    assert outcome(decode(b"")) == [("bad", "EmptyRecord")]
    assert outcome(decode(b" \n\r\n\x1e\n")) == [("bad", "EmptyRecord")]
    small = RecordDecoder(max_record_bytes=64)
    result = decode(raw(docker_event()), small)
    assert outcome(result) == [("bad", "RecordTooLarge")]
    assert "max_record_bytes=64" in result.bad[0].reason


def test_last_resort_turns_a_bug_into_a_bad_item(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.decode.docker as docker_module

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(docker_module, "map_action", broken)
    decoder = RecordDecoder()
    record = raw(docker_event()) + b"\n" + msgspec.json.encode(CANONICAL)
    result = decoder.decode(record)
    assert [(b.error_class, b.index) for b in result.bad] == [("KeyError", 0)]
    assert "internal decoder error" in result.bad[0].reason
    assert result.events == [CANONICAL]  # the next item is still decoded
