"""Exit codes above 2**31, and every other int64, wrap to int32 as the ECS agent wraps them
(``int32(aws.ToInt(change.ExitCode))``), in every format; what is not an integer is bad input."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests import decode_inputs as inputs
from worker.decode import RecordDecoder
from worker.decode.bad_items import InvalidItem
from worker.decode.exit_codes import parse_exit_code, wrap_int32

WRAPS = [
    (3221225477, -1073741819),  # 0xC0000005, STATUS_ACCESS_VIOLATION: a Windows container's crash
    (2**32 - 1, -1),
    (2**32, 0),
    (2**31, -(2**31)),
    (2**31 - 1, 2**31 - 1),
    (-(2**31), -(2**31)),
    (-(2**31) - 1, 2**31 - 1),
    (-1, -1),
    (0, 0),
    (137, 137),
    (2**63 - 1, -1),
    (-(2**63), 0),
]
"""(exit code as the runtime gives it, what ECS is told): Go's int32() of the int64."""

UINT32_WRAPS = [(given, want) for given, want in WRAPS if 0 <= given < 2**32]
"""containerd's ``exit_status`` is a uint32."""


def go_int32(value: int) -> int:
    """Go's ``int32(v)`` of an int64, written independently: the low 32 bits, signed."""
    low = value & 0xFFFFFFFF
    return low - 2**32 if low & 0x80000000 else low


def test_the_expected_values_are_gos_int32() -> None:
    for given, want in WRAPS:
        assert go_int32(given) == want
        assert wrap_int32(given) == want
        assert parse_exit_code(str(given)) == want


@pytest.mark.parametrize("text", ["+137", "00137", "-0"])
def test_parse_accepts_what_atoi_accepts(text: str) -> None:
    assert parse_exit_code(text) == int(text)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64])
def test_beyond_int64_is_bad(value: int) -> None:
    with pytest.raises(InvalidItem, match="outside int64"):
        wrap_int32(value)
    with pytest.raises(InvalidItem, match="outside int64"):
        parse_exit_code(str(value))


StringFormat = Callable[[str], bytes]
STRING_FORMATS: dict[str, StringFormat] = {
    "docker": lambda code: inputs.docker_json("die", exitCode=code),
    "docker (Podman attribute)": lambda code: inputs.docker_json("died", containerExitCode=code),
    "podman compat": lambda code: inputs.podman_compat("died", containerExitCode=code),
    "metricbeat": lambda code: inputs.metricbeat("die", exitCode=code),
    "fluentbit": lambda code: inputs.fluentbit("die", exitCode=code),
    "docker-text": lambda code: inputs.docker_line("die", exitCode=code),
}
"""The formats whose exit code is a string attribute (``exitCode``, Podman's ``containerExitCode``)."""
IntFormat = Callable[[int], bytes]
INT_FORMATS: dict[str, IntFormat] = {
    "podman": lambda code: inputs.podman_json("died", exit_code=code),
    "canonical": lambda code: inputs.canonical(exit_code=code),
}
"""The formats whose exit code is a JSON integer."""


def stopped_exit_code(record: bytes, decoder: RecordDecoder | None = None) -> int | None:
    result = (decoder or RecordDecoder()).decode(record)
    assert not result.bad, result.bad
    assert not result.ignored, result.ignored
    (event,) = result.events
    (change,) = event.containers
    assert change.status == "STOPPED"
    return change.exitCode


@pytest.mark.parametrize(("given", "want"), WRAPS, ids=str)
@pytest.mark.parametrize("fmt", sorted(STRING_FORMATS))
def test_string_exit_codes_wrap(fmt: str, given: int, want: int) -> None:
    assert stopped_exit_code(STRING_FORMATS[fmt](str(given))) == want


@pytest.mark.parametrize(("given", "want"), WRAPS, ids=str)
@pytest.mark.parametrize("fmt", sorted(INT_FORMATS))
def test_integer_exit_codes_wrap(fmt: str, given: int, want: int) -> None:
    assert stopped_exit_code(INT_FORMATS[fmt](given)) == want


def _attributed() -> RecordDecoder:
    decoder = RecordDecoder()
    assert decoder.decode(inputs.docker_json("start")).events
    return decoder


@pytest.mark.parametrize(("given", "want"), UINT32_WRAPS, ids=str)
def test_containerd_exit_status_wraps(given: int, want: int) -> None:
    decoder = _attributed()
    assert stopped_exit_code(inputs.ctr_exit(given), decoder) == want
    line = inputs.ctr_exit(given)
    body = line[line.index(b"{") :]
    assert stopped_exit_code(body, decoder) == want


def _bad(record: bytes, decoder: RecordDecoder | None = None) -> str:
    result = (decoder or RecordDecoder()).decode(record)
    assert not result.events
    assert not result.ignored
    (bad,) = result.bad
    assert bad.error_class == "ValidationError"
    return bad.reason


@pytest.mark.parametrize("text", ["3221225477.0", "0xC0000005", "abc", "", "1e9", "9223372036854775808"])
@pytest.mark.parametrize("fmt", sorted(STRING_FORMATS))
def test_a_string_that_is_no_int64_is_bad(fmt: str, text: str) -> None:
    assert "exit code" in _bad(STRING_FORMATS[fmt](text))


@pytest.mark.parametrize("fmt", sorted(INT_FORMATS))
def test_an_integer_beyond_int64_is_bad(fmt: str) -> None:
    for value in (2**63, -(2**63) - 1):
        _bad(INT_FORMATS[fmt](value))


def test_a_json_exit_code_that_is_no_integer_is_bad() -> None:
    for value in ("7", 7.5, True):
        _bad(inputs.podman_json("died", ContainerExitCode=value))
    _bad(inputs.canonical(7).replace(b'"exitCode":7', b'"exitCode":7.5'))
    _bad(inputs.canonical(7).replace(b'"exitCode":7', b'"exitCode":"7"'))


def test_containerd_exit_status_beyond_uint32_is_bad() -> None:
    decoder = _attributed()
    for value in (2**32, -1):
        _bad(inputs.ctr_exit(value), decoder)
