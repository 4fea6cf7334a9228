"""The Kubernetes manifests: every overlay renders, validates strictly against a pinned
Kubernetes version, and obeys the mesh's deployment policy.

Each overlay is rendered once (``kubectl kustomize``, or a standalone ``kustomize``) per
module. Without either tool the tests skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import kubernetes_validate

from meshlib.app import DEFAULT_PORTS
from tests.k8s.manifests import (
    EXPECTED_CALLERS,
    K8S,
    KUBERNETES_VERSION,
    MESH,
    PRE_STOP_SECONDS,
    PROCESSES,
    SIMULATORS,
    WEB_PROCESSES,
    Doc,
    config_value,
    containers,
    mesh_deployments,
    mounted_secret,
    of_kind,
    pod_specs,
    render,
    selects,
)

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
    secret = mounted_secret(pod, container, env["OBM_SERVICE_CLIENT_SECRET_FILE"]["value"])
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
