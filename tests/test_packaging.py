"""The production wheel: the worker and its schemas, and nothing of the development kit; its
metadata (license, URLs); every imported package declared; the lock files.

The wheel is built from a copy of the sources that includes ``devkit/`` (so that leaving it out is
the packaging configuration's doing), with the environment's setuptools: no network. Installed
from the wheel alone, ``python -m worker`` has ``run`` and ``replay``, and answers a development
command with one line and exit status 2.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path, PurePosixPath

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devkit.cli import register
from worker.cli import DEVELOPMENT_COMMANDS
from worker.cli import _parser as cli_parser

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "worker", "schemas", "devkit")
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


# --------------------------------------------------------------------------------------------
# License and metadata
# --------------------------------------------------------------------------------------------

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# sha256 of the Apache License 2.0 as the ASF publishes it (www.apache.org/licenses/LICENSE-2.0.txt).
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_license_is_the_full_apache_2_0_text() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.split("\n")[1].strip() == "Apache License"
    assert "END OF TERMS AND CONDITIONS" in text
    assert hashlib.sha256(text.encode()).hexdigest() == APACHE_2_0_SHA256
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]


def test_wheel_metadata_carries_the_license_and_the_urls(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        fields = Parser().parsestr(archive.read(metadata).decode())
        (license_file,) = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(license_file) == (ROOT / "LICENSE").read_bytes()
    assert fields["License-Expression"] == "Apache-2.0"
    assert fields.get_all("License-File") == ["LICENSE"]
    urls = dict(value.split(", ", 1) for value in fields.get_all("Project-URL") or [])
    assert urls == PROJECT["urls"]
    assert set(urls) >= {"Homepage", "Documentation", "Source", "Issues"}
    assert all(url.startswith("https://") for url in urls.values())


# --------------------------------------------------------------------------------------------
# Every imported package is declared
# --------------------------------------------------------------------------------------------

FIRST_PARTY = frozenset({"worker", "schemas", "devkit", "tests"})


def third_party_imports(*roots: str) -> dict[str, set[str]]:
    """Top-level modules imported anywhere under ``roots`` (function-level imports too), other
    than the standard library's and the project's own -> the files importing them."""
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY | {"__future__"}:
                        found.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return found


def declared(*extras: str) -> set[str]:
    """Canonical names of the project's dependencies, and of the given extras'."""
    requirements = [
        *PROJECT["dependencies"],
        *(r for e in extras for r in PROJECT["optional-dependencies"][e]),
    ]
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def undeclared(imports: dict[str, set[str]], allowed: set[str]) -> list[str]:
    owners = importlib.metadata.packages_distributions()
    problems = []
    for module, files in sorted(imports.items()):
        distributions = {canonicalize_name(d) for d in owners.get(module, [])}
        if not distributions:
            problems.append(f"{module} (imported by {sorted(files)}) is installed by no distribution")
        elif not distributions & allowed:
            problems.append(
                f"{module} (imported by {sorted(files)}) comes from {sorted(distributions)}, not declared"
            )
    return problems


def test_every_package_the_wheel_imports_is_a_dependency() -> None:
    imports = third_party_imports("worker", "schemas")
    assert {"aiohttp", "aiokafka", "botocore", "msgspec"} <= set(imports)
    assert not undeclared(imports, declared())
    # The check itself: aiohttp's import is caught when it is not declared.
    assert undeclared({"aiohttp": {"worker/health.py"}}, declared() - {"aiohttp"})


def test_every_runtime_dependency_is_imported() -> None:
    owners = importlib.metadata.packages_distributions()
    imported = {
        canonicalize_name(d)
        for module in third_party_imports("worker", "schemas")
        for d in owners.get(module, [])
    }
    assert declared() <= imported, f"declared but never imported: {sorted(declared() - imported)}"


def test_every_package_the_development_code_imports_is_declared() -> None:
    assert not undeclared(third_party_imports("devkit", "tests"), declared("dev"))


# --------------------------------------------------------------------------------------------
# Lock files: what the image and CI install
# --------------------------------------------------------------------------------------------


def read_lock(name: str) -> dict[str, str]:
    """``pip-compile --generate-hashes`` output -> canonical name: pinned version. Every pin must
    carry hashes (pip's hash-checking mode installs it)."""
    pins: dict[str, str] = {}
    text = (ROOT / name).read_text()
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text):
        first = entry.split(" ", 1)[0].strip()
        if not first or first.startswith("#"):
            continue
        requirement = Requirement(first)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{name}: {first} is not pinned"
        assert "--hash=sha256:" in entry, f"{name}: {first} has no hash"
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def _unmet(requirements: list[str], pins: dict[str, str]) -> list[str]:
    unmet = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = pins.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{text} (locked: {version})")
    return unmet


def test_lock_files_pin_every_dependency_with_hashes() -> None:
    runtime, dev = read_lock("requirements.lock"), read_lock("requirements-dev.lock")
    refresh = "refresh the lock files (README: Dependencies and the lock files)"
    assert not _unmet(PROJECT["dependencies"], runtime), refresh
    assert not _unmet([*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["dev"]], dev), refresh
    assert {name: dev.get(name) for name in runtime} == runtime, "the two locks disagree"
    assert "pytest" not in runtime, "the image's lock holds development packages"


def test_this_environment_runs_the_locked_versions() -> None:
    """What the tests run on is what CI and the image install."""
    differ = {}
    for name, version in read_lock("requirements-dev.lock").items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            differ[name] = (version, installed)
    assert not differ, f"locked vs installed: {differ}"


def test_the_venv_installs_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^\$\(STAMP\):(.*)\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert rule, "no venv rule"
    assert "requirements-dev.lock" in rule[1].split(), "the venv is not rebuilt when the lock changes"
    recipe = [line.strip() for line in rule[2].splitlines()]
    installs = [line for line in recipe if " install " in line and "--upgrade pip" not in line]
    assert installs == [
        "$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock",
        "$(BIN)/pip install --quiet --no-deps -e .",
    ]
