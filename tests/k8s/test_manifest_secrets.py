"""The Kubernetes manifests' secrets and production settings: who mounts which Secret, clients
and scopes, datastores from Secrets, replicas, mTLS and traces, the audit volume, the console.

The overlays are rendered once per module (tests/k8s/conftest.py).
"""

from __future__ import annotations

import yaml

from meshcli.mesh import INTERNAL_CLIENT_SCOPES
from meshlib.app import DEFAULT_PORTS
from tests.k8s.manifests import (
    K8S,
    MESH,
    MESH_CLIENTS,
    PROCESSES,
    WEB_PROCESSES,
    config_value,
    containers,
    mesh_deployments,
    mounted_key,
    mounted_secret,
    named,
    of_kind,
    secret_names,
    selects,
)

# --- Secrets ------------------------------------------------------------------------------


def test_only_identity_mounts_the_signing_key_and_internal_clients(overlay) -> None:  # type: ignore[no-untyped-def]
    _, docs = overlay
    for workload, pod, container in containers(docs):
        secrets = secret_names(pod, container)
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
            secret = mounted_secret(pod, container, path)
            # dev's generated Secrets carry a content hash suffix.
            assert secret and secret.startswith(f"{process}-service-client"), (process, variable)
            assert mounted_key(pod, container, path) == key, (process, variable)
    if name == "dev":
        clients = yaml.safe_load((K8S / "overlays" / "dev" / "internal-clients.yaml").read_text())["clients"]
        granted = {client["client_id"]: set(client["scopes"]) for client in clients}
        for process in (*MESH_CLIENTS, *WEB_PROCESSES):
            assert set(INTERNAL_CLIENT_SCOPES[process]) <= granted.get(process, set()), process


def test_only_payment_mounts_the_step_up_secret_and_reads_it_from_the_file(overlay) -> None:  # type: ignore[no-untyped-def]
    """The customers' device keys derive from it: one process holds it, never in its environment."""
    _, docs = overlay
    for workload, pod, container in containers(docs):
        holds = {s for s in secret_names(pod, container) if s.startswith("payment-step-up")}
        env = {e["name"]: e for e in container.get("env", [])}
        if workload["metadata"]["name"] != "payment":
            assert not holds and "OBM_STEP_UP_SECRET_FILE" not in env, workload["metadata"]["name"]
            continue
        assert "OBM_STEP_UP_SECRET" not in env
        path = env["OBM_STEP_UP_SECRET_FILE"]["value"]
        secret = mounted_secret(pod, container, path)
        assert secret and secret.startswith("payment-step-up")  # dev's generated Secret has a hash suffix
        assert mounted_key(pod, container, path) == "secret"


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
        for secret in secret_names(pod, container):
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
            assert mounted_secret(pod, container, path) == "openbank-datastores", (name, variable)
            assert mounted_key(pod, container, path) == key, (name, variable)
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
            assert mounted_secret(pod, container, env["OBM_TLS_CLIENT_CA_FILE"]) == "gateway-partner-client-ca"
        else:
            assert mounted_secret(pod, container, env["OBM_TLS_CLIENT_CA_FILE"]) == f"{name}-tls"
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
    secret = mounted_secret(
        deployment["spec"]["template"]["spec"], container, env["OBM_SERVICE_CLIENT_SECRET_FILE"]["value"]
    )
    assert secret and secret.startswith("console-service-client")
