"""Payments to other banks over real processes: the local mesh as `make up` runs it (identity,
account, settlement, the scheme simulator, payment, the gateway), a wallet paying through the
gateway, the simulator answering by a rules file with short delays (scheme_rules_fast.yaml).

One mesh for the module: settled, every rejection the rules produce, a late answer, a lost
acknowledgement, a transfer lost on its way in, slow settlement, a return after settlement, the
payment service killed before and after the scheme's acknowledgement; then the invariants over
everything the module did: every payment final, the ledger nets to zero with nothing held,
positions equal committed obligations, the window reconciles clean, and the scheme holds each
transfer once, settled exactly when the payment settled here.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from meshcli.mesh import LocalMesh
from meshcli.operator import Operator
from meshlib.grpc_errors import decode_rpc_error
from meshlib.iban import make_iban
from openbank.account.v1 import (
    account_admin_pb2,
    account_admin_pb2_grpc,
    account_pb2,
    account_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
)
from openbank.common.v1 import money_pb2
from openbank.payment.v1 import payment_admin_pb2, payment_admin_pb2_grpc, payment_pb2, payment_pb2_grpc
from openbank.settlement.v1 import settlement_admin_pb2, settlement_admin_pb2_grpc
from tests.e2e.payment_harness import running_mesh

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

HERE = Path(__file__).parent
PROCESSES = ("identity", "account", "settlement", "schemesim", "payment", "gateway")
FINAL = {payment_pb2.PAYMENT_STATE_SETTLED, payment_pb2.PAYMENT_STATE_REJECTED, payment_pb2.PAYMENT_STATE_CANCELLED}


def iban(account_number: str) -> str:
    """A German IBAN whose last ten digits pick the simulator's rule."""
    return make_iban("DE", "37040044" + account_number)


class Wallet:
    """Acme paying from alice's account through the gateway, with the operator beside it."""

    def __init__(self, mesh: LocalMesh, operator: Operator, demo: dict[str, Any]) -> None:
        self.mesh = mesh
        self.operator = operator
        self.demo = demo
        self.gateway = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['gateway']}")
        self.payments = payment_pb2_grpc.PaymentServiceStub(self.gateway)
        self.accounts = account_pb2_grpc.AccountServiceStub(self.gateway)
        self.account = demo["customers"]["alice"]["account"]
        self.access: tuple[tuple[str, str], ...] = ()

    async def pay(self, creditor_iban: str, amount: int, request_id: str = "") -> payment_pb2.Payment:
        request_id = request_id or uuid.uuid4().hex
        request = payment_pb2.CreatePaymentRequest(
            request_id=request_id,
            debtor_account=self.account,
            creditor_external=payment_pb2.ExternalCreditor(
                iban=creditor_iban, name="Erika Mustermann", agent_bic="COBADEFFXXX"
            ),
            amount=money_pb2.Money(currency_code="EUR", minor_units=amount),
            type=payment_pb2.PAYMENT_TYPE_EXTERNAL_TRANSFER,
            end_to_end_id="E2E-" + request_id[:8],
        )
        return (await self.payments.CreatePayment(request, metadata=self.access, timeout=15)).payment

    async def pay_when_served(self, creditor_iban: str, amount: int, request_id: str) -> payment_pb2.Payment:
        """As a wallet retries: the gateway answers UNAVAILABLE (with a delay) for a while after
        the payment service came back."""
        deadline = time.monotonic() + 30
        while True:
            try:
                return await self.pay(creditor_iban, amount, request_id)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.5)

    async def get(self, name: str) -> payment_pb2.Payment:
        answer = await self.payments.GetPayment(payment_pb2.GetPaymentRequest(name=name), metadata=self.access)
        return answer.payment

    async def final(self, name: str, timeout: float = 30.0) -> payment_pb2.Payment:
        deadline = time.monotonic() + timeout
        while True:
            payment = await self.get(name)
            if payment.state in FINAL or time.monotonic() > deadline:
                return payment
            await asyncio.sleep(0.2)

    async def available(self) -> int:
        answer = await self.accounts.GetBalance(
            account_pb2.GetBalanceRequest(account=self.account), metadata=self.access, timeout=10
        )
        return answer.balance.available.minor_units

    async def trail(self, name: str) -> list[tuple[str, str]]:
        stub = payment_admin_pb2_grpc.PaymentAdminServiceStub(self.operator.channel("payment"))
        answer = await stub.GetPaymentAuditTrail(
            payment_admin_pb2.GetPaymentAuditTrailRequest(name=name), metadata=await self.operator.metadata()
        )
        return [(entry.step, entry.outcome) for entry in answer.entries]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def wallet(tmp_path_factory):  # type: ignore[no-untyped-def]
    extra_env = {
        "OBM_LOG_FORMAT": "json",
        "OBM_SCHEME_RULES_FILE": str(HERE / "scheme_rules_fast.yaml"),
        "OBM_VELOCITY_RULES_FILE": str(HERE / "velocity_rules_lenient.yaml"),
        "OBM_SCHEME_DEADLINE_SECONDS": "1",
        "OBM_CLEARING_POLL_SECONDS": "0.3",
        "OBM_CLEARING_RETURNS_SECONDS": "0.3",
        "OBM_SAGA_LEASE_SECONDS": "3",
        "OBM_RECOVERY_INTERVAL_SECONDS": "0.5",
    }
    async with running_mesh(tmp_path_factory, "interbank", PROCESSES, extra_env) as running:
        wallet = Wallet(running.mesh, running.operator, running.demo)
        wallet.access = running.access
        yield wallet


async def test_a_payment_to_another_bank_settles_and_debits_the_customer(wallet: Wallet) -> None:
    before = await wallet.available()
    created = await wallet.pay(iban("0532013000"), 1_234)
    assert created.type == payment_pb2.PAYMENT_TYPE_EXTERNAL_TRANSFER
    assert created.creditor_external.iban == iban("0532013000")
    settled = await wallet.final(created.name)
    assert settled.state == payment_pb2.PAYMENT_STATE_SETTLED, settled
    assert await wallet.available() == before - 1_234
    steps = [step for step, outcome in await wallet.trail(created.name) if outcome == "succeeded"]
    assert steps[-4:-2] == ["submit_transfer", "await_clearing"]


async def test_a_bad_iban_or_bic_is_refused_naming_the_field_before_any_money_moves(wallet: Wallet) -> None:
    good = iban("0532013000")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await wallet.pay(good[:-1] + ("1" if good[-1] != "1" else "2"), 100)  # AC01: check digits wrong
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "creditor_external.iban" in {v.field for v in decode_rpc_error(refused.value).violations}


@pytest.mark.parametrize(
    ("account_number", "amount", "reason", "iso"),
    [
        ("0000000404", 500, "CREDITOR_ACCOUNT_CLOSED", "AC04"),
        ("0000000406", 500, "CREDITOR_ACCOUNT_BLOCKED", "AC06"),
        ("0000000444", 500, "CREDITOR_BANK_REJECTED", "AM04"),
        ("0000000503", 500, "CREDITOR_BANK_REJECTED", "MS03"),
        ("0532013000", 95_000, "SCHEME_AMOUNT_NOT_ALLOWED", "AM02"),
    ],
)
async def test_each_rejection_of_the_other_bank_voids_the_hold_with_its_reason(
    wallet: Wallet, account_number: str, amount: int, reason: str, iso: str
) -> None:
    before = await wallet.available()
    payment = await wallet.final((await wallet.pay(iban(account_number), amount)).name)
    assert (payment.state, payment.status_reason) == (payment_pb2.PAYMENT_STATE_REJECTED, reason)
    assert payment.status_reason_message.startswith(iso)
    assert await wallet.available() == before


async def test_late_lost_and_slow_answers_all_end_settled_each_cleared_once(wallet: Wallet) -> None:
    numbers = {"late": "0000000900", "lost_ack": "0000000901", "lost_in": "0000000902", "slow": "0000000910"}
    created = dict(
        zip(numbers, await asyncio.gather(*(wallet.pay(iban(n), 700) for n in numbers.values())), strict=True)
    )
    # None of them is settled when CreatePayment answers: the scheme has not said so yet.
    assert all(p.state != payment_pb2.PAYMENT_STATE_SETTLED for p in created.values())
    finals = {key: await wallet.final(p.name) for key, p in created.items()}
    assert all(p.state == payment_pb2.PAYMENT_STATE_SETTLED for p in finals.values()), finals
    lost_in = await wallet.trail(created["lost_in"].name)
    assert lost_in.count(("submit_transfer", "started")) == 2  # sent again, same message id
    lost_ack = await wallet.trail(created["lost_ack"].name)
    assert lost_ack.count(("submit_transfer", "started")) == 1  # asked, not sent again


async def test_a_return_after_settlement_credits_the_debtor_back_as_a_linked_refund(wallet: Wallet) -> None:
    before = await wallet.available()
    created = await wallet.pay(iban("0000000704"), 2_500)
    assert (await wallet.final(created.name)).state == payment_pb2.PAYMENT_STATE_SETTLED
    deadline = time.monotonic() + 30
    while not (original := await wallet.get(created.name)).refunded_amount.minor_units:
        assert time.monotonic() < deadline, original
        await asyncio.sleep(0.3)
    (refund_name,) = original.refunds
    refund = await wallet.get(refund_name)
    assert (refund.type, refund.state, refund.refund_of, refund.return_reason) == (
        payment_pb2.PAYMENT_TYPE_REFUND,
        payment_pb2.PAYMENT_STATE_SETTLED,
        created.name,
        "AC04",
    )
    assert original.refunded_amount.minor_units == 2_500
    assert await wallet.available() == before
    # The customer's statement shows both: the payment out and the return coming back.
    ledger = ledger_pb2_grpc.LedgerServiceStub(wallet.operator.channel("account"))
    listed = await ledger.ListTransfers(
        ledger_pb2.ListTransfersRequest(account=wallet.account, page_size=500),
        metadata=await wallet.operator.metadata(),
    )
    descriptions = [t.description for t in listed.transfers]
    paid_id, refund_id = created.name.removeprefix("payments/"), refund_name.removeprefix("payments/")
    assert any(d.startswith(f"payment {paid_id} to Erika Mustermann") for d in descriptions), descriptions
    assert f"refund {refund_id} of payment {paid_id} (AC04)" in descriptions


@pytest.mark.parametrize("failpoint", ["after_submit_transfer_started", "after_submit_transfer"])
async def test_the_payment_service_killed_before_or_after_the_acknowledgement_settles_once(
    wallet: Wallet, failpoint: str
) -> None:
    (payment_process,) = [c for c in wallet.mesh.children if c.name == "payment"]
    normal_env = dict(payment_process.launch_env)
    wallet.mesh.kill(payment_process)
    payment_process.launch_env = {**normal_env, "OBM_PAYMENT_FAILPOINT": failpoint}
    await wallet.mesh.restart(payment_process)
    request_id = uuid.uuid4().hex
    assert payment_process.process is not None
    # The process dies mid-saga. The gateway may still hold the restarted process as not
    # answering for a moment (UNAVAILABLE without reaching it): send again, as a wallet would.
    deadline = time.monotonic() + 30
    while payment_process.process.returncode is None and time.monotonic() < deadline:
        with pytest.raises(grpc.aio.AioRpcError):
            await wallet.pay(iban("0000001234"), 900, request_id)
        await asyncio.sleep(0.3)
    assert await asyncio.wait_for(payment_process.process.wait(), 15) == 137
    payment_process.launch_env = normal_env
    await wallet.mesh.restart(payment_process)
    replay = await wallet.pay_when_served(iban("0000001234"), 900, request_id)  # the same payment
    settled = await wallet.final(replay.name)
    assert settled.state == payment_pb2.PAYMENT_STATE_SETTLED, settled


async def test_everything_above_is_final_balanced_reconciled_and_cleared_once(wallet: Wallet) -> None:
    listed = await wallet.payments.ListPayments(payment_pb2.ListPaymentsRequest(page_size=500), metadata=wallet.access)
    payments = [await wallet.final(p.name) for p in listed.payments]
    assert payments and all(p.state in FINAL for p in payments)
    admin = await wallet.operator.metadata()
    totals = await account_admin_pb2_grpc.AccountAdminServiceStub(wallet.operator.channel("account")).GetLedgerTotals(
        account_admin_pb2.GetLedgerTotalsRequest(), metadata=admin
    )
    (eur,) = [t for t in totals.totals if t.currency_code == "EUR"]
    assert eur.balanced and eur.net.minor_units == 0
    assert eur.pending_debits.minor_units == eur.pending_credits.minor_units == 0
    # The window reconciles: every committed obligation has its ledger transfer and the amounts,
    # accounts and directions agree (positions = committed obligations), nothing left reserved.
    settlement = settlement_admin_pb2_grpc.SettlementAdminServiceStub(wallet.operator.channel("settlement"))
    closed = await settlement.CloseSettlementWindow(
        settlement_admin_pb2.CloseSettlementWindowRequest(request_id=uuid.uuid4().hex, currency_code="EUR"),
        metadata=admin,
    )
    report = (
        await settlement.ReconcileSettlementWindow(
            settlement_admin_pb2.ReconcileSettlementWindowRequest(name=closed.closed_window.name), metadata=admin
        )
    ).report
    assert report.clean, report.differences
    # The scheme holds each payment's transfer once, settled exactly when it settled here.
    external = {
        p.name.removeprefix("payments/"): p for p in payments if p.type == payment_pb2.PAYMENT_TYPE_EXTERNAL_TRANSFER
    }
    with sqlite3.connect(wallet.mesh.data_dir / "schemesim.db") as db:
        held = dict(db.execute("SELECT message_id, outcome FROM credit_transfers").fetchall())
    assert set(held) <= set(external)
    for payment_id, payment in external.items():
        cleared = held.get(payment_id) in ("SETTLE", "RETURN")
        assert cleared == (payment.state == payment_pb2.PAYMENT_STATE_SETTLED), (payment_id, held.get(payment_id))
