"""The production wheel: the worker and its schemas, and nothing of the development kit.

The wheel is built from a copy of the sources that includes ``devkit/`` (so that leaving it out is
the packaging configuration's doing), with the environment's setuptools: no network. Installed
from the wheel alone, ``python -m worker`` has ``run`` and ``replay``, and answers a development
command with one line and exit status 2.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from devkit.cli import register
from worker.cli import DEVELOPMENT_COMMANDS
from worker.cli import _parser as cli_parser

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "worker", "schemas", "devkit")
DEVELOPMENT_CODE = ("devkit", "harness", "bench", "fleet", "ecs_endpoint", "proxy")
WHERE_IS_WORKER = "import importlib.util, worker; print(worker.__file__, importlib.util.find_spec('devkit'))"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]"))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, "-w", str(out)], cwd=source, check=True, timeout=120, capture_output=True)
    (built,) = out.glob("*.whl")
    return built


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def _sources(package: str, pattern: str) -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / package).rglob(pattern)
        if "__pycache__" not in path.parts
    }


def test_wheel_holds_the_worker_and_the_schemas(wheel: Path) -> None:
    names = set(_names(wheel))
    expected = _sources("worker", "*.py") | _sources("schemas", "*.py") | _sources("schemas", "json/*.json")
    assert expected, "no sources found"
    assert not expected - names, sorted(expected - names)
    assert any(name.startswith("schemas/json/") and name.endswith(".json") for name in names)
    top = {PurePosixPath(name).parts[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"worker", "schemas"}


def test_wheel_holds_no_development_code(wheel: Path) -> None:
    for name in _names(wheel):
        assert not any(word in name for word in DEVELOPMENT_CODE), name
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        assert "ecs-state-worker = worker.cli:main" in archive.read(entry_points).decode()


def _python(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python in ``directory``, which comes first on ``sys.path`` under ``-c`` and ``-m``."""
    return subprocess.run([sys.executable, *args], cwd=directory, capture_output=True, text=True, timeout=60)


def test_installed_wheel_runs_without_the_development_commands(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path)
    where = _python(tmp_path, "-c", WHERE_IS_WORKER)
    assert where.stdout.split() == [str(tmp_path / "worker" / "__init__.py"), "None"], where.stderr
    usage = _python(tmp_path, "-m", "worker", "--help")
    assert usage.returncode == 0, usage.stderr
    assert "{run,replay,dlq,produce}" in usage.stdout
    demo = _python(tmp_path, "-m", "worker", "demo", "--tasks", "40")
    assert demo.returncode == 2
    assert demo.stdout == ""
    (line,) = demo.stderr.splitlines()
    assert line.startswith("error: the development commands need a source checkout: "), line
    fleet = _python(tmp_path, "-m", "worker", "produce", "--fleet", "3")
    assert fleet.returncode == 2
    (line,) = fleet.stderr.splitlines()
    assert line.startswith("error: --fleet needs a source checkout"), line


def test_source_checkout_registers_the_development_commands() -> None:
    parser = cli_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    assert commands.choices is not None
    assert list(commands.choices) == ["run", "replay", "dlq", "produce", *DEVELOPMENT_COMMANDS]
    args = parser.parse_args(["demo", "--tasks", "40"])
    assert (args.tasks, args.partitions, args.seed, args.json) == (40, 4, 7, False)
    assert args.handler.__module__ == register.__module__
