"""ECS field rules (worker.ecs_rules): UTF-8 truncation and network-binding checks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.ecs import NetworkBinding
from schemas.events import ContainerChange, TaskEvent
from worker.ecs_rules import (
    MAX_ID_BYTES,
    MAX_PORT_RANGES,
    MAX_REASON_BYTES,
    check_event,
    check_network_bindings,
    truncate_utf8,
)


def test_limits() -> None:
    assert (MAX_REASON_BYTES, MAX_ID_BYTES, MAX_PORT_RANGES) == (1024, 255, 100)


# -- truncation -------------------------------------------------------------------------------------


def test_truncate_keeps_short_and_none() -> None:
    assert truncate_utf8(None, 10) is None
    assert truncate_utf8("", 10) == ""
    assert truncate_utf8("abc", 3) == "abc"
    assert truncate_utf8("é" * 512, MAX_REASON_BYTES) == "é" * 512  # exactly 1024 bytes


def test_truncate_ascii() -> None:
    assert truncate_utf8("a" * 2000, MAX_REASON_BYTES) == "a" * MAX_REASON_BYTES
    assert truncate_utf8("b" * 256, MAX_ID_BYTES) == "b" * MAX_ID_BYTES


@pytest.mark.parametrize(
    ("char", "offset"),
    [("é", 1), ("€", 1), ("€", 2), ("🙂", 1), ("🙂", 2), ("🙂", 3)],
)
def test_truncate_never_splits_a_multibyte_character(char: str, offset: int) -> None:
    """The multi-byte character starts ``offset`` bytes before the limit, so it does not fit."""
    assert len(char.encode("utf-8")) > offset
    head = "a" * (MAX_REASON_BYTES - offset)
    text = head + char + "zzz"
    cut = truncate_utf8(text, MAX_REASON_BYTES)
    assert cut == head
    assert cut is not None
    assert len(cut.encode("utf-8")) == MAX_REASON_BYTES - offset


def test_truncate_keeps_a_character_ending_exactly_at_the_limit() -> None:
    text = "a" * (MAX_ID_BYTES - 4) + "🙂" + "b"
    assert truncate_utf8(text, MAX_ID_BYTES) == "a" * (MAX_ID_BYTES - 4) + "🙂"


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=400), st.integers(1, 300))
def test_truncate_is_the_longest_fitting_prefix(text: str, limit: int) -> None:
    cut = truncate_utf8(text, limit)
    assert cut is not None
    assert text.startswith(cut)
    assert len(cut.encode("utf-8")) <= limit
    if cut != text:
        # One more character would not fit.
        assert len(text[: len(cut) + 1].encode("utf-8")) > limit


# -- network bindings -------------------------------------------------------------------------------


def nb(**members: object) -> NetworkBinding:
    return NetworkBinding(**members)  # type: ignore[arg-type]


def test_valid_bindings_pass() -> None:
    assert check_network_bindings([]) is None
    assert (
        check_network_bindings(
            [
                nb(bindIP="0.0.0.0", containerPort=80, hostPort=32768, protocol="tcp"),
                nb(bindIP="0.0.0.0", containerPort=80, hostPort=32769, protocol="udp"),
                nb(containerPortRange="8000-8010", hostPortRange="40000-40010", protocol="tcp"),
                nb(containerPortRange="8011-8020", protocol="tcp"),
                nb(containerPort=1),
                nb(containerPort=65535),
            ]
        )
        is None
    )


def test_same_single_port_on_ipv4_and_ipv6_is_allowed() -> None:
    assert (
        check_network_bindings(
            [
                nb(bindIP="0.0.0.0", containerPort=80, hostPort=8080, protocol="tcp"),
                nb(bindIP="::", containerPort=80, hostPort=8080, protocol="tcp"),
            ]
        )
        is None
    )


@pytest.mark.parametrize(
    ("binding", "needle"),
    [
        (nb(containerPort=0), "containerPort 0 is outside 1-65535"),
        (nb(containerPort=65536), "containerPort 65536 is outside 1-65535"),
        (nb(containerPort=80, hostPort=0), "hostPort 0 is outside 1-65535"),
        (nb(containerPort=80, hostPort=70000), "hostPort 70000"),
        (nb(containerPortRange="90-80"), "first port must be less than the last"),
        (nb(containerPortRange="80-80"), "first port must be less than the last"),
        (nb(containerPortRange="0-10"), "outside 1-65535"),
        (nb(containerPortRange="10-65536"), "outside 1-65535"),
        (nb(containerPortRange="80"), "not of the form FIRST-LAST"),
        (nb(containerPortRange="a-b"), "not of the form FIRST-LAST"),
        (nb(containerPortRange="-5-10"), "not of the form FIRST-LAST"),
        (nb(containerPortRange="10-20", hostPortRange="30-20"), "hostPortRange"),
        (nb(containerPortRange="10-20", hostPortRange="x"), "hostPortRange"),
    ],
)
def test_bad_binding_names_the_rule(binding: NetworkBinding, needle: str) -> None:
    broken = check_network_bindings([binding])
    assert broken is not None
    assert needle in broken


@pytest.mark.parametrize(
    "bindings",
    [
        [nb(containerPortRange="8000-8010"), nb(containerPortRange="8010-8020")],
        [nb(containerPortRange="8000-8100"), nb(containerPortRange="8010-8020")],
        [nb(containerPortRange="8000-8010"), nb(containerPort=8005)],
        [nb(containerPortRange="8000-8010", protocol="udp"), nb(containerPort=8010, protocol="udp")],
        [nb(containerPortRange="1-100"), nb(containerPortRange="200-300"), nb(containerPortRange="50-60")],
    ],
)
def test_overlapping_ports_of_one_protocol_are_rejected(bindings: list[NetworkBinding]) -> None:
    broken = check_network_bindings(bindings)
    assert broken is not None
    assert "overlap" in broken


def test_overlap_is_per_protocol_and_tcp_is_the_default() -> None:
    assert (
        check_network_bindings([nb(containerPortRange="8000-8010"), nb(containerPort=8005, protocol="udp")])
        is None
    )
    broken = check_network_bindings(
        [nb(containerPortRange="8000-8010"), nb(containerPort=8005, protocol="tcp")]
    )
    assert broken is not None
    assert broken.startswith("tcp ports")


def test_at_most_100_port_ranges_per_container() -> None:
    ranges = [
        nb(containerPortRange=f"{10_000 + 10 * i}-{10_000 + 10 * i + 5}") for i in range(MAX_PORT_RANGES)
    ]
    assert check_network_bindings(ranges) is None
    broken = check_network_bindings([*ranges, nb(containerPortRange="30000-30001")])
    assert broken == f"more than {MAX_PORT_RANGES} port ranges in one container"


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 200), st.integers(0, 20)), min_size=1, max_size=8))
def test_overlap_detection_matches_a_reference(spans: list[tuple[int, int]]) -> None:
    bindings = [
        nb(containerPortRange=f"{low}-{low + width}") if width else nb(containerPort=low)
        for low, width in spans
    ]
    pairs = [(a, a + w) for a, w in spans]
    overlapping = any(
        i < j
        and pairs[i][0] <= pairs[j][1]
        and pairs[j][0] <= pairs[i][1]
        and not (spans[i] == spans[j] and w == 0)
        for i, (_, w) in enumerate(spans)
        for j in range(len(spans))
    )
    broken = check_network_bindings(bindings)
    assert (broken is not None) == overlapping, broken


# -- check_event ------------------------------------------------------------------------------------


def _event(*containers: ContainerChange) -> TaskEvent:
    return TaskEvent(cluster="c", task="t", observedAt=0, containers=containers)


def test_check_event_returns_the_broken_rule_with_the_container() -> None:
    good = ContainerChange(containerName="ok", status="RUNNING", networkBindings=(nb(containerPort=80),))
    bad = ContainerChange(
        containerName="web",
        status="RUNNING",
        networkBindings=(nb(containerPortRange="100-90"),),
    )
    assert check_event(_event(good)) is None
    assert check_event(_event()) is None
    assert check_event(_event(ContainerChange(containerName="x"))) is None
    broken = check_event(_event(good, bad))
    assert broken == "container 'web': containerPortRange '100-90': the first port must be less than the last"


def test_check_event_checks_each_container_separately() -> None:
    # The same port in two containers is no overlap.
    a = ContainerChange(containerName="a", networkBindings=(nb(containerPort=80),))
    b = ContainerChange(containerName="b", networkBindings=(nb(containerPort=80),))
    assert check_event(_event(a, b)) is None


@pytest.mark.parametrize("text", ["²-5", "1-³", "\u0661-\u0665"])
def test_non_ascii_digits_in_a_range_are_a_broken_rule(text: str) -> None:
    broken = check_network_bindings([nb(containerPortRange=text)])
    assert broken is not None
    assert "not of the form FIRST-LAST" in broken
