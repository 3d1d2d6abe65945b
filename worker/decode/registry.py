"""The input formats, in order of precedence: every other statement about formats derives from here.

``SPECS`` lists one ``FormatSpec`` per format. From it come:

- the accepted ``input_format`` names (``FORMATS``, checked against ``InputFormat``, the type of the
  setting) and the setting's help text (``INPUT_FORMAT_HELP``);
- the ``content-type`` header values that name a format (``format_from_headers``): a specific
  type wins over the configured ``input_format``, as it is said by the producer of the record;
  a generic one (``application/json``...), another one or none follows the setting;
- detection (``detect``), per item: a text line by its first byte (the text formats start with a
  date) and then its shape, the first text format in ``SPECS`` whose ``matches`` holds (``ctr``,
  last, takes the lines no other claims, so that they are refused as malformed ``ctr`` lines);
  else a JSON object by its keys: the first JSON format in ``SPECS`` whose ``detected_by``
  holds; none: bad, "unrecognised event format" (so is valid JSON that is not an object). The
  typed decoder of the chosen format then validates the item;
- the fast path's check (``FormatSet``): each JSON format's typed decoder also keeps, raw, the keys
  of the formats ranked above it, and it claims a document only when none of them is present and
  its own ``detected_by`` holds, so that the fast path never decides otherwise than detection.

Adding an input format: write its module (a ``JsonFormat`` or a ``TextFormat``, see
``worker.decode.format_contract``), add its spec to ``SPECS`` at its rank and its name to
``InputFormat``.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Literal, NamedTuple, get_args

import msgspec

from worker.decode.canonical import CanonicalFormat
from worker.decode.containerd import ContainerdFormat, CtrFormat
from worker.decode.docker import DockerFormat
from worker.decode.eventbridge import EventBridgeFormat
from worker.decode.format_contract import ABSENT, Claims, DecodeContext, JsonFormat, TextFormat
from worker.decode.podman import PodmanFormat
from worker.decode.shippers import FluentBitFormat, MetricbeatFormat
from worker.decode.text_events import DockerTextFormat, PodmanTextFormat, is_docker_line, is_podman_line

__all__ = [
    "FORMATS",
    "INPUT_FORMAT_HELP",
    "SPECS",
    "FormatSet",
    "FormatSpec",
    "InputFormat",
    "JsonSpec",
    "Member",
    "Signature",
    "TextSpec",
    "all_of",
    "any_of",
    "detect",
    "format_from_headers",
    "label",
    "shape",
    "string",
]

InputFormat = Literal[
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
]
"""The type of the ``input_format`` setting: ``auto`` and the selectable formats, in ``SPECS`` order."""


class Member(NamedTuple):
    """A key a JSON document has; ``string``: its value is a JSON string."""

    key: str
    string: bool = False


Signature = tuple[tuple[Member, ...], ...]
"""Alternatives, any of which identifies a format; each is members the document has, all of them."""


def any_of(*keys: str) -> Signature:
    """Any one of ``keys`` present."""
    return tuple((Member(key),) for key in keys)


def all_of(*keys: str) -> Signature:
    """All of ``keys`` present."""
    return (tuple(Member(key) for key in keys),)


def string(key: str) -> Signature:
    """``key`` present, with a JSON string value."""
    return ((Member(key, string=True),),)


@dataclass(frozen=True, kw_only=True, slots=True)
class FormatSpec:
    """What every format declares. ``label`` names it in bad-item reasons ("invalid docker event");
    ``selectable``: whether ``input_format`` may force it."""

    name: str
    label: str
    summary: str
    content_types: tuple[str, ...] = ()
    selectable: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class JsonSpec(FormatSpec):
    """A JSON format: its class and the keys that identify its documents."""

    format: type[JsonFormat[Any]]
    detected_by: Signature


def _any_line(item: bytes) -> bool:
    return True


@dataclass(frozen=True, kw_only=True, slots=True)
class TextSpec(FormatSpec):
    """A text format: how it is built, the bytes its items start with and the shape of its lines."""

    format: Callable[[DecodeContext], TextFormat]
    first_bytes: bytes
    matches: Callable[[bytes], bool] = _any_line


# In order of precedence: detection picks the first JSON format whose ``detected_by`` holds.
SPECS: tuple[JsonSpec | TextSpec, ...] = (
    JsonSpec(
        name="eventbridge",
        label="EventBridge",
        summary="EventBridge events, ECS's own output: ignored",
        format=EventBridgeFormat,
        detected_by=any_of("detail-type"),
        selectable=False,
    ),
    JsonSpec(
        name="canonical",
        label="canonical",
        summary="schemas.events.TaskEvent as JSON",
        format=CanonicalFormat,
        detected_by=all_of("cluster", "task"),
        content_types=("application/vnd.ecs-state.event+json",),
    ),
    JsonSpec(
        name="podman",
        label="Podman",
        summary="podman events --format json lines",
        format=PodmanFormat,
        detected_by=string("Status"),
    ),
    JsonSpec(
        name="docker",
        label="docker",
        summary="Docker events, and Podman's Docker-compatible ones",
        format=DockerFormat,
        detected_by=any_of("Type", "Action", "Actor"),
        content_types=("application/vnd.docker.event+json",),
    ),
    JsonSpec(
        name="metricbeat",
        label="Metricbeat docker.event",
        summary="Metricbeat docker.event documents",
        format=MetricbeatFormat,
        detected_by=any_of("docker"),
    ),
    JsonSpec(
        name="fluentbit",
        label="Fluent Bit",
        summary="Fluent Bit docker_events records",
        format=FluentBitFormat,
        detected_by=string("message"),
    ),
    JsonSpec(
        name="containerd",
        label="containerd",
        summary="containerd event bodies without their ctr line",
        format=ContainerdFormat,
        detected_by=any_of("container_id", "exited_at", "exec_id") + all_of("id", "runtime"),
    ),
    TextSpec(
        name="docker-text",
        label="docker events line",
        summary="docker events lines, without --format",
        format=DockerTextFormat,
        first_bytes=b"0123456789",
        matches=is_docker_line,
    ),
    TextSpec(
        name="podman-text",
        label="podman events line",
        summary="podman events lines, without --format",
        format=PodmanTextFormat,
        first_bytes=b"0123456789",
        matches=is_podman_line,
    ),
    TextSpec(
        name="ctr",
        label="containerd",
        summary="ctr events lines",
        format=CtrFormat,
        first_bytes=b"0123456789",
        content_types=("application/x-ctr-events",),
    ),
)

FORMATS: tuple[str, ...] = ("auto", *(spec.name for spec in SPECS if spec.selectable))
"""The accepted ``input_format`` names."""

if get_args(InputFormat) != FORMATS:
    raise TypeError(f"InputFormat must list {FORMATS}, in this order")

INPUT_FORMAT_HELP = "Input format, or auto to detect it per item: " + "; ".join(
    f"{spec.name} ({spec.summary})" for spec in SPECS if spec.selectable
)

_BY_NAME = {spec.name: spec for spec in SPECS}
_CONTENT_TYPES = {content_type: spec.name for spec in SPECS for content_type in spec.content_types}
_JSON_SPECS = [spec for spec in SPECS if isinstance(spec, JsonSpec)]
_TEXT_BY_FIRST_BYTE: dict[int, list[tuple[str, Callable[[bytes], bool]]]] = {}
for _spec in SPECS:
    if isinstance(_spec, TextSpec):
        for _byte in _spec.first_bytes:
            _TEXT_BY_FIRST_BYTE.setdefault(_byte, []).append((_spec.name, _spec.matches))
if ord("{") in _TEXT_BY_FIRST_BYTE:
    raise TypeError("a text format may not claim items starting with '{' (JSON objects)")


def label(name: str) -> str:
    """How bad-item reasons name the format ``name``."""
    return _BY_NAME[name].label


def shape(name: str) -> str:
    """What identifies an item of the format ``name``, for a reason ("has Type, Action or Actor")."""
    spec = _BY_NAME[name]
    if isinstance(spec, TextSpec):
        return f"a text line: {spec.summary}"
    alternatives = [" and ".join(m.key for m in alt) for alt in spec.detected_by]
    return "has " + " or ".join(alternatives)


def format_from_headers(headers: Sequence[tuple[str, bytes | str | None]], default: str) -> str:
    """The format the record's (first) ``content-type`` header names, or ``default``."""
    for key, value in headers:
        if not value or key.lower() != "content-type":
            continue
        text = value if isinstance(value, str) else value.decode("latin-1")
        return _CONTENT_TYPES.get(text.split(";", 1)[0].strip().lower(), default)
    return default


# Detection ---------------------------------------------------------------------------------------


def _attr(key: str) -> str:
    """The Struct attribute that holds a detection key raw."""
    return "key_" + "".join(c if c.isalnum() else "_" for c in key)


def _with_raw_members(name: str, base: type[msgspec.Struct], keys: Sequence[str], **options: bool) -> Any:
    """A subclass of ``base`` (its options inherited unless given) that also keeps ``keys`` raw."""

    def body(namespace: dict[str, Any]) -> None:
        namespace["__module__"] = __name__
        namespace["__annotations__"] = {_attr(key): msgspec.Raw for key in keys}
        namespace.update({_attr(key): msgspec.field(default=ABSENT, name=key) for key in keys})

    return types.new_class(name, (base,), {"kw_only": True, **options}, body)


def _raw_matches(raw: msgspec.Raw, string_value: bool) -> bool:
    return len(raw) > 0 and (not string_value or memoryview(raw)[0] == 0x22)


_ALL_KEYS = sorted({m.key for spec in _JSON_SPECS for alt in spec.detected_by for m in alt})
_Probe = _with_raw_members("Probe", msgspec.Struct, _ALL_KEYS, gc=False)
"""Every key detection looks at, kept raw: skimming a document costs one pass, no objects."""
_probe_decoder = msgspec.json.Decoder(_Probe)
_DETECTION = [
    (spec.name, [[(_attr(m.key), m.string) for m in alt] for alt in spec.detected_by]) for spec in _JSON_SPECS
]


def detect(item: bytes) -> str | None:
    """The format of ``item`` by its shape, or None. Raises msgspec's errors for malformed JSON."""
    text_formats = _TEXT_BY_FIRST_BYTE.get(item[0])
    if text_formats is not None:
        return next((name for name, matches in text_formats if matches(item)), None)
    try:
        probe = _probe_decoder.decode(item)
    except msgspec.ValidationError:  # valid JSON, but not an object
        return None
    for name, alternatives in _DETECTION:
        for alternative in alternatives:
            if all(_raw_matches(getattr(probe, attr), is_str) for attr, is_str in alternative):
                return name
    return None


# The fast path's check -----------------------------------------------------------------------------


def _typed_matches(value: Any, default: Any, string_value: bool) -> bool:
    """Whether a decoded member surely was in the document (a value other than its default)."""
    if isinstance(value, msgspec.Raw):
        return _raw_matches(value, string_value)
    return value != default and (not string_value or isinstance(value, str))


def _default(field: msgspec.structs.FieldInfo) -> Any:
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return field.default


def _own_check(spec: JsonSpec, fields: dict[str, msgspec.structs.FieldInfo]) -> Callable[[Any], bool] | None:
    """Whether a decoded document has the format's own keys; None when decoding says so already."""
    if missing := sorted({m.key for alt in spec.detected_by for m in alt} - fields.keys()):
        raise TypeError(f"{spec.format.document.__name__} does not read {missing}, keys that detect it")
    alternatives = []
    for alt in spec.detected_by:
        if all(fields[m.key].required and (not m.string or fields[m.key].type is str) for m in alt):
            return None
        alternatives.append([(fields[m.key].name, _default(fields[m.key]), m.string) for m in alt])

    def own(doc: Any) -> bool:
        return any(all(_typed_matches(getattr(doc, a), d, s) for a, d, s in alt) for alt in alternatives)

    return own


def _rank(spec: JsonSpec, above: Sequence[JsonSpec]) -> tuple[msgspec.json.Decoder[Any], Claims]:
    """The typed decoder and ``claims`` check of ``spec`` given the formats ranked ``above`` it.

    The check reads, raw, the keys of the formats above (``markers``): on the hot path an absent
    member is the ``ABSENT`` default itself, so one tuple comparison in C answers."""
    document = spec.format.document
    fields = {f.encode_name: f for f in msgspec.structs.fields(document)}
    marker_keys = sorted({m.key for higher in above for alt in higher.detected_by for m in alt})
    if clash := [key for key in marker_keys if key in fields]:
        raise TypeError(f"{document.__name__} reads {clash}, keys of formats ranked above {spec.name}")
    ranked: Any = document
    if document.__struct_config__.forbid_unknown_fields:
        marker_keys = []  # any key of a format above fails the typed decode
    elif marker_keys:
        ranked = _with_raw_members(f"{document.__name__}Ranked", document, marker_keys)
    markers = attrgetter(*(_attr(key) for key in marker_keys)) if marker_keys else None
    absent = ABSENT if len(marker_keys) == 1 else (ABSENT,) * len(marker_keys)
    return msgspec.json.Decoder(ranked), Claims(markers, absent, _own_check(spec, fields))


_RANKED = {spec.name: _rank(spec, _JSON_SPECS[:rank]) for rank, spec in enumerate(_JSON_SPECS)}


class FormatSet:
    """The formats of one ``RecordDecoder``, built from ``SPECS`` around its context."""

    __slots__ = ("by_name", "json")

    def __init__(self, context: DecodeContext) -> None:
        self.json: dict[str, JsonFormat[Any]] = {
            spec.name: spec.format(spec.name, context, *_RANKED[spec.name]) for spec in _JSON_SPECS
        }
        self.by_name: dict[str, JsonFormat[Any] | TextFormat] = {
            spec.name: self.json[spec.name] if isinstance(spec, JsonSpec) else spec.format(context)
            for spec in SPECS
        }
