"""The operator CLI against a running local mesh, as separate processes: partners, funding,
windows, reports, reconciliation, keys; every command has --help."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys

import grpc
import pytest
import pytest_asyncio

from meshcli.mesh import LocalMesh
from meshcli.operator import Operator
from meshcli.seed import seed_demo_data
from openbank.account.v1 import ledger_pb2, ledger_pb2_grpc
from openbank.common.v1 import money_pb2
from openbank.settlement.v1 import position_pb2, position_pb2_grpc, settlement_admin_pb2, settlement_admin_pb2_grpc
from tests.support.pki import TestCa
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

NAMES = ("identity", "account", "settlement", "payment", "gateway")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def seeded(tmp_path_factory):  # type: ignore[no-untyped-def]
    data_dir = tmp_path_factory.mktemp("cli") / "data"
    ports = {name: free_port() for name in NAMES}
    mesh = LocalMesh(data_dir, ports=ports, quiet=True)
    await mesh.start()
    operator = Operator(data_dir, ports=ports)
    demo = await seed_demo_data(operator, say=lambda _: None)
    await operator.close()
    yield mesh, demo
    await mesh.stop(grace=10)


def cli(mesh: LocalMesh, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name, port in mesh.ports.items():
        env[f"OBM_{name.upper()}_TARGET"] = f"127.0.0.1:{port}"
    return subprocess.run(
        [sys.executable, "-m", "meshcli.main", *args, "--data-dir", str(mesh.data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_partner_lifecycle_from_the_cli(seeded) -> None:  # type: ignore[no-untyped-def]
    mesh, _ = seeded
    registered = cli(mesh, "partner", "register", "Cli Wallet", "--tier", "silver", "--per-payment-limit", "250.50")
    assert registered.returncode == 0, registered.stderr
    name = registered.stdout.split()[1]
    assert name.startswith("partners/") and "client_secret" in registered.stdout
    assert name in cli(mesh, "partner", "list").stdout
    assert cli(mesh, "partner", "suspend", name).returncode == 0
    assert "SUSPENDED" in next(line for line in cli(mesh, "partner", "list").stdout.splitlines() if name in line)
    assert cli(mesh, "partner", "reactivate", name).returncode == 0


async def test_partner_certificate_and_token_binding_from_the_cli(seeded, tmp_path) -> None:  # type: ignore[no-untyped-def]
    mesh, _ = seeded
    ca = TestCa("partners", tmp_path)
    first, second = ca.issue("wallet"), ca.issue("wallet-2027")
    registered = cli(mesh, "partner", "register", "Bound Wallet", "--certificate", str(first.cert_file))
    assert registered.returncode == 0, registered.stderr
    name = registered.stdout.split()[1]
    assert f"{first.sha256} (certificate-bound tokens)" in registered.stdout
    renewed = cli(mesh, "partner", "certificate", name, "--certificate", str(second.cert_file))
    assert renewed.returncode == 0 and f"{second.sha256} (certificate-bound tokens)" in renewed.stdout
    refused = cli(mesh, "partner", "certificate", name, "--remove")  # still bound: refused
    assert refused.returncode == 1 and "FIELD_INVALID" in refused.stderr
    removed = cli(mesh, "partner", "certificate", name, "--remove", "--no-bind-tokens")
    assert removed.returncode == 0 and "no client certificate (bearer tokens)" in removed.stdout, removed.stderr


async def _top_up(mesh: LocalMesh, debtor: str, wallet_account: str, wallet: str, minor: int) -> None:
    """A wallet top-up as the payment saga records it: the ledger transfer into the wallet's
    settlement account, and the bank's obligation to the wallet committed in the open window."""
    operator = Operator(mesh.data_dir, ports=mesh.ports)
    try:
        admin = await operator.metadata()
        payment = f"cli-top-up-{minor}"
        await ledger_pb2_grpc.LedgerServiceStub(operator.channel("account")).CreateTransfer(
            ledger_pb2.CreateTransferRequest(
                request_id=payment,
                debit_account=debtor,
                credit_account=wallet_account,
                amount=money_pb2.Money(currency_code="EUR", minor_units=minor),
                type=ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
                reference=f"payments/{payment}",
            ),
            metadata=admin,
        )
        positions = position_pb2_grpc.PositionServiceStub(operator.channel("settlement"))
        await positions.ReserveObligation(
            position_pb2.ReserveObligationRequest(
                request_id=f"{payment}-reserve",
                payment=f"payments/{payment}",
                payer=await _bank_participant(operator),
                payee=wallet,
                amount=money_pb2.Money(currency_code="EUR", minor_units=minor),
            ),
            metadata=admin,
        )
        await positions.CommitObligation(
            position_pb2.CommitObligationRequest(request_id=f"{payment}-commit", name=f"obligations/{payment}"),
            metadata=admin,
        )
    finally:
        await operator.close()


async def _bank_participant(operator: Operator, account: bool = False) -> str:
    """The bank's participant (or its settlement account)."""
    listed = await settlement_admin_pb2_grpc.SettlementAdminServiceStub(
        operator.channel("settlement")
    ).ListParticipants(settlement_admin_pb2.ListParticipantsRequest(page_size=100), metadata=await operator.metadata())
    bank = next(p for p in listed.participants if p.type == settlement_admin_pb2.PARTICIPANT_TYPE_BANK)
    return bank.settlement_account if account else bank.name


async def _bank_settlement_account(mesh: LocalMesh) -> str:
    operator = Operator(mesh.data_dir, ports=mesh.ports)
    try:
        return await _bank_participant(operator, account=True)
    finally:
        await operator.close()


async def test_funding_windows_reports_reconciliation_and_keys(seeded) -> None:  # type: ignore[no-untyped-def]
    mesh, demo = seeded
    account = demo["customers"]["bob"]["account"]
    funded = cli(mesh, "account", "fund", account, "12.34")
    assert funded.returncode == 0 and "EUR 12.34" in funded.stdout, funded.stderr
    assert cli(mesh, "account", "fund", account, "1.001").returncode != 0  # no sub-cent amounts
    assert cli(mesh, "account", "totals").returncode == 0
    acme = demo["partners"]["acme"]
    await _top_up(mesh, account, acme["settlement_account"], acme["participant"], 4_200)
    closed = cli(mesh, "window", "close", "--currency", "EUR")
    assert closed.returncode == 0, closed.stderr
    window = closed.stdout.split()[1]
    assert cli(mesh, "reconcile", window).returncode == 0
    as_csv = cli(mesh, "window", "report", window, "--format", "csv")
    assert as_csv.returncode == 0 and list(csv.reader(io.StringIO(as_csv.stdout)))
    output = mesh.data_dir / "report.json"
    assert cli(mesh, "window", "report", window, "--format", "json", "--output", str(output)).returncode == 0
    assert json.loads(output.read_text())
    settled = cli(mesh, "window", "settle", window)
    assert settled.returncode == 0, settled.stderr
    # Settling moved the money: the 42.00 owed to Acme left its settlement account for the
    # bank's, in the ledger, and reconciliation proves ledger and report agree after it too.
    bank_account = await _bank_settlement_account(mesh)
    assert f"{acme['settlement_account']} -> {bank_account}  EUR 42.00" in settled.stdout, settled.stdout
    assert "1 ledger transfer(s) referencing" in settled.stdout
    assert cli(mesh, "reconcile", window).returncode == 0
    again = cli(mesh, "window", "settle", window)
    assert again.returncode == 1 and "WINDOW_ALREADY_SETTLED" in again.stderr
    assert "SETTLED" in cli(mesh, "window", "list").stdout
    rotated = cli(mesh, "keys", "rotate")
    assert rotated.returncode == 0 and "signing with it after the publish lead" in rotated.stdout
    assert "RETIRING" in cli(mesh, "keys", "list").stdout
    keys = [json.loads(line) for line in cli(mesh, "keys", "list", "--json").stdout.splitlines()]
    assert "SIGNING_KEY_STATE_RETIRING" in {k["state"] for k in keys} and all(k["kid"] for k in keys)


async def test_the_audit_shows_who_suspended_a_partner_and_every_chain_verifies(seeded) -> None:  # type: ignore[no-untyped-def]
    mesh, _ = seeded
    registered = cli(mesh, "partner", "register", "Audited Wallet")
    name = registered.stdout.split()[1]
    assert cli(mesh, "partner", "suspend", name).returncode == 0
    partner_id = name.removeprefix("partners/")
    listed = cli(mesh, "audit", "list", "--service", "identity", "--partner", partner_id)
    assert listed.returncode == 0, listed.stderr
    suspend = next(line for line in listed.stdout.splitlines() if " partner.suspend " in line)
    assert "by service:operator (operator)" in suspend  # the operator's token, not a request field
    exported = cli(mesh, "audit", "export", "--service", "identity", "--partner", partner_id)
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [line["action"] for line in lines] == ["partner.suspend", "partner.register"]
    assert lines[0]["client_id"] == "operator" and lines[0]["details"]["status"] == "SUSPENDED"
    verified = cli(mesh, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count(": intact,") == 4
    # A decision of the gateway (a call to a method it does not route), in its chained file.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['gateway']}") as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary("/openbank.account.v1.LedgerService/CreateTransfer")(b"")
    await asyncio.sleep(0.5)  # written and fsynced every 0.2 s
    gateway_files = cli(mesh, "audit", "verify", "--dir", str(mesh.data_dir / "audit"))
    assert gateway_files.returncode == 0 and ": intact," in gateway_files.stdout, gateway_files.stdout


def cli_input(mesh: LocalMesh, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``cli`` with ``text`` on standard input."""
    env = dict(os.environ)
    for name, port in mesh.ports.items():
        env[f"OBM_{name.upper()}_TARGET"] = f"127.0.0.1:{port}"
    return subprocess.run(
        [sys.executable, "-m", "meshcli.main", *args, "--data-dir", str(mesh.data_dir)],
        input=text,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_customers_and_their_accounts_from_the_cli(seeded) -> None:  # type: ignore[no-untyped-def]
    mesh, _ = seeded
    created = cli_input(
        mesh,
        "cli-customer-password-1\n",
        "customer",
        "create",
        "carla.cli",
        "--display-name",
        "Carla",
        "--password-stdin",
    )
    assert created.returncode == 0, created.stderr
    customer = created.stdout.split()[1]
    assert customer.startswith("customers/") and "totp_secret" in created.stdout
    listed = [
        json.loads(line) for line in cli(mesh, "customer", "list", "--prefix", "carla", "--json").stdout.splitlines()
    ]
    assert [(c["name"], c["username"], c["status"]) for c in listed] == [
        (customer, "carla.cli", "CUSTOMER_STATUS_ACTIVE")
    ]
    assert cli(mesh, "customer", "list").stdout.splitlines()[0].split()[:2] == ["CUSTOMER", "USERNAME"]

    opened = cli(mesh, "account", "open", "--customer", "carla.cli", "--display-name", "Carla current")
    assert opened.returncode == 0, opened.stderr
    account = opened.stdout.split()[1]
    assert cli(mesh, "account", "open", "--customer", customer, "--type", "savings").returncode == 0
    assert cli(mesh, "account", "fund", account, "42.50").returncode == 0
    rows = [
        json.loads(line)
        for line in cli(mesh, "account", "list", "--customer", "carla.cli", "--json").stdout.splitlines()
    ]
    assert len(rows) == 2 and {r["account"]["customer"] for r in rows} == {customer}  # only hers
    funded = next(r for r in rows if r["account"]["name"] == account)
    assert funded["balance"]["current"] == {"currency_code": "EUR", "minor_units": "4250"}
    shown = cli(mesh, "account", "show", account)
    assert shown.returncode == 0 and "42.50" in shown.stdout and "CURRENT" in shown.stdout.splitlines()[0]
    card = cli(mesh, "customer", "show", "carla.cli")
    assert card.returncode == 0 and customer in card.stdout and account in card.stdout

    # Refusals read as such: exit 1, the reason, no traceback.
    for refused in (
        cli_input(mesh, "short\n", "customer", "create", "dora.cli", "--display-name", "Dora", "--password-stdin"),
        cli(mesh, "customer", "show", "nobody.here"),
        cli(mesh, "account", "show", "accounts/unknown"),
        cli(mesh, "account", "list", "--customer", "customers/not a name"),
    ):
        assert refused.returncode == 1 and refused.stderr.startswith("failed:"), refused.stderr
        assert "Traceback" not in refused.stderr
    assert (
        "FIELD_INVALID"
        in cli_input(
            mesh, "short\n", "customer", "create", "dora.cli", "--display-name", "Dora", "--password-stdin"
        ).stderr
    )
