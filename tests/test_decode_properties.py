"""Property-based tests: no input makes ``RecordDecoder.decode`` raise or reach its last resort.

Inputs: random bytes, random JSON documents built from the keys detection looks at, and
mutations of the real samples (and of labelled variants): byte flips, truncation, deletion of a
member, a member's value replaced by one of another type. Every bad item must carry a reason and
one of the error classes the decoders produce on purpose (``BAD_ITEM_CLASSES``): a Python bug
type (TypeError, KeyError, AttributeError, IndexError...) would mean the last resort was reached.
The outcome of an item must not depend on which format the decoder saw before it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import TaskEvent
from tests import decode_inputs as inputs
from worker.decode import RecordDecoder
from worker.decode.bad_items import BAD_ITEM_CLASSES
from worker.decode.framing import split_items
from worker.decode.result import DecodeResult

_LOCAL = Path(__file__).resolve().parent / "data" / "samples"
SAMPLES = _LOCAL if _LOCAL.is_dir() else Path(__file__).resolve().parents[2] / "shared" / "samples"
LABELS = {
    "com.amazonaws.ecs.cluster": "prod",
    "com.amazonaws.ecs.task-arn": "arn:aws:ecs:eu-west-1:111122223333:task/prod/abc",
    "com.amazonaws.ecs.container-name": "app",
}
PYTHON_BUGS = {
    "TypeError",
    "KeyError",
    "AttributeError",
    "IndexError",
    "ValueError",
    "UnicodeDecodeError",
    "OverflowError",
    "ZeroDivisionError",
    "AssertionError",
}
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _labelled(line: bytes) -> bytes | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if "Actor" in doc:
        doc["Actor"]["Attributes"].update(LABELS)
    elif "docker" in doc:
        attributes = doc["docker"]["event"]["actor"]["attributes"]
        attributes.update({k.replace(".", "_"): v for k, v in LABELS.items()})
    else:
        return None
    return json.dumps(doc).encode()


def _load() -> list[bytes]:
    lines = [
        line
        for path in sorted(SAMPLES.iterdir())
        if path.suffix in (".jsonl", ".txt")
        for line in path.read_bytes().splitlines()
    ]
    labelled = [x for x in map(_labelled, lines) if x is not None]
    ctr = [line for line in lines if line[:1].isdigit()]
    bodies = [line[line.index(b"{") :] for line in ctr]
    fluentbit = json.dumps(
        {"@timestamp": 1.5, "message": "\n".join(x.decode() for x in labelled[:8])}
    ).encode()
    inspect = json.dumps({"ImageDigest": "sha256:" + "0f" * 32, "NetworkSettings": {"Ports": {"80/tcp": []}}})
    own = [  # the formats the samples have no line of
        inputs.podman_json("died", exit_code=137, OOMKilled=True),
        inputs.podman_json("create", ContainerInspectData=inspect),
        inputs.docker_line("die", note="a, b=c (d)", exitCode="3221225477"),
        inputs.podman_line("died", note="a, b=c (d)"),
    ]
    return lines + labelled + bodies + [fluentbit] + own


REAL = _load()
REAL_JSON = [x for x in REAL if x.startswith(b"{")]
ONE_PER_FORMAT = {RecordDecoder().decode(x).format: x for x in REAL}


def check(result: DecodeResult) -> None:
    assert result.events or result.ignored or result.bad
    for bad in result.bad:
        assert bad.reason
        assert bad.error_class in BAD_ITEM_CLASSES, bad
        assert bad.error_class not in PYTHON_BUGS
    for event in result.events:  # every event honours the schema's bounds
        assert msgspec.json.decode(msgspec.json.encode(event), type=TaskEvent) == event


def summary(result: DecodeResult) -> tuple[Any, ...]:
    return (
        result.events,
        result.ignored,
        [(b.error_class, b.index) for b in result.bad],
    )


SHARED = RecordDecoder(known_containers_cap=8)  # long-lived, as in the pipeline


def decode_everywhere(value: bytes) -> None:
    """Decode with the long-lived decoder, and check that a fresh decoder and decoders that last
    saw each format (fast path primed) agree; the containerd index is the same for all (empty)."""
    check(SHARED.decode(value))
    reference = summary(check_and_return(RecordDecoder(known_containers_cap=0), value))
    for fmt, primer in ONE_PER_FORMAT.items():
        primed = RecordDecoder(known_containers_cap=0)
        primed.decode(primer)
        assert summary(check_and_return(primed, value)) == reference, fmt


def check_and_return(decoder: RecordDecoder, value: bytes) -> DecodeResult:
    result = decoder.decode(value)
    check(result)
    return result


@SETTINGS
@given(st.binary(max_size=512))
def test_random_bytes(value: bytes) -> None:
    decode_everywhere(value)


@st.composite
def flipped(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(REAL)))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(REAL))
    return data[: draw(st.integers(0, len(data)))]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.append((*prefix, key))
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out.append((*prefix, i))
            out += _paths(value, (*prefix, i))
    return out


@st.composite
def restructured(draw: st.DrawFn) -> bytes:
    """A real JSON event with members deleted or their values replaced (type changes)."""
    line = draw(
        st.sampled_from(REAL_JSON + [x[x.index(b"{") :] for x in REAL if x[:1].isdigit() and b"{" in x])
    )
    doc = json.loads(line)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES)
    try:
        return json.dumps(doc, allow_nan=True).encode()
    except ValueError:
        return line


@SETTINGS
@given(flipped())
def test_byte_flips_of_real_events(value: bytes) -> None:
    decode_everywhere(value)


@SETTINGS
@given(truncated())
def test_truncations_of_real_events(value: bytes) -> None:
    decode_everywhere(value)


@SETTINGS
@given(restructured())
def test_deleted_members_and_changed_types(value: bytes) -> None:
    decode_everywhere(value)


MARKER_KEYS = [
    "detail-type",
    "source",
    "cluster",
    "task",
    "observedAt",
    "Type",
    "Action",
    "Actor",
    "docker",
    "message",
    "@timestamp",
    "container_id",
    "exited_at",
    "exec_id",
    "id",
    "runtime",
    "pid",
    "exit_status",
    "time",
    "timeNano",
    "containers",
    "Status",
    "ID",
    "ContainerExitCode",
    "ContainerInspectData",
    "OOMKilled",
    "Time",
]


@SETTINGS
@given(st.dictionaries(st.sampled_from(MARKER_KEYS), JSON_VALUES, max_size=6))
def test_documents_mixing_the_keys_detection_reads(doc: dict[str, Any]) -> None:
    decode_everywhere(json.dumps(doc).encode())


@SETTINGS
@given(
    st.lists(st.one_of(st.sampled_from(REAL), flipped(), truncated()), min_size=1, max_size=5),
    st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\x1e"]),
)
def test_records_of_several_items(items: list[bytes], separator: bytes) -> None:
    record = separator.join(items)
    check(SHARED.decode(record))
    result = RecordDecoder(known_containers_cap=0).decode(record)
    check(result)
    framed = split_items(record)
    assert all(0 <= b.index < max(len(framed), 1) for b in result.bad)  # 0: a record-level bad


@SETTINGS
@given(
    st.text(max_size=40),
    st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=4),
    st.sampled_from(["container", "image", ""]),
)
def test_labelled_docker_events_with_random_actions_and_attributes(
    action: str, attributes: dict[str, str], object_type: str
) -> None:
    doc = {
        "Type": object_type,
        "Action": action,
        "Actor": {"ID": "abc", "Attributes": {**attributes, **LABELS}},
        "timeNano": 1,
    }
    decode_everywhere(json.dumps(doc).encode())
