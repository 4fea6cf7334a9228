"""No insecure defaults outside the local mesh: identity refuses to start with the
development passphrase (the default, or any that ships in this repository), a short one,
or plain internal-client secrets, unless it is told it runs a development mesh
(OBM_ALLOW_DEV_SECRETS, which meshcli's local mesh sets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshcli.mesh import mesh_environment
from meshlib.app import start_service
from openbank.identity.v1 import token_pb2, token_pb2_grpc
from services.identity.bootstrap import SPEC
from services.identity.domain.secrets import SecretHasher
from services.identity.internal_clients import InternalClientsError
from services.identity.settings import IdentitySettings, InsecureSettings

REAL_PASSPHRASE = "a-deployment-secret-mounted-from-a-vault"
OPS_SECRET = "ops-admin-secret-from-the-vault-0123456789"


def _settings(database_url: str, **values: Any) -> IdentitySettings:
    base: dict[str, Any] = {
        "port": 0,
        "database_url": database_url,
        "service_name": "identity",
        "verify_consent_accounts": False,
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "argon2_parallelism": 1,
    }
    return IdentitySettings(**(base | values))


async def _refused(settings: IdentitySettings) -> str:
    with pytest.raises((InsecureSettings, InternalClientsError)) as raised:
        server = await start_service(SPEC, settings)
        await server.stop(0)
    return str(raised.value)


async def test_development_passphrases_are_refused(sqlite_url: str, tmp_path: Path) -> None:
    assert "development signing-key passphrase" in await _refused(_settings(sqlite_url))
    dev_overlay = tmp_path / "passphrase"
    dev_overlay.write_text("openbank-dev-only-passphrase\n")
    assert "development" in await _refused(_settings(sqlite_url, signing_key_passphrase_file=dev_overlay))
    assert "at least 16 bytes" in await _refused(_settings(sqlite_url, signing_key_passphrase="short"))


async def test_plain_internal_client_secrets_are_refused(sqlite_url: str) -> None:
    plain = json.dumps([{"client_id": "ops-admin", "secret": OPS_SECRET, "scopes": ["identity:admin"]}])
    message = await _refused(_settings(sqlite_url, signing_key_passphrase=REAL_PASSPHRASE, internal_clients=plain))
    assert "plain secret is for a local mesh only" in message


async def test_a_configured_deployment_starts_and_its_hashed_clients_work(sqlite_url: str) -> None:
    hashed = SecretHasher(time_cost=1, memory_cost_kib=1024, parallelism=1).hash(OPS_SECRET)
    clients = json.dumps([{"client_id": "ops-admin", "secret_hash": hashed, "scopes": ["identity:admin"]}])
    server = await start_service(
        SPEC, _settings(sqlite_url, signing_key_passphrase=REAL_PASSPHRASE, internal_clients=clients)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = token_pb2_grpc.TokenServiceStub(channel)
            request = token_pb2.IssueTokenRequest(
                grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                client_id="ops-admin",
                client_secret=OPS_SECRET,
                scopes=["identity:admin"],
            )
            for _ in range(2):  # the Argon2id check once, the keyed hash afterwards
                assert (await stub.IssueToken(request, timeout=10)).access_token
    finally:
        await server.stop(0)


async def test_the_local_mesh_opts_in(sqlite_url: str) -> None:
    environment = mesh_environment(
        Path("/tmp/unused"),
        "127.0.0.1",
        {n: 0 for n in ("identity", "account", "payment", "settlement", "gateway")},
        base={},
    )
    assert environment["OBM_ALLOW_DEV_SECRETS"] == "true"
    server = await start_service(SPEC, _settings(sqlite_url, allow_dev_secrets=True))
    await server.stop(0)


def test_the_identity_process_exits_with_the_reason(sqlite_url: str) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OBM_")}
    environment |= {"OBM_DATABASE_URL": sqlite_url, "OBM_PORT": "0", "OBM_LOG_FORMAT": "json"}
    finished = subprocess.run(
        [sys.executable, "-m", "services.identity"], env=environment, capture_output=True, text=True, timeout=60
    )
    assert finished.returncode != 0
    assert "development signing-key passphrase" in finished.stdout + finished.stderr
