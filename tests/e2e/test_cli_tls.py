"""The operator CLI against a mesh whose processes serve TLS and require client certificates
(mTLS, as the production overlay): it connects with the CA and its certificate from the
--tls-* options or from the mesh.json `up` wrote; without them it fails with a readable
message naming TLS, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from meshcli.mesh import LocalMesh
from tests.support.pki import TestCa
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("OBM_CLI_TLS_", "OBM_OPERATOR_CLIENT"))}
ENV = {k: v for k, v in ENV.items() if not (k.startswith("OBM_") and k.endswith("_TARGET"))}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def tls_mesh(tmp_path_factory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("tls")
    ca = TestCa("mesh-ca", folder)
    server = ca.issue("mesh", "127.0.0.1", "localhost")
    cli = ca.issue("operator-cli")
    tls_env = {
        "OBM_TLS_CERT_FILE": str(server.cert_file),
        "OBM_TLS_KEY_FILE": str(server.key_file),
        "OBM_TLS_CLIENT_CA_FILE": str(ca.cert_file),  # every caller shows a certificate (mTLS)
        "OBM_PEER_TLS_CA_FILE": str(ca.cert_file),
        "OBM_PEER_TLS_CERT_FILE": str(server.cert_file),
        "OBM_PEER_TLS_KEY_FILE": str(server.key_file),
    }
    ports = {name: free_port() for name in ("identity", "account", "settlement", "payment", "gateway")}
    mesh = LocalMesh(folder / "data", ports=ports, quiet=True, extra_env=tls_env)
    await mesh.start()
    yield mesh, ca, cli
    await mesh.stop(grace=10)


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command, rest = [a for a in args if a.startswith("--tls")], [a for a in args if not a.startswith("--tls")]
    tls = [part for option in command for part in option.split("=", 1)]
    return subprocess.run(
        [sys.executable, "-m", "meshcli.main", *tls, *rest, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=120,
        check=False,
    )


async def test_the_cli_speaks_mtls_from_mesh_json_or_its_options(tls_mesh) -> None:  # type: ignore[no-untyped-def]
    mesh, ca, cli = tls_mesh
    data_dir = Path(mesh.data_dir)
    recorded = json.loads((data_dir / "mesh.json").read_text())
    assert recorded["tls"]["ca"] == str(ca.cert_file)  # up records how to reach its processes

    listed = _cli(data_dir, "participant", "list", "--json")
    assert listed.returncode == 0, listed.stderr

    # Without mesh.json's TLS: a plaintext CLI is refused, and says why.
    (data_dir / "mesh.json").write_text(json.dumps({"host": "127.0.0.1", "ports": recorded["ports"]}))
    try:
        plaintext = _cli(data_dir, "partner", "list")
        assert plaintext.returncode == 1
        assert "Traceback" not in plaintext.stderr and "TLS" in plaintext.stderr, plaintext.stderr

        options = (f"--tls-ca={ca.cert_file}", f"--tls-cert={cli.cert_file}", f"--tls-key={cli.key_file}")
        with_options = _cli(data_dir, *options, "partner", "list", "--json")
        assert with_options.returncode == 0, with_options.stderr

        # The services require a client certificate: the CA alone is not enough.
        no_certificate = _cli(data_dir, f"--tls-ca={ca.cert_file}", "partner", "list")
        assert no_certificate.returncode == 1 and "Traceback" not in no_certificate.stderr, no_certificate.stderr

        half = _cli(data_dir, f"--tls-ca={ca.cert_file}", f"--tls-cert={cli.cert_file}", "partner", "list")
        assert half.returncode != 0 and "--tls-key" in half.stderr and "Traceback" not in half.stderr
    finally:
        (data_dir / "mesh.json").write_text(json.dumps(recorded))
