"""`python -m worker broker` never leaves its broker behind: a stop signal stops the child (the
port is free, the process is gone), and the wrapper exits, with a line, when the child dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.broker import free_port
from tests.support import ROOT


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.2):
            return True
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _alive(pid: int) -> bool:
    """Whether any thread of process ``pid`` still runs. A multi-threaded process whose main
    thread has exited shows ``Z`` for its leader while its other threads are still exiting (and
    still hold its sockets), so the threads are counted, not the leader's state."""
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return False
    for thread in threads:
        try:
            state = (thread / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            return True
    return False


def _wrapper_process(port: int, stdout: int) -> subprocess.Popen[str]:
    """``python -m worker broker --port <port>`` started, its standard error piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "broker", "--port", str(port)],
        cwd=ROOT,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def wrapper() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """A running `python -m worker broker`, its port and its broker child's pid."""
    port = free_port()
    child = 0
    process = _wrapper_process(port, subprocess.PIPE)
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()  # printed once the broker listens
        assert ready.startswith(f"embedded broker (tansu) on 127.0.0.1:{port};"), ready
        assert _listening(port)
        (child,) = _children(process.pid)
        yield process, port, child
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if child and _alive(child):  # a failed test must not leave it behind either
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_the_broker_too(
    wrapper: tuple[subprocess.Popen[str], int, int], signum: signal.Signals
) -> None:
    process, port, child = wrapper
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert not _alive(child)
    assert not _listening(port)
    assert stderr.strip().splitlines()[-1] == f"embedded broker (tansu) stopped ({signum.name})"


def test_the_wrapper_exits_when_the_broker_dies(wrapper: tuple[subprocess.Popen[str], int, int]) -> None:
    process, port, child = wrapper
    os.kill(child, signal.SIGKILL)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 128 + signal.SIGKILL, stderr
    assert "error: the embedded broker (tansu) process exited with code -9" in stderr
    assert not _listening(port)


def test_a_killed_wrapper_leaves_no_broker(wrapper: tuple[subprocess.Popen[str], int, int]) -> None:
    """SIGKILL cannot be forwarded: the kernel ends the broker with its parent (PR_SET_PDEATHSIG)."""
    process, port, child = wrapper
    process.kill()
    process.communicate(timeout=20)
    deadline = time.monotonic() + 10
    while (_alive(child) or _listening(port)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel delivers the death signal, then the threads exit
    assert not _alive(child)
    assert not _listening(port)


@pytest.mark.parametrize("after_s", [0.05, 0.3])
def test_a_stop_signal_while_starting_leaves_no_broker(after_s: float) -> None:
    port = free_port()
    process = _wrapper_process(port, subprocess.DEVNULL)
    time.sleep(after_s)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert not _listening(port)
