"""Apache Kafka as an embedded broker: one KRaft node (broker and controller in one JVM) started
from the Maven Central artifacts (``devkit.kafka_artifacts``) with the machine's Java, on free
ports, its data and log in a temporary folder removed at stop.

``KafkaBroker`` shares ``devkit.broker.EmbeddedBroker``'s process lifecycle and interface
(``devkit.broker.BrokerProcess``: ``bootstrap``, ``advertised``, ``start``/``stop``, a context
manager), so the tests' fixtures, the fault harness and the demo take either. Settings are for
tests: one replica everywhere, no initial rebalance delay, one partition for the offsets and
transaction topics (the group coordinator is ready in a moment), sessions down to 500 ms allowed.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import logging
import shutil
import socket
import struct
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from devkit.broker import BrokerProcess, free_port
from devkit.kafka_artifacts import KAFKA_VERSION, kafka_classpath

__all__ = ["KafkaBroker", "Listener", "api_versions_answer"]

log = logging.getLogger(__name__)

JVM_OPTIONS = (
    "-Xms128m",
    "-Xmx768m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)
"""Small and quick to start: C1 only and the serial collector suit one node on a shared machine."""

TEST_PROPERTIES: Mapping[str, str] = {
    "num.partitions": "1",
    "default.replication.factor": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "500",
    "log.segment.bytes": "16777216",
}

_LOG4J = """Configuration:
  Appenders:
    File:
      name: file
      fileName: "{path}"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: file
    Logger:
      - name: kafka.request.logger
        level: WARN
"""


@dataclass(frozen=True)
class Listener:
    """An extra listener: ``name`` (e.g. ``SSL`` or ``SASL_PLAIN``), its ``protocol`` (PLAINTEXT,
    SSL, SASL_PLAINTEXT, SASL_SSL) and ``port`` (0: a free one, found at start)."""

    name: str
    protocol: str
    port: int = 0


class KafkaBroker(BrokerProcess):
    """``with KafkaBroker() as broker: broker.bootstrap`` — Apache Kafka on free ports.

    ``advertised``: the ``host:port`` given to clients for the PLAINTEXT listener (default: the
    listener), e.g. a ``devkit.proxy.TcpProxy`` in front of the broker. ``listeners``: extra
    listeners (TLS, SASL), their settings in ``properties`` (``listener.name.<name>.*``), their
    ports afterwards in ``ports``. ``scram_users``: name -> password, stored for SCRAM-SHA-256 and
    SCRAM-SHA-512 when the storage is formatted. ``log_file``: where the broker logs (default:
    ``server.log`` in its temporary folder, kept when the start fails)."""

    kind = "kafka"

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        log_file: Path | None = None,
        advertised: str | None = None,
        auto_create_topics: bool = True,
        listeners: Sequence[Listener] = (),
        properties: Mapping[str, str] | None = None,
        scram_users: Mapping[str, str] | None = None,
        version: str = KAFKA_VERSION,
    ) -> None:
        super().__init__(port=port, host=host, log_file=log_file, advertised=advertised)
        self.version = version
        self.ports = {item.name: item.port or free_port(host) for item in listeners}
        self._listeners = {item.name: item.protocol for item in listeners}
        self._auto_create = auto_create_topics
        self._properties = dict(properties or {})
        self._scram = dict(scram_users or {})
        self._home: Path | None = None

    def address(self, listener: str) -> str:
        """``host:port`` of an extra listener, by its name."""
        return f"{self.host}:{self.ports[listener]}"

    def server_properties(self, data_dir: Path) -> dict[str, str]:
        controller = free_port(self.host)
        listeners = {"PLAINTEXT": self.port, **self.ports}
        protocols = {"PLAINTEXT": "PLAINTEXT", "CONTROLLER": "PLAINTEXT", **self._listeners}
        advertised = {"PLAINTEXT": self.advertised} | {name: self.address(name) for name in self.ports}
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{controller}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listeners": ",".join(
                [f"{name}://{self.host}:{port}" for name, port in listeners.items()]
                + [f"CONTROLLER://{self.host}:{controller}"]
            ),
            "advertised.listeners": ",".join(f"{name}://{where}" for name, where in advertised.items()),
            "listener.security.protocol.map": ",".join(f"{n}:{p}" for n, p in protocols.items()),
            "log.dirs": str(data_dir),
            "auto.create.topics.enable": str(self._auto_create).lower(),
            **TEST_PROPERTIES,
            **self._properties,
        }

    def start(self, timeout_s: float = 90.0) -> Self:
        """Resolve the artifacts (first use only), format the storage, start the JVM and wait until
        the broker answers an ApiVersions request. Raises ``RuntimeError`` (the log's path and its
        tail in the message) when it exits or does not answer within ``timeout_s``."""
        libs = kafka_classpath(self.version)
        self._home = home = Path(tempfile.mkdtemp(prefix="kafka-broker-"))
        config = home / "server.properties"
        properties = self.server_properties(home / "data")
        _write_properties(config, properties)
        log_file = self._log_file or home / "server.log"
        (home / "log4j2.yaml").write_text(_LOG4J.format(path=log_file))
        java = ["java", *JVM_OPTIONS, f"-Dlog4j2.configurationFile={home / 'log4j2.yaml'}"]
        java += ["-cp", f"{libs}/*"]
        self._format(java, properties, home / "data")
        with (home / "stdout.log").open("ab") as output:
            self._process = self._popen([*java, "kafka.Kafka", str(config)], stdout=output, stderr=output)
        outcome = self._await_ready(lambda: api_versions_answer(self.host, self.port), timeout_s, 0.1)
        if outcome == "ready":
            log.info("Apache Kafka %s answering on %s (%s)", self.version, self.bootstrap, home)
            return self
        if outcome == "exited":
            raise RuntimeError(self._failure(f"Apache Kafka exited at start ({self._process.returncode})"))
        message = self._failure(f"Apache Kafka did not answer on {self.bootstrap} within {timeout_s}s")
        self.stop(keep=True)
        raise RuntimeError(message)

    def _format(self, java: list[str], properties: Mapping[str, str], data_dir: Path) -> None:
        """Formatted storage in ``data_dir``: a copy of this process's formatted template for the
        same version and SCRAM users (formatting is a JVM start of its own, seconds on a shared
        machine), with a cluster id and directory id of its own. The storage holds no address:
        ``bootstrap.checkpoint`` has the feature levels and SCRAM credentials, ``meta.properties``
        the node id and those ids (ports and listeners are the configuration's)."""
        key = (self.version, tuple(sorted(self._scram.items())))
        template = _FORMATTED.get(key)
        if template is None:
            template = Path(tempfile.mkdtemp(prefix="kafka-storage-")) / "data"
            atexit.register(shutil.rmtree, template.parent, ignore_errors=True)
            config = template.parent / "server.properties"
            _write_properties(config, {**properties, "log.dirs": str(template)})
            self._run_format(java, config)
            _FORMATTED[key] = template
        shutil.copytree(template, data_dir)
        meta = data_dir / "meta.properties"
        lines = []
        for line in meta.read_text().splitlines():
            name = line.partition("=")[0]
            lines.append(f"{name}={_kafka_id()}" if name in ("cluster.id", "directory.id") else line)
        meta.write_text("\n".join(lines) + "\n")

    def _run_format(self, java: list[str], config: Path) -> None:
        command = [*java, "kafka.tools.StorageTool", "format", "-t", _kafka_id(), "-c", str(config)]
        for user, password in self._scram.items():
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                command += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"formatting Kafka's storage failed: {(done.stdout + done.stderr)[-2000:]}")

    def _failure(self, what: str) -> str:
        assert self._home is not None
        log_file = self._log_file or self._home / "server.log"
        tail = ""
        for path in (self._home / "stdout.log", log_file):
            with contextlib.suppress(OSError):
                tail += "".join(path.read_text(errors="replace").splitlines(keepends=True)[-15:])
        return f"{what}; logs in {self._home}:\n{tail}"

    def stop(self, *, keep: bool = False, timeout_s: float = 20.0) -> None:
        """SIGTERM (a controlled shutdown), SIGKILL after ``timeout_s`` (0: at once, no controlled
        shutdown, for a broker whose data goes with it); the temporary folder is removed unless
        ``keep``."""
        self._end_process(timeout_s)
        if self._home is not None and not keep:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None


_FORMATTED: dict[tuple[str, tuple[tuple[str, str], ...]], Path] = {}
"""Formatted storage templates of this process, by Kafka version and SCRAM users."""


def _kafka_id() -> str:
    """A random id as Kafka writes them (``Uuid.randomUuid``): URL-safe base64 of 16 bytes, no
    leading dash (an option to argparse)."""
    while True:
        made = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not made.startswith("-"):
            return made


def _write_properties(path: Path, properties: Mapping[str, str]) -> None:
    path.write_text("".join(f"{k}={_escaped(v)}\n" for k, v in properties.items()))


def _escaped(value: str) -> str:
    """A value as ``java.util.Properties`` reads it back: PEM blocks span lines."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def api_versions_answer(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether a broker at ``host:port`` answers ApiVersions (v0) without an error: the request
    handlers are running, not only the socket listening."""
    client = b"ready-check"
    body = struct.pack(">hhih", 18, 0, 7, len(client)) + client
    try:
        with socket.create_connection((host, port), timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            head = _read_exactly(sock, 10)
    except OSError:
        return False
    _, correlation, error = struct.unpack(">iih", head)
    return bool(correlation == 7 and error == 0)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data
