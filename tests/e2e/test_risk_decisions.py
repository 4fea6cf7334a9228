"""Risk decisions over real processes: the local mesh (identity, account, settlement, payment,
the gateway), a wallet paying through the gateway under rules that decide by the amount to a
new creditor (risk_rules_e2e.yaml), the customer confirming in the bank's app rpc, operators
reviewing with their rpcs.

One mesh for the module: stepped up and confirmed (a wrong code and a code for another amount
refused first), stepped up and never confirmed (cancelled, nothing moved), held and approved,
held and refused, held and never reviewed (refused at its expiry, nothing moved), refused
outright; failed sign-ins of the customer (identity's signal) and the partner's risk tier in its
registration each stepping up a payment that would have gone through; the payment service
SIGKILLed while payments wait (they still wait, and go on when confirmed or approved); then the
ledger nets to zero with nothing held.
"""

from __future__ import annotations

import asyncio
import datetime as dt
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
from meshlib.money import Amount
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, account_pb2, account_pb2_grpc
from openbank.common.v1 import money_pb2
from openbank.identity.v1 import customer_pb2, customer_pb2_grpc, partner_pb2, partner_pb2_grpc
from openbank.payment.v1 import payment_pb2, payment_pb2_grpc, risk_pb2, risk_pb2_grpc
from services.payment.domain import step_up
from services.payment.domain.payments import Payment, PaymentState
from tests.e2e.payment_harness import running_mesh
from tests.support.cli import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

HERE = Path(__file__).parent
PROCESSES = ("identity", "account", "settlement", "payment", "gateway")
SECRET = "e2e-step-up-secret"
# Long enough for a restart of the payment service on a busy machine; the abandoned payment's
# wait runs while the other tests do.
STEP_UP_WAIT_SECONDS = 30
# Long enough for the approvals above (and the restart) to come first.
REVIEW_WAIT_SECONDS = 60
FINAL = {payment_pb2.PAYMENT_STATE_SETTLED, payment_pb2.PAYMENT_STATE_REJECTED, payment_pb2.PAYMENT_STATE_CANCELLED}
PSU = payment_pb2.PsuContext(ip_address="198.51.100.7", device_id="phone-1", user_agent="wallet/1.0")


def code_for(payment: payment_pb2.Payment, customer: str, amount: int | None = None) -> str:
    """What the customer's device shows for this payment (the test plays the device)."""
    as_stored = Payment(
        payment_id=payment.name.removeprefix("payments/"),
        partner_id="",
        consent_id="",
        debtor_account_id="",
        creditor_account_id=payment.creditor_account.removeprefix("accounts/"),
        creditor_wallet_partner_id=None,
        amount=Amount(payment.amount.currency_code, amount or payment.amount.minor_units),
        payment_type="TRANSFER",
        state=PaymentState.AWAITING_AUTHORISATION,
        created_at=dt.datetime.now(dt.UTC),
        updated_at=dt.datetime.now(dt.UTC),
        customer_id=customer.removeprefix("customers/"),
    )
    return step_up.code_for(SECRET.encode(), as_stored)


class Wallet:
    """Acme paying from alice's account through the gateway; the bank's app and operators beside it."""

    def __init__(self, mesh: LocalMesh, operator: Operator, demo: dict[str, Any]) -> None:
        self.mesh = mesh
        self.operator = operator
        self.demo = demo
        self.gateway = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['gateway']}")
        self.payments = payment_pb2_grpc.PaymentServiceStub(self.gateway)
        self.accounts = account_pb2_grpc.AccountServiceStub(self.gateway)
        self.customer = demo["customers"]["alice"]["customer"]
        self.account = demo["customers"]["alice"]["account"]
        self.access: tuple[tuple[str, str], ...] = ()
        self.abandoned: payment_pb2.Payment | None = None  # stepped up, never confirmed
        self.unreviewed: payment_pb2.Payment | None = None  # held, never reviewed
        self.opening_balance = 0

    async def new_creditor(self) -> str:
        """A fresh account of bob's: alice has never paid it."""
        accounts = account_admin_pb2_grpc.AccountAdminServiceStub(self.operator.channel("account"))
        answer = await accounts.OpenAccount(
            account_admin_pb2.OpenAccountRequest(
                request_id=uuid.uuid4().hex,
                customer=self.demo["customers"]["bob"]["customer"],
                currency_code="EUR",
                type=account_pb2.ACCOUNT_TYPE_CURRENT,
                display_name="Bob savings",
            ),
            metadata=await self.operator.metadata(),
        )
        return answer.account.name

    async def pay(self, creditor: str, amount: int, request_id: str = "") -> payment_pb2.Payment:
        request = payment_pb2.CreatePaymentRequest(
            request_id=request_id or uuid.uuid4().hex,
            debtor_account=self.account,
            creditor_account=creditor,
            amount=money_pb2.Money(currency_code="EUR", minor_units=amount),
            type=payment_pb2.PAYMENT_TYPE_TRANSFER,
            psu_context=PSU,
        )
        return (await self.payments.CreatePayment(request, metadata=self.access, timeout=15)).payment

    async def get(self, name: str) -> payment_pb2.Payment:
        return (await self.payments.GetPayment(payment_pb2.GetPaymentRequest(name=name), metadata=self.access)).payment

    async def until(self, name: str, states: set[int], timeout: float = 30.0) -> payment_pb2.Payment:
        deadline = time.monotonic() + timeout
        while (payment := await self.get(name)).state not in states:
            assert time.monotonic() < deadline, payment
            await asyncio.sleep(0.2)
        return payment

    async def available(self) -> int:
        answer = await self.accounts.GetBalance(
            account_pb2.GetBalanceRequest(account=self.account), metadata=self.access, timeout=10
        )
        return answer.balance.available.minor_units

    async def confirm(self, name: str, code: str) -> payment_pb2.Payment:
        stub = risk_pb2_grpc.PaymentAuthorisationServiceStub(self.operator.channel("payment"))
        request = risk_pb2.ConfirmPaymentRequest(
            request_id=uuid.uuid4().hex, name=name, customer=self.customer, authentication_code=code
        )
        return (await stub.ConfirmPayment(request, metadata=await self.operator.bank_app_metadata())).payment

    def review(self) -> risk_pb2_grpc.RiskAdminServiceStub:
        return risk_pb2_grpc.RiskAdminServiceStub(self.operator.channel("payment"))


def _reason(error: grpc.aio.AioRpcError) -> str:
    return decode_rpc_error(error).reason


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def wallet(tmp_path_factory):  # type: ignore[no-untyped-def]
    extra_env = {
        "OBM_RISK_RULES_FILE": str(HERE / "risk_rules_e2e.yaml"),
        "OBM_STEP_UP_SECRET": SECRET,
        "OBM_STEP_UP_WAIT_SECONDS": str(STEP_UP_WAIT_SECONDS),
        "OBM_REVIEW_WAIT_SECONDS": str(REVIEW_WAIT_SECONDS),
        "OBM_IDENTITY_SIGNALS_CACHE_SECONDS": "1",
        "OBM_DIRECTORY_CACHE_SECONDS": "1",
        "OBM_RISK_EXPIRY_INTERVAL_SECONDS": "0.3",
        "OBM_SAGA_LEASE_SECONDS": "3",
        "OBM_RECOVERY_INTERVAL_SECONDS": "0.5",
    }
    async with running_mesh(tmp_path_factory, "risk", PROCESSES, extra_env) as running:
        wallet = Wallet(running.mesh, running.operator, running.demo)
        wallet.access = running.access
        yield wallet


async def test_a_small_payment_goes_through_and_a_risky_one_is_stepped_up_and_confirmed(wallet: Wallet) -> None:
    wallet.opening_balance = await wallet.available()
    wallet.abandoned = await wallet.pay(await wallet.new_creditor(), 20_000)  # ends in a later test
    assert wallet.abandoned.state == payment_pb2.PAYMENT_STATE_AWAITING_AUTHORISATION
    wallet.unreviewed = await wallet.pay(await wallet.new_creditor(), 60_000)  # ends in a later test
    assert wallet.unreviewed.state == payment_pb2.PAYMENT_STATE_PENDING_REVIEW
    assert (await wallet.pay(await wallet.new_creditor(), 5_000)).state == payment_pb2.PAYMENT_STATE_SETTLED
    before = await wallet.available()
    waiting = await wallet.pay(await wallet.new_creditor(), 20_000)
    assert (waiting.state, waiting.status_reason) == (
        payment_pb2.PAYMENT_STATE_AWAITING_AUTHORISATION,
        "AUTHORISATION_REQUIRED",
    )
    assert await wallet.available() == before  # nothing held while it waits
    for wrong in (
        "000000" if code_for(waiting, wallet.customer) != "000000" else "111111",
        code_for(waiting, wallet.customer, amount=2_000),
    ):  # a code for another amount
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await wallet.confirm(waiting.name, wrong)
        assert _reason(refused.value) == "AUTHORISATION_CODE_INVALID"
    confirmed = await wallet.confirm(waiting.name, code_for(waiting, wallet.customer))
    assert confirmed.state == payment_pb2.PAYMENT_STATE_SETTLED, confirmed
    assert await wallet.available() == before - 20_000
    decision = (
        await wallet.review().GetRiskDecision(
            risk_pb2.GetRiskDecisionRequest(name=waiting.name), metadata=await wallet.operator.metadata()
        )
    ).held_payment.decision
    assert (decision.outcome, list(decision.rules_fired), decision.rules_version, decision.resolution) == (
        risk_pb2.RISK_OUTCOME_STEP_UP,
        ["new_creditor"],
        "e2e.1",
        "confirmed",
    )


async def test_held_payments_wait_for_operators_who_approve_or_refuse_them(wallet: Wallet) -> None:
    before = await wallet.available()
    approve, refuse = [await wallet.pay(await wallet.new_creditor(), 60_000) for _ in range(2)]
    assert {(p.state, p.status_reason) for p in (approve, refuse)} == {
        (payment_pb2.PAYMENT_STATE_PENDING_REVIEW, "HELD_FOR_REVIEW")
    }
    admin = await wallet.operator.metadata()
    queue = (await wallet.review().ListHeldPayments(risk_pb2.ListHeldPaymentsRequest(), metadata=admin)).held_payments
    listed = {held.payment.name: held.decision for held in queue}
    assert {approve.name, refuse.name} <= set(listed)
    shown = listed[approve.name]
    assert list(shown.rules_fired) == ["new_creditor", "new_creditor_large"] and shown.score == 70
    assert shown.signals["new_creditor"] == "true" and shown.signals["psu_ip_address"] == PSU.ip_address
    approved = (
        await wallet.review().ApproveHeldPayment(
            risk_pb2.ApproveHeldPaymentRequest(request_id=uuid.uuid4().hex, name=approve.name, note="customer called"),
            metadata=admin,
        )
    ).payment
    assert approved.state == payment_pb2.PAYMENT_STATE_SETTLED, approved
    refused = (
        await wallet.review().RefuseHeldPayment(
            risk_pb2.RefuseHeldPaymentRequest(request_id=uuid.uuid4().hex, name=refuse.name, note="mule account"),
            metadata=admin,
        )
    ).payment
    assert (refused.state, refused.status_reason) == (payment_pb2.PAYMENT_STATE_REJECTED, "REVIEW_REFUSED")
    assert await wallet.available() == before - 60_000
    decision = (
        await wallet.review().GetRiskDecision(risk_pb2.GetRiskDecisionRequest(name=refuse.name), metadata=admin)
    ).held_payment.decision
    assert (decision.resolution, decision.note) == ("refused", "mule account")
    assert decision.resolved_by == wallet.operator.client_id or decision.resolved_by.endswith(wallet.operator.client_id)
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await wallet.review().ApproveHeldPayment(
            risk_pb2.ApproveHeldPaymentRequest(request_id=uuid.uuid4().hex, name=refuse.name), metadata=admin
        )
    assert _reason(again.value) == "PAYMENT_NOT_AWAITING"


async def _cli(wallet: Wallet, *args: str) -> tuple[int, str]:
    return await run_cli(wallet.mesh.data_dir, *args)


async def test_operators_review_held_payments_with_the_cli(wallet: Wallet) -> None:
    held = await wallet.pay(await wallet.new_creditor(), 60_000)
    code, listed = await _cli(wallet, "review", "list")
    assert code == 0 and held.name in listed and "new_creditor,new_creditor_large" in listed, listed
    code, shown = await _cli(wallet, "review", "show", held.name)
    assert code == 0 and "PENDING_REVIEW" in shown and "psu_device_id" in shown and "phone-1" in shown, shown
    code, refused = await _cli(wallet, "review", "refuse", held.name, "--note", "cli")
    assert (code, refused.strip()) == (0, f"{held.name}: REJECTED (REVIEW_REFUSED)")
    code, again = await _cli(wallet, "review", "approve", held.name)
    assert code == 1 and "PAYMENT_NOT_AWAITING" in again, again


async def test_the_partner_may_cancel_a_waiting_payment_and_it_leaves_the_queue(wallet: Wallet) -> None:
    held = await wallet.pay(await wallet.new_creditor(), 60_000)
    cancelled = (
        await wallet.payments.CancelPayment(
            payment_pb2.CancelPaymentRequest(request_id=uuid.uuid4().hex, name=held.name), metadata=wallet.access
        )
    ).payment
    assert cancelled.state == payment_pb2.PAYMENT_STATE_CANCELLED
    admin = await wallet.operator.metadata()
    queue = (await wallet.review().ListHeldPayments(risk_pb2.ListHeldPaymentsRequest(), metadata=admin)).held_payments
    assert held.name not in {h.payment.name for h in queue}


async def test_a_payment_far_too_risky_is_refused_outright_naming_its_rules(wallet: Wallet) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await wallet.pay(await wallet.new_creditor(), 95_000)
    error = decode_rpc_error(refused.value)
    assert (refused.value.code(), error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RISK_REFUSED")
    assert error.metadata["rule"] == "new_creditor,new_creditor_large,new_creditor_huge"
    assert error.metadata["rules_version"] == "e2e.1"


async def test_failed_sign_ins_of_the_customer_step_up_a_payment_that_would_have_gone_through(wallet: Wallet) -> None:
    creditor = await wallet.new_creditor()
    assert (await wallet.pay(creditor, 5_000)).state == payment_pb2.PAYMENT_STATE_SETTLED  # nothing fires
    customers = customer_pb2_grpc.CustomerServiceStub(wallet.operator.channel("identity"))
    bank_app = await wallet.operator.bank_app_metadata()
    username = wallet.demo["customers"]["alice"]["username"]
    for _ in range(5):  # someone tries alice's sign-in (the fifth locks her)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await customers.AuthenticateCustomer(
                customer_pb2.AuthenticateCustomerRequest(
                    request_id=uuid.uuid4().hex, username=username, password="not-her-password", one_time_code="123456"
                ),
                metadata=bank_app,
            )
        assert _reason(refused.value) in ("SCA_FAILED", "CUSTOMER_LOCKED")
    await asyncio.sleep(1.5)  # payment remembers a customer's signals for 1 s here
    waiting = await wallet.pay(creditor, 5_000)
    assert (waiting.state, waiting.status_reason) == (
        payment_pb2.PAYMENT_STATE_AWAITING_AUTHORISATION,
        "AUTHORISATION_REQUIRED",
    ), waiting
    admin = await wallet.operator.metadata()
    decision = (
        await wallet.review().GetRiskDecision(risk_pb2.GetRiskDecisionRequest(name=waiting.name), metadata=admin)
    ).held_payment.decision
    assert (list(decision.rules_fired), decision.signals["failed_sign_ins"]) == (["failed_sign_ins"], "5")
    assert (await wallet.confirm(waiting.name, code_for(waiting, wallet.customer))).state == (
        payment_pb2.PAYMENT_STATE_SETTLED
    )
    # The bank unlocks her (the counter starts again): her next payment goes through at once.
    await customers.UnlockCustomer(
        customer_pb2.UnlockCustomerRequest(request_id=uuid.uuid4().hex, name=wallet.customer), metadata=admin
    )
    await asyncio.sleep(1.5)
    assert (await wallet.pay(creditor, 5_000)).state == payment_pb2.PAYMENT_STATE_SETTLED


async def _set_risk_tier(wallet: Wallet, tier: int) -> None:
    partners = partner_pb2_grpc.PartnerServiceStub(wallet.operator.channel("identity"))
    await partners.UpdatePartner(
        partner_pb2.UpdatePartnerRequest(
            request_id=uuid.uuid4().hex, name=wallet.demo["partners"]["acme"]["partner"], risk_tier=tier
        ),
        metadata=await wallet.operator.metadata(),
    )
    await asyncio.sleep(1.5)  # payment remembers a partner's registration for 1 s here


async def test_the_partner_s_risk_tier_in_its_registration_is_what_the_risk_rules_read(wallet: Wallet) -> None:
    creditor = await wallet.new_creditor()
    assert (await wallet.pay(creditor, 5_000)).state == payment_pb2.PAYMENT_STATE_SETTLED  # acme is LOW
    await _set_risk_tier(wallet, partner_pb2.PARTNER_RISK_TIER_HIGH)
    try:
        waiting = await wallet.pay(creditor, 5_000)
        assert waiting.state == payment_pb2.PAYMENT_STATE_AWAITING_AUTHORISATION, waiting
        decision = (
            await wallet.review().GetRiskDecision(
                risk_pb2.GetRiskDecisionRequest(name=waiting.name), metadata=await wallet.operator.metadata()
            )
        ).held_payment.decision
        assert (list(decision.rules_fired), decision.signals["partner_risk_tier"]) == (["high_risk_partner"], "HIGH")
        confirmed = await wallet.confirm(waiting.name, code_for(waiting, wallet.customer))
        assert confirmed.state == payment_pb2.PAYMENT_STATE_SETTLED
    finally:
        await _set_risk_tier(wallet, partner_pb2.PARTNER_RISK_TIER_LOW)
    assert (await wallet.pay(creditor, 5_000)).state == payment_pb2.PAYMENT_STATE_SETTLED


async def test_payments_waiting_when_the_payment_service_is_killed_still_wait_and_go_on(wallet: Wallet) -> None:
    before = await wallet.available()
    stepped = await wallet.pay(await wallet.new_creditor(), 15_000)
    held = await wallet.pay(await wallet.new_creditor(), 55_000)
    (payment_process,) = [c for c in wallet.mesh.children if c.name == "payment"]
    wallet.mesh.kill(payment_process)
    await wallet.mesh.restart(payment_process)  # returns once the gateway forwards to it again
    assert (await wallet.get(stepped.name)).state == payment_pb2.PAYMENT_STATE_AWAITING_AUTHORISATION
    assert (await wallet.get(held.name)).state == payment_pb2.PAYMENT_STATE_PENDING_REVIEW
    confirmed = await wallet.confirm(stepped.name, code_for(stepped, wallet.customer))
    approved = (
        await wallet.review().ApproveHeldPayment(
            risk_pb2.ApproveHeldPaymentRequest(request_id=uuid.uuid4().hex, name=held.name),
            metadata=await wallet.operator.metadata(),
        )
    ).payment
    assert {confirmed.state, approved.state} == {payment_pb2.PAYMENT_STATE_SETTLED}
    assert await wallet.available() == before - 70_000


async def test_a_payment_not_confirmed_in_time_is_cancelled_and_moves_nothing(wallet: Wallet) -> None:
    waiting = wallet.abandoned
    assert waiting is not None
    ended = await wallet.until(waiting.name, FINAL, timeout=STEP_UP_WAIT_SECONDS + 30)
    assert (ended.state, ended.status_reason) == (payment_pb2.PAYMENT_STATE_CANCELLED, "AUTHORISATION_EXPIRED")
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await wallet.confirm(waiting.name, code_for(waiting, wallet.customer))
    assert _reason(late.value) == "PAYMENT_NOT_AWAITING"
    # Alice paid exactly what settled: the cancelled payment (and every refused one) moved nothing.
    listed = await wallet.payments.ListPayments(payment_pb2.ListPaymentsRequest(page_size=100), metadata=wallet.access)
    settled = sum(p.amount.minor_units for p in listed.payments if p.state == payment_pb2.PAYMENT_STATE_SETTLED)
    assert await wallet.available() == wallet.opening_balance - settled


async def test_a_held_payment_nobody_reviewed_is_refused_at_its_expiry_and_moves_nothing(wallet: Wallet) -> None:
    held = wallet.unreviewed
    assert held is not None
    ended = await wallet.until(held.name, FINAL, timeout=REVIEW_WAIT_SECONDS + 30)
    assert (ended.state, ended.status_reason) == (payment_pb2.PAYMENT_STATE_REJECTED, "REVIEW_EXPIRED")
    admin = await wallet.operator.metadata()
    decision = (
        await wallet.review().GetRiskDecision(risk_pb2.GetRiskDecisionRequest(name=held.name), metadata=admin)
    ).held_payment.decision
    assert (decision.resolution, decision.resolved_by) == ("expired", "system:payment")
    queue = (await wallet.review().ListHeldPayments(risk_pb2.ListHeldPaymentsRequest(), metadata=admin)).held_payments
    assert held.name not in {h.payment.name for h in queue}
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await wallet.review().ApproveHeldPayment(
            risk_pb2.ApproveHeldPaymentRequest(request_id=uuid.uuid4().hex, name=held.name), metadata=admin
        )
    assert _reason(late.value) == "PAYMENT_NOT_AWAITING"
    # Alice paid exactly what settled: the refused payment held nothing and moved nothing.
    listed = await wallet.payments.ListPayments(payment_pb2.ListPaymentsRequest(page_size=100), metadata=wallet.access)
    settled = sum(p.amount.minor_units for p in listed.payments if p.state == payment_pb2.PAYMENT_STATE_SETTLED)
    assert await wallet.available() == wallet.opening_balance - settled


async def test_everything_above_is_final_and_the_ledger_nets_to_zero_with_nothing_held(wallet: Wallet) -> None:
    listed = await wallet.payments.ListPayments(payment_pb2.ListPaymentsRequest(page_size=100), metadata=wallet.access)
    assert listed.payments and all(p.state in FINAL for p in listed.payments), listed
    totals = await account_admin_pb2_grpc.AccountAdminServiceStub(wallet.operator.channel("account")).GetLedgerTotals(
        account_admin_pb2.GetLedgerTotalsRequest(), metadata=await wallet.operator.metadata()
    )
    (eur,) = [t for t in totals.totals if t.currency_code == "EUR"]
    assert eur.balanced and eur.net.minor_units == 0
    assert eur.pending_debits.minor_units == eur.pending_credits.minor_units == 0
