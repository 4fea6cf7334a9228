"""Rendering the Kubernetes manifests and reading their objects: what the manifest tests share.

Each overlay is rendered with ``kubectl kustomize`` (or a standalone ``kustomize``). Without
either tool the tests skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshcli.mesh import INTERNAL_CLIENT_SCOPES
from meshlib.app import DEFAULT_PORTS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes release the manifests must work on (matchLabelKeys needs 1.27+).
KUBERNETES_VERSION = "1.30.0"
OVERLAYS = ("dev", "prod")
PROCESSES = tuple(DEFAULT_PORTS)
# HTTP processes of the same image (the bank's web app), with their ports.
WEB_PROCESSES = {"bankweb": 8080, "console": 8090}
# Development-only processes of the same image: the scheme simulator (dev overlay).
SIMULATORS = {"schemesim": 50060}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
MESH = "openbank-mesh"
PRE_STOP_SECONDS = 5

# Who may call whom: the mesh's only service-to-service paths ("*" = from anywhere).
EXPECTED_CALLERS = {
    "gateway": {"*"},
    "identity": {"gateway", "account", "payment", "settlement", "bankweb", "console"},
    "account": {"gateway", "payment", "settlement", "bankweb", "console"},
    "payment": {"gateway", "bankweb", "console"},
    "settlement": {"gateway", "payment", "console"},
}

Doc = dict[str, Any]
# The mesh processes with their own OAuth client (the local mesh's other clients, the
# operator's and the bank app's, are people's, not pods').
MESH_CLIENTS = tuple(p for p in INTERNAL_CLIENT_SCOPES if p in DEFAULT_PORTS)


def _render_command(path: Path) -> list[str] | None:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize", str(path)]
    if shutil.which("kustomize"):
        return ["kustomize", "build", str(path)]
    return None


def render(path: Path) -> list[Doc]:
    """Render a kustomization into its objects (skips without a renderer, outside CI)."""
    command = _render_command(path)
    if command is None:
        message = "neither kubectl nor kustomize is installed: cannot render the manifests"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (required in CI)")
        pytest.skip(message)
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"rendering {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(docs: list[Doc], *kinds: str) -> list[Doc]:
    """The objects of the given kinds."""
    return [doc for doc in docs if doc["kind"] in kinds]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    """The one object of ``kind`` called ``name``."""
    matches = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def pod_specs(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(workload, pod template) for every workload object."""
    for doc in of_kind(docs, *WORKLOAD_KINDS):
        yield doc, doc["spec"]["template"]


def containers(docs: list[Doc]) -> Iterator[tuple[Doc, Doc, Doc]]:
    """(workload, pod spec, container) for every app container."""
    for workload, template in pod_specs(docs):
        for container in template["spec"]["containers"]:
            yield workload, template["spec"], container


def mesh_deployments(docs: list[Doc]) -> dict[str, Doc]:
    """The five mesh processes' Deployments by name."""
    found = {
        doc["metadata"]["name"]: doc
        for doc in of_kind(docs, "Deployment")
        if doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/part-of") == MESH
        and doc["metadata"]["name"] not in WEB_PROCESSES
        and doc["metadata"]["name"] not in SIMULATORS
    }
    assert set(found) == set(PROCESSES)
    return found


def selects(selector: Doc | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels / matchExpressions) selects these labels."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def config_value(docs: list[Doc], config_map_prefix: str, key: str) -> str:
    """A value of the (hash-suffixed) generated ConfigMap whose name starts with the prefix."""
    for doc in of_kind(docs, "ConfigMap"):
        if doc["metadata"]["name"].startswith(config_map_prefix) and key in doc.get("data", {}):
            return doc["data"][key]
    raise AssertionError(f"no ConfigMap {config_map_prefix}* with {key}")


def secret_names(pod: Doc, container: Doc) -> set[str]:
    names = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    for volume in pod.get("volumes", []):
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            names.add(ref["name"])
    names |= {e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e}
    return names


def mounted_secret(pod: Doc, container: Doc, path: str) -> str | None:
    """The Secret whose volume holds ``path`` in the container, if one does."""
    volumes = {v["name"]: v.get("secret", {}).get("secretName") for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            return volumes.get(mount["name"])
    return None


def mounted_key(pod: Doc, container: Doc, path: str) -> str | None:
    """The Secret key a mounted file is (the volume's items map keys to paths)."""
    volumes = {v["name"]: v.get("secret", {}) for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix):
            relative = path[len(prefix) :]
            items = volumes.get(mount["name"], {}).get("items")
            if items is None:
                return relative
            return next((item["key"] for item in items if item["path"] == relative), None)
    return None
