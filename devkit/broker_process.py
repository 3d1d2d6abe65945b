"""The lifecycle of ``python -m worker broker``: a wrapper process around a broker child process.

The wrapper forwards its stop signals (SIGTERM, SIGINT, SIGHUP) to the child as a stop, waits for
the child to go (``stop()`` terminates it, and kills it after a grace), and exits 0; when the
child dies on its own, the wrapper says so in one line and exits with the child's code (1 if the
child exited 0, since a broker that stops by itself has failed). It never leaves the child
running, orphaned and listening. Any broker with ``start``/``stop``/``returncode`` fits
(``devkit.broker.EmbeddedBroker``, or another broker module of ``devkit``).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Protocol

from worker import early_signals

__all__ = ["BrokerProcess", "serve_until_stopped"]

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_POLL_S = 0.2


class BrokerProcess(Protocol):
    @property
    def bootstrap(self) -> str: ...

    @property
    def returncode(self) -> int | None:
        """None while the child runs; its exit code (negative: killed by that signal) after."""
        ...

    def start(self, timeout_s: float = 30.0) -> object: ...

    def stop(self) -> None: ...


def serve_until_stopped(broker: BrokerProcess, name: str = "broker") -> int:
    """Start ``broker``, serve until a stop signal or the child's death; return the exit code.
    Prints one line when ready, one when stopped or when the child died (on stderr)."""
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    for signum in _STOP_SIGNALS:
        signal.signal(signum, on_signal)
    received.extend(early_signals.take())  # a stop that came while starting: honoured below
    if received:
        return 0
    try:
        broker.start()
    except RuntimeError as exc:
        print(f"error: the {name} did not start: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"{name} on {broker.bootstrap}; SIGTERM or Ctrl-C stops it (its data is lost then)", flush=True)
    try:
        while not stop.wait(_POLL_S):
            code = broker.returncode
            if code is not None:
                print(f"error: the {name} process exited with code {code}", file=sys.stderr, flush=True)
                return code if code > 0 else 128 - code if code < 0 else 1
    finally:
        broker.stop()
    print(f"{name} stopped ({signal.Signals(received[0]).name})", file=sys.stderr, flush=True)
    return 0
