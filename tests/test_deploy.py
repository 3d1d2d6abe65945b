"""Offline checks of the deployment files: ``deploy/`` (Dockerfile, Kustomize base and overlays, IAM
policies, Grafana dashboard), ``docker-compose.yml`` and ``.dockerignore``.

Nothing here needs Docker, a cluster or the network:

- the Kustomize renderings are produced here, in Python, for the subset of Kustomize the
  kustomizations use (anything else fails loudly); where ``kubectl`` is installed they are also
  compared with ``kubectl kustomize``;
- built-in Kubernetes kinds are validated against the Kubernetes JSON schemas shipped by the
  ``kubernetes-validate`` package, in their strict form (an unknown field fails), for the oldest
  and the newest Kubernetes version supported here;
- the CRDs (KEDA, Prometheus Operator) get structural checks of the fields these manifests use;
- ``docker-compose.yml`` is validated against the Compose Specification schema shipped by
  ``check-jsonschema``, then checked for consistency;
- the Dockerfile is parsed by the ``dockerfile`` package (BuildKit's own parser).

Beyond the schemas, the files are checked against the code: every ``WORKER_*`` variable is a
setting and the values form valid ``Settings``, every queried metric is exported by
``worker.metrics``, the grace period outlasts the drain, replicas stay within the partitions.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import copy
import functools
import hashlib
import importlib.resources
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_args

import aiokafka
import dockerfile  # type: ignore[import-not-found]  # BuildKit's parser, a compiled module without types
import jsonschema
import pytest
import referencing
import yaml
from prometheus_client.metrics import MetricWrapperBase

from devkit.broker import free_port
from devkit.fleet import synthetic_fleet
from worker.cli import DEVELOPMENT_COMMANDS
from worker.cli import _parser as cli_parser
from worker.config import SETTING_HELP, Settings, env_name, load_settings
from worker.metrics import Metrics
from worker.work import OutcomeResult

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DASHBOARD = DEPLOY / "grafana" / "ecs-state-worker.json"
IAM_POLICY = DEPLOY / "iam-policy.json"
IAM_TRUST_POLICY = DEPLOY / "iam-trust-policy.json"

# The oldest Kubernetes minor version the manifests must suit; they
# are validated against it and against the newest schema set kubernetes-validate ships.
OLDEST_KUBERNETES = (1, 29)
PARTITIONS_ANNOTATION = "ecs-state-worker/input-partitions"
# ECS's SubmitTaskStateChange budget per account (SETTING_HELP["rate_limit_per_s"]).
ECS_CALLS_PER_S_PER_ACCOUNT = 120.0
# SIGKILL must come this long after the drain deadline: closing the consumer and producer.
DRAIN_MARGIN_S = 5
# Labels Prometheus adds to every scraped series (ServiceMonitor target labels).
TARGET_LABELS = frozenset({"namespace", "pod", "service", "job", "instance", "container", "endpoint"})
SETTING_ENV_NAMES = frozenset(env_name(field) for field in SETTING_HELP)

Manifest = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Kustomize, the subset these kustomizations use
# --------------------------------------------------------------------------------------------


class KustomizeError(Exception):
    """The kustomization uses something this renderer does not implement, or is inconsistent."""


_KUSTOMIZATION_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "components",
        "namespace",
        "images",
        "replicas",
        "configMapGenerator",
        "patches",
    }
)
_KINDS = {
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
    "Component": "kustomize.config.k8s.io/v1alpha1",
}
_CLUSTER_SCOPED = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass"}
)
_WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


def _load_documents(path: Path) -> list[Manifest]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in docs:
        if not isinstance(doc, dict):
            raise KustomizeError(f"{path}: a document is not a mapping")
    return docs


def _identity(doc: Manifest) -> tuple[str, str, str]:
    return (doc["apiVersion"], doc["kind"], doc["metadata"]["name"])


def _is_builtin(api_version: str) -> bool:
    """Built-in API groups: the core group and dotless or ``*.k8s.io`` groups (``apps/v1``,
    ``rbac.authorization.k8s.io/v1``); custom resources' groups are other domain names."""
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (Kustomize's strategic merge on CRDs; on built-in kinds only
    patches without lists are accepted, where the two agree)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            raise KustomizeError(f"strategic-merge directive {key} is not supported")
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _contains_list(value: Any) -> bool:
    if isinstance(value, list):
        return True
    if isinstance(value, dict):
        return any(_contains_list(v) for v in value.values())
    return False


def _parse_env_lines(text: str, origin: str) -> dict[str, str]:
    data: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
            raise KustomizeError(f"{origin}:{number}: expected KEY=VALUE")
        if value[:1] in ("'", '"'):
            raise KustomizeError(f"{origin}:{number}: quoted values are not supported")
        data[key] = value
    return data


def _pod_specs(doc: Manifest) -> Iterator[dict[str, Any]]:
    if doc["kind"] in _WORKLOADS:
        yield doc["spec"]["template"]["spec"]


def _containers(pod: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers", [])
    yield from pod.get("containers", [])


def _render_layer(
    directory: Path, into: tuple[list[Manifest], set[str]] | None = None
) -> tuple[list[Manifest], set[str]]:
    """The documents of one kustomization and the names of the ConfigMaps it generated (hashed and
    referenced only once, at the top: the same result as Kustomize's per-layer hashing).

    A ``kind: Component`` is rendered ``into`` its parent's documents: it adds its resources to
    them and its patches apply to them all. As in Kustomize, a kustomization's components come
    after its resources and before its own generators and patches."""
    path = directory / "kustomization.yaml"
    kustomization = _load_kustomization(path, component=into is not None)
    docs, generated = into if into is not None else ([], set())
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            sub_docs, sub_generated = _render_layer(target)
            docs.extend(sub_docs)
            generated |= sub_generated
        else:
            docs.extend(_load_documents(target))
    for entry in kustomization.get("components", []):
        _render_layer((directory / entry).resolve(), (docs, generated))
    for generator in kustomization.get("configMapGenerator", []):
        _generate_config_map(directory, generator, docs, generated)
    for entry in kustomization.get("patches", []):
        _apply_patch(directory, entry, docs)
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in _CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        _set_image(path, image, docs)
    for replicas in kustomization.get("replicas", []):
        targets = [d for d in docs if d["kind"] in _WORKLOADS and d["metadata"]["name"] == replicas["name"]]
        if not targets:
            raise KustomizeError(f"{path}: replicas for unknown workload {replicas['name']}")
        for doc in targets:
            doc["spec"]["replicas"] = int(replicas["count"])
    return docs, generated


def _load_kustomization(path: Path, *, component: bool) -> Manifest:
    """The one document of a ``kustomization.yaml``, checked: known fields, the kind where it
    belongs (a Component only below a Kustomization) and its apiVersion."""
    (kustomization,) = _load_documents(path)
    unknown = set(kustomization) - _KUSTOMIZATION_FIELDS
    if unknown:
        raise KustomizeError(f"{path}: unsupported fields {sorted(unknown)}")
    kind = kustomization.get("kind", "Kustomization")
    if kind != ("Component" if component else "Kustomization"):
        raise KustomizeError(
            f"{path}: a {kind} where a {'Component' if component else 'Kustomization'} belongs"
        )
    if kustomization.get("apiVersion", _KINDS[kind]) != _KINDS[kind]:
        raise KustomizeError(f"{path}: a {kind} is {_KINDS[kind]}")
    return kustomization


def _generate_config_map(
    directory: Path, generator: Manifest, docs: list[Manifest], generated: set[str]
) -> None:
    """One ``configMapGenerator`` entry (behavior create, merge or replace) applied to ``docs``."""
    path = directory / "kustomization.yaml"
    extra = set(generator) - {"name", "behavior", "envs", "literals"}
    if extra:
        raise KustomizeError(f"{path}: unsupported configMapGenerator fields {sorted(extra)}")
    data: dict[str, str] = {}
    for env_file in generator.get("envs", []):
        data.update(_parse_env_lines((directory / env_file).read_text(), str(directory / env_file)))
    data.update(_parse_env_lines("\n".join(generator.get("literals", [])), f"{path} literals"))
    name = generator["name"]
    behavior = generator.get("behavior", "create")
    existing = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
    if behavior == "create":
        if existing:
            raise KustomizeError(f"{path}: ConfigMap {name} already exists (use behavior: merge)")
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
        generated.add(name)
    elif behavior in ("merge", "replace"):
        if len(existing) != 1 or name not in generated:
            raise KustomizeError(f"{path}: no generated ConfigMap {name} to {behavior}")
        existing[0]["data"] = {**existing[0].get("data", {}), **data} if behavior == "merge" else data
    else:
        raise KustomizeError(f"{path}: unknown behavior {behavior}")


def _apply_patch(directory: Path, entry: Manifest, docs: list[Manifest]) -> None:
    """One ``patches: - path: FILE`` entry: each of its documents merged into the one it names."""
    path = directory / "kustomization.yaml"
    if set(entry) != {"path"}:
        raise KustomizeError(f"{path}: only `patches: - path: FILE` is supported")
    for patch in _load_documents(directory / entry["path"]):
        matches = [d for d in docs if _identity(d) == _identity(patch)]
        if len(matches) != 1:
            raise KustomizeError(f"{path}: patch {_identity(patch)} matches {len(matches)} resources")
        if _is_builtin(patch["apiVersion"]) and _contains_list(patch):
            raise KustomizeError(f"{path}: list in a strategic-merge patch of {patch['kind']}")
        docs[docs.index(matches[0])] = _merge_patch(matches[0], patch)


def _set_image(path: Path, image: Manifest, docs: list[Manifest]) -> None:
    """One ``images`` entry: the containers whose image repository is its ``name`` get its new
    name, digest or tag."""
    if set(image) - {"name", "newName", "newTag", "digest"}:
        raise KustomizeError(f"{path}: unsupported image fields in {image}")
    for doc in docs:
        for pod in _pod_specs(doc):
            for container in _containers(pod):
                ref = container["image"]
                repository = ref.split("@")[0]
                if ":" in repository.rsplit("/", 1)[-1]:
                    repository = repository.rsplit(":", 1)[0]
                if repository != image["name"]:
                    continue
                new = image.get("newName", repository)
                if "digest" in image:
                    new += "@" + image["digest"]
                elif "newTag" in image:
                    new += ":" + str(image["newTag"])
                container["image"] = new


def _go_json(value: Any) -> str:
    """``json.Marshal`` of Go: sorted keys, no spaces, HTML characters escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def configmap_hash(data: Mapping[str, str]) -> str:
    """Kustomize's name suffix of a generated ConfigMap (api/hasher: the name it hashes is empty)."""
    digest = hashlib.sha256(
        _go_json({"data": dict(data), "kind": "ConfigMap", "name": ""}).encode()
    ).hexdigest()
    return digest[:10].translate(str.maketrans("013ae", "ghkmt"))


def render(directory: Path) -> list[Manifest]:
    """``kubectl kustomize DIRECTORY``, for the subset of Kustomize used here."""
    docs, generated = _render_layer(directory)
    renamed: dict[str, str] = {}
    for doc in docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] in generated:
            name = doc["metadata"]["name"]
            renamed[name] = f"{name}-{configmap_hash(doc.get('data', {}))}"
            doc["metadata"]["name"] = renamed[name]
    for doc in docs:
        for pod in _pod_specs(doc):
            for container in _containers(pod):
                for source in container.get("envFrom", []):
                    ref = source.get("configMapRef")
                    if ref and ref["name"] in renamed:
                        ref["name"] = renamed[ref["name"]]
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("configMapKeyRef")
                    if ref and ref["name"] in renamed:
                        ref["name"] = renamed[ref["name"]]
            for volume in pod.get("volumes", []):
                ref = volume.get("configMap")
                if ref and ref["name"] in renamed:
                    ref["name"] = renamed[ref["name"]]
    return docs


def kustomizations() -> dict[str, Path]:
    found = {"base": DEPLOY / "base"}
    for path in sorted((DEPLOY / "overlays").glob("*/kustomization.yaml")):
        found[path.parent.name] = path.parent
    return found


@functools.cache
def _rendering(name: str) -> tuple[str, ...]:
    return tuple(json.dumps(doc, sort_keys=True) for doc in render(kustomizations()[name]))


def rendering(name: str) -> list[Manifest]:
    """A fresh copy of a kustomization's rendering (rendered once per session)."""
    docs: list[Manifest] = [json.loads(doc) for doc in _rendering(name)]
    return docs


def only(docs: list[Manifest], kind: str) -> Manifest:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def worker_container(docs: list[Manifest]) -> dict[str, Any]:
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert isinstance(container, dict)
    return container


def pod_environment(docs: list[Manifest]) -> dict[str, str]:
    """The worker container's environment as the pod would see it: its ConfigMaps, then its
    ``env`` (field references become a pod name, secret references a placeholder)."""
    container = worker_container(docs)
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"unexpected envFrom source {source}"
        env.update(configmaps[source["configMapRef"]["name"]].get("data", {}))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var.get("valueFrom", {}):
            env[var["name"]] = "ecs-state-worker-5d8f7c9b4-x2x7q"
        elif "secretKeyRef" in var.get("valueFrom", {}):
            env[var["name"]] = "secret-from-kubernetes"
        else:
            raise AssertionError(f"unexpected env source {var}")
    return env


def pod_settings(docs: list[Manifest]) -> Settings:
    return load_settings(env=pod_environment(docs))


KUSTOMIZATIONS = sorted(kustomizations())
COMPONENTS = {
    path.parent.name: path.parent for path in sorted((DEPLOY / "components").glob("*/kustomization.yaml"))
}
BUILTIN_KINDS = ("ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount")
# The objects that need a CRD installed, each in a component (the base applies to a bare cluster).
CRD_KINDS = frozenset({"ServiceMonitor", "PrometheusRule", "ScaledObject"})


def with_kind(kind: str) -> list[str]:
    """The kustomizations whose rendering holds a ``kind`` (those that include its component)."""
    return [name for name in KUSTOMIZATIONS if any(d["kind"] == kind for d in rendering(name))]


def _components_of(directory: Path) -> set[str]:
    """The components a kustomization includes, through its resources too."""
    (kustomization,) = _load_documents(directory / "kustomization.yaml")
    found = {(directory / entry).resolve().name for entry in kustomization.get("components", [])}
    for entry in kustomization.get("resources", []):
        if (directory / entry).is_dir():
            found |= _components_of((directory / entry).resolve())
    return found


def _component_kinds(name: str) -> list[str]:
    (component,) = _load_documents(COMPONENTS[name] / "kustomization.yaml")
    return [d["kind"] for entry in component["resources"] for d in _load_documents(COMPONENTS[name] / entry)]


def test_every_kustomization_renders_the_expected_kinds() -> None:
    assert {"base", "production"} <= set(KUSTOMIZATIONS)
    for name in KUSTOMIZATIONS:
        kinds = sorted(d["kind"] for d in rendering(name))
        expected = list(BUILTIN_KINDS)
        for component in _components_of(kustomizations()[name]):
            expected += _component_kinds(component)
        for kind in expected:
            assert kinds.count(kind) == 1, f"{name}: {kind} x{kinds.count(kind)}"
        assert CRD_KINDS & set(kinds) == CRD_KINDS & set(expected), (
            f"{name}: a CRD object outside a component"
        )
        identities = [_identity(d) for d in rendering(name)]
        assert len(identities) == len(set(identities)), f"{name}: duplicate resources"


def test_base_applies_to_a_bare_cluster() -> None:
    """Built-in kinds only: no object of the base waits for a CRD."""
    kinds = {(d["apiVersion"], d["kind"]) for d in rendering("base")}
    assert {kind for _, kind in kinds} == set(BUILTIN_KINDS)
    assert all(_is_builtin(api_version) for api_version, _ in kinds), kinds
    assert not _components_of(DEPLOY / "base")


def test_components_hold_every_crd_object() -> None:
    assert set(COMPONENTS) == {"keda", "prometheus-operator"}
    kinds: list[str] = []
    for name, directory in COMPONENTS.items():
        (component,) = _load_documents(directory / "kustomization.yaml")
        assert component["kind"] == "Component"
        assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
        for entry in component["resources"]:
            for doc in _load_documents(directory / entry):
                assert not _is_builtin(doc["apiVersion"]), f"{name}: {doc['kind']} needs no CRD"
                kinds.append(doc["kind"])
    assert sorted(kinds) == sorted(CRD_KINDS)
    # The production overlay's cluster runs both operators.
    assert _components_of(kustomizations()["production"]) == set(COMPONENTS)


def _overlay_of(tmp_path: Path, component: str) -> Path:
    """A kustomization of the base and one component, as an operator's overlay would be."""
    text = (
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(DEPLOY / 'base', tmp_path)}\n"
        f"components:\n  - {os.path.relpath(COMPONENTS[component], tmp_path)}\n"
    )
    (tmp_path / "kustomization.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_each_component_on_the_base_renders_valid_objects(component: str, tmp_path: Path) -> None:
    docs = render(_overlay_of(tmp_path, component))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted([*BUILTIN_KINDS, *_component_kinds(component)])
    for doc in docs:
        if _is_builtin(doc["apiVersion"]):
            continue
        key = (doc["apiVersion"], doc["kind"])
        assert key in CRD_SCHEMAS, f"nothing validates {key}"
        errors = schema_errors(crd_validator(*key), doc)
        assert not errors, f"{component} {doc['kind']}: {errors}"
    if KUSTOMIZE is not None:
        assert _kustomize_build(KUSTOMIZE, tmp_path) == sorted(json.dumps(d, sort_keys=True) for d in docs)


def test_renderer_refuses_a_component_as_a_resource(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(COMPONENTS['keda'], tmp_path)}\n"
    )
    with pytest.raises(KustomizeError, match="a Component where a Kustomization belongs"):
        render(tmp_path)


@pytest.mark.parametrize("name", [n for n in KUSTOMIZATIONS if n != "base"])
def test_overlay_applies_its_changes(name: str) -> None:
    """The overlay's namespace, images, replicas and settings reach the rendering, and the base's
    other settings survive the merge."""
    (kustomization,) = _load_documents(kustomizations()[name] / "kustomization.yaml")
    docs = rendering(name)
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in _CLUSTER_SCOPED:
                assert doc["metadata"]["namespace"] == kustomization["namespace"], _identity(doc)
    container = worker_container(docs)
    for image in kustomization.get("images", []):
        assert container["image"] == f"{image['newName']}:{image['newTag']}"
    for replicas in kustomization.get("replicas", []):
        assert only(docs, "Deployment")["spec"]["replicas"] == replicas["count"]
    env = pod_environment(docs)
    base_env = pod_environment(rendering("base"))
    for generator in kustomization.get("configMapGenerator", []):
        assert generator.get("behavior") == "merge"
        for env_file in generator.get("envs", []):
            path = kustomizations()[name] / env_file
            overrides = _parse_env_lines(path.read_text(), str(path))
            assert overrides
            assert {key: env[key] for key in overrides} == overrides
            kept = set(base_env) - set(overrides) - {"WORKER_GROUP_INSTANCE_ID"}
            assert {key: env[key] for key in kept} == {key: base_env[key] for key in kept}


def go_tool(name: str) -> str | None:
    """A binary on PATH, or where ``go install`` puts it (``$GOBIN``, ``$GOPATH/bin``, ``~/go/bin``)."""
    found = shutil.which(name)
    if found:
        return found
    gobin = os.environ.get("GOBIN") or str(Path(os.environ.get("GOPATH") or Path.home() / "go") / "bin")
    candidate = Path(gobin) / name
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


# go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1
KUSTOMIZE = go_tool("kustomize")


def _kustomize_build(binary: str, directory: Path) -> list[str]:
    result = subprocess.run(
        [binary, "build", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return sorted(json.dumps(doc, sort_keys=True) for doc in yaml.safe_load_all(result.stdout) if doc)


@pytest.mark.skipif(
    KUSTOMIZE is None,
    reason="kustomize is not installed (go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1)",
)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendering_equals_kustomize_build(name: str) -> None:
    assert KUSTOMIZE is not None
    assert _kustomize_build(KUSTOMIZE, kustomizations()[name]) == sorted(_rendering(name))


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rendering_equals_kubectl_kustomize(name: str) -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(kustomizations()[name])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    theirs = sorted(json.dumps(doc, sort_keys=True) for doc in yaml.safe_load_all(result.stdout) if doc)
    assert theirs == sorted(_rendering(name))


# --------------------------------------------------------------------------------------------
# Kubernetes schemas (kubernetes-validate) and CRD structure
# --------------------------------------------------------------------------------------------

_SCHEMA_ROOT = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"


def _schema_versions() -> list[tuple[int, int]]:
    versions = []
    for entry in _SCHEMA_ROOT.iterdir():
        match = re.fullmatch(r"v(\d+)\.(\d+)\.0-local-strict", entry.name)
        if match:
            versions.append((int(match[1]), int(match[2])))
    return sorted(versions)


def kubernetes_versions() -> list[tuple[int, int]]:
    """The oldest supported version (or the oldest shipped, once a release drops it) and the newest."""
    available = [v for v in _schema_versions() if v >= OLDEST_KUBERNETES]
    assert available, f"kubernetes-validate ships no schemas for Kubernetes {OLDEST_KUBERNETES} or later"
    return sorted({available[0], available[-1]})


@functools.cache
def _definitions(version: tuple[int, int]) -> referencing.Registry[Any]:
    folder = _SCHEMA_ROOT / f"v{version[0]}.{version[1]}.0-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text())
    resource: referencing.Resource[Any] = referencing.Resource.from_contents(definitions)
    registry: referencing.Registry[Any] = referencing.Registry()
    return registry.with_resources([(definitions["$id"], resource)])


def kubernetes_validator(version: tuple[int, int], api_version: str, kind: str) -> jsonschema.Validator:
    """The strict JSON schema of a built-in kind (additionalProperties false everywhere)."""
    group, _, api = api_version.rpartition("/")
    stem = f"{kind.lower()}-{group.split('.')[0]}-{api}" if group else f"{kind.lower()}-{api}"
    folder = _SCHEMA_ROOT / f"v{version[0]}.{version[1]}.0-local-strict"
    schema = json.loads((folder / f"{stem}.json").read_text())
    resource: referencing.Resource[Any] = referencing.Resource.from_contents(schema)
    registry = _definitions(version).with_resources([(schema["$id"], resource)])
    return jsonschema.Draft202012Validator(schema, registry=registry)


def has_kubernetes_schema(doc: Manifest) -> bool:
    try:
        kubernetes_validator(kubernetes_versions()[-1], doc["apiVersion"], doc["kind"])
    except FileNotFoundError:
        return False
    return True


def schema_errors(validator: jsonschema.Validator, doc: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_builtin_kinds_match_the_kubernetes_schemas(name: str) -> None:
    checked = 0
    for doc in rendering(name):
        if not _is_builtin(doc["apiVersion"]):
            continue
        for version in kubernetes_versions():
            errors = schema_errors(kubernetes_validator(version, doc["apiVersion"], doc["kind"]), doc)
            assert not errors, f"{name} {doc['kind']} (Kubernetes {version}): {errors}"
        checked += 1
    assert checked >= 5


def test_strict_schema_rejects_a_misspelled_field() -> None:
    deployment = only(rendering("base"), "Deployment")
    validator = kubernetes_validator(kubernetes_versions()[-1], "apps/v1", "Deployment")
    assert not schema_errors(validator, deployment)
    pod = deployment["spec"]["template"]["spec"]
    pod["terminationGracePeriodSecond"] = pod.pop("terminationGracePeriodSeconds")
    assert schema_errors(validator, deployment)


# JSON schemas of the custom resources' fields these manifests may use (KEDA, Prometheus Operator).
CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    (key.split()[0], key.split()[1]): schema
    for key, schema in yaml.safe_load(
        (REPO / "tests" / "data" / "deploy" / "crd_schemas.yaml").read_text()
    ).items()
}


def crd_validator(api_version: str, kind: str) -> jsonschema.Validator:
    version = kubernetes_versions()[-1]
    return jsonschema.Draft202012Validator(CRD_SCHEMAS[(api_version, kind)], registry=_definitions(version))


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_resource_is_validated(name: str) -> None:
    """Each rendered resource is a built-in kind with a shipped schema or a known CRD."""
    for doc in rendering(name):
        key = (doc["apiVersion"], doc["kind"])
        if _is_builtin(doc["apiVersion"]):
            assert has_kubernetes_schema(doc), f"{name}: no Kubernetes schema for {key}"
        else:
            assert key in CRD_SCHEMAS, f"{name}: nothing validates {key}"
            errors = schema_errors(crd_validator(*key), doc)
            assert not errors, f"{name} {doc['kind']}: {errors}"


def test_crd_structure_rejects_unquoted_keda_metadata() -> None:
    scaled = only(rendering("production"), "ScaledObject")
    validator = crd_validator("keda.sh/v1alpha1", "ScaledObject")
    assert not schema_errors(validator, scaled)
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 5000
    assert schema_errors(validator, scaled)


# --------------------------------------------------------------------------------------------
# The manifests against each other and against the code
# --------------------------------------------------------------------------------------------


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are used here"
    return bool(selector.get("matchLabels")) and all(
        labels.get(k) == v for k, v in selector["matchLabels"].items()
    )


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_references_between_resources_resolve(name: str) -> None:
    docs = rendering(name)
    deployment = only(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    pod = deployment["spec"]["template"]["spec"]
    container = worker_container(docs)
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}

    assert _selects(deployment["spec"]["selector"], pod_labels)
    assert pod["serviceAccountName"] == only(docs, "ServiceAccount")["metadata"]["name"]
    configmaps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    assert {s["configMapRef"]["name"] for s in container["envFrom"]} <= configmaps

    service = only(docs, "Service")
    assert _selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert target in port_names or target in port_names.values(), f"Service targetPort {target}"

    assert _selects(only(docs, "PodDisruptionBudget")["spec"]["selector"], pod_labels)

    if name in with_kind("ServiceMonitor"):
        monitor = only(docs, "ServiceMonitor")
        assert _selects(monitor["spec"]["selector"], service["metadata"]["labels"])
        service_ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports
        assert all(e.get("path", "/metrics") == "/metrics" for e in monitor["spec"]["endpoints"])

    if name not in with_kind("ScaledObject"):
        return
    scaled = only(docs, "ScaledObject")
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert target["name"] == deployment["metadata"]["name"]
    auths = {d["metadata"]["name"]: d for d in docs if d["kind"] == "TriggerAuthentication"}
    secret_refs = {
        var["valueFrom"]["secretKeyRef"]["name"]: var["valueFrom"]["secretKeyRef"]["key"]
        for var in container["env"]
        if "secretKeyRef" in var.get("valueFrom", {})
    }
    for trigger in scaled["spec"]["triggers"]:
        if (
            "authenticationRef" in trigger
            and "secretTargetRef" in auths[trigger["authenticationRef"]["name"]]["spec"]
        ):
            auth = auths[trigger["authenticationRef"]["name"]]
            refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
            # KEDA reads the same Secret, and the same password, as the worker.
            assert refs["password"]["name"] in secret_refs
            assert refs["password"]["key"] == secret_refs[refs["password"]["name"]]


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pod_is_hardened(name: str) -> None:
    docs = rendering(name)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    container = worker_container(docs)
    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] > 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security.get("privileged", False) is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert not security["capabilities"].get("add")
    assert pod.get("automountServiceAccountToken") is False
    # /tmp, the one writable place, is an emptyDir.
    volumes = {v["name"]: v for v in pod["volumes"]}
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pods_spread_over_zones_and_hosts(name: str) -> None:
    deployment = only(rendering(name), "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    constraints = {
        c["topologyKey"]: c for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    }
    assert set(constraints) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for key, constraint in constraints.items():
        assert _selects(constraint["labelSelector"], pod_labels), key
        assert constraint["maxSkew"] == 1, key
        # A hard constraint would hold back a rollout (maxUnavailable 0) on a cluster of few nodes.
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway", key


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_probes_and_port_follow_the_health_server(name: str) -> None:
    docs = rendering(name)
    container = worker_container(docs)
    settings = pod_settings(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.metrics_port in ports.values()
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        port = ports.get(get["port"], get["port"])
        assert port == settings.metrics_port, f"{probe} probes port {port}"
    args = [*container.get("command", []), *container.get("args", [])]
    assert args == ["run"], "the image's ENTRYPOINT is python -m worker; the pod runs `run`"
    cli_parser().parse_args(args)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_static_membership_and_secret_password(name: str) -> None:
    docs = rendering(name)
    env = {var["name"]: var for var in worker_container(docs)["env"]}
    instance = env["WORKER_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]
    assert instance["fieldPath"] == "metadata.name"
    secret = env["WORKER_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert secret["optional"] is True
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            assert "WORKER_SASL_PASSWORD" not in doc.get("data", {}), "a secret in a ConfigMap"


def _worker_env_names(docs: list[Manifest]) -> set[str]:
    names: set[str] = set()
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            names |= set(doc.get("data", {}))
        for pod in _pod_specs(doc):
            for container in _containers(pod):
                names |= {var["name"] for var in container.get("env", [])}
    return {n for n in names if n.startswith("WORKER_")}


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_worker_variable_is_a_setting(name: str) -> None:
    names = _worker_env_names(rendering(name))
    assert len(names) > 10
    unknown = names - SETTING_ENV_NAMES - {"WORKER_CONFIG"}
    assert not unknown, f"{name}: not settings: {sorted(unknown)}"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pod_environment_makes_valid_settings(name: str) -> None:
    settings = pod_settings(rendering(name))  # raises ConfigError on a bad value
    assert settings.group_instance_id


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_grace_period_outlasts_the_drain(name: str) -> None:
    docs = rendering(name)
    grace_s = only(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain_ms = pod_settings(docs).drain_timeout_ms
    assert grace_s * 1000 >= drain_ms + DRAIN_MARGIN_S * 1000, f"grace {grace_s}s, drain {drain_ms}ms"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_replicas_stay_within_the_partitions(name: str) -> None:
    docs = rendering(name)
    deployment = only(docs, "Deployment")
    partitions = int(deployment["metadata"]["annotations"][PARTITIONS_ANNOTATION])
    assert partitions >= 1
    assert 1 <= deployment["spec"]["replicas"] <= partitions
    if name not in with_kind("ScaledObject"):
        return
    scaled = only(docs, "ScaledObject")["spec"]
    assert scaled.get("minReplicaCount", 0) <= scaled["maxReplicaCount"] <= partitions
    assert scaled["maxReplicaCount"] == partitions, "the partition count is the ceiling"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_rate_limit_fits_the_account_budget_at_the_ceiling(name: str) -> None:
    docs = rendering(name)
    if name in with_kind("ScaledObject"):
        ceiling = only(docs, "ScaledObject")["spec"]["maxReplicaCount"]
    else:  # no autoscaler: the replicas stay as they are
        ceiling = only(docs, "Deployment")["spec"]["replicas"]
    assert pod_settings(docs).rate_limit_per_s * ceiling <= ECS_CALLS_PER_S_PER_ACCOUNT


@pytest.mark.parametrize("name", with_kind("ScaledObject"))
def test_keda_watches_the_workers_group_and_topic(name: str) -> None:
    docs = rendering(name)
    settings = pod_settings(docs)
    (trigger,) = only(docs, "ScaledObject")["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["bootstrapServers"] == settings.bootstrap_servers
    assert meta["consumerGroup"] == settings.group_id
    assert meta["topic"] == settings.input_topic
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("allowIdleConsumers", "false") == "false"
    if settings.security_protocol != "PLAINTEXT":
        auth = next(
            d
            for d in docs
            if d["kind"] == "TriggerAuthentication"
            and d["metadata"]["name"] == trigger["authenticationRef"]["name"]
        )
        if settings.sasl_mechanism == "AWS_MSK_IAM":
            # KEDA signs as the worker's own IRSA role (KEDA's kafka scaler, aws_msk_iam).
            assert meta["sasl"] == "aws_msk_iam"
            assert meta["tls"] == "enable"
            assert meta["awsRegion"] == settings.region
            assert auth["spec"]["podIdentity"] == {"provider": "aws", "identityOwner": "workload"}
            assert "secretTargetRef" not in auth["spec"]
            return
        parameters = {r["parameter"] for r in auth["spec"]["secretTargetRef"]}
        if settings.security_protocol.startswith("SASL"):
            assert {"sasl", "username", "password"} <= parameters
        if settings.security_protocol.endswith("SSL"):
            assert "tls" in parameters


def test_overlay_images_are_pinned() -> None:
    for name in KUSTOMIZATIONS:
        if name == "base":
            continue
        image = worker_container(rendering(name))["image"]
        repository, _, tag = image.rpartition(":")
        assert ("/" in repository and tag and tag != "latest") or "@sha256:" in image, image


# --------------------------------------------------------------------------------------------
# IAM
# --------------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_iam_policy_allows_only_what_the_worker_calls_on_named_clusters() -> None:
    """The service authorization reference: SubmitTaskStateChange takes the cluster resource type
    (arn:${Partition}:ecs:${Region}:${Account}:cluster/${ClusterName}); DescribeTasks the task
    resource type (arn:...:task/${ClusterName}/${TaskId}); DescribeTaskDefinition supports no
    resource-level permission (Resource "*")."""
    policy = json.loads(IAM_POLICY.read_text())
    assert policy["Version"] == "2012-10-17"
    region = pod_settings(rendering("production")).region
    scope = r"arn:aws(?:-cn|-us-gov)?:ecs:([a-z0-9-]+):\d{12}"
    patterns = {
        "ecs:SubmitTaskStateChange": scope + r":cluster/([A-Za-z0-9_-]{1,255})",
        "ecs:DescribeTasks": scope + r":task/([A-Za-z0-9_-]{1,255})/\*",
    }
    clusters: dict[str, set[str]] = {}
    actions: list[str] = []
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert not {"NotAction", "NotResource", "NotPrincipal", "Principal"} & set(statement)
        (action,) = _as_list(statement["Action"])
        actions.append(action)
        if action == "ecs:DescribeTaskDefinition":
            assert statement["Resource"] == "*"
            continue
        for resource in _as_list(statement["Resource"]):
            match = re.fullmatch(patterns[action], resource)
            assert match, f"{action}: not one named cluster's resource: {resource}"
            assert match[1] == region, f"{resource} is not in the worker's region {region}"
            clusters.setdefault(action, set()).add(match[2])
    assert sorted(actions) == ["ecs:DescribeTaskDefinition", "ecs:DescribeTasks", "ecs:SubmitTaskStateChange"]
    assert clusters["ecs:DescribeTasks"] == clusters["ecs:SubmitTaskStateChange"]


def test_iam_trust_policy_trusts_the_service_account() -> None:
    trust = json.loads(IAM_TRUST_POLICY.read_text())
    docs = rendering("production")
    account = only(docs, "ServiceAccount")
    subject = f"system:serviceaccount:{account['metadata']['namespace']}:{account['metadata']['name']}"
    (statement,) = trust["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    provider_arn = statement["Principal"]["Federated"]
    match = re.fullmatch(r"arn:aws:iam::(\d{12}):oidc-provider/(.+)", provider_arn)
    assert match
    conditions = statement["Condition"]["StringEquals"]
    assert conditions[f"{match[2]}:sub"] == subject
    assert conditions[f"{match[2]}:aud"] == "sts.amazonaws.com"
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(rf"arn:aws:iam::{match[1]}:role/[\w+=,.@/-]+", role), role


# --------------------------------------------------------------------------------------------
# Metrics: the dashboard and the alerts query what worker.metrics exports
# --------------------------------------------------------------------------------------------


@functools.cache
def exported_metrics() -> dict[str, frozenset[str]]:
    """Every series name the worker exposes (as prometheus-client names them) -> its labels."""
    metrics = Metrics()
    labels: dict[str, frozenset[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            (family,) = value.describe()
            labels[family.name] = frozenset(getattr(value, "_labelnames", ()))
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    exposed: dict[str, frozenset[str]] = {}
    for family in metrics.registry.collect():
        if family.name not in labels or family.type == "info":
            # prometheus-client's collectors and the build info: the series they hold now.
            for sample in family.samples:
                exposed[sample.name] = exposed.get(sample.name, frozenset()) | frozenset(sample.labels)
            continue
        for suffix in suffixes[family.type]:
            extra = {"le"} if suffix == "_bucket" else set()
            exposed[family.name + suffix] = labels[family.name] | extra
    return exposed


_PROMQL_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool"})
_PROMQL_OPERATORS = frozenset({"and", "or", "unless", "offset", "atan2"})
_STRING_LITERAL = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\''
_COUNTER_FUNCTIONS = frozenset({"rate", "irate", "increase", "resets"})


class Query:
    """What a PromQL expression refers to: metric names, label matchers, grouping labels."""

    def __init__(self, expr: str) -> None:
        text = re.sub(r"\$__\w+", "5m", expr)  # Grafana's $__rate_interval and kin
        self.matchers: list[tuple[str | None, str, str, str]] = []  # metric, label, op, value
        selector = re.compile(rf"([A-Za-z_:][\w:]*)?\s*\{{((?:[^{{}}\"']|{_STRING_LITERAL})*)\}}")
        for match in selector.finditer(text):
            for label, op, literal in re.findall(rf"(\w+)\s*(=~|!~|!=|=)\s*({_STRING_LITERAL})", match[2]):
                self.matchers.append((match[1], label, op, ast.literal_eval(literal)))
        text = selector.sub(lambda m: m[1] or " ", text)
        text = re.sub(_STRING_LITERAL, '""', text)
        text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
        text = re.sub(r"\boffset\s+-?\w+", " ", text)
        self.grouping: set[str] = set()
        for match in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
            self.grouping |= {label.strip() for label in match[2].split(",") if label.strip()}
        text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
        self.metrics: set[str] = set()
        self.functions: set[str] = set()
        for match in re.finditer(r"\d+(?:\.\d+)?(?:e[+-]?\d+)?|[A-Za-z_:][\w:]*", text):
            token = match[0]
            if token[0].isdigit() or token in _PROMQL_KEYWORDS or token in _PROMQL_OPERATORS:
                continue
            if re.match(r"\s*\(", text[match.end() :]):
                self.functions.add(token)
            else:
                self.metrics.add(token)
        self.counter_arguments = set(
            re.findall(r"\b(?:rate|irate|increase|resets)\s*\(\s*([A-Za-z_:][\w:]*)", text)
        )
        self.metrics |= {m for m, *_ in self.matchers if m}
        self.problems = list(self._check())

    def _check(self) -> Iterator[str]:
        exposed = exported_metrics()
        if not self.metrics:
            yield "queries no metric"
        for name in sorted(self.metrics - set(exposed)):
            yield f"unknown metric {name}"
        usable: set[str] = set(TARGET_LABELS)
        for name in self.metrics & set(exposed):
            usable |= exposed[name]
        for selected, label, _, _ in self.matchers:
            own = exposed.get(selected, frozenset()) if selected else frozenset()
            if label not in own | TARGET_LABELS | {"__name__"}:
                yield f"{selected} has no label {label}"
        for label in sorted(self.grouping - usable):
            yield f"no queried metric has the label {label} it groups by"
        for name in sorted(self.counter_arguments):
            if not name.endswith(("_total", "_bucket", "_count", "_sum")):
                yield f"{name} is not a counter: rate()/increase() of it is meaningless"
        if "histogram_quantile" in self.functions and "le" not in self.grouping:
            yield "histogram_quantile without `le` in its aggregation"
        results = set(get_args(OutcomeResult))
        for selected, label, op, value in self.matchers:
            if selected == "ecs_state_worker_submissions_total" and label == "result" and op in ("=", "=~"):
                values = set(value.split("|")) if op == "=~" else {value}
                if not values <= results:
                    yield f"result={value!r} but results are {sorted(results)}"


def test_query_checker_catches_mistakes() -> None:
    good = Query(
        'sum by (le) (rate(ecs_state_worker_ecs_call_seconds_bucket{pod=~"$pod"}[$__rate_interval]))'
    )
    assert not good.problems
    assert good.metrics == {"ecs_state_worker_ecs_call_seconds_bucket"}
    assert Query("sum(rate(ecs_state_worker_records_consumed[5m]))").problems  # no _total
    assert Query('ecs_state_worker_consumer_lag{partiton="0"}').problems
    assert Query("sum by (reason) (ecs_state_worker_active_tasks)").problems
    assert Query("rate(ecs_state_worker_active_tasks[5m])").problems
    assert Query("histogram_quantile(0.9, rate(ecs_state_worker_ecs_call_seconds_bucket[5m]))").problems
    assert Query('ecs_state_worker_submissions_total{result="ok"}').problems
    assert Query("kafka_consumergroup_lag").problems


def _dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _dashboard_panels(panel.get("panels", []))


def test_dashboard_queries_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    exprs = 0
    for panel in _dashboard_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            query = Query(target["expr"])
            assert not query.problems, f"panel {panel['title']!r}: {query.problems} in {target['expr']}"
            used |= query.metrics
            exprs += 1
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            definition = (
                variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            )
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
            assert match, definition
            query = Query(match[1])
            assert not query.problems, f"variable {variable['name']}: {query.problems}"
            assert match[2] in TARGET_LABELS or any(match[2] in exported_metrics()[m] for m in query.metrics)
    assert exprs >= 20
    required = {
        "ecs_state_worker_records_consumed_total",
        "ecs_state_worker_submissions_total",
        "ecs_state_worker_ecs_call_seconds_bucket",
        "ecs_state_worker_event_to_ack_seconds_bucket",
        "ecs_state_worker_throttles_total",
        "ecs_state_worker_retries_total",
        "ecs_state_worker_active_tasks",
        "ecs_state_worker_ecs_calls_in_flight",
        "ecs_state_worker_rate_limit_per_second",
        "ecs_state_worker_consumer_lag",
        "ecs_state_worker_incomplete_offsets",
        "ecs_state_worker_dead_lettered_total",
    }
    assert not required - used, f"the dashboard does not show {sorted(required - used)}"


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(_dashboard_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert 1 <= grid["w"] <= 24 - grid["x"], panel["title"]
        assert grid["h"] >= 1
        assert grid["y"] >= 0
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            for variable in re.findall(r"\$(\w+)", target["expr"]):
                assert variable.startswith("__") or variable in variables, f"${variable} is undefined"
    # No two panels overlap.
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & area, f"panel {panel['title']!r} overlaps another"
        cells |= area


@pytest.mark.parametrize("name", with_kind("PrometheusRule"))
def test_alerts_query_exported_metrics(name: str) -> None:
    rules = only(rendering(name), "PrometheusRule")
    alerts = [rule for group in rules["spec"]["groups"] for rule in group["rules"]]
    assert {
        "EcsStateWorkerConsumerLagGrowing",
        "EcsStateWorkerDeadLetters",
        "EcsStateWorkerFailedSubmissions",
        "EcsStateWorkerNoProgress",
    } <= {a["alert"] for a in alerts}
    for alert in alerts:
        query = Query(alert["expr"])
        assert not query.problems, f"{alert['alert']}: {query.problems}"
        # The labels an alert carries: those of its leading aggregation (`sum by (...) (...) > x`),
        # else (roughly) those of the series it queries.
        leading = re.match(r"\s*(?:sum|min|max|avg|count|group)\s+by\s*\(([^)]*)\)", alert["expr"])
        if leading:
            available = {label.strip() for label in leading[1].split(",")}
        else:
            available = set(TARGET_LABELS)
            for metric in query.metrics:
                available |= exported_metrics()[metric]
        for text in alert["annotations"].values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label in available, f"{alert['alert']}: annotation uses $labels.{label}"


def prometheus_rule() -> Manifest:
    (rule,) = [
        doc
        for doc in _load_documents(COMPONENTS["prometheus-operator"] / "prometheusrule.yaml")
        if doc["kind"] == "PrometheusRule"
    ]
    return rule


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in prometheus_rule()["spec"]["groups"] for rule in group["rules"]}


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation other than ``-``
    and ``_`` dropped, spaces as ``-``; a repeated one gets ``-1``, ``-2``..."""
    anchors: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not re.match(r"#{1,6} ", line):
            continue
        anchor = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        candidate, n = anchor, 0
        while candidate in anchors:
            n += 1
            candidate = f"{anchor}-{n}"
        anchors.add(candidate)
    return anchors


def test_anchor_rule_follows_github() -> None:
    text = "# A `b` c\n## Metrics, health and logs\n```\n# not a heading\n```\n## Metrics, health and logs\n"
    assert github_anchors(text) == {"a-b-c", "metrics-health-and-logs", "metrics-health-and-logs-1"}


def test_every_alert_links_a_runbook_that_exists() -> None:
    documentation = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]["Documentation"]
    anchors = github_anchors((REPO / "README.md").read_text())
    for name, alert in alerts().items():
        assert alert["labels"]["severity"] in ("warning", "critical"), name
        assert alert["annotations"]["summary"], name
        url = alert["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base == documentation, f"{name}: {url} is not the README ({documentation})"
        assert anchor in anchors, f"{name}: README has no section #{anchor}"
        assert anchor == name.lower(), f"{name}: its runbook is another alert's"


def test_alerts_cover_absence_throttling_and_the_lifecycle() -> None:
    rules = alerts()
    service = only(rendering("production"), "Service")["metadata"]["name"]
    absent = re.fullmatch(r"\s*absent\((\w+)\{job=\"([\w-]+)\"\}\)\s*", rules["EcsStateWorkerAbsent"]["expr"])
    assert absent, rules["EcsStateWorkerAbsent"]["expr"]
    # Present on every scrape of a worker; the job label is the Service's name (the Prometheus
    # Operator's default for a ServiceMonitor without jobLabel).
    assert absent[1] == "ecs_state_worker_build_info"
    assert absent[1] in exported_metrics()
    assert absent[2] == service
    assert "jobLabel" not in only(rendering("production"), "ServiceMonitor")["spec"]
    assert Query(rules["EcsStateWorkerThrottled"]["expr"]).metrics == {
        "ecs_state_worker_throttles_total",
        "ecs_state_worker_ecs_calls_total",
    }
    assert "ecs_state_worker_state" in Query(rules["EcsStateWorkerStuckStarting"]["expr"]).metrics


def _minutes(duration: str) -> float:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, duration
    return int(match[1]) * {"s": 1 / 60, "m": 1, "h": 60}[match[2]]


def test_dead_letter_alert_does_not_fire_on_a_single_record() -> None:
    """A threshold above one record over a window: ``increase()`` of a counter that moved by one
    extrapolates to little more than 1, far below the threshold."""
    rule = alerts()["EcsStateWorkerDeadLetters"]
    match = re.fullmatch(
        r"\s*sum by \(([\w, ]+)\) \((increase|rate)\(ecs_state_worker_dead_lettered_total\[(\w+)\]\)\)"
        r" > ([\d.]+)\s*",
        rule["expr"],
    )
    assert match, rule["expr"]
    window_minutes = _minutes(match[3])
    threshold = float(match[4])
    records = threshold if match[2] == "increase" else threshold * window_minutes * 60
    assert records >= 2, f"fires at {records} records in {match[3]}"
    assert window_minutes >= 5
    assert _minutes(rule.get("for", "0s")) > 0


# go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0
PROMTOOL = go_tool("promtool")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0)",
)
def test_alerts_pass_promtool_and_their_unit_tests(tmp_path: Path) -> None:
    """``promtool check rules`` on the rule groups, then ``promtool test rules`` with the cases of
    tests/data/deploy/alerts_test.yaml (a single dead letter does not fire, a burst does; no worker
    scraped; throttling)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": prometheus_rule()["spec"]["groups"]}))
    checked = _promtool("check", "rules", str(rules))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The unit tests check when alerts fire and their labels: the rules without annotations.
    groups = copy.deepcopy(prometheus_rule()["spec"]["groups"])
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules.write_text(yaml.safe_dump({"groups": groups}))
    cases = tmp_path / "alerts_test.yaml"
    shutil.copy(REPO / "tests" / "data" / "deploy" / "alerts_test.yaml", cases)
    tested = _promtool("test", "rules", str(cases))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


# --------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore
# --------------------------------------------------------------------------------------------


def _dockerfile_stages() -> tuple[dict[str, str], list[list[Any]]]:
    """Global ARG defaults, and the instructions of each stage (FROM first)."""
    args: dict[str, str] = {}
    stages: list[list[Any]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            stages.append([command])
        elif stages:
            stages[-1].append(command)
        elif command.cmd == "ARG":
            name, _, default = command.value[0].partition("=")
            args[name] = default
    return args, stages


def _expand(text: str, args: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], text)


def _stage_name(stage: list[Any]) -> str | None:
    value = stage[0].value
    return value[2] if len(value) == 3 and value[1].upper() == "AS" else None


def _lineage(stages: list[list[Any]], target: str | None = None) -> list[list[Any]]:
    """The stages a build target is made of, its base stages first (a stage built ``FROM`` an
    earlier stage starts from it). No target: the last stage, what ``docker build`` gives."""
    by_name = {_stage_name(stage): stage for stage in stages}
    lineage = [stages[-1] if target is None else by_name[target]]
    while (base := lineage[0][0].value[0]) in by_name:
        lineage.insert(0, by_name[base])
    return lineage


def _instructions(lineage: list[list[Any]]) -> list[Any]:
    """The instructions that make an image: the first stage's ``FROM``, then every stage's body."""
    return [lineage[0][0], *(command for stage in lineage for command in stage[1:])]


def _copied_stages(lineage: list[list[Any]]) -> set[str]:
    return {
        flag.removeprefix("--from=")
        for command in _instructions(lineage)
        if command.cmd == "COPY"
        for flag in command.flags
        if flag.startswith("--from=")
    }


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    args, stages = _dockerfile_stages()
    assert len(stages) >= 2
    names = {_stage_name(stage) for stage in stages}
    images = [_expand(stage[0].value[0], args) for stage in stages if stage[0].value[0] not in names]
    assert all(re.fullmatch(r"python:3\.11-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image) for image in images), (
        images
    )
    production = _lineage(stages)
    builders = names - {_stage_name(stage) for stage in production}
    copies = [c for c in _instructions(production) if c.cmd == "COPY"]
    assert copies, "the production image copies nothing"
    for copy_ in copies:
        # Only the built environment: no source tree or build tools in the production image.
        sources = [f for f in copy_.flags if f.startswith("--from=")]
        assert sources, copy_.original
        assert sources[0].removeprefix("--from=") in builders, copy_.original


def test_dockerfile_installs_runtime_dependencies_only() -> None:
    _, stages = _dockerfile_stages()
    builders = [_lineage(stages, name) for name in _copied_stages(_lineage(stages))]
    runs = " ".join(c.value[0] for lineage in builders for c in _instructions(lineage) if c.cmd == "RUN")
    assert re.search(r"pip install (--\S+ )*\.(\s|$)", runs), runs
    assert "[dev]" not in runs
    assert ".[" not in runs


def test_dockerfile_installs_the_locked_versions_first() -> None:
    """The builder installs requirements.lock with its hashes, then the project without resolving
    anything again (``--no-deps``), and proves the environment complete (``pip check``)."""
    _, stages = _dockerfile_stages()
    (builder,) = [_lineage(stages, name) for name in _copied_stages(_lineage(stages))]
    commands = _instructions(builder)
    runs = [c.value[0] for c in commands if c.cmd == "RUN"]
    locked = [
        i
        for i, run in enumerate(runs)
        if re.search(r"pip install --require-hashes (--\S+ )*-r requirements\.lock", run)
    ]
    project = [i for i, run in enumerate(runs) if re.search(r"pip install --no-deps \.(\s|$)", run)]
    assert locked, runs
    assert project, runs
    assert locked[0] < project[0], "the project is installed before its locked dependencies"
    assert "pip check" in runs[project[0]]
    copied = [source for c in commands if c.cmd == "COPY" and not c.flags for source in c.value[:-1]]
    assert "requirements.lock" in copied
    assert "LICENSE" in copied, "license-files needs the LICENSE in the build"


def test_image_carries_the_oci_labels_of_the_project() -> None:
    """org.opencontainers.image.* annotations (OCI image spec, annotations.md), the same as the
    project's metadata."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    args, stages = _dockerfile_stages()
    labels: dict[str, str] = {}
    for command in _instructions(_lineage(stages)):
        if command.cmd == "LABEL":
            pairs = command.value
            # BuildKit's parser keeps a value's quotes.
            labels.update(
                (k, v.removeprefix('"').removesuffix('"'))
                for k, v in zip(pairs[::2], pairs[1::2], strict=True)
            )
    oci = {k.removeprefix("org.opencontainers.image."): v for k, v in labels.items() if k.startswith("org.")}
    assert set(oci) >= {"title", "description", "version", "revision", "created", "licenses", "source", "url"}
    assert oci["title"] == project["name"]
    assert _expand(oci["version"], args) == project["version"]
    assert oci["licenses"] == project["license"]
    assert oci["source"] == project["urls"]["Source"]
    assert oci["url"] == project["urls"]["Homepage"]
    assert oci["documentation"] == project["urls"]["Documentation"]
    assert oci["revision"] == "${REVISION}"
    assert oci["created"] == "${CREATED}"


def test_dockerfile_dev_target_is_the_production_image_plus_devkit() -> None:
    _, stages = _dockerfile_stages()
    production = _lineage(stages)
    dev = _lineage(stages, "dev")
    # The production image and what it copies from never see devkit/.
    for lineage in (production, *(_lineage(stages, name) for name in _copied_stages(production))):
        for command in _instructions(lineage):
            assert "devkit" not in command.original, command.original
    # dev builds on the production image (its user, entrypoint, environment): the stages after
    # its base add nothing to production ...
    base = dev[:-1]
    assert base, "dev starts from a base image of its own"
    assert base == production[: len(base)], "dev does not build on the production image's stages"
    assert not [c for stage in production[len(base) :] for c in stage[1:]], (
        "production is more than dev's base"
    )
    # ... and adds devkit/ from the build context, and nothing else.
    body = dev[-1][1:]
    assert not [c for c in body if c.cmd in ("USER", "ENTRYPOINT", "CMD", "WORKDIR")], (
        "dev changes how it runs"
    )
    copies = [c for c in body if c.cmd in ("COPY", "ADD")]
    assert [list(c.value[:-1]) for c in copies] == [["devkit/"]]
    assert not copies[0].flags, "devkit/ stays root-owned, from the build context"


def test_dockerfile_runs_the_worker_as_a_numeric_non_root_user() -> None:
    _, stages = _dockerfile_stages()
    final = _instructions(_lineage(stages))
    (user,) = [c.value[0] for c in final if c.cmd == "USER"][-1:]
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER {user}: Kubernetes runAsNonRoot needs a numeric uid"
    assert int(uid) > 0, f"USER {user} is root"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    for name in KUSTOMIZATIONS:
        security = only(rendering(name), "Deployment")["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsUser"] == int(uid)
        if gid:
            assert security["runAsGroup"] == int(gid)
    env: dict[str, str] = {}
    for command in final:
        if command.cmd == "ENV":
            env.update(zip(command.value[::2], command.value[1::2], strict=True))
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    (entrypoint,) = [c for c in final if c.cmd == "ENTRYPOINT"][-1:]
    assert entrypoint.json
    assert list(entrypoint.value) == ["python", "-m", "worker"]
    (cmd,) = [c for c in final if c.cmd == "CMD"][-1:]
    assert cmd.json
    assert list(cmd.value) == ["run"]
    cli_parser().parse_args(list(cmd.value))
    exposed = {int(port.split("/")[0]) for c in final if c.cmd == "EXPOSE" for port in c.value}
    assert Settings().metrics_port in exposed
    workdirs = [c.value[0] for c in final if c.cmd == "WORKDIR"]
    assert workdirs
    assert workdirs[-1] != "/tmp", "a writable working directory would be on sys.path"


class DockerIgnore:
    """Docker's .dockerignore matching (moby/patternmatcher: last matching pattern wins, a
    pattern matching a parent directory matches its files)."""

    def __init__(self, text: str) -> None:
        self.patterns: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
            self.patterns.append((exclusion, re.compile(self._regex(pattern))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "^", 0
        while i < len(pattern):
            char = pattern[i]
            if pattern.startswith("**/", i):
                out += "(.*/)?"
                i += 3
                continue
            if pattern.startswith("**", i):
                out += ".*"
                i += 2
                continue
            if char == "*":
                out += "[^/]*"
            elif char == "?":
                out += "[^/]"
            elif char == "[":
                end = pattern.index("]", i)
                out += pattern[i : end + 1]
                i = end
            else:
                out += re.escape(char)
            i += 1
        return out + "$"

    def excluded(self, path: str) -> bool:
        parents = path.split("/")[:-1]
        matched = False
        for exclusion, regex in self.patterns:
            if exclusion != matched:
                continue
            hit = bool(regex.match(path)) or any(
                regex.match("/".join(parents[: i + 1])) for i in range(len(parents))
            )
            if hit:
                matched = not exclusion
        return matched


def test_dockerignore_matcher_semantics() -> None:
    ignore = DockerIgnore("*\n!src/\n**/__pycache__\n")
    assert ignore.excluded(".git/config")
    assert not ignore.excluded("src/a/b.py")
    assert ignore.excluded("src/a/__pycache__/b.pyc")
    assert ignore.excluded("tests/test_x.py")


def _repository_files(*roots: str) -> list[str]:
    files = []
    for root in roots:
        base = REPO / root
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        files += [p.relative_to(REPO).as_posix() for p in paths]
    return files


def test_build_context_holds_what_the_image_installs_and_nothing_else() -> None:
    ignore = DockerIgnore(DOCKERIGNORE.read_text())
    _, stages = _dockerfile_stages()
    for command in (c for stage in stages for c in stage if c.cmd in ("COPY", "ADD")):
        if any(flag.startswith("--from=") for flag in command.flags):
            continue
        matched = 0
        for source in command.value[:-1]:
            for found in sorted(REPO.glob(source.rstrip("/"))):
                files = _repository_files(found.relative_to(REPO).as_posix())
                sent = [f for f in files if not ignore.excluded(f)]
                assert sent, f"{command.original}: {source} is excluded from the build context"
                matched += 1
        assert matched, f"{command.original}: no source exists"
    for path in _repository_files("worker", "schemas", "devkit", "pyproject.toml"):
        cached = "__pycache__" in path or path.endswith(".pyc")
        assert ignore.excluded(path) == cached, path
    for path in (
        ".git/HEAD",
        ".venv/pyvenv.cfg",
        "tests/test_deploy.py",
        "deploy/Dockerfile",
        ".mypy_cache/x",
    ):
        assert ignore.excluded(path), path


# --------------------------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------------------------


@functools.cache
def _compose_text() -> str:
    return COMPOSE_FILE.read_text()


def compose() -> dict[str, Any]:
    data = yaml.safe_load(_compose_text())
    assert isinstance(data, dict)
    return data


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _unescape(text: str) -> str:
    """What Compose passes on for a value without interpolation: ``$$`` becomes ``$``."""
    return text.replace("$$", "$")


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: _unescape(str(value)) for key, value in env.items()}


def _command(value: Any) -> list[str]:
    assert isinstance(value, list), "use the exec (list) form"
    return [_unescape(str(item)) for item in value]


def _services_running(argument: str) -> dict[str, dict[str, Any]]:
    """Services running ``python -m worker ARGUMENT`` (the image's entrypoint)."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if "build" in service
        and "entrypoint" not in service
        and _command(service.get("command", ["run"]))[:1] == [argument]
    }


def test_compose_matches_the_compose_specification() -> None:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert not schema_errors(validator, compose())
    broken = compose()
    broken["services"]["worker"]["depends_on"]["kafka"]["condition"] = "service_started_ok"
    assert schema_errors(validator, broken)


def test_compose_uses_no_interpolation() -> None:
    for text in _strings(compose()):
        assert not re.search(r"(?<!\$)\$(?!\$)", text.replace("$$", "")), f"unescaped $ in {text[:60]!r}"


def test_compose_services_build_and_depend_on_what_exists() -> None:
    services = compose()["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            context = REPO / service["build"]["context"]
            assert context.resolve() == REPO, f"{name}: the build context is the repository root"
            assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on with conditions"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} is not one-shot"
            else:
                raise AssertionError(f"{name}: wait for {target} to be healthy or completed")


def _imports(script: str) -> set[str]:
    tree = ast.parse(script)
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return modules | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_compose_builds_devkit_into_the_development_services_only() -> None:
    _, stages = _dockerfile_stages()
    production = _stage_name(stages[-1])
    images: dict[str, str | None] = {}
    for name, service in compose()["services"].items():
        if "build" not in service:
            continue
        target = service["build"].get("target")
        if "entrypoint" in service:  # a Python script: the generator
            script = "\n".join(_command(service["command"]))
            needs_devkit = "devkit" in {module.split(".")[0] for module in _imports(script)}
        else:
            needs_devkit = _command(service.get("command", ["run"]))[0] in DEVELOPMENT_COMMANDS
        if needs_devkit:
            assert target == "dev", f"{name} needs devkit/: build the dev target"
        else:
            assert target in (None, production), f"{name} runs the production image"
        # One tag, one target: otherwise one build would overwrite the other's image.
        assert images.setdefault(service["image"], target) == target, f"{name}: {service['image']}"


def _ports(service: Mapping[str, Any]) -> list[tuple[str | None, int, int]]:
    published = []
    for entry in service.get("ports", []):
        match = re.fullmatch(r"(?:(\d+\.\d+\.\d+\.\d+):)?(?:(\d+):)?(\d+)(?:/(tcp|udp))?", str(entry))
        assert match, f"bad port {entry}"
        host = int(match[2] or match[3])
        container = int(match[3])
        assert 1 <= host <= 65535, entry
        assert 1 <= container <= 65535, entry
        published.append((match[1], host, container))
    return published


def test_compose_ports_are_valid_and_local() -> None:
    hosts = []
    for service in compose()["services"].values():
        for address, host, _ in _ports(service):
            assert address == "127.0.0.1", "publish on the loopback only"
            hosts.append(host)
    assert len(hosts) == len(set(hosts)), "two services publish the same host port"


def _worker_service() -> tuple[str, dict[str, Any]]:
    ((name, service),) = _services_running("run").items()
    return name, service


def test_compose_worker_settings_point_at_the_stack() -> None:
    services = compose()["services"]
    _, worker = _worker_service()
    env = _environment(worker)
    settings = load_settings(env=env)
    assert settings.enable_idempotence is True
    # Brokers: the Kafka service's advertised in-network listener.
    host, _, port = settings.bootstrap_servers.partition(":")
    assert host in services
    assert host in worker["depends_on"]
    kafka_env = _environment(services[host])
    advertised = dict(item.split("://", 1) for item in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(
        item.split(":", 1) for item in kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    (listener,) = [name for name, address in advertised.items() if address == f"{host}:{port}"]
    assert protocols[listener] == settings.security_protocol
    # ECS endpoint: the service that runs `ecs-endpoint` on that port.
    url = re.fullmatch(r"http://([\w-]+):(\d+)", settings.ecs_endpoint_url or "")
    assert url, settings.ecs_endpoint_url
    endpoints = _services_running("ecs-endpoint")
    assert url[1] in endpoints
    assert url[1] in worker["depends_on"]
    endpoint_args = cli_parser().parse_args(_command(endpoints[url[1]]["command"]))
    assert endpoint_args.port == int(url[2])
    assert endpoint_args.host == "0.0.0.0"
    for service in services.values():
        if "build" in service and "entrypoint" not in service:
            cli_parser().parse_args(_command(service.get("command", ["run"])))
    # Health, metrics and shutdown.
    assert any(container == settings.metrics_port for _, _, container in _ports(worker))
    check = " ".join(worker["healthcheck"]["test"])
    assert f":{settings.metrics_port}/readyz" in check
    grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert grace
    assert int(grace[1]) * 1000 >= settings.drain_timeout_ms + DRAIN_MARGIN_S * 1000
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env)


def test_compose_worker_variables_are_settings() -> None:
    names = {key for service in compose()["services"].values() for key in _environment(service)}
    worker_names = {n for n in names if n.startswith("WORKER_")}
    assert len(worker_names) >= 8
    assert not worker_names - SETTING_ENV_NAMES - {"WORKER_CONFIG"}, sorted(worker_names - SETTING_ENV_NAMES)


def test_compose_kafka_is_a_single_kraft_node() -> None:
    services = compose()["services"]
    host = load_settings(env=_environment(_worker_service()[1])).bootstrap_servers.partition(":")[0]
    kafka = services[host]
    assert kafka["image"].startswith("apache/kafka:")
    env = _environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@{host}:9093"
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "CLUSTER_ID is not a Kafka Uuid"
    listeners = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    protocol_map = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert listeners == set(protocol_map)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false", "topics come from the topics service"
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


def test_compose_creates_the_workers_topics() -> None:
    services = compose()["services"]
    _, worker = _worker_service()
    settings = load_settings(env=_environment(worker))
    (topics_name,) = [
        n for n, s in worker["depends_on"].items() if s["condition"] == "service_completed_successfully"
    ]
    topics = services[topics_name]
    env = _environment(topics)
    script = "\n".join(_command(topics["command"]))
    assert "--create" in script
    assert "--if-not-exists" in script
    for field in ("input_topic", "outcome_topic", "dlq_topic"):
        variable = env_name(field)
        assert env[variable] == getattr(settings, field), variable
        assert "${" + variable + "}" in script, f"{variable} is not created"
    partitions = {k: int(v) for k, v in env.items() if k.endswith("_PARTITIONS")}
    assert len(partitions) == 3
    assert min(partitions.values()) >= 1
    assert worker.get("deploy", {}).get("replicas", 1) <= partitions["INPUT_PARTITIONS"]


def _generator() -> tuple[dict[str, Any], str]:
    (service,) = [s for s in compose()["services"].values() if s.get("entrypoint") == ["python", "-c"]]
    (script,) = _command(service["command"])
    return service, script


def test_compose_generator_script_compiles_and_imports_what_the_image_has() -> None:
    service, script = _generator()
    modules = _imports(script)
    assert {"aiokafka", "devkit.fleet"} <= modules
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module
    env = _environment(service)
    worker_settings = load_settings(env=_environment(_worker_service()[1]))
    assert env["WORKER_BOOTSTRAP_SERVERS"] == worker_settings.bootstrap_servers
    assert env["WORKER_INPUT_TOPIC"] == worker_settings.input_topic


class _FakeProducer:
    """Stands in for AIOKafkaProducer while the generator script runs."""

    sent: list[tuple[str, bytes, bytes]] = []
    options: dict[str, Any] = {}

    def __init__(self, **options: Any) -> None:
        _FakeProducer.options = options

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, topic: str, *, value: bytes, key: bytes) -> asyncio.Future[None]:
        _FakeProducer.sent.append((topic, key, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


@pytest.fixture
def local_ecs_endpoint() -> Iterator[str]:
    """The local ECS endpoint in its own process (``python -m worker ecs-endpoint``): its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "ecs-endpoint", "--port", str(port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/_state", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_compose_generator_produces_docker_events_keyed_by_task(
    monkeypatch: pytest.MonkeyPatch, local_ecs_endpoint: str
) -> None:
    """The generator launches each round's fleet at the endpoint (RegisterTaskDefinition,
    RunTask), then sends the Docker events of exactly those tasks, keyed by task ARN."""
    service, script = _generator()
    env = {
        **_environment(service),
        "GENERATOR_ECS_ENDPOINT_URL": local_ecs_endpoint,
        "GENERATOR_ROUNDS": "1",
        "GENERATOR_TASKS": "20",
        "GENERATOR_PAUSE_S": "0",
        "GENERATOR_PACE": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(aiokafka, "AIOKafkaProducer", _FakeProducer)
    _FakeProducer.sent = []
    exec(compile(script, "<docker-compose generator>", "exec"), {"__name__": "__main__"})

    fleet = synthetic_fleet(20, seed=int(env["GENERATOR_SEED"]), fmt="docker")
    assert len(_FakeProducer.sent) == len(fleet.steps)
    assert _FakeProducer.options["bootstrap_servers"] == env["WORKER_BOOTSTRAP_SERVERS"]
    for topic, record_key, payload in _FakeProducer.sent:
        assert topic == env["WORKER_INPUT_TOPIC"]
        event = json.loads(payload)
        assert event["Type"] == "container"
        assert record_key.decode() == event["Actor"]["Attributes"]["com.amazonaws.ecs.task-arn"]
    with urllib.request.urlopen(f"{local_ecs_endpoint}/_state", timeout=5) as answer:
        ran = json.loads(answer.read())["tasks"]
    assert len(ran) == 20
    assert {key.decode() for _, key, _ in _FakeProducer.sent} == set(ran)
