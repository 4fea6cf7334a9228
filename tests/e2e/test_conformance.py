"""The conformance suite against the local mesh the way `make up` runs it: a healthy
deployment passes every check (exit code 0), with the bank app's internal endpoint or with
only the public endpoints (the gateway and the bank's web pages, a partner's credentials and a
published test customer); a broken one (the "gateway" is really the account service, so
internal rpcs are reachable and public ones missing) fails (exit 1)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from meshcli import conformance, conformance_checks
from meshcli.mesh import LocalMesh
from meshcli.operator import Operator
from meshcli.seed import DEMO_CUSTOMERS, DEMO_PASSWORD, DEMO_REDIRECT_URIS, seed_demo_data
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(tmp_path_factory) -> AsyncIterator[LocalMesh]:  # type: ignore[no-untyped-def]
    data_dir = tmp_path_factory.mktemp("conformance") / "data"
    ports = {
        name: free_port()
        for name in ("identity", "account", "settlement", "schemesim", "payment", "gateway", "bankweb")
    }
    running = LocalMesh(data_dir, ports=ports, quiet=True)
    await running.start()
    operator = Operator(data_dir, ports=ports)
    try:
        await seed_demo_data(operator, say=lambda _: None)
    finally:
        await operator.close()
    yield running
    await running.stop(grace=10)


async def _conformance(*args: str) -> tuple[int, str]:
    """Run the command as a partner would: its own process."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshcli.conformance",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, output.decode()


async def test_a_healthy_deployment_passes_every_check(mesh: LocalMesh) -> None:
    code, output = await _conformance(
        "--gateway",
        f"127.0.0.1:{mesh.ports['gateway']}",
        "--bank-app-endpoint",
        f"127.0.0.1:{mesh.ports['identity']}",
        "--demo-data-dir",
        str(mesh.data_dir),
    )
    assert code == 0, output
    assert "\nFAIL " not in output and " 0 failed" in output
    for check in ("internal rpcs hidden", "TOKEN_INVALID", "PAGE_TOKEN_INVALID", "REQUEST_ID_REUSED", "WatchPayments"):
        assert check in output, check


async def test_with_only_public_endpoints_a_partner_passes_every_check_alone(mesh: LocalMesh) -> None:
    demo = json.loads((mesh.data_dir / "demo-credentials.json").read_text())
    acme = demo["partners"]["acme"]
    username, _, _, totp_secret = DEMO_CUSTOMERS[1]  # bob, as the partner guide publishes him
    code, output = await _conformance(
        "--gateway",
        f"127.0.0.1:{mesh.ports['gateway']}",
        "--bank-web",
        f"http://127.0.0.1:{mesh.ports['bankweb']}",
        "--client-id",
        acme["client_id"],
        "--client-secret",
        acme["client_secret"],
        "--redirect-uri",
        DEMO_REDIRECT_URIS["acme"][0],
        "--customer-username",
        username,
        "--customer-password",
        DEMO_PASSWORD,
        "--customer-totp-secret",
        totp_secret,
    )
    assert code == 0, output
    assert "\nFAIL " not in output and " 0 failed" in output
    for check in (
        "via the bank's pages",
        "a used authorisation link leads nowhere",
        "refusal returns access_denied",
        "approved on the approvals page",
        "rpc answers: AuthorizationService/StartDecoupledAuthorization",
        "rpc answers: AuthorizationService/PushAuthorizationRequest",
    ):
        assert check in output, check


async def test_a_service_exposed_as_the_gateway_is_detected(mesh: LocalMesh) -> None:
    code, output = await _conformance(
        "--gateway",
        f"127.0.0.1:{mesh.ports['account']}",
        "--bank-app-endpoint",
        f"127.0.0.1:{mesh.ports['identity']}",
        "--demo-data-dir",
        str(mesh.data_dir),
        "--partner",
        "zeta",
        "--customer",
        "bob",
        "--timeout",
        "3",
    )
    assert code == 1, output
    rows = {
        line.split("  ", 1)[1].strip().split("  ")[0]: line.split()[0]
        for line in output.splitlines()
        if line.startswith(("PASS", "FAIL"))
    }
    assert rows["internal rpcs hidden (UNIMPLEMENTED at the gateway)"] == "FAIL"
    assert rows["rpc answers: TokenService/IssueToken"] == "FAIL"
    assert rows["reflection describes no internal service or rpc"] == "FAIL"
    assert "internal rpc(s) reachable" in output


async def test_missing_credentials_are_named() -> None:
    code, output = await _conformance("--gateway", "127.0.0.1:1")
    assert code != 0 and "--client-id" in output


async def test_the_command_plugs_into_a_cli_with_help_and_every_option() -> None:
    parser = argparse.ArgumentParser(prog="openbank-mesh")
    conformance.add_parser(parser.add_subparsers(dest="command"))
    argv = (
        "conformance --gateway h:1 --client-id c --client-secret s --customer-username u --customer-password p "
        "--customer-totp-secret T --customer-account accounts/a --bank-app-endpoint h:2 --bank-app-client-id b "
        "--bank-app-client-secret bs --tls-ca ca.pem"
    )
    args = parser.parse_args(argv.split())
    config = conformance.config_from_args(args)
    assert (config.gateway, config.bank_app_endpoint, str(config.tls_ca)) == ("h:1", "h:2", "ca.pem")
    assert "secret='s'" not in repr(config) and "'bs'" not in repr(config)  # secrets stay out of reprs
    help_text = parser._subparsers._group_actions[0].choices["conformance"].format_help()  # type: ignore[union-attr]
    assert "--demo-data-dir" in help_text and "--tls-ca" in help_text


async def test_the_demo_data_dir_of_a_mesh_on_other_ports_gives_its_addresses(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    demo = {
        "partners": {"acme": {"client_id": "c", "client_secret": "s"}},
        "customers": {"alice": {"username": "u", "password": "p", "totp_secret": "T", "account": "accounts/a"}},
    }
    (data_dir / "demo-credentials.json").write_text(json.dumps(demo))
    (data_dir / "internal-clients.json").write_text(json.dumps({"bank-app": "bs"}))
    parser = argparse.ArgumentParser(prog="openbank-mesh")
    conformance.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["conformance", "--demo-data-dir", str(data_dir)])
    assert conformance.config_from_args(args).gateway == "127.0.0.1:50050"  # no mesh.json: the defaults
    (data_dir / "mesh.json").write_text(
        json.dumps({"host": "127.0.0.1", "ports": {"gateway": 61000, "identity": 61001}})
    )
    config = conformance.config_from_args(args)
    assert (config.gateway, config.bank_app_endpoint) == ("127.0.0.1:61000", "127.0.0.1:61001")


async def test_the_rpc_lists_come_from_the_contract() -> None:
    methods = conformance_checks.contract_methods()
    assert methods["/openbank.payment.v1.PaymentService/WatchPayments"] is True
    assert methods["/openbank.identity.v1.TokenService/IssueToken"] is True
    assert methods["/openbank.account.v1.LedgerService/CreateTransfer"] is False
    assert methods["/openbank.identity.v1.PartnerService/RegisterPartner"] is False
    assert methods["/openbank.identity.v1.ConsentService/AuthoriseConsent"] is False
    assert methods["/openbank.identity.v1.AuthorizationService/StartDecoupledAuthorization"] is True
    assert methods["/openbank.identity.v1.AuthorizationService/DecideDecoupledAuthorization"] is False
