"""Reading dead letters (``worker.letters``), pure parts: a record's error headers and its own,
letters of the earlier header form, and the filter."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord

from schemas.records import Stage
from worker.decode import BadItem
from worker.letters import LetterFilter, letter_of
from worker.publish import Origin, dead_letter_headers, input_dead_letter

TASK = "arn:aws:ecs:us-east-1:123456789012:task/prod/0123456789abcdef0123456789abcdef"


def record(
    headers: list[tuple[str, bytes]], key: bytes | None = b"k", timestamp: int = 1_000
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("dlq", 0, 7, timestamp, 0, key, b"v", None, 1, 1, headers)


def test_a_letter_keeps_the_input_records_own_headers_apart() -> None:
    letter_headers = input_dead_letter(
        "in", 1, 5, [("decode", BadItem("bad", "DecodeError"))], Origin("g", "w")
    )
    own = [("content-type", b"text/plain")]
    letter = letter_of(record(dead_letter_headers(letter_headers, own)))
    assert letter.errors == letter_headers
    assert (letter.stage, letter.headers, letter.timestamp_ms) == ("decode", own, 1_000)


def test_letters_of_the_earlier_header_form_are_read() -> None:
    earlier = [
        ("errors.stage", b"submit"),
        ("errors.errorClass", b"ServerException"),
        ("errors.message", b"m"),
    ]
    letter = letter_of(record(earlier, key=TASK.encode()))
    assert letter.errors is not None
    assert (letter.stage, letter.errors.errorClass, letter.errors.task, letter.headers) == (
        "submit",
        "ServerException",
        TASK,
        [],
    )
    decoded = letter_of(
        record([("errors.stage", b"decode"), ("errors.errorClass", b"X"), ("errors.offset", b"3")])
    )
    assert decoded.errors is not None
    assert (decoded.stage, decoded.errors.offset, decoded.errors.stage) == ("decode", 3, "VALUE_CONVERTER")


def test_a_record_without_error_headers_is_no_letter() -> None:
    letter = letter_of(record([("content-type", b"x"), ("errors.stage", b"elsewhere")]))
    assert letter.errors is None
    assert letter.stage is None
    assert letter.headers == [("content-type", b"x"), ("errors.stage", b"elsewhere")]


def test_the_filter_takes_stages_error_classes_and_a_time_range() -> None:
    decode = letter_of(
        record(
            dead_letter_headers(
                input_dead_letter("in", 0, 0, [("decode", BadItem("r", "DecodeError"))], Origin("g", "w"))
            ),
            timestamp=2_000,
        )
    )
    assert LetterFilter().matches(decode)
    assert LetterFilter(stages=("decode", "submit"), error_classes=("DecodeError",)).matches(decode)
    validate: tuple[Stage, ...] = ("validate",)
    assert not LetterFilter(stages=validate).matches(decode)
    assert not LetterFilter(error_classes=("ServerException",)).matches(decode)
    assert LetterFilter(since_ms=2_000, until_ms=2_001).matches(decode)
    assert not LetterFilter(since_ms=2_001).matches(decode)
    assert not LetterFilter(until_ms=2_000).matches(decode)
