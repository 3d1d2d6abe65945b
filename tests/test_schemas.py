"""The schemas package: the ECS request/response structs against botocore's model, the canonical
event, and the committed JSON Schema files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import botocore.session
import jsonschema
import msgspec
import pytest
from botocore.validate import ParamValidator

from schemas.bounds import INT64_MAX, INT64_MIN, MAX_ITEMS, MAX_NAME_LENGTH, MAX_NANOTIME, MAX_TEXT_LENGTH
from schemas.ecs import (
    AttachmentStateChange,
    ContainerStateChange,
    ManagedAgentName,
    ManagedAgentStateChange,
    NetworkBinding,
    SubmitTaskStateChangeRequest,
    SubmitTaskStateChangeResponse,
    TransportProtocol,
)
from schemas.events import AttachmentChange, ContainerChange, ManagedAgentChange, TaskEvent
from schemas.export import DEFAULT_DIR, PUBLIC_RECORDS, render, stale, write
from schemas.records import DeadLetter, Outcome, SourceRecords
from worker.submit import request_params

_OPERATION = botocore.session.get_session().get_service_model("ecs").operation_model("SubmitTaskStateChange")
_SCALARS: dict[str, type[msgspec.inspect.Type]] = {
    "string": msgspec.inspect.StrType,
    "integer": msgspec.inspect.IntType,
    "timestamp": msgspec.inspect.DateTimeType,
}


def _unwrap_optional(t: msgspec.inspect.Type) -> msgspec.inspect.Type:
    if isinstance(t, msgspec.inspect.UnionType):
        rest = [x for x in t.types if not isinstance(x, msgspec.inspect.NoneType)]
        assert len(rest) == 1, t
        return rest[0]
    return t


def _compare(t: msgspec.inspect.Type, shape: Any, path: str) -> list[str]:
    """Differences between a msgspec type and a botocore shape, recursively."""
    problems: list[str] = []
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(t, msgspec.inspect.StructType):
            return [f"{path}: expected a Struct for {shape.name}, got {t}"]
        fields = {f.name: f for f in t.fields}
        if set(fields) != set(shape.members):
            problems.append(f"{path}: members {sorted(fields)} != {sorted(shape.members)}")
        # msgspec.structs.fields agrees with type_info on which members have no default.
        required = {f.name for f in msgspec.structs.fields(t.cls) if f.required}
        assert required == {f.name for f in t.fields if f.required}
        if required != set(shape.required_members):
            problems.append(f"{path}: required {sorted(required)} != {sorted(shape.required_members)}")
        for name, member in shape.members.items():
            if name in fields:
                field_type = fields[name].type
                if not fields[name].required:
                    # Optional members default to None (omitted on the wire).
                    if fields[name].default is not None:
                        problems.append(
                            f"{path}.{name}: optional member defaults to {fields[name].default!r}"
                        )
                    field_type = _unwrap_optional(field_type)
                problems += _compare(field_type, member, f"{path}.{name}")
    elif kind == "list":
        if not isinstance(t, msgspec.inspect.VarTupleType):
            return [f"{path}: expected a tuple for list {shape.name}, got {t}"]
        problems += _compare(t.item_type, shape.member, f"{path}[]")
    elif kind == "string" and shape.enum:
        if not isinstance(t, msgspec.inspect.LiteralType) or set(t.values) != set(shape.enum):
            problems.append(f"{path}: expected Literal{shape.enum}, got {t}")
    elif kind in _SCALARS:
        if not isinstance(t, _SCALARS[kind]):
            problems.append(f"{path}: expected {kind}, got {t}")
    else:
        problems.append(f"{path}: unhandled shape type {kind}")
    return problems


def test_request_mirrors_botocore_model() -> None:
    assert (
        _compare(msgspec.inspect.type_info(SubmitTaskStateChangeRequest), _OPERATION.input_shape, "$") == []
    )


def test_response_mirrors_botocore_model() -> None:
    assert (
        _compare(msgspec.inspect.type_info(SubmitTaskStateChangeResponse), _OPERATION.output_shape, "$") == []
    )


class _RenamedMember(msgspec.Struct, kw_only=True):
    attachmentArn: str
    state: str


class _OptionalRequired(msgspec.Struct, kw_only=True):
    attachmentArn: str
    status: str | None = None


class _ListNotTuple(msgspec.Struct, kw_only=True):
    bindIP: str | None = None
    containerPort: int | None = None
    hostPort: int | None = None
    protocol: str | None = None
    containerPortRange: str | None = None
    hostPortRange: int | None = None


class _ContainerWithList(msgspec.Struct, kw_only=True):
    containerName: str | None = None
    imageDigest: str | None = None
    runtimeId: str | None = None
    exitCode: int | None = None
    networkBindings: list[NetworkBinding] | None = None
    reason: str | None = None
    status: str | None = None


def test_comparison_catches_drift() -> None:
    """The comparison can fail: renamed member, wrong required set, list, plain str for an enum,
    wrong scalar type."""
    attachment = _OPERATION.input_shape.members["attachments"].member
    container = _OPERATION.input_shape.members["containers"].member
    binding = container.members["networkBindings"].member

    def problems(struct: type[msgspec.Struct], shape: Any) -> str:
        return "\n".join(_compare(msgspec.inspect.type_info(struct), shape, "$"))

    assert "members" in problems(_RenamedMember, attachment)
    assert "required" in problems(_OptionalRequired, attachment)
    assert "expected a tuple" in problems(_ContainerWithList, container)
    found = problems(_ListNotTuple, binding)
    assert "$.protocol: expected Literal" in found
    assert "$.hostPortRange: expected string" in found


def test_enums_are_literals() -> None:
    assert set(get_args(TransportProtocol)) == {"tcp", "udp"}
    assert set(get_args(ManagedAgentName)) == {"ExecuteCommandAgent"}
    binding = _OPERATION.input_shape.members["containers"].member.members["networkBindings"].member
    assert set(binding.members["protocol"].enum) == set(get_args(TransportProtocol))
    agent = _OPERATION.input_shape.members["managedAgents"].member
    assert set(agent.members["managedAgentName"].enum) == set(get_args(ManagedAgentName))


def test_request_structs_reject_unknown_members_and_bad_enums() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"protocol": "sctp"}', type=NetworkBinding)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"cluster": "c", "bogus": 1}', type=SubmitTaskStateChangeRequest)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"attachmentArn": "a"}', type=AttachmentStateChange)


def _full_request() -> SubmitTaskStateChangeRequest:
    t = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    return SubmitTaskStateChangeRequest(
        cluster="demo",
        task="arn:aws:ecs:us-east-1:123456789012:task/demo/0123456789abcdef",
        status="STOPPED",
        reason="Essential container in task exited",
        containers=(
            ContainerStateChange(
                containerName="web",
                imageDigest="sha256:" + "a" * 64,
                runtimeId="b" * 64,
                exitCode=137,
                networkBindings=(
                    NetworkBinding(bindIP="0.0.0.0", containerPort=80, hostPort=32768, protocol="tcp"),
                    NetworkBinding(bindIP="::", containerPort=80, hostPort=32768, protocol="tcp"),
                    NetworkBinding(
                        bindIP="0.0.0.0",
                        protocol="udp",
                        containerPortRange="9000-9010",
                        hostPortRange="40000-40010",
                    ),
                ),
                reason="OutOfMemoryError: Container killed due to memory usage",
                status="STOPPED",
            ),
            ContainerStateChange(containerName="sidecar", exitCode=0, status="STOPPED"),
        ),
        attachments=(
            AttachmentStateChange(attachmentArn="arn:aws:ecs:us-east-1:1:attachment/x", status="DELETED"),
        ),
        managedAgents=(
            ManagedAgentStateChange(
                containerName="web", managedAgentName="ExecuteCommandAgent", status="STOPPED", reason="done"
            ),
        ),
        pullStartedAt=t,
        pullStoppedAt=t,
        executionStoppedAt=t,
    )


def test_request_params_pass_botocore_validation() -> None:
    params = request_params(_full_request())
    report = ParamValidator().validate(params, _OPERATION.input_shape)
    assert not report.has_errors(), report.generate_report()
    assert isinstance(params["pullStartedAt"], datetime)
    assert params["containers"][0]["networkBindings"][2]["containerPortRange"] == "9000-9010"


def test_request_params_omit_unset_members() -> None:
    params = request_params(SubmitTaskStateChangeRequest(cluster="c", task="t", status="RUNNING"))
    assert params == {"cluster": "c", "task": "t", "status": "RUNNING"}
    assert not ParamValidator().validate(params, _OPERATION.input_shape).has_errors()


def test_botocore_validation_would_catch_a_bad_request() -> None:
    params = request_params(_full_request())
    params["containers"][0]["exitCode"] = "137"
    assert ParamValidator().validate(params, _OPERATION.input_shape).has_errors()


def test_response_decodes_and_ignores_unknown_members() -> None:
    response = msgspec.json.decode(
        b'{"acknowledgment": "ACK", "extra": 1}', type=SubmitTaskStateChangeResponse
    )
    assert response.acknowledgment == "ACK"


# -- canonical event --------------------------------------------------------------------------------


def _full_event() -> TaskEvent:
    return TaskEvent(
        cluster="demo",
        task="arn:aws:ecs:us-east-1:123456789012:task/demo/abc",
        observedAt=1_714_564_800_123_456_789,
        status="STOPPED",
        reason="Essential container in task exited",
        containers=(
            ContainerChange(
                containerName="web",
                runtimeId="r",
                imageDigest="sha256:x",
                status="STOPPED",
                exitCode=-1,
                reason="é🙂",
                networkBindings=(
                    NetworkBinding(bindIP="::", containerPort=80, hostPort=8080, protocol="tcp"),
                ),
                stopRequested=True,
            ),
        ),
        attachments=(AttachmentChange(attachmentArn="arn:eni", status="DETACHED"),),
        managedAgents=(
            ManagedAgentChange(containerName="web", managedAgentName="ExecuteCommandAgent", status="STOPPED"),
        ),
        pullStartedAt=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        pullStoppedAt=datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC),
        executionStoppedAt=datetime(2024, 5, 1, 12, 5, tzinfo=UTC),
        taskDefinitionArn="arn:aws:ecs:us-east-1:123456789012:task-definition/demo:3",
    )


def test_canonical_event_round_trips() -> None:
    event = _full_event()
    wire = msgspec.json.encode(event)
    assert msgspec.json.decode(wire, type=TaskEvent) == event
    # Absent members are omitted, and decode back to their defaults.
    minimal = TaskEvent(cluster="c", task="t", observedAt=0)
    assert msgspec.json.encode(minimal) == b'{"cluster":"c","task":"t","observedAt":0}'
    assert msgspec.json.decode(b'{"cluster":"c","task":"t","observedAt":0}', type=TaskEvent) == minimal


def test_canonical_event_is_valid_against_its_json_schema() -> None:
    schema = json.loads((DEFAULT_DIR / "task-event.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(json.loads(msgspec.json.encode(_full_event())), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"cluster": "c", "task": "t"}, schema)  # observedAt missing


@pytest.mark.parametrize(
    "wire",
    [
        b'{"cluster":"c","task":"t"}',
        b'{"cluster":"","task":"t","observedAt":0}',
        b'{"cluster":"c","task":"t","observedAt":-1}',
        b'{"cluster":"c","task":"t","observedAt":0,"status":"DANCING"}',
        b'{"cluster":"c","task":"t","observedAt":0,"unknown":1}',
        b'{"cluster":"c","task":"t","observedAt":0,"containers":[{"containerName":"a","exitCode":9223372036854775808}]}',
        b'{"cluster":"c","task":"t","observedAt":0,"containers":[{"containerName":"a","exitCode":1.5}]}',
        b'{"cluster":"c","task":"t","observedAt":0,"containers":[{"containerName":"a","status":"UP"}]}',
    ],
)
def test_canonical_event_rejects_bad_input(wire: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(wire, type=TaskEvent)


def test_outcome_and_dead_letter_round_trip() -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    outcome = Outcome(
        cluster="c",
        task="t",
        status="RUNNING",
        result="acknowledged",
        attempts=1,
        fingerprint="f",
        request=_full_request(),
        firstEventAt=now,
        completedAt=now,
        latencyMs=1.5,
        sources=[SourceRecords(topic="in", partition=0, offsets=[1, 2])],
    )
    assert msgspec.json.decode(msgspec.json.encode(outcome), type=Outcome) == outcome
    letter = DeadLetter(
        stage="VALUE_CONVERTER",
        className="worker.decode.decoder.RecordDecoder",
        errorClass="DecodeError",
        message="m",
        connector="g",
        worker="w",
        offset=3,
    )
    assert msgspec.json.decode(msgspec.json.encode(letter), type=DeadLetter) == letter


# -- JSON Schema files ------------------------------------------------------------------------------


def test_committed_json_schema_files_are_current() -> None:
    assert stale() == [], "run `python -m schemas` and commit schemas/json"


def test_json_schema_files_cover_the_public_records() -> None:
    assert set(PUBLIC_RECORDS) == {"task-event", "outcome", "dead-letter-headers"}
    assert sorted(render()) == sorted(f"{name}.schema.json" for name in PUBLIC_RECORDS)
    for name, text in render().items():
        schema = json.loads(text)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["title"] == name.removesuffix(".schema.json")
        jsonschema.Draft202012Validator.check_schema(schema)


def test_stale_detects_missing_and_edited_files(tmp_path: Path) -> None:
    assert sorted(stale(tmp_path)) == sorted(render())
    written = write(tmp_path)
    assert sorted(p.name for p in written) == sorted(render())
    assert stale(tmp_path) == []
    (tmp_path / "outcome.schema.json").write_text("{}\n", encoding="utf-8")
    assert stale(tmp_path) == ["outcome.schema.json"]


def _event_with(**members: Any) -> bytes:
    return msgspec.json.encode({"cluster": "c", "task": "t", "observedAt": 0, **members})


def test_bounds_are_the_ones_of_schemas_bounds() -> None:
    """Each bound of the canonical event is the constant of ``schemas.bounds``, to the unit."""

    def accepted(wire: bytes) -> bool:
        try:
            msgspec.json.decode(wire, type=TaskEvent)
        except msgspec.ValidationError:
            return False
        return True

    def container(**members: Any) -> list[dict[str, Any]]:
        return [{"containerName": "a", **members}]

    at_the_bound = {
        "taskDefinitionArn": ("n" * MAX_NAME_LENGTH, "n" * (MAX_NAME_LENGTH + 1)),
        "reason": ("r" * MAX_TEXT_LENGTH, "r" * (MAX_TEXT_LENGTH + 1)),
        "observedAt": (MAX_NANOTIME, MAX_NANOTIME + 1),
        "containers": (container() * MAX_ITEMS, container() * (MAX_ITEMS + 1)),
    }
    for member, (inside, outside) in at_the_bound.items():
        assert accepted(_event_with(**{member: inside})), member
        assert not accepted(_event_with(**{member: outside})), member
    # Exit codes: any int64 (the agent reads a Go int); decoding wraps them to int32.
    for code, ok in ((INT64_MIN, True), (INT64_MAX, True), (INT64_MIN - 1, False), (INT64_MAX + 1, False)):
        assert accepted(_event_with(containers=container(exitCode=code))) == ok, code
    schema = json.loads((DEFAULT_DIR / "task-event.schema.json").read_text(encoding="utf-8"))
    assert schema["$defs"]["TaskEvent"]["properties"]["cluster"]["maxLength"] == MAX_NAME_LENGTH


def test_new_members_are_optional_and_omitted_by_default() -> None:
    minimal = TaskEvent(cluster="c", task="t", observedAt=0, containers=(ContainerChange(containerName="a"),))
    wire = msgspec.json.encode(minimal)
    assert b"taskDefinitionArn" not in wire
    assert b"stopRequested" not in wire
    decoded = msgspec.json.decode(
        _event_with(containers=[{"containerName": "a", "stopRequested": True}]), type=TaskEvent
    )
    assert decoded.containers[0].stopRequested is True
    assert decoded.taskDefinitionArn is None
