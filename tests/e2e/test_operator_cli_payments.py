"""``openbank-mesh payment`` against a running local mesh, as a separate process: the bank's
operator refunds a transfer (which no partner may refund), and reads a payment's saga trail;
bad input is refused with a message, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import openbank_sdk as ob
import pytest
import pytest_asyncio

from meshcli.mesh import LocalMesh
from meshcli.operator import Operator
from meshcli.seed import seed_demo_data
from openbank.payment.v1 import payment_pb2
from tests.sdk.test_sdk_against_gateway import Mesh
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(tmp_path_factory) -> AsyncIterator[Mesh]:  # type: ignore[no-untyped-def]
    ports = {name: free_port() for name in ("identity", "account", "settlement", "payment", "gateway")}
    running = LocalMesh(tmp_path_factory.mktemp("cli-payments") / "data", ports=ports, quiet=True)
    await running.start()
    operator = Operator(running.data_dir, ports=ports)
    try:
        demo = await seed_demo_data(operator, say=lambda _: None)
    finally:
        await operator.close()
    yield Mesh(running, demo)
    await running.stop(grace=10)


def cli(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name, port in mesh.mesh.ports.items():
        env[f"OBM_{name.upper()}_TARGET"] = f"127.0.0.1:{port}"
    return subprocess.run(
        [sys.executable, "-m", "meshcli.main", *args, "--data-dir", str(mesh.mesh.data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


async def test_the_operator_refunds_a_transfer_in_parts_and_reads_its_trail(mesh: Mesh) -> None:
    async with mesh.client("acme") as acme:
        alice = await mesh.authorised_session(acme, "alice", per_payment_limit=ob.money(50_000, "EUR"))
        alice_account = mesh.demo["customers"]["alice"]["account"]
        bob_account = mesh.demo["customers"]["bob"]["account"]
        transfer = await alice.create_payment(alice_account, ob.money(1_000, "EUR"), creditor_account=bob_account)
        assert transfer.state == payment_pb2.PAYMENT_STATE_SETTLED
        # The partner may not take the money back out of bob's account ...
        with pytest.raises(ob.FailedPrecondition) as refused:
            await acme.refund_payment(transfer.name)
        assert refused.value.reason == "PAYMENT_NOT_REFUNDABLE"
        # ... the bank may.
        part = cli(mesh, "payment", "refund", transfer.name, "--amount", "2.50", "--reason", "UPAY")
        assert part.returncode == 0, part.stderr
        assert "EUR 2.50 SETTLED (UPAY)" in part.stdout and f"of {transfer.name}" in part.stdout
        assert f"{bob_account} -> {alice_account}" in part.stdout
        rest = cli(mesh, "payment", "refund", transfer.name.removeprefix("payments/"), "--reason", "UPAY")
        assert rest.returncode == 0 and "EUR 7.50 SETTLED" in rest.stdout, rest.stderr
        shown = await alice.get_payment(transfer.name)
        assert len(shown.refunds) == 2 and shown.refunded_amount.minor_units == 1_000
        exhausted = cli(mesh, "payment", "refund", transfer.name, "--amount", "0.01", "--reason", "UPAY")
        assert exhausted.returncode == 1
        assert "REFUND_AMOUNT_EXCEEDED" in exhausted.stderr and "refundable_minor: 0" in exhausted.stderr
        trail = cli(mesh, "payment", "trail", transfer.name)
        assert trail.returncode == 0 and "post_funds" in trail.stdout and "succeeded" in trail.stdout
        # The operator looks the payment up: its refunds, by id and by end-to-end id.
        shown = cli(mesh, "payment", "show", transfer.name.removeprefix("payments/"))
        assert shown.returncode == 0 and "SETTLED (ACSC)" in shown.stdout, shown.stderr
        assert "refunded        EUR 10.00" in shown.stdout and part.stdout.split()[1] in shown.stdout
        by_e2e = await alice.create_payment(
            alice_account, ob.money(100, "EUR"), creditor_account=bob_account, end_to_end_id="invoice-77"
        )
        found = cli(mesh, "payment", "show", "invoice-77")
        assert found.returncode == 0 and by_e2e.name in found.stdout, found.stderr
        listed = cli(mesh, "payment", "list", "--state", "SETTLED", "--json")
        names = [json.loads(line)["name"] for line in listed.stdout.splitlines()]
        assert transfer.name in names and by_e2e.name in names


async def test_bad_input_is_refused_with_a_message(mesh: Mesh) -> None:
    for args, expected in (
        (("payment", "refund", "payments/x", "--amount", "1.001", "--reason", "CUST"), "more than 2 decimals"),
        (("payment", "refund", "payments/x", "--amount", "ten", "--reason", "CUST"), "not an amount"),
        (("payment", "refund", "payments/x", "--reason", "WHIM"), "invalid choice"),
        (("payment", "refund", "accounts/a/b", "--reason", "CUST"), "not a payment"),
        (("payment", "refund", "payments/not-there", "--reason", "CUST"), "RESOURCE_NOT_FOUND"),
    ):
        answer = cli(mesh, *args)
        assert answer.returncode != 0 and "Traceback" not in answer.stderr, answer.stderr
        assert expected in answer.stderr, (args, answer.stderr)
