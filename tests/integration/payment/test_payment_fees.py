"""Fees end to end over real gRPC (account + settlement + payment, SQLite and PostgreSQL, batched
and plain): the fee leg is held, posted and voided linked with the payment's, its obligation
(wallet -> bank) committed with the payment's, and positions, the settlement report and
reconciliation show it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from meshlib.app import start_service
from meshlib.auth.verifier import static_jwks
from meshlib.grpc_errors import decode_rpc_error
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, ledger_pb2
from openbank.payment.v1 import payment_pb2
from openbank.settlement.v1 import settlement_admin_pb2, settlement_admin_pb2_grpc, settlement_pb2, settlement_pb2_grpc
from tests.integration.payment.mesh import Mesh, money, running_mesh, standard_mesh
from tests.support.servers import create_database

# A top-up costs 10 + 1 % (half-up), at most 50; a transfer 3 flat; partner-1's own top-up rule
# overrides the default's.
SCHEDULE = """
default:
  WALLET_TOP_UP: {fixed_minor: 10, basis_points: 100, max_minor: 50}
  TRANSFER: {fixed_minor: 3}
partners:
  partner-1:
    WALLET_TOP_UP: {fixed_minor: 5, basis_points: 100, max_minor: 50}
"""
WALLET_FUNDS = 1_000  # the wallet's settlement account pays the fees


@pytest.fixture(params=["sqlite", "postgresql"])
async def urls(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    names = ("account", "settlement", "payment")
    if request.param == "sqlite":
        yield {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in names}
        return
    server = request.getfixturevalue("postgres_srv")
    yield {n: await create_database(server, f"t_{n}_{uuid.uuid4().hex[:12]}") for n in names}


async def _restart_payment_with_fees(mesh: Mesh, schedule: Path, income: str) -> None:
    """The payment service again on its database, reading the schedule and the income account
    (opened after the first start: its id is the ledger's)."""
    await mesh.servers["payment"].stop(0)
    await mesh.channels["payment"].close()
    settings = mesh.payment_settings.model_copy(
        update={"fee_schedule_file": schedule, "fee_income_accounts": {"EUR": income}}
    )
    server = await start_service(mesh.payment_spec, settings, jwks_fetcher=static_jwks(mesh.issuer.jwks))
    mesh.servers["payment"] = server
    mesh.channels["payment"] = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")


@pytest.fixture(params=["batched", "plain"])
async def mesh(request: pytest.FixtureRequest, urls: dict[str, str], tmp_path: Path) -> AsyncIterator[Mesh]:
    async with running_mesh(urls, payment_batching=request.param == "batched") as running:
        mesh = await standard_mesh(running)
        income = await mesh.open_account("fee-income", customer=None)
        schedule = tmp_path / "fees.yaml"
        schedule.write_text(SCHEDULE)
        await _restart_payment_with_fees(mesh, schedule, income)
        await _fund(mesh, "wallet-1", WALLET_FUNDS)
        yield mesh


async def _fund(mesh: Mesh, label: str, minor: int) -> None:
    admin = account_admin_pb2_grpc.AccountAdminServiceStub(mesh.channels["account"])
    await admin.FundAccount(
        account_admin_pb2.FundAccountRequest(
            request_id=f"fund-{label}-{uuid.uuid4().hex[:8]}",
            account=f"accounts/{mesh.accounts[label]}",
            amount=money(minor),
        ),
        metadata=mesh.operator(),
    )


async def _posted(mesh: Mesh, label: str) -> int:
    """A bank account's posted balance (credits - debits), summed from its ledger transfers."""
    account, total, token = f"accounts/{mesh.accounts[label]}", 0, ""
    while True:
        answer = await mesh.ledger.ListTransfers(
            ledger_pb2.ListTransfersRequest(account=account, page_size=500, page_token=token), metadata=mesh.operator()
        )
        for transfer in answer.transfers:
            if transfer.state == ledger_pb2.TRANSFER_STATE_POSTED:
                sign = (transfer.credit_account == account) - (transfer.debit_account == account)
                total += sign * transfer.amount.minor_units
        token = answer.next_page_token
        if not token:
            return total


async def _transfer_state(mesh: Mesh, name: str) -> str:
    try:
        answer = await mesh.ledger.GetTransfer(ledger_pb2.GetTransferRequest(name=name), metadata=mesh.operator())
    except grpc.aio.AioRpcError:
        return ""
    return ledger_pb2.TransferState.Name(answer.transfer.state).removeprefix("TRANSFER_STATE_")


async def _close_and_reconcile(
    mesh: Mesh,
) -> tuple[settlement_pb2.SettlementReport, settlement_admin_pb2.ReconciliationReport]:
    admin = settlement_admin_pb2_grpc.SettlementAdminServiceStub(mesh.channels["settlement"])
    closed = await admin.CloseSettlementWindow(
        settlement_admin_pb2.CloseSettlementWindowRequest(request_id=uuid.uuid4().hex, currency_code="EUR"),
        metadata=mesh.operator(),
    )
    window = closed.closed_window.name
    report = await settlement_pb2_grpc.SettlementServiceStub(mesh.channels["settlement"]).GetSettlementReport(
        settlement_pb2.GetSettlementReportRequest(window=window), metadata=mesh.operator()
    )
    reconciled = await admin.ReconcileSettlementWindow(
        settlement_admin_pb2.ReconcileSettlementWindowRequest(name=window), metadata=mesh.operator()
    )
    return report.report, reconciled.report


async def test_a_top_up_with_a_fee_moves_both_legs_and_shows_in_positions_report_and_reconciliation(
    mesh: Mesh,
) -> None:
    payment = await mesh.top_up(2_500)
    pid = payment.name.rsplit("/", 1)[-1]
    assert payment.state == payment_pb2.PAYMENT_STATE_SETTLED, payment
    assert (payment.fee.currency_code, payment.fee.minor_units) == ("EUR", 30)  # 5 + 25: partner-1's rule
    assert await mesh.balance("alice") == (97_500, 97_500)
    assert await _posted(mesh, "wallet-1") == WALLET_FUNDS + 2_500 - 30
    assert await _posted(mesh, "fee-income") == 30
    assert (
        await _transfer_state(mesh, f"transfers/{pid}-hold"),
        await _transfer_state(mesh, f"transfers/{pid}-fee"),
    ) == (
        "POSTED",
        "POSTED",
    )
    assert await mesh.obligation_state(f"payments/{pid}-fee") == "COMMITTED"
    # The bank owes the wallet the top-up, the wallet owes the bank the fee.
    assert await mesh.position("bank") == (-2_470, 0)
    assert await mesh.position("wallet-1") == (2_470, 0)
    assert await mesh.ledger_balanced()
    read = (
        await mesh.payments.GetPayment(payment_pb2.GetPaymentRequest(name=payment.name), metadata=mesh.partner())
    ).payment
    assert read.fee.minor_units == 30
    report, reconciled = await _close_and_reconcile(mesh)
    nets = {
        p.participant.rsplit("/", 1)[-1]: (p.sent.minor_units, p.received.minor_units, p.net.minor_units)
        for p in report.net_positions
    }
    assert nets[mesh.participants["wallet-1"]] == (30, 2_500, 2_470)
    assert nets[mesh.participants["bank"]] == (2_500, 30, -2_470)
    assert reconciled.clean, reconciled


async def test_a_transfer_inside_the_bank_with_a_fee_settles_the_fee_between_wallet_and_bank(mesh: Mesh) -> None:
    payment = await mesh.transfer(1_000)
    assert payment.state == payment_pb2.PAYMENT_STATE_SETTLED, payment
    assert payment.fee.minor_units == 3
    assert await mesh.balance("bob") == (1_000, 1_000)
    assert await _posted(mesh, "wallet-1") == WALLET_FUNDS - 3
    assert await mesh.obligation_state(payment.name) == ""  # the payment itself settles nothing
    assert await mesh.position("wallet-1") == (-3, 0)
    assert await mesh.position("bank") == (3, 0)
    assert await mesh.ledger_balanced()
    _, reconciled = await _close_and_reconcile(mesh)
    assert reconciled.clean, reconciled


async def test_a_fee_the_wallet_cannot_cover_rejects_the_payment_with_nothing_moved(mesh: Mesh) -> None:
    # Empty the wallet's settlement account down to 2: a transfer's fee is 3.
    spend = await mesh.transfer(1, consent="c1")  # fee 3
    assert spend.state == payment_pb2.PAYMENT_STATE_SETTLED
    left = WALLET_FUNDS - 3
    drain = ledger_pb2.CreateTransferRequest(
        request_id=f"drain-{uuid.uuid4().hex[:8]}",
        debit_account=f"accounts/{mesh.accounts['wallet-1']}",
        credit_account=f"accounts/{mesh.accounts['bank-settlement']}",
        amount=money(left - 2),
        type=ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
    )
    await mesh.ledger.CreateTransfer(drain, metadata=mesh.operator())
    before = (await mesh.balance("alice"), await mesh.position("wallet-1"), await mesh.position("bank"))
    payment = await mesh.transfer(1_000)
    pid = payment.name.rsplit("/", 1)[-1]
    assert (payment.state, payment.status_reason) == (payment_pb2.PAYMENT_STATE_REJECTED, "INSUFFICIENT_FUNDS")
    assert (
        await _transfer_state(mesh, f"transfers/{pid}-hold"),
        await _transfer_state(mesh, f"transfers/{pid}-fee"),
    ) == ("", "")
    assert (await mesh.balance("alice"), await mesh.position("wallet-1"), await mesh.position("bank")) == before
    assert await _posted(mesh, "wallet-1") == 2 and await _posted(mesh, "bob") == 1
    assert await mesh.obligation_state(f"payments/{pid}-fee") in ("", "RELEASED")
    assert await mesh.ledger_balanced()
    # A top-up's fee is taken from the wallet's settlement account as it is, not from the top-up
    # being credited to it in the same chain: refused too.
    top_up = await mesh.top_up(500)
    assert (top_up.state, top_up.status_reason) == (payment_pb2.PAYMENT_STATE_REJECTED, "INSUFFICIENT_FUNDS")
    assert await mesh.balance("alice") == before[0]


async def test_a_refused_fee_reservation_rolls_back_both_legs_and_the_payments_reservation(mesh: Mesh) -> None:
    admin = settlement_admin_pb2_grpc.SettlementAdminServiceStub(mesh.channels["settlement"])
    await admin.UpdateNetDebitCap(
        settlement_admin_pb2.UpdateNetDebitCapRequest(
            request_id=uuid.uuid4().hex,
            participant=f"participants/{mesh.participants['wallet-1']}",
            cap=money(1),
        ),
        metadata=mesh.operator(),
    )
    # The top-up's own obligation (bank -> wallet) is reserved, the fee's (wallet -> bank) refused:
    # the top-up's reservation is released, both holds voided.
    payment = await mesh.top_up(1_000)
    pid = payment.name.rsplit("/", 1)[-1]
    assert (payment.state, payment.status_reason) == (payment_pb2.PAYMENT_STATE_REJECTED, "NET_DEBIT_CAP_EXCEEDED")
    assert (
        await _transfer_state(mesh, f"transfers/{pid}-hold"),
        await _transfer_state(mesh, f"transfers/{pid}-fee"),
    ) == (
        "VOIDED",
        "VOIDED",
    )
    assert await mesh.balance("alice") == (100_000, 100_000)
    assert await mesh.obligation_state(payment.name) == "RELEASED"
    assert await mesh.obligation_state(f"payments/{pid}-fee") == ""
    assert await mesh.position("wallet-1") == (0, 0) and await mesh.position("bank") == (0, 0)
    assert await mesh.ledger_balanced()


async def test_a_replay_answers_the_stored_fee(mesh: Mesh) -> None:
    first = await mesh.top_up(100, request_id="fee-replay")
    again = await mesh.top_up(100, request_id="fee-replay")
    assert first.name == again.name and again.fee.minor_units == first.fee.minor_units == 6
    assert await _posted(mesh, "fee-income") == 6
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await mesh.top_up(101, request_id="fee-replay")
    assert decode_rpc_error(refused.value).reason == "REQUEST_ID_REUSED"
