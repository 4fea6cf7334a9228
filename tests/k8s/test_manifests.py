"""The Kubernetes manifests: every overlay renders, validates strictly against a pinned
Kubernetes version, and obeys the mesh's deployment policy.

Each overlay is rendered once (``kubectl kustomize``, or a standalone ``kustomize``) per
module. Without either tool the tests skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
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


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Doc]]:
    """(name, rendered objects) of each overlay, rendered once per module."""
    return request.param, render(K8S / "overlays" / request.param)


@pytest.fixture(scope="module")
def prod() -> list[Doc]:
    """The production overlay's objects."""
    return render(K8S / "overlays" / "prod")


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


# --- Schema -------------------------------------------------------------------------------


def test_base_and_every_overlay_validate_strictly_against_the_pinned_version(overlay) -> None:  # type: ignore[no-untyped-def]
    name, docs = overlay
    assert docs, f"{name} rendered nothing"
    base = render(K8S / "base") if name == "dev" else []
    problems = []
    for doc in [*docs, *base]:
        label = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{label}: no schema for {doc.get('apiVersion')} in Kubernetes {KUBERNETES_VERSION}")
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{label}: {error.message}")
    assert not problems, "\n".join(problems)


def test_everything_lands_in_the_overlay_namespace(overlay) -> None:  # type: ignore[no-untyped-def]
    name, docs = overlay
    namespace = {"dev": "openbank-dev", "prod": "openbank"}[name]
    for doc in docs:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == namespace
            assert doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        else:
            assert doc["metadata"].get("namespace") == namespace, doc["metadata"]["name"]


# --- Containers ---------------------------------------------------------------------------


def test_every_container_has_probes_limits_and_a_locked_down_security_context(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    for workload, pod, container in containers(docs):
        where = f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert probe in container, f"{where}: no {probe}"
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container.get("resources", {}).get(bound, {})), f"{where}: {bound}"
        security = container.get("securityContext", {})
        pod_security = pod.get("securityContext", {})
        assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, where
        assert security.get("runAsUser", pod_security.get("runAsUser", 0)) != 0, where
        assert security.get("allowPrivilegeEscalation") is False, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("privileged", False) is False, where
        assert security.get("capabilities", {}).get("drop") == ["ALL"], where
        seccomp = security.get("seccompProfile") or pod_security.get("seccompProfile")
        assert seccomp == {"type": "RuntimeDefault"}, where
        assert pod.get("automountServiceAccountToken") is False, where
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{where}: unpinned {image}"


def test_probes_point_at_declared_ports_and_mesh_probes_are_grpc(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    for workload, _, container in containers(docs):
        ports = {p["containerPort"] for p in container.get("ports", [])} | {
            p.get("name") for p in container.get("ports", [])
        }
        mesh = workload["metadata"]["name"] in PROCESSES
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container[probe_name]
            if mesh:
                assert "grpc" in probe, f"{workload['metadata']['name']}: {probe_name} is not a native gRPC probe"
            for handler in ("grpc", "httpGet", "tcpSocket"):
                if handler in probe:
                    assert probe[handler]["port"] in ports, f"{workload['metadata']['name']}: {probe_name} port"


def test_mesh_processes_listen_on_their_ports_and_drain_before_being_killed(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    drain = float(config_value(docs, "openbank-common", "OBM_SHUTDOWN_GRACE_SECONDS"))
    assert config_value(docs, "openbank-common", "OBM_HOST") == "0.0.0.0"
    for name, deployment in mesh_deployments(docs).items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == [name]
        assert DEFAULT_PORTS[name] in {p["containerPort"] for p in container["ports"]}
        assert config_value(docs, f"{name}-config", "OBM_PORT") == str(DEFAULT_PORTS[name])
        assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRE_STOP_SECONDS)]
        assert pod["terminationGracePeriodSeconds"] > PRE_STOP_SECONDS + drain, name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/var/lib/openbank"} <= mounts, f"{name}: writable paths of a read-only root"


# --- Exposure and network -----------------------------------------------------------------


def test_the_gateway_is_the_only_externally_exposed_service(overlay) -> None:  # type: ignore[no-untyped-def]
    name, docs = overlay
    for service in of_kind(docs, "Service"):
        kind = service["spec"].get("type", "ClusterIP")
        if service["metadata"]["name"] == "gateway":
            assert kind == ("LoadBalancer" if name == "prod" else "ClusterIP")
            assert [p["port"] for p in service["spec"]["ports"]] == [DEFAULT_PORTS["gateway"]]
        else:
            assert kind == "ClusterIP", service["metadata"]["name"]
    # The services' own Services are headless: callers balance over the pods themselves.
    headless = {s["metadata"]["name"] for s in of_kind(docs, "Service") if s["spec"].get("clusterIP") == "None"}
    assert {"identity", "account", "payment", "settlement"} <= headless
    # Partners reach the mesh through the gateway Service only; customers' browsers reach the
    # bank's web app through its Ingress, over TLS, in prod (dev: kubectl port-forward).
    ingresses = of_kind(docs, "Ingress")
    if name == "dev":
        assert not ingresses
        return
    (ingress,) = ingresses
    backends = {
        path["backend"]["service"]["name"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]
    }
    assert backends == {"bankweb"}, "only the bank's web pages are behind the Ingress"
    hosts = {host for rule in ingress["spec"]["rules"] for host in [rule["host"]]}
    assert hosts <= {host for tls in ingress["spec"]["tls"] for host in tls["hosts"]}, "TLS for every host"


def test_the_bank_web_app_is_reached_only_from_the_ingress_and_calls_only_identity_and_account(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    policies = of_kind(docs, "NetworkPolicy")
    labels = {"app.kubernetes.io/name": "bankweb", "app.kubernetes.io/part-of": MESH}
    sources, reachable = [], set()
    for policy in policies:
        if not selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            if WEB_PROCESSES["bankweb"] in {p.get("port") for p in rule.get("ports", [])}:
                sources += rule.get("from", [{"anywhere": True}])
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                name = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                if name in PROCESSES:
                    reachable.add(name)
    assert sources == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}], (
        "bankweb's port: from the ingress controller only"
    )
    assert reachable == {"identity", "account", "payment"}  # payment: its audit trail (a consent's payments)
    (deployment,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "bankweb"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["bankweb"]
    assert WEB_PROCESSES["bankweb"] in {p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e for e in container.get("env", [])}
    pod = deployment["spec"]["template"]["spec"]
    secret = _mounted_secret(pod, container, env["OBM_SERVICE_CLIENT_SECRET_FILE"]["value"])
    assert secret and secret.startswith("bankweb-service-client")
    assert config_value(docs, "bankweb-config", "OBM_BANKWEB_SECURE_COOKIES") == "true"


def test_every_service_is_covered_by_a_network_policy_ingress_rule(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    policies = of_kind(docs, "NetworkPolicy")
    default_deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert default_deny, "no default-deny NetworkPolicy"
    templates = [template["metadata"]["labels"] for _, template in pod_specs(docs)]
    for service in of_kind(docs, "Service"):
        selected_pods = [
            labels for labels in templates if selects({"matchLabels": service["spec"]["selector"]}, labels)
        ]
        assert selected_pods, f"Service {service['metadata']['name']} selects no pods"
        for labels in selected_pods:
            covering = [
                p
                for p in policies
                if "Ingress" in p["spec"].get("policyTypes", [])
                and p["spec"].get("ingress")
                and selects(p["spec"]["podSelector"], labels)
            ]
            assert covering, f"Service {service['metadata']['name']}: no NetworkPolicy lets traffic in"


def _allowed_callers(policies: list[Doc], process: str) -> set[str]:
    """Which mesh processes (or "*") a process's ingress rules admit on its gRPC port."""
    callers: set[str] = set()
    labels = {"app.kubernetes.io/name": process, "app.kubernetes.io/part-of": MESH}
    for policy in policies:
        if not selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = {p.get("port") for p in rule.get("ports", [])}
            if DEFAULT_PORTS[process] not in ports and ports:
                continue
            if not rule.get("from"):
                callers.add("*")
            for peer in rule.get("from", []):
                if "namespaceSelector" in peer or "ipBlock" in peer:
                    callers.add("*")
                else:
                    callers.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
    return callers


def test_network_policies_allow_exactly_the_mesh_paths(overlay) -> None:  # type: ignore[no-untyped-def]
    name, docs = overlay
    policies = of_kind(docs, "NetworkPolicy")
    expected_callers = dict(EXPECTED_CALLERS)
    if name == "dev":  # the scheme simulator checks payment's tokens with identity's keys
        expected_callers["identity"] = EXPECTED_CALLERS["identity"] | {"schemesim"}
    assert {p: _allowed_callers(policies, p) for p in PROCESSES} == expected_callers
    # The egress side mirrors it: each caller may reach exactly its callees' ports.
    for caller in PROCESSES:
        labels = {"app.kubernetes.io/name": caller, "app.kubernetes.io/part-of": MESH}
        reachable = set()
        for policy in policies:
            if not selects(policy["spec"]["podSelector"], labels):
                continue
            for rule in policy["spec"].get("egress", []):
                for peer in rule.get("to", []):
                    name = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                    if name in PROCESSES:
                        reachable.add(name)
        expected = {callee for callee, callers in EXPECTED_CALLERS.items() if caller in callers}
        assert reachable == expected, caller


def test_only_the_dev_overlay_runs_the_scheme_simulator_called_by_payment_only(overlay) -> None:  # type: ignore[no-untyped-def]
    name, docs = overlay
    deployments = {doc["metadata"]["name"] for doc in of_kind(docs, "Deployment")}
    if name != "dev":
        assert "schemesim" not in deployments
        return
    assert "schemesim" in deployments
    assert config_value(docs, "payment-config", "OBM_SCHEME_TARGET") == "schemesim:50060"
    policies = of_kind(docs, "NetworkPolicy")
    labels = {"app.kubernetes.io/name": "schemesim", "app.kubernetes.io/part-of": MESH}
    callers = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for policy in policies
        if selects(policy["spec"]["podSelector"], labels)
        for rule in policy["spec"].get("ingress", [])
        if SIMULATORS["schemesim"] in {p.get("port") for p in rule.get("ports", [])}
        for peer in rule.get("from", [])
    }
    assert callers == {"payment"}
    payment = {"app.kubernetes.io/name": "payment", "app.kubernetes.io/part-of": MESH}
    assert any(
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "schemesim"
        for policy in policies
        if selects(policy["spec"]["podSelector"], payment)
        for rule in policy["spec"].get("egress", [])
        for peer in rule.get("to", [])
    )


# --- Secrets ------------------------------------------------------------------------------


def _secret_names(pod: Doc, container: Doc) -> set[str]:
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


def _mounted_secret(pod: Doc, container: Doc, path: str) -> str | None:
    """The Secret whose volume holds ``path`` in the container, if one does."""
    volumes = {v["name"]: v.get("secret", {}).get("secretName") for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            return volumes.get(mount["name"])
    return None


def _mounted_key(pod: Doc, container: Doc, path: str) -> str | None:
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


def test_only_identity_mounts_the_signing_key_and_internal_clients(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    for workload, pod, container in containers(docs):
        secrets = _secret_names(pod, container)
        identity_only = {s for s in secrets if s.startswith(("identity-signing-key", "identity-internal-clients"))}
        if workload["metadata"]["name"] == "identity":
            assert len(identity_only) == 2
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["OBM_SIGNING_KEY_PASSPHRASE_FILE"].startswith("/etc/openbank/signing-key/")
        else:
            assert not identity_only, workload["metadata"]["name"]


def test_every_process_that_asks_identity_has_its_client_with_the_scopes_it_asks_for(overlay) -> None:  # type: ignore[no-untyped-def]
    """Without its credentials a process fails closed (every token-bearing call UNAVAILABLE);
    without a scope it asks for, its service token is refused."""
    name, docs = overlay
    deployments = mesh_deployments(docs)
    for process in MESH_CLIENTS:
        pod = deployments[process]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container.get("env", [])}
        for variable, key in (("OBM_SERVICE_CLIENT_ID", "client-id"), ("OBM_SERVICE_CLIENT_SECRET", "client-secret")):
            # A file from the mounted Secret, never an environment variable.
            assert variable not in env, (process, variable)
            path = env[f"{variable}_FILE"]["value"]
            secret = _mounted_secret(pod, container, path)
            # dev's generated Secrets carry a content hash suffix.
            assert secret and secret.startswith(f"{process}-service-client"), (process, variable)
            assert _mounted_key(pod, container, path) == key, (process, variable)
    if name == "dev":
        clients = yaml.safe_load((K8S / "overlays" / "dev" / "internal-clients.yaml").read_text())["clients"]
        granted = {client["client_id"]: set(client["scopes"]) for client in clients}
        for process in (*MESH_CLIENTS, *WEB_PROCESSES):
            assert set(INTERNAL_CLIENT_SCOPES[process]) <= granted.get(process, set()), process


def test_only_payment_mounts_the_step_up_secret_and_reads_it_from_the_file(overlay) -> None:  # type: ignore[no-untyped-def]
    """The customers' device keys derive from it: one process holds it, never in its environment."""
    _, docs = overlay
    for workload, pod, container in containers(docs):
        holds = {s for s in _secret_names(pod, container) if s.startswith("payment-step-up")}
        env = {e["name"]: e for e in container.get("env", [])}
        if workload["metadata"]["name"] != "payment":
            assert not holds and "OBM_STEP_UP_SECRET_FILE" not in env, workload["metadata"]["name"]
            continue
        assert "OBM_STEP_UP_SECRET" not in env
        path = env["OBM_STEP_UP_SECRET_FILE"]["value"]
        secret = _mounted_secret(pod, container, path)
        assert secret and secret.startswith("payment-step-up")  # dev's generated Secret has a hash suffix
        assert _mounted_key(pod, container, path) == "secret"


def test_service_accounts_carry_no_api_token(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    for account in of_kind(docs, "ServiceAccount"):
        assert account.get("automountServiceAccountToken") is False, account["metadata"]["name"]


def test_config_maps_and_secrets_referenced_exist_or_are_documented(overlay) -> None:  # type: ignore[no-untyped-def]
    name, docs = overlay
    config_maps = {d["metadata"]["name"] for d in of_kind(docs, "ConfigMap")}
    secrets = {d["metadata"]["name"] for d in of_kind(docs, "Secret")}
    # Created out of band in production (docs/deployment.md lists them).
    external = {
        "openbank-datastores",
        "identity-signing-key",
        "identity-internal-clients",
        "gateway-public-tls",
        "gateway-partner-client-ca",
        *(f"{p}-tls" for p in PROCESSES),
        *(f"{p}-service-client" for p in MESH_CLIENTS),
        "payment-step-up",
        "identity-customer-mail",
        "bankweb-service-client",
        "bankweb-tls",
        "console-service-client",
        "console-tls",
        "console-operators",
    }
    for _, pod, container in containers(docs):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in config_maps
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
        for secret in _secret_names(pod, container):
            assert secret in secrets or (name == "prod" and secret in external), secret


# --- Production ---------------------------------------------------------------------------


def test_prod_reads_datastores_from_a_secret_and_runs_none_in_cluster(prod) -> None:  # type: ignore[no-untyped-def]
    assert not of_kind(prod, "StatefulSet", "Secret"), "no in-cluster datastores or inline secrets in prod"
    # The console too: its sessions and its audit trail's database (shared by its replicas).
    deployments = {**mesh_deployments(prod), "console": named(prod, "Deployment", "console")}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        wanted = {"OBM_REDIS_URL": "redis-url"}
        if name != "gateway":
            wanted["OBM_DATABASE_URL"] = f"{name}-database-url"
        for variable, key in wanted.items():
            assert variable not in env, (name, variable)  # a mounted file, never the environment
            path = env[f"{variable}_FILE"]["value"]
            assert _mounted_secret(pod, container, path) == "openbank-datastores", (name, variable)
            assert _mounted_key(pod, container, path) == key, (name, variable)
    for config_map in of_kind(prod, "ConfigMap"):
        assert not {"OBM_DATABASE_URL", "DATABASE_URL", "OBM_REDIS_URL"} & set(config_map.get("data", {}))


def test_prod_runs_two_or_more_of_everything_with_hpas_pdbs_and_spread(prod) -> None:  # type: ignore[no-untyped-def]
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(prod, "HorizontalPodAutoscaler")}
    assert set(hpas) == {"gateway", "payment"}
    assert all(h["apiVersion"] == "autoscaling/v2" for h in hpas.values())
    pdbs = of_kind(prod, "PodDisruptionBudget")
    for deployment in of_kind(prod, "Deployment"):
        name = deployment["metadata"]["name"]
        if name in hpas:
            assert "replicas" not in deployment["spec"], f"{name}: the HPA owns the replica count"
            assert hpas[name]["spec"]["minReplicas"] >= 2
        else:
            assert deployment["spec"]["replicas"] >= 2, name
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(selects(p["spec"]["selector"], labels) for p in pdbs), f"{name}: no PodDisruptionBudget"
    for name, deployment in mesh_deployments(prod).items():
        keys = {c["topologyKey"] for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name


def test_identity_and_account_link_customers_to_the_bank_web_app_they_reach(overlay) -> None:  # type: ignore[no-untyped-def]
    """Activation links and credit offers' acceptance pages: the bank's public pages over HTTPS,
    in prod the bankweb Ingress's host (the services' default is a local address)."""
    name, docs = overlay
    url = config_value(docs, "openbank-common", "OBM_BANK_WEB_URL")
    assert url.startswith("https://"), url
    for service in ("identity", "account"):
        (deployment,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == service]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        sources = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
        assert any(source.startswith("openbank-common") for source in sources), service
        assert "OBM_BANK_WEB_URL" not in {e["name"] for e in container.get("env", [])}, service
    if name == "prod":
        (ingress,) = of_kind(docs, "Ingress")
        assert url == f"https://{ingress['spec']['rules'][0]['host']}"


def test_prod_runs_mtls_and_exports_traces(prod) -> None:  # type: ignore[no-untyped-def]
    assert config_value(prod, "openbank-common", "OBM_OTLP_ENDPOINT") == "http://otel-collector:4317"
    named(prod, "Service", "otel-collector")
    for name, deployment in mesh_deployments(prod).items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        for variable in ("OBM_TLS_CERT_FILE", "OBM_TLS_KEY_FILE", "OBM_PEER_TLS_CA_FILE", "OBM_PEER_TLS_CERT_FILE"):
            assert env.get(variable), (name, variable)
        # Every process demands client certificates: internal ones from the mesh CA, the
        # gateway from partners (partner mTLS, certificate-bound tokens) with their own CA.
        assert env.get("OBM_TLS_CLIENT_CA_FILE"), name
        assert f"{name}-tls" in {v.get("secret", {}).get("secretName") for v in pod["volumes"]}
        if name == "gateway":
            assert _mounted_secret(pod, container, env["OBM_TLS_CLIENT_CA_FILE"]) == "gateway-partner-client-ca"
        else:
            assert _mounted_secret(pod, container, env["OBM_TLS_CLIENT_CA_FILE"]) == f"{name}-tls"
        # Kubelet gRPC probes cannot speak TLS: they use the plaintext health-only port.
        health_port = int(env["OBM_HEALTH_PORT"])
        assert health_port != DEFAULT_PORTS[name]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["grpc"]["port"] == health_port, (name, probe)


def test_prod_keeps_the_gateway_audit_trail_on_a_persistent_volume_shared_by_its_replicas(prod) -> None:  # type: ignore[no-untyped-def]
    """An emptyDir dies with its pod: the audit chain of a replica the HPA removed would go too."""
    gateway = mesh_deployments(prod)["gateway"]
    pod = gateway["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    audit_dir = env["OBM_AUDIT_DIR"]["value"]
    # One chain per pod, named by the pod (the chain name a restarted replica resumes or starts).
    assert env["OBM_AUDIT_REPLICA"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    (mount,) = [m for m in container["volumeMounts"] if f"{audit_dir}/".startswith(f"{m['mountPath']}/")]
    assert not mount.get("readOnly")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = named(prod, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every replica of the Deployment mounts it


def test_only_the_dev_overlay_lets_identity_start_on_development_secrets(overlay) -> None:  # type: ignore[no-untyped-def]
    name, docs = overlay
    allowed = {doc["data"].get("OBM_ALLOW_DEV_SECRETS") for doc in of_kind(docs, "ConfigMap") if doc.get("data")} | {
        e.get("value")
        for _, _, container in containers(docs)
        for e in container.get("env", [])
        if e["name"] == "OBM_ALLOW_DEV_SECRETS"
    }
    if name == "dev":  # its passphrase and plain client secrets are development values
        assert config_value(docs, "openbank-common", "OBM_ALLOW_DEV_SECRETS") == "true"
    else:
        assert allowed <= {None, "false"}


def test_the_operator_console_is_reached_only_from_the_operators_network_and_reads_its_operators_from_a_secret(
    overlay,
) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    labels = {"app.kubernetes.io/name": "console", "app.kubernetes.io/part-of": MESH}
    sources, reachable = [], set()
    for policy in of_kind(docs, "NetworkPolicy"):
        if not selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            if WEB_PROCESSES["console"] in {p.get("port") for p in rule.get("ports", [])}:
                sources += rule.get("from", [{"anywhere": True}])
        for rule in policy["spec"].get("egress", []):
            for peer in rule.get("to", []):
                name = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                if name in PROCESSES:
                    reachable.add(name)
    assert sources == [{"namespaceSelector": {"matchLabels": {"openbank.io/operators": "true"}}}]
    assert reachable == {"identity", "account", "payment", "settlement"}
    deployment = named(docs, "Deployment", "console")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["console"]
    assert WEB_PROCESSES["console"] in {p["containerPort"] for p in container["ports"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["operators"]["secret"]["secretName"].startswith("console-operators")
    operators_file = config_value(docs, "console-config", "OBM_CONSOLE_OPERATORS_FILE")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert operators_file.startswith(mounts["operators"] + "/")
    assert config_value(docs, "console-config", "OBM_CONSOLE_SECURE_COOKIES") == "true"
    env = {e["name"]: e for e in container.get("env", [])}
    assert "OBM_SERVICE_CLIENT_SECRET" not in env  # a mounted file, never the environment
    secret = _mounted_secret(
        deployment["spec"]["template"]["spec"], container, env["OBM_SERVICE_CLIENT_SECRET_FILE"]["value"]
    )
    assert secret and secret.startswith("console-service-client")
