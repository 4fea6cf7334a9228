"""Production you can upgrade: migration Jobs run the release's image before its rollout
(the Deployments only check the schema), Services say TLS where the ports speak it,
datastore egress reaches only the destinations an overlay names, the mesh's datastore URLs
and client secrets are mounted files, the collector exports to a trace backend. Rendered
and validated strictly offline, like tests/k8s/test_manifests.py."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.identity.settings import IdentitySettings
from tests.k8s.manifests import (
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    Doc,
    config_value,
    containers,
    mesh_deployments,
    mounted_key,
    mounted_secret,
    named,
    of_kind,
    render,
    secret_names,
    selects,
)

DATABASE_SERVICES = ("identity", "account", "payment", "settlement")
NAMESPACES = {"dev": "openbank-dev", "prod": "openbank"}
DATASTORE_PORTS = {5432, 6432, 6379, 6380}


@pytest.fixture(scope="module", params=OVERLAYS)
def release(request: pytest.FixtureRequest) -> tuple[str, list[Doc], list[Doc]]:
    """(overlay name, its objects, its migration Jobs' objects), rendered once per module."""
    name = request.param
    return name, render(K8S / "overlays" / name), render(K8S / "overlays" / name / "migrations")


def _image(docs: list[Doc]) -> set[str]:
    return {
        container["image"]
        for doc in of_kind(docs, "Deployment", "Job")
        if doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/part-of") == "openbank-mesh"
        for container in doc["spec"]["template"]["spec"]["containers"]
    }


def test_migration_jobs_validate_and_run_the_releases_image_first(release) -> None:  # type: ignore[no-untyped-def]
    name, docs, jobs = release
    for doc in jobs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == NAMESPACES[name]
    assert {doc["kind"] for doc in jobs} == {"Job"}
    by_service = {job["spec"]["template"]["spec"]["containers"][0]["args"][0]: job for job in jobs}
    # And the console's audit trail (a database its replicas share).
    assert set(by_service) == {*DATABASE_SERVICES, "console"}
    assert _image(jobs) == _image(docs) and len(_image(docs)) == 1, "the Jobs migrate with the release's image"
    services = of_kind(docs, "Service")
    for service, job in by_service.items():
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["openbank-mesh", "migrate"]
        assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 1
        assert pod["automountServiceAccountToken"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        env = {e["name"]: e for e in container["env"]}
        assert "OBM_DATABASE_URL" not in env
        path = env["OBM_DATABASE_URL_FILE"]["value"]
        (volume,) = [v for v in pod["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"].startswith("openbank-datastores")
        assert volume["secret"]["items"] == [{"key": f"{service}-database-url", "path": path.rsplit("/", 1)[1]}]
        # No Service sends calls to a migration pod.
        labels = job["spec"]["template"]["metadata"]["labels"]
        for service in services:
            selector = service["spec"].get("selector")
            assert not (selector and selects({"matchLabels": selector}, labels)), service["metadata"]["name"]
    # The Deployments only check the schema: they refuse to start on an older one.
    assert config_value(docs, "openbank-common", "OBM_RUN_MIGRATIONS") == "false"


def test_the_mesh_services_say_tls_in_prod_and_h2c_without_it(release) -> None:  # type: ignore[no-untyped-def]
    name, docs, _ = release
    for process in ("gateway", *DATABASE_SERVICES):
        (port,) = [p for p in named(docs, "Service", process)["spec"]["ports"] if p["name"] == "grpc"]
        assert port["appProtocol"] == {"prod": "https", "dev": "kubernetes.io/h2c"}[name], process
    if name == "prod":  # the gateway serves TLS to partners there (its public certificate)
        (gateway,) = mesh_deployments(docs)["gateway"]["spec"]["template"]["spec"]["containers"]
        assert {e["name"]: e.get("value") for e in gateway["env"]}.get("OBM_TLS_CERT_FILE")


def _egress_rules(docs: list[Doc], labels: dict[str, str]) -> list[Doc]:
    return [
        rule
        for policy in of_kind(docs, "NetworkPolicy")
        if selects(policy["spec"]["podSelector"], labels)
        for rule in policy["spec"].get("egress", [])
    ]


def test_datastore_egress_reaches_only_what_the_overlay_names(release) -> None:  # type: ignore[no-untyped-def]
    name, docs, jobs = release
    policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    postgres, redis = policies["allow-postgres-egress"], policies["allow-redis-egress"]
    mesh = {"app.kubernetes.io/part-of": "openbank-mesh"}
    for process in ("gateway", "bankweb", "console", *DATABASE_SERVICES):
        labels = {**mesh, "app.kubernetes.io/name": process}
        # The console keeps its audit trail in a database of its own.
        with_database = process in DATABASE_SERVICES or process == "console"
        assert selects(postgres["spec"]["podSelector"], labels) == with_database, process
        assert selects(redis["spec"]["podSelector"], labels), process
    for job in jobs:  # the migration Jobs reach their database
        assert selects(postgres["spec"]["podSelector"], job["spec"]["template"]["metadata"]["labels"])
    for policy in (postgres, redis):
        for rule in policy["spec"]["egress"]:
            assert rule.get("to"), f"{policy['metadata']['name']}: a rule to anywhere"
            for peer in rule["to"]:
                if name == "prod":  # external managed datastores: their subnets, never the world
                    cidr = peer["ipBlock"]["cidr"]
                    assert int(cidr.rsplit("/", 1)[1]) >= 16, cidr
                else:  # dev: the in-cluster datastore pods
                    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] in {"postgres", "redis"}
    # No other policy opens a datastore port to mesh pods, with or without a destination.
    for process in ("gateway", *DATABASE_SERVICES):
        labels = {**mesh, "app.kubernetes.io/name": process}
        for rule in _egress_rules(docs, labels):
            ports = {p.get("port") for p in rule.get("ports", [])}
            if ports & DATASTORE_PORTS:
                assert rule in postgres["spec"]["egress"] + redis["spec"]["egress"], (process, rule)
            assert rule.get("to"), (process, rule)  # nothing from the mesh to anywhere


def test_mesh_datastore_urls_and_client_secrets_are_never_environment_values(release) -> None:  # type: ignore[no-untyped-def]
    _, docs, jobs = release
    secret_like = ("DATABASE_URL", "REDIS_URL", "CLIENT_SECRET", "PASSPHRASE")
    workloads = {**mesh_deployments(docs), **{j["metadata"]["name"]: j for j in jobs}}
    workloads["bankweb"] = named(docs, "Deployment", "bankweb")
    for name, deployment in workloads.items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if env["name"].endswith(secret_like):
                    pytest.fail(f"{name}: {env['name']} is an environment value; mount it (<VARIABLE>_FILE)")


def _collector_config(docs: list[Doc]) -> dict[str, Any]:
    (config,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("otel-collector-config")]
    return yaml.safe_load(config["data"]["config.yaml"])


def test_the_collector_exports_traces_to_a_configured_backend(release) -> None:  # type: ignore[no-untyped-def]
    name, docs, _ = release
    if name != "prod":
        return  # dev has no collector
    config = _collector_config(docs)
    (exporter,) = config["service"]["pipelines"]["traces"]["exporters"]
    assert exporter.startswith("otlp") and "debug" not in config["exporters"]
    settings = config["exporters"][exporter]
    assert settings["endpoint"] == "${env:OTEL_BACKEND_ENDPOINT}"
    assert settings["tls"]["insecure"] == "${env:OTEL_BACKEND_INSECURE}"
    assert settings["sending_queue"]["enabled"] and settings["retry_on_failure"]["enabled"]
    collector = named(docs, "Deployment", "otel-collector")["spec"]["template"]["spec"]["containers"][0]
    (source,) = [s["configMapRef"]["name"] for s in collector["envFrom"]]
    backend = next(c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == source)["data"]
    assert backend["OTEL_BACKEND_ENDPOINT"].endswith(":443") and backend["OTEL_BACKEND_INSECURE"] == "false"


def test_prod_identity_mails_customers_through_the_relay_and_only_it_holds_the_login(release) -> None:  # type: ignore[no-untyped-def]
    """Without a sender a new customer never gets the activation code: prod wires the relay,
    identity's settings accept it (STARTTLS, a sender address), the password is a mounted file
    of a Secret only identity mounts, and only identity may reach the relay, on its subnet."""
    name, docs, _ = release
    for workload, pod, container in containers(docs):
        holds = {s for s in secret_names(pod, container) if s.startswith("identity-customer-mail")}
        if workload["metadata"]["name"] != "identity":
            assert not holds, workload["metadata"]["name"]
    if name != "prod":
        return  # dev has no relay: identity logs each code it could not deliver
    pod = named(docs, "Deployment", "identity")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    maps = {m["configMapRef"]["name"] for m in container["envFrom"]}
    assert any(m.startswith("openbank-common") for m in maps) and any(m.startswith("identity-config") for m in maps)
    (mail_map,) = [m for m in maps if m.startswith("identity-customer-mail")]
    environment = {k: v for k, v in named(docs, "ConfigMap", mail_map)["data"].items()}
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    password = env["OBM_CUSTOMER_NOTIFICATIONS_SMTP_PASSWORD_FILE"]
    assert (mounted_secret(pod, container, password), mounted_key(pod, container, password)) == (
        "identity-customer-mail",
        "password",
    )
    prefix = "OBM_"
    settings = IdentitySettings(**{k[len(prefix) :].lower(): v for k, v in environment.items()})
    relay = settings.mail_relay()  # what identity checks at start
    assert relay is not None and relay.security == "starttls" and relay.sender and relay.username
    (policy,) = [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "allow-customer-mail-egress"]
    mesh = {"app.kubernetes.io/part-of": "openbank-mesh"}
    for process in ("gateway", "account", "payment", "settlement", "bankweb", "console", "identity"):
        labels = {**mesh, "app.kubernetes.io/name": process}
        assert selects(policy["spec"]["podSelector"], labels) == (process == "identity"), process
    for rule in policy["spec"]["egress"]:
        for peer in rule["to"]:
            assert int(peer["ipBlock"]["cidr"].rsplit("/", 1)[1]) >= 16
        assert {p["port"] for p in rule["ports"]} <= {587, 465}
