"""``python -m worker replay``: offline decode and coalesce of a captured stream."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import msgspec
import pytest

from devkit.fleet import Fleet, FleetShape, synthetic_fleet
from schemas.ecs import SubmitTaskStateChangeRequest
from worker.replay import read_definitions, read_records, replay

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "data" / "samples"


def write_docker_capture(path: Path, tasks: int) -> Fleet:
    """A capture of a fleet's Docker events (their own times), a bad line and an image event; the
    fleet's task definitions beside it, as ``aws ecs describe-task-definition`` prints them."""
    fleet = synthetic_fleet(tasks, seed=4, fmt="docker", shape=FleetShape(running_share=0.25))
    base = 1_764_598_461_000_000_000
    lines = [fleet.render(step, fleet.observed_ns(step, base)) for step in fleet.steps]
    path.write_bytes(
        b"\n".join([*lines, b"{not json", b'{"Type":"image","Action":"pull","Actor":{"ID":"x"},"time":1}'])
    )
    definitions = [msgspec.json.encode(d.describe_answer()) for d in fleet.definitions]
    path.with_suffix(".definitions.jsonl").write_bytes(b"\n".join(definitions))
    return fleet


def test_replay_reports_the_state_changes_a_capture_would_submit(tmp_path: Path) -> None:
    """Init containers, health-gated apps, restart-policy restarts, the agent's stops: replayed
    with the fleet's definitions, every task ends as the fleet expects, exit codes included, at
    two requests at most per task."""
    capture = tmp_path / "capture.jsonl"
    fleet = write_docker_capture(capture, 30)
    report = replay(
        read_records(capture), definitions=read_definitions(capture.with_suffix(".definitions.jsonl"))
    )
    last: dict[str, SubmitTaskStateChangeRequest] = {}
    for request in report.submissions:
        assert request.task is not None
        last[request.task] = request
    assert set(last) == set(fleet.expected)
    for arn, want in fleet.expected.items():
        assert last[arn].status == want.status
        containers = {c.containerName: (c.status, c.exitCode) for c in last[arn].containers or ()}
        assert containers == {n: (s, want.exit_codes.get(n)) for n, s in want.containers.items()}
    assert len(report.submissions) <= 2 * len(fleet.expected)
    assert report.without_definition == []
    assert list(report.bad.values()) == [1]
    assert next(iter(report.bad)).startswith("DecodeError: malformed JSON")
    assert report.ignored["docker: not a container event (image)"] == 1
    assert report.ignored["docker: health_status (not a task state change)"] > 0


def test_replay_command_prints_requests_and_a_summary(tmp_path: Path) -> None:
    capture = tmp_path / "capture.jsonl"
    fleet = write_docker_capture(capture, 5)
    definitions = ["--task-definitions", str(capture.with_suffix(".definitions.jsonl"))]
    done = subprocess.run(
        [sys.executable, "-m", "worker", "replay", str(capture), "--json", *definitions],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    *requests, summary_line = done.stdout.decode().splitlines()
    decoded = [msgspec.json.decode(line, type=SubmitTaskStateChangeRequest) for line in requests]
    assert {r.task for r in decoded} == set(fleet.expected)
    summary = msgspec.json.decode(summary_line)
    assert summary["tasks"] == len(fleet.expected)
    assert list(summary["bad"].values()) == [1]


def test_replay_of_the_real_samples_counts_every_record() -> None:
    for name in ("docker_events.jsonl", "containerd_ctr_events.txt", "podman_compat_events.jsonl"):
        records = list(read_records(SAMPLES / name))
        report = replay(records)
        # The public samples carry no ECS labels: nothing to submit, everything ignored, nothing bad.
        assert report.submissions == []
        assert sum(report.ignored.values()) + sum(report.bad.values()) >= len(records)
        assert report.bad == {}


def test_replay_command_rejects_an_unknown_format(tmp_path: Path) -> None:
    capture = tmp_path / "c.jsonl"
    capture.write_text("{}\n")
    done = subprocess.run(
        [sys.executable, "-m", "worker", "replay", str(capture), "--input-format", "xml"],
        cwd=ROOT, capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert b"--input-format must be one of" in done.stderr


def test_replay_from_standard_input_streams_with_progress(tmp_path: Path) -> None:
    """``replay -``: records are taken as they arrive (a progress line comes while standard input
    is still open, after the first half only), and the result equals that of the file."""
    capture = tmp_path / "capture.jsonl"
    write_docker_capture(capture, 6)
    definitions = ["--task-definitions", str(capture.with_suffix(".definitions.jsonl"))]
    lines = capture.read_bytes().splitlines(keepends=True)
    half = len(lines) // 2
    command = [sys.executable, "-m", "worker", "replay", "-", "--json", "--progress-every", str(half)]
    with subprocess.Popen(
        [*command, *definitions],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as process:  # fmt: skip
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdin.write(b"".join(lines[:half]))
        process.stdin.flush()
        progress = process.stderr.readline().decode()  # blocks until the first half is read
        assert progress.startswith(f"replay: {half:,} records, ")
        process.stdin.write(b"".join(lines[half:]))
        process.stdin.close()
        out = process.stdout.read()
        process.wait(60)
    assert process.returncode == 0
    from_file = subprocess.run(
        [sys.executable, "-m", "worker", "replay", str(capture), "--json", *definitions],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    assert out == from_file.stdout


def _lines_of(stream: IO[bytes]) -> queue.Queue[bytes]:
    """The lines of ``stream`` as they come, read on a thread (b"" at its end)."""
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(b"")

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _interrupt_after_first_request(
    process: subprocess.Popen[bytes], data: bytes, records: int
) -> tuple[list[str], str]:
    """Write ``data`` (``records`` lines) and keep standard input open; once the progress line
    says every record was read and a first request is out, SIGINT. The lines printed, stderr."""
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    out, err = _lines_of(process.stdout), _lines_of(process.stderr)
    process.stdin.write(data)
    process.stdin.flush()
    assert err.get(timeout=30).decode().startswith(f"replay: {records:,} records, ")
    first = out.get(timeout=30).decode().rstrip("\n")  # before standard input ends
    process.send_signal(signal.SIGINT)
    process.wait(30)
    rest = iter(lambda: out.get(timeout=30), b"")  # b"": the end of standard output
    printed = [first, *(line.decode().rstrip("\n") for line in rest)]
    stderr = b"".join(iter(lambda: err.get(timeout=30), b"")).decode()
    process.stdin.close()
    return printed, stderr


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_replay_streams_requests_and_stops_cleanly_on_ctrl_c(tmp_path: Path, as_json: bool) -> None:
    """``replay -`` on a pipe that stays open: the first request is printed before the input
    ends, as it is due; SIGINT then ends the replay with the summary of what was read (every
    record written, the requests printed so far), exit status 130 and no traceback."""
    capture = tmp_path / "capture.jsonl"
    write_docker_capture(capture, 6)
    definitions = ["--task-definitions", str(capture.with_suffix(".definitions.jsonl"))]
    records = capture.read_bytes().splitlines()
    mode = ["--json"] if as_json else []
    from_file = subprocess.run(
        [sys.executable, "-m", "worker", "replay", str(capture), *mode, *definitions],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    ).stdout.decode().splitlines()  # fmt: skip
    command = [sys.executable, "-m", "worker", "replay", "-", *mode, "--progress-every", str(len(records))]
    with subprocess.Popen(
        [*command, *definitions],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not inherited as ignored
    ) as process:  # fmt: skip
        try:
            data = b"\n".join(records) + b"\n"
            printed, stderr = _interrupt_after_first_request(process, data, len(records))
        finally:
            if process.poll() is None:
                process.kill()
    assert printed[0] == from_file[0]
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert "KeyboardInterrupt" not in stderr
    if as_json:
        *requests, summary_line = printed
        summary = msgspec.json.decode(summary_line)
        assert (summary["records"], summary["interrupted"]) == (len(records), True)
        assert summary["submissions"] == len(requests) >= 1
        assert requests == from_file[: len(requests)]
    else:
        blank = printed.index("")
        assert printed[:blank] == from_file[:blank]
        assert printed[blank + 1].startswith(f"{len(records)} records, ")
        assert f"-> {blank} submissions" in printed[blank + 1]
        assert printed[-1].startswith("interrupted (Ctrl-C)")


def test_read_records_streams_lines_and_reads_an_array_whole(tmp_path: Path) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_bytes(b'\n{"a":1}\r\n\n  {"b":2}\nctr text line\n')
    assert list(read_records(lines)) == [b'{"a":1}', b'  {"b":2}', b"ctr text line"]
    array = tmp_path / "array.json"
    array.write_bytes(b'\n [{"a":1},\n {"b": [2]}]\n')
    assert list(read_records(array)) == [b'{"a":1}', b'{"b": [2]}']
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'[{"a":1},')
    with pytest.raises(ValueError, match="not JSON"):
        list(read_records(broken))
