"""Apache Kafka's broker from Maven Central, for the tests, the fault harness and the demo: the
``kafka_2.13`` artifact and its runtime dependencies resolved once by Maven into a cache folder,
then started with the machine's Java (``devkit.kafka_broker``). ``python3 -m devkit.kafka_artifacts``
resolves them ahead (it needs only the standard library: CI runs it before the virtualenv exists).

The cache is ``$ECS_STATE_WORKER_CACHE`` or ``~/.cache/ecs-state-worker``, one folder per version
(``kafka-4.1.2/libs/*.jar``); a folder is complete once its ``classpath.ok`` marker exists, so an
interrupted download is resolved again, never used half-made.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = [
    "KAFKA_VERSION",
    "MIN_JAVA",
    "KafkaUnavailable",
    "java_major",
    "kafka_classpath",
    "kafka_prerequisites",
]

KAFKA_VERSION = "4.1.2"
"""The broker's version: Kafka 4.1 runs on Java 17 (4.x brokers need 17 or newer)."""

MIN_JAVA = 17
LOG4J_VERSION = "2.25.3"  # the log4j2 of Kafka 4.1.2; its SLF4J binding writes the broker's log

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.ecs-state-worker</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


class KafkaUnavailable(RuntimeError):
    """Apache Kafka cannot run here: no Java 17+, no Maven, or Maven could not resolve it."""


def cache_root() -> Path:
    return Path(os.environ.get("ECS_STATE_WORKER_CACHE") or Path.home() / ".cache" / "ecs-state-worker")


def java_major(java: str = "java") -> int | None:
    """The major version of ``java`` on the PATH (17 for ``17.0.15``), or ``None`` without one."""
    if shutil.which(java) is None:
        return None
    try:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', done.stderr + done.stdout)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def kafka_prerequisites() -> str | None:
    """Why Apache Kafka cannot run here (no Java 17+, no ``mvn``), or ``None`` when it can."""
    major = java_major()
    if major is None:
        return "no java on the PATH"
    if major < MIN_JAVA:
        return f"java {major} is older than {MIN_JAVA}"
    if shutil.which("mvn") is None:
        return "no mvn on the PATH"
    return None


def kafka_classpath(version: str = KAFKA_VERSION) -> Path:
    """The folder of the broker's jars (for ``java -cp 'folder/*'``), resolved by Maven on first
    use (a few seconds to a minute, about 45 jars, 40 MB) and cached afterwards.

    Raises ``KafkaUnavailable`` with Maven's own output when the prerequisites are missing or
    Maven cannot resolve the artifacts (no network to Maven Central, unknown version)."""
    home = cache_root() / f"kafka-{version}"
    libs, marker = home / "libs", home / "classpath.ok"
    if marker.exists():
        return libs
    if (missing := kafka_prerequisites()) is not None:
        raise KafkaUnavailable(f"Apache Kafka {version} cannot run here: {missing}")
    home.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=home))
    (home / "pom.xml").write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION))
    command = [
        "mvn", "-B", "-q", "-f", str(home / "pom.xml"), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0 or not any(staging.glob(f"kafka_2.13-{version}.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        output = (done.stdout + done.stderr).strip()[-3000:]
        raise KafkaUnavailable(
            f"Maven could not resolve org.apache.kafka:kafka_2.13:{version} "
            f"(exit {done.returncode}; is Maven Central reachable?):\n{output}"
        )
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    marker.write_text(version + "\n")
    return libs


def main() -> int:
    """Resolve the artifacts and print their folder; exit 1 with the reason when that fails."""
    try:
        print(kafka_classpath())
    except KafkaUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
