"""Disputes over real processes (the local mesh: identity, account, settlement, payment, the
gateway): a wallet tops up from alice's account through the gateway; the bank's operator
disputes it; accepted for fraud, alice gets it all back, the partner's agreed share out of its
wallet (an obligation in the window), the bank's out of its loss account; rejected, nothing
moves. The partner sees its disputes through the gateway. Then the window closes with the
partner's share in its report, positions equal to it, the ledger balanced and the window
reconciling clean, before and after it settles.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import grpc
import openbank_sdk as ob
import pytest
import pytest_asyncio

from meshcli.mesh import LocalMesh
from meshcli.operator import Operator
from meshlib.grpc_errors import decode_rpc_error
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, account_pb2
from openbank.common.v1 import money_pb2
from openbank.identity.v1 import partner_pb2, partner_pb2_grpc, token_pb2, token_pb2_grpc
from openbank.payment.v1 import (
    capability_pb2,
    capability_pb2_grpc,
    dispute_pb2,
    dispute_pb2_grpc,
    payment_pb2,
    payment_pb2_grpc,
)
from openbank.settlement.v1 import (
    position_pb2,
    settlement_admin_pb2,
    settlement_admin_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
)
from tests.e2e.payment_harness import running_mesh
from tests.support.cli import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

PROCESSES = ("identity", "account", "settlement", "schemesim", "payment", "gateway")
FRAUD_SHARE_BPS = 2500
FINAL = {payment_pb2.PAYMENT_STATE_SETTLED, payment_pb2.PAYMENT_STATE_REJECTED, payment_pb2.PAYMENT_STATE_CANCELLED}


def eur(minor: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", minor_units=minor)


class Bank:
    """Acme topping up from alice's account through the gateway; the bank's operator beside it."""

    def __init__(self, mesh: LocalMesh, operator: Operator, demo: dict[str, Any], loss_account: str) -> None:
        self.mesh, self.operator, self.demo, self.loss_account = mesh, operator, demo, loss_account
        self.acme = demo["partners"]["acme"]
        self.alice = demo["customers"]["alice"]["account"]
        self.gateway = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['gateway']}")
        self.payments = payment_pb2_grpc.PaymentServiceStub(self.gateway)
        self.partner_disputes = dispute_pb2_grpc.DisputeServiceStub(self.gateway)
        self.disputes = dispute_pb2_grpc.DisputeAdminServiceStub(operator.channel("payment"))
        self.access: tuple[tuple[str, str], ...] = ()
        self.client: tuple[tuple[str, str], ...] = ()

    async def connect(self) -> None:
        tokens = token_pb2_grpc.TokenServiceStub(self.gateway)
        reader = await tokens.IssueToken(
            token_pb2.IssueTokenRequest(
                grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                client_id=self.acme["client_id"],
                client_secret=self.acme["client_secret"],
                scopes=["payments:read"],
            ),
            timeout=10,
        )
        self.client = (("authorization", f"Bearer {reader.access_token}"),)

    async def top_up(self, amount: int) -> payment_pb2.Payment:
        request = payment_pb2.CreatePaymentRequest(
            request_id=uuid.uuid4().hex,
            debtor_account=self.alice,
            creditor_wallet=self.acme["partner"],
            amount=eur(amount),
            type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
        )
        created = (await self.payments.CreatePayment(request, metadata=self.access, timeout=15)).payment
        deadline = time.monotonic() + 30
        while created.state not in FINAL and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            created = await self.get(created.name)
        assert created.state == payment_pb2.PAYMENT_STATE_SETTLED, created
        return created

    async def get(self, name: str) -> payment_pb2.Payment:
        return (await self.payments.GetPayment(payment_pb2.GetPaymentRequest(name=name), metadata=self.access)).payment

    async def balance(self, account: str) -> int:
        stub = account_admin_pb2_grpc.AccountAdminServiceStub(self.operator.channel("account"))
        found = await stub.SearchAccounts(
            account_admin_pb2.SearchAccountsRequest(name=account), metadata=await self.operator.metadata()
        )
        return found.accounts[0].balance.current.minor_units

    async def open(self, payment: str, category: int) -> dispute_pb2.Dispute:
        request = dispute_pb2.OpenDisputeRequest(
            request_id=uuid.uuid4().hex, payment=payment, category=category, description="the customer says so"
        )
        return (await self.disputes.OpenDispute(request, metadata=await self.operator.metadata())).dispute

    async def decide(self, dispute: str, state: int, note: str = "") -> dispute_pb2.Dispute:
        request = dispute_pb2.DecideDisputeRequest(request_id=uuid.uuid4().hex, name=dispute, state=state, note=note)
        return (await self.disputes.DecideDispute(request, metadata=await self.operator.metadata())).dispute


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bank(tmp_path_factory):  # type: ignore[no-untyped-def]
    async with running_mesh(tmp_path_factory, "disputes", PROCESSES, {"OBM_LOG_FORMAT": "json"}) as running:
        mesh, operator, demo = running.mesh, running.operator, running.demo
        admin = await operator.metadata()
        # The partner's risk-sharing agreement: a quarter of a fraud loss.
        await partner_pb2_grpc.PartnerServiceStub(operator.channel("identity")).UpdatePartner(
            partner_pb2.UpdatePartnerRequest(
                request_id=uuid.uuid4().hex,
                name=demo["partners"]["acme"]["partner"],
                risk_sharing=partner_pb2.RiskSharingAgreement(fraud_share_bps=FRAUD_SHARE_BPS),
            ),
            metadata=admin,
        )
        # The bank's dispute-loss account (it may go negative), named to the payment service.
        opened = await account_admin_pb2_grpc.AccountAdminServiceStub(operator.channel("account")).OpenAccount(
            account_admin_pb2.OpenAccountRequest(
                request_id="dispute-loss",
                currency_code="EUR",
                type=account_pb2.ACCOUNT_TYPE_SETTLEMENT,
                overdraft_limit=eur(100_000_000),
                display_name="Dispute losses",
            ),
            metadata=admin,
        )
        loss_account = opened.account.name
        (payment_process,) = [c for c in mesh.children if c.name == "payment"]
        mesh.kill(payment_process)
        payment_process.launch_env = {
            **payment_process.launch_env,
            "OBM_DISPUTE_LOSS_ACCOUNTS": json.dumps({"EUR": loss_account.removeprefix("accounts/")}),
        }
        await mesh.restart(payment_process)
        bank = Bank(mesh, operator, demo, loss_account)
        bank.access = running.access
        await bank.connect()
        yield bank


async def test_an_accepted_fraud_dispute_refunds_alice_split_between_the_partner_and_the_bank(bank: Bank) -> None:
    before = (await bank.balance(bank.alice), await bank.balance(bank.acme["settlement_account"]))
    payment = await bank.top_up(1_001)
    dispute = await bank.open(payment.name, dispute_pb2.DISPUTE_CATEGORY_FRAUD)
    assert (dispute.state, dispute.amount.minor_units) == (dispute_pb2.DISPUTE_STATE_OPENED, 1_001)
    # The partner sees it, through the gateway, with a client-credentials token.
    listed = await bank.partner_disputes.ListDisputes(dispute_pb2.ListDisputesRequest(), metadata=bank.client)
    assert dispute.name in [d.name for d in listed.disputes]

    loss_before = await bank.balance(bank.loss_account)
    accepted = await bank.decide(dispute.name, dispute_pb2.DISPUTE_STATE_ACCEPTED, "not alice's device")
    # A quarter rounded down for the partner (250 of 1001), the remainder the bank's.
    assert (accepted.state, accepted.partner_share.minor_units, accepted.bank_share.minor_units) == (
        dispute_pb2.DISPUTE_STATE_ACCEPTED,
        250,
        751,
    )
    refunds = [await bank.get(name) for name in accepted.refund_payments]
    assert [(r.state, r.amount.minor_units, r.return_reason) for r in refunds] == [
        (payment_pb2.PAYMENT_STATE_SETTLED, 250, "FRAD"),
        (payment_pb2.PAYMENT_STATE_SETTLED, 751, "FRAD"),
    ]
    assert await bank.balance(bank.alice) == before[0]  # alice has it all back
    assert await bank.balance(bank.acme["settlement_account"]) == before[1] + 1_001 - 250
    assert await bank.balance(bank.loss_account) == loss_before - 751
    # Deciding again answers the same; the partner sees the outcome.
    again = await bank.decide(dispute.name, dispute_pb2.DISPUTE_STATE_ACCEPTED)
    assert list(again.refund_payments) == list(accepted.refund_payments)
    seen = await bank.partner_disputes.GetDispute(
        dispute_pb2.GetDisputeRequest(name=dispute.name), metadata=bank.client
    )
    assert (seen.dispute.state, seen.dispute.partner_share.minor_units) == (dispute_pb2.DISPUTE_STATE_ACCEPTED, 250)


async def test_a_rejected_dispute_moves_nothing_and_stays_decided(bank: Bank) -> None:
    payment = await bank.top_up(500)
    before = await bank.balance(bank.alice)
    dispute = await bank.open(payment.name, dispute_pb2.DISPUTE_CATEGORY_NOT_RECEIVED)
    await bank.decide(dispute.name, dispute_pb2.DISPUTE_STATE_INVESTIGATING)
    rejected = await bank.decide(dispute.name, dispute_pb2.DISPUTE_STATE_REJECTED, "delivered, signed for")
    assert (rejected.state, list(rejected.refund_payments)) == (dispute_pb2.DISPUTE_STATE_REJECTED, [])
    assert await bank.balance(bank.alice) == before
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await bank.decide(dispute.name, dispute_pb2.DISPUTE_STATE_ACCEPTED)
    assert decode_rpc_error(refused.value).reason == "DISPUTE_ALREADY_DECIDED"
    with pytest.raises(grpc.aio.AioRpcError) as missing:  # another partner's dispute is not there
        await bank.partner_disputes.GetDispute(
            dispute_pb2.GetDisputeRequest(name="disputes/0000000000000000"), metadata=bank.client
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_partner_share_is_in_the_closed_window_report_and_everything_agrees(bank: Bank) -> None:
    admin = await bank.operator.metadata()
    settlement = settlement_admin_pb2_grpc.SettlementAdminServiceStub(bank.operator.channel("settlement"))
    reports = settlement_pb2_grpc.SettlementServiceStub(bank.operator.channel("settlement"))
    acme = bank.acme["participant"]
    position = await reports.GetPosition(
        settlement_pb2.GetPositionRequest(participant=acme, currency_code="EUR"), metadata=admin
    )
    # The module's top-ups (1001 + 500) less the partner's share of the fraud (250).
    assert position.position.net_position.minor_units == 1_001 + 500 - 250
    closed = await settlement.CloseSettlementWindow(
        settlement_admin_pb2.CloseSettlementWindowRequest(request_id=uuid.uuid4().hex, currency_code="EUR"),
        metadata=admin,
    )
    window = closed.closed_window.name
    report = (
        await reports.GetSettlementReport(settlement_pb2.GetSettlementReportRequest(window=window), metadata=admin)
    ).report
    rows = {row.participant: row for row in report.net_positions}
    assert (rows[acme].received.minor_units, rows[acme].sent.minor_units, rows[acme].net.minor_units) == (
        1_501,
        250,
        1_251,
    )
    assert sum(row.net.minor_units for row in report.net_positions) == 0
    # The partner's share is its own kind of obligation, apart from its payments: acme owes the
    # bank 250 for one loss share; everything else in the window is a payment's.
    kinds = {
        (position_pb2.ObligationKind.Name(k.kind), k.payer, k.payee): (k.amount.minor_units, k.obligation_count)
        for k in report.kind_totals
    }
    shares = {key: value for key, value in kinds.items() if key[0] == "OBLIGATION_KIND_LOSS_SHARE"}
    assert list(shares.values()) == [(250, 1)] and next(iter(shares))[1] == acme, kinds
    assert all(key[0] == "OBLIGATION_KIND_PAYMENT" for key in kinds if key not in shares), kinds
    assert sum(amount for amount, _ in kinds.values()) == sum(row.sent.minor_units for row in report.net_positions)
    reconciled = await settlement.ReconcileSettlementWindow(
        settlement_admin_pb2.ReconcileSettlementWindowRequest(name=window), metadata=admin
    )
    assert reconciled.report.clean, reconciled.report.differences
    checked = {position_pb2.ObligationKind.Name(k.kind): k for k in reconciled.report.kinds}
    loss = checked["OBLIGATION_KIND_LOSS_SHARE"]
    assert (loss.obligation_count, loss.obligations_total.minor_units, loss.ledger_total.minor_units) == (1, 250, 250)
    payments = checked["OBLIGATION_KIND_PAYMENT"]
    assert payments.obligations_total.minor_units == payments.ledger_total.minor_units > 0
    await settlement.SettleSettlementWindow(
        settlement_admin_pb2.SettleSettlementWindowRequest(request_id=uuid.uuid4().hex, name=window), metadata=admin
    )
    settled = await settlement.ReconcileSettlementWindow(
        settlement_admin_pb2.ReconcileSettlementWindowRequest(name=window), metadata=admin
    )
    assert settled.report.clean, settled.report.differences
    totals = await account_admin_pb2_grpc.AccountAdminServiceStub(bank.operator.channel("account")).GetLedgerTotals(
        account_admin_pb2.GetLedgerTotalsRequest(), metadata=admin
    )
    (totals_eur,) = [t for t in totals.totals if t.currency_code == "EUR"]
    assert totals_eur.balanced and totals_eur.net.minor_units == 0
    assert totals_eur.pending_debits.minor_units == 0


async def test_the_operator_cli_lists_and_decides_disputes(bank: Bank) -> None:
    payment = await bank.top_up(300)

    async def cli(*args: str) -> tuple[int, str]:
        return await run_cli(bank.mesh.data_dir, "dispute", *args, "--json", timeout=60)

    code, out = await cli("open", payment.name, "wrong-amount", "--amount", "1.00")
    assert code == 0, out
    opened = json.loads(out)
    assert (opened["state"], opened["amount"]["minor_units"]) == ("DISPUTE_STATE_OPENED", "100")
    code, out = await cli("reject", opened["name"], "--note", "as agreed")
    assert code == 0 and json.loads(out)["state"] == "DISPUTE_STATE_REJECTED", out
    code, out = await cli("list", "--partner", bank.acme["partner"])
    assert code == 0 and opened["name"] in out, out
    code, out = await cli("accept", opened["name"])
    assert code == 1 and "DISPUTE_ALREADY_DECIDED" in out, out


async def test_the_sdk_lists_the_partners_disputes_with_their_outcomes(bank: Bank) -> None:
    async with ob.OpenBankClient.connect(
        f"127.0.0.1:{bank.mesh.ports['gateway']}", bank.acme["client_id"], bank.acme["client_secret"], insecure=True
    ) as client:
        listed = [d async for d in client.disputes(page_size=1)]  # one per page: every page is read
        assert len(listed) >= 3
        assert {d.state for d in listed} >= {dispute_pb2.DISPUTE_STATE_ACCEPTED, dispute_pb2.DISPUTE_STATE_REJECTED}
        accepted = next(d for d in listed if d.state == dispute_pb2.DISPUTE_STATE_ACCEPTED)
        assert (await client.dispute(accepted.name)).partner_share.minor_units == 250


async def test_the_kill_switch_refuses_a_capability_for_one_partner_or_all_and_back_on(bank: Bank) -> None:
    switches = capability_pb2_grpc.CapabilityAdminServiceStub(bank.operator.channel("payment"))

    async def switch(enabled: bool, partner: str = "") -> None:
        request = capability_pb2.SetCapabilityRequest(
            request_id=uuid.uuid4().hex, capability="WALLET_TOP_UP", partner=partner, enabled=enabled
        )
        await switches.SetCapability(request, metadata=await bank.operator.metadata())

    async def refused_scope() -> str:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await bank.top_up(100)
        status = decode_rpc_error(refused.value)
        assert (refused.value.code(), status.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CAPABILITY_SWITCHED_OFF")
        return status.metadata["scope"]

    await switch(False, bank.acme["partner"])
    assert await refused_scope() == "partner"
    await switch(True, bank.acme["partner"])
    await bank.top_up(100)  # back on
    await switch(False)  # every partner at once
    assert await refused_scope() == "all"
    listed = await switches.GetCapabilitySwitches(
        capability_pb2.GetCapabilitySwitchesRequest(), metadata=await bank.operator.metadata()
    )
    assert [(s.capability, s.partner) for s in listed.switches] == [("WALLET_TOP_UP", "")]
    await switch(True)
    await bank.top_up(100)


async def test_a_customer_disputes_their_own_payment_through_the_bank_app_rpc(bank: Bank) -> None:
    from meshcli.mesh import internal_credentials
    from meshlib.auth.service_tokens import ServiceTokenSource

    app = ServiceTokenSource(
        bank.operator.channel("identity"),
        "bank-app",
        internal_credentials(bank.mesh.data_dir)["bank-app"],
        ["consents:authorise"],
    )
    customers = dispute_pb2_grpc.DisputeServiceStub(bank.operator.channel("payment"))
    payment = await bank.top_up(200)

    async def open_as(customer: str) -> dispute_pb2.Dispute:
        request = dispute_pb2.OpenCustomerDisputeRequest(
            request_id=uuid.uuid4().hex,
            customer=customer,
            payment=payment.name,
            category=dispute_pb2.DISPUTE_CATEGORY_NOT_RECEIVED,
        )
        metadata = (("authorization", f"Bearer {await app.token()}"),)
        return (await customers.OpenCustomerDispute(request, metadata=metadata)).dispute

    with pytest.raises(grpc.aio.AioRpcError) as missing:  # bob's view: not his payment
        await open_as(bank.demo["customers"]["bob"]["customer"])
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    opened = await open_as(bank.demo["customers"]["alice"]["customer"])
    assert (opened.state, opened.opened_by, opened.amount.minor_units) == (
        dispute_pb2.DISPUTE_STATE_OPENED,
        "customer",
        200,
    )
