"""Reconciliation against the ledger: through the LedgerReader port with a fake ledger, and
end to end over gRPC against a fake account LedgerService."""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import replace

import grpc
from google.protobuf import timestamp_pb2

from meshlib.money import Amount
from openbank.account.v1 import ledger_pb2
from openbank.settlement.v1 import settlement_admin_pb2
from services.settlement.domain.participants import Participant
from services.settlement.domain.reconciliation import DifferenceKind, LedgerTransfer
from services.settlement.reconciliation_service import ReconciliationService
from tests.integration.settlement.conftest import running_settlement
from tests.integration.settlement.grpc_support import expect_error
from tests.integration.settlement.support import Layer, key
from tests.unit.settlement.fakes import FakeLedger


def _transfer(payment: str, payer: Participant, payee: Participant, minor: int, at: dt.datetime) -> LedgerTransfer:
    return LedgerTransfer(
        name=f"transfers/t-{payment}",
        debit_account=payer.settlement_account,
        credit_account=payee.settlement_account,
        amount=Amount("EUR", minor),
        posted=True,
        reference=f"payments/{payment}",
        created_at=at,
    )


async def _scenario(layer: Layer):  # type: ignore[no-untyped-def]
    bank = await layer.bank()
    wallet_a = await layer.wallet("pa", cap=10_000)
    wallet_b = await layer.wallet("pb", cap=10_000)
    flows = [("p1", wallet_a, bank, 100), ("p2", bank, wallet_b, 250), ("p3", wallet_b, wallet_a, 40)]
    for payment, payer, payee, minor in flows:
        await layer.pay(payment, payer.id, payee.id, minor)
    closed, _ = await layer.windows.close(key(), currency="EUR")
    inside = closed.opened_at + (closed.closed_at - closed.opened_at) / 2  # type: ignore[operator]
    transfers = [_transfer(p, payer, payee, minor, inside) for p, payer, payee, minor in flows]
    return closed, transfers, (bank, wallet_a, wallet_b), inside


async def test_a_clean_window_reconciles_to_zero_differences(layer: Layer) -> None:
    window, transfers, _, _ = await _scenario(layer)
    report = await ReconciliationService(layer.transactions, FakeLedger(transfers)).reconcile(window.id)
    assert report.clean and report.differences == ()


async def test_every_kind_of_difference_is_reported(layer: Layer) -> None:
    window, transfers, (bank, wallet_a, wallet_b), inside = await _scenario(layer)
    tampered = [replace(transfers[0], amount=Amount("EUR", 101))]  # p1: amount changed on the ledger
    wrong = [replace(transfers[1], debit_account="accounts/x", credit_account="accounts/y")]  # p2
    # p3 has no ledger transfer at all; a pending transfer does not count.
    pending = [replace(transfers[2], posted=False)]
    # A payment nobody told settlement about, moving money on a settlement account.
    stray = [_transfer("ghost", wallet_a, bank, 9, inside)]
    # A released and a still-reserved obligation whose transfers were posted anyway.
    await layer.positions.reserve(key(), "gone", wallet_b.id, bank.id, Amount("EUR", 5))
    await layer.positions.release(key(), "gone")
    await layer.positions.reserve(key(), "stuck", wallet_b.id, bank.id, Amount("EUR", 6))
    late = [_transfer("gone", wallet_b, bank, 5, inside), _transfer("stuck", wallet_b, bank, 6, inside)]
    # A payment posted in this window but committed in the next one is not a difference here.
    await layer.pay("next", wallet_a.id, wallet_b.id, 7)
    neighbour = [_transfer("next", wallet_a, wallet_b, 7, inside)]
    ledger = FakeLedger(tampered + wrong + pending + stray + late + neighbour)

    report = await ReconciliationService(layer.transactions, ledger).reconcile(window.id)
    found = {(d.kind, d.payment_id): d for d in report.differences}
    assert not report.clean
    assert set(found) == {
        (DifferenceKind.AMOUNT_MISMATCH, "p1"),
        (DifferenceKind.WRONG_ACCOUNTS, "p2"),
        (DifferenceKind.MISSING_LEDGER_TRANSFER, "p3"),
        (DifferenceKind.MISSING_OBLIGATION, "ghost"),
        (DifferenceKind.MISSING_OBLIGATION, "gone"),
        (DifferenceKind.STALE_RESERVATION, "stuck"),
    }
    mismatch = found[(DifferenceKind.AMOUNT_MISMATCH, "p1")]
    assert (mismatch.expected, mismatch.actual) == (Amount("EUR", 100), Amount("EUR", 101))


# --- end to end over gRPC ------------------------------------------------------------------


async def test_reconcile_rpc_reads_the_ledger_with_the_operators_token(sqlite_url: str) -> None:
    async with running_settlement(sqlite_url) as mesh:
        ledger = mesh.ledger
        assert ledger is not None
        bank = await mesh.register(None)
        wallets = [await mesh.register(f"w{i}") for i in range(2)]
        # Three transfers on the bank's account: the adapter has to follow page tokens.
        flows = [
            ("p1", wallets[0], bank, 100),
            ("p2", bank, wallets[1], 30),
            ("p3", wallets[1], wallets[0], 5),
            ("p4", wallets[0], bank, 7),
        ]
        for payment, payer, payee, minor in flows:
            await mesh.reserve(payment, payer.name, payee.name, minor)
            await mesh.commit(payment)
        window = (await mesh.close()).closed_window
        inside = timestamp_pb2.Timestamp()
        inside.FromDatetime(
            window.open_time.ToDatetime() + (window.close_time.ToDatetime() - window.open_time.ToDatetime()) / 2
        )
        for payment, payer, payee, minor in flows:
            ledger.transfers.append(
                ledger_pb2.Transfer(
                    name=f"transfers/{payment}",
                    debit_account=payer.settlement_account,
                    credit_account=payee.settlement_account,
                    amount={"currency_code": "EUR", "minor_units": minor},
                    type=ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
                    state=ledger_pb2.TRANSFER_STATE_POSTED,
                    reference=f"payments/{payment}",
                    create_time=inside,
                )
            )
        request = settlement_admin_pb2.ReconcileSettlementWindowRequest(name=window.name)
        clean = (await mesh.admin.ReconcileSettlementWindow(request, metadata=mesh.operator)).report
        assert clean.clean and not clean.differences and clean.window == window.name
        assert ledger.tokens == {dict(mesh.operator)["authorization"]}

        ledger.transfers[0].amount.minor_units = 99  # tamper with one ledger entry
        # A payment settlement never heard of, on the second page of the bank account's transfers.
        ghost = ledger_pb2.Transfer()
        ghost.CopyFrom(ledger.transfers[3])
        ghost.name, ghost.reference = "transfers/ghost", "payments/ghost"
        ledger.transfers.append(ghost)
        tampered = (await mesh.admin.ReconcileSettlementWindow(request, metadata=mesh.operator)).report
        assert not tampered.clean
        assert [(d.kind, d.payment, d.expected.minor_units, d.actual.minor_units) for d in tampered.differences] == [
            (settlement_admin_pb2.DIFFERENCE_KIND_AMOUNT_MISMATCH, "payments/p1", 100, 99),
            (settlement_admin_pb2.DIFFERENCE_KIND_MISSING_OBLIGATION, "payments/ghost", 0, 7),
        ]


async def test_reconcile_fails_unavailable_when_the_ledger_is_down(sqlite_url: str) -> None:
    with socket.socket() as probe:  # a free port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with running_settlement(sqlite_url, account_target=f"127.0.0.1:{port}") as mesh:
        await mesh.register("w1")
        window = (await mesh.close()).closed_window
        await expect_error(
            mesh.admin.ReconcileSettlementWindow(
                settlement_admin_pb2.ReconcileSettlementWindowRequest(name=window.name), metadata=mesh.operator
            ),
            grpc.StatusCode.UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
        )
        await expect_error(
            mesh.admin.ReconcileSettlementWindow(
                settlement_admin_pb2.ReconcileSettlementWindowRequest(name="settlementWindows/none"),
                metadata=mesh.operator,
            ),
            grpc.StatusCode.NOT_FOUND,
            "RESOURCE_NOT_FOUND",
        )
