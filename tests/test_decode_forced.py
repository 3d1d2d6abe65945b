"""A forced format (``input_format``, or a record's ``content-type``) refuses items of another format:
they are dead-lettered with a reason naming the forced format and what the item is, never ignored
and never decoded as something they are not."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests import decode_inputs as inputs
from worker.decode import FORMATS, RecordDecoder
from worker.decode.framing import split_items
from worker.decode.registry import detect, label

ITEMS: dict[str, bytes] = {
    "canonical": inputs.canonical(0),
    "podman": inputs.podman_json("died", exit_code=0),
    "docker": inputs.docker_json("die", exitCode="0"),
    "metricbeat": inputs.metricbeat("die", exitCode="0"),
    "fluentbit": inputs.fluentbit("die", exitCode="0"),
    "containerd": b'{"container_id":"%s","id":"%s","exited_at":{"seconds":1}}'
    % (inputs.RUNTIME_ID.encode(), inputs.RUNTIME_ID.encode()),
    "docker-text": inputs.docker_line("die", exitCode="0"),
    "podman-text": inputs.podman_line("died"),
    "ctr": inputs.ctr_exit(0),
}
"""One item of every selectable format, each a container's stop."""
EVENTBRIDGE = b'{"detail-type":"ECS Task State Change","source":"aws.ecs","detail":{}}'


def test_every_selectable_format_has_an_item() -> None:
    assert sorted(ITEMS) == sorted(FORMATS[1:])


def _attributed(fmt: str) -> RecordDecoder:
    """A decoder forced to ``fmt`` that knows the container (containerd attribution)."""
    decoder = RecordDecoder(input_format=fmt)
    docker = [("content-type", b"application/vnd.docker.event+json")]
    assert decoder.decode(inputs.docker_json("start"), docker).events
    return decoder


@pytest.mark.parametrize("fmt", FORMATS[1:])
def test_a_forced_format_decodes_its_own_items(fmt: str) -> None:
    result = _attributed(fmt).decode(ITEMS[fmt])
    assert not result.bad, result.bad
    assert [e.containers[0].status for e in result.events] == ["STOPPED"]
    assert result.format == fmt


@pytest.mark.parametrize("fmt", FORMATS[1:])
def test_a_forced_format_refuses_every_other_format(fmt: str) -> None:
    for other, item in [*ITEMS.items(), ("eventbridge", EVENTBRIDGE)]:
        if other == fmt:
            continue
        result = _attributed(fmt).decode(item)
        assert not result.events, other
        assert not result.ignored, other
        (bad,) = result.bad
        assert bad.error_class == "FormatMismatch", other
        assert bad.reason.startswith(
            f"input_format names {label(fmt)} ({fmt}), but the item is a {label(other)}"
        )
        assert result.format == fmt


def test_the_issue_case_containerd_forced_on_docker_events_with_the_legacy_id() -> None:
    # The legacy "id" member read as containerd's {"id"} body was "containerd: /containers/delete".
    result = RecordDecoder(input_format="containerd").decode(inputs.docker_json("die", exitCode="0"))
    assert result.ignored == []
    (bad,) = result.bad
    assert bad.reason == (
        "input_format names containerd (containerd), but the item is a docker event "
        "(has Type or Action or Actor): not decoded; set input_format to auto or docker"
    )


def test_a_content_type_forces_too_and_says_so() -> None:
    headers = [("content-type", b"application/x-ctr-events")]
    result = RecordDecoder().decode(inputs.docker_json("start"), headers)
    (bad,) = result.bad
    assert bad.error_class == "FormatMismatch"
    assert bad.reason.startswith("content-type names containerd (ctr), but the item is a docker event")


def test_items_no_format_claims_are_left_to_the_forced_format() -> None:
    # containerd's {"id"} body alone is claimed by no format: forced containerd reads it.
    result = RecordDecoder(input_format="containerd").decode(b'{"id":"x"}')
    assert result.ignored == ["containerd: /containers/delete (no container state change)"]
    # Malformed JSON stays malformed JSON, whatever was forced.
    for fmt in FORMATS[1:]:
        result = RecordDecoder(input_format=fmt).decode(b'{"Type": "container"')
        assert [b.error_class for b in result.bad] in (["DecodeError"], ["ValidationError"]), fmt


def test_auto_still_decodes_every_format() -> None:
    decoder = RecordDecoder()
    decoder.decode(inputs.docker_json("start"))
    for fmt, item in ITEMS.items():
        result = decoder.decode(item)
        assert result.format == fmt
        assert [e.containers[0].status for e in result.events] == ["STOPPED"], fmt


def _variants() -> st.SearchStrategy[bytes]:
    """Items of every format, some with a byte flipped or cut short."""
    items = [*ITEMS.values(), EVENTBRIDGE]
    flipped = st.tuples(st.sampled_from(items), st.integers(0, 10_000), st.integers(0, 255)).map(
        lambda t: t[0][: t[1] % len(t[0])] + bytes([t[2]]) + t[0][t[1] % len(t[0]) + 1 :]
    )
    cut = st.tuples(st.sampled_from(items), st.integers(1, 10_000)).map(
        lambda t: t[0][: t[1] % len(t[0]) + 1]
    )
    return st.one_of(st.sampled_from(items), flipped, cut)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_variants(), st.sampled_from(FORMATS[1:]))
def test_forced_agrees_with_detection(item: bytes, fmt: str) -> None:
    """Forced: an item detected as another format is a FormatMismatch; one detected as the forced
    format decodes exactly as auto decodes it (the forced fast path never decides otherwise)."""
    parts = split_items(item)
    assume(len(parts) == 1)  # one item: a flipped byte may have made it two
    forced = _attributed(fmt).decode(item)
    try:
        detected = detect(parts[0])
    except Exception:  # malformed JSON
        detected = None
    mismatched = [b for b in forced.bad if b.error_class == "FormatMismatch"]
    if detected is not None and detected != fmt:
        assert len(mismatched) == 1
        assert not forced.events
    else:
        assert not mismatched
    if detected == fmt:
        auto = _attributed("auto").decode(item)
        assert (forced.events, forced.ignored, [b.reason for b in forced.bad]) == (
            auto.events,
            auto.ignored,
            [b.reason for b in auto.bad],
        )
