"""Public API hygiene: every module of worker/ and schemas/ declares ``__all__``, and it is true."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import tomllib
from pathlib import Path

import msgspec
import pytest

import schemas
import worker

ROOT = Path(__file__).resolve().parent.parent


def _walk(package: str) -> list[str]:
    module = importlib.import_module(package)
    return [
        package,
        *sorted(info.name for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}.")),
    ]


MODULES = _walk("worker") + _walk("schemas")
# Running ``python -m worker`` is what worker/__main__.py does on import: never import it here.
IMPORTABLE = [name for name in MODULES if name != "worker.__main__"]


def _source(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None
    assert spec.origin is not None
    return Path(spec.origin)


def _declared_all(name: str) -> list[str] | None:
    """The module's top-level ``__all__``, read from its source without importing it."""
    tree = ast.parse(_source(name).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value_node = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value_node = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = ast.literal_eval(value_node)
            assert isinstance(value, list | tuple), f"{name}.__all__ is not a literal list"
            return [str(x) for x in value]
    return None


def test_walk_finds_the_modules() -> None:
    for expected in ("worker.coalesce", "worker.offsets", "worker.pipeline", "schemas.ecs", "schemas.export"):
        assert expected in MODULES
    assert all(_source(name).is_relative_to(ROOT) for name in MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_defines_all(name: str) -> None:
    declared = _declared_all(name)
    assert declared is not None, f"{name} does not define __all__"
    assert len(declared) == len(set(declared)), f"{name}.__all__ has duplicates"


@pytest.mark.parametrize("name", IMPORTABLE)
def test_every_name_in_all_exists(name: str) -> None:
    module = importlib.import_module(name)
    names = getattr(module, "__all__", None)
    assert isinstance(names, list | tuple)
    assert names == _declared_all(name)
    missing = [n for n in names if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names missing attributes: {missing}"
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(names)


def test_schemas_exports_its_records() -> None:
    for name in schemas.__all__:
        obj = getattr(schemas, name)
        assert isinstance(obj, type), name
        assert issubclass(obj, msgspec.Struct), name
    # Everything public in the struct modules is reachable from the package.
    for module_name in ("schemas.ecs", "schemas.events", "schemas.records"):
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, msgspec.Struct):
                assert getattr(schemas, name, None) is obj, f"{module_name}.{name} not exported by schemas"
                assert name in schemas.__all__


def test_version_matches_the_project() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert worker.__version__ == project["version"]
