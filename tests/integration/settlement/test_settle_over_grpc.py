"""Settling a window moves money in the real account ledger: account and settlement in-process
over real gRPC, each on its own database (SQLite and PostgreSQL).

Payments are played by hand: a ledger transfer referencing ``payments/{id}`` and its obligation
reserved and committed, as the payment saga does them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial

import grpc
import pytest

from meshlib.app import start_service
from meshlib.auth.testing import TestIssuer
from meshlib.auth.verifier import static_jwks
from meshlib.errors import Unavailable
from meshlib.grpc_errors import decode_status, error_info
from meshlib.storage import Database, IdempotencyKey, Transactions
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, account_pb2, ledger_pb2, ledger_pb2_grpc
from openbank.settlement.v1 import settlement_admin_pb2, settlement_pb2
from services.account.bootstrap import account_spec
from services.account.settings import AccountSettings
from services.settlement.bootstrap import settlement_spec
from services.settlement.domain.settlement_legs import SettlementLeg
from services.settlement.ledger_client import GrpcLedger
from services.settlement.settings import SettlementSettings
from services.settlement.settle_service import SettleService
from services.settlement.unit_of_work import SettlementUnitOfWork
from tests.integration.account.harness import FakeConsents
from tests.integration.settlement.grpc_support import Mesh, auth, eur, rid
from tests.support.servers import create_database

OPERATOR = ["ledger:admin", "ledger:read", "ledger:write", "settlement:admin", "settlement:read", "settlement:write"]


@pytest.fixture(params=["sqlite", "postgresql"])
async def urls(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """One database per service."""
    if request.param == "sqlite":
        yield {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in ("account", "settlement")}
        return
    server = request.getfixturevalue("postgres_srv")
    yield {n: await create_database(server, f"t_{n}_{uuid.uuid4().hex[:12]}") for n in ("account", "settlement")}


@dataclass
class Bank:
    """Account and settlement running, an operator's stubs, and the accounts opened so far."""

    settlement: Mesh
    account_channel: grpc.aio.Channel
    settlement_url: str
    operator: tuple[tuple[str, str], ...]
    accounts: dict[str, str]

    def __post_init__(self) -> None:
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(self.account_channel)
        self.account_admin = account_admin_pb2_grpc.AccountAdminServiceStub(self.account_channel)

    async def open(self, label: str, *, customer: bool = False, overdraft: int = 0, funds: int = 0) -> str:
        request = account_admin_pb2.OpenAccountRequest(
            request_id=rid("open"),
            customer="customers/c1" if customer else "",
            currency_code="EUR",
            type=account_pb2.ACCOUNT_TYPE_CURRENT if customer else account_pb2.ACCOUNT_TYPE_SETTLEMENT,
            display_name=label,
        )
        if overdraft:
            request.overdraft_limit.CopyFrom(eur(overdraft))
        name = (await self.account_admin.OpenAccount(request, metadata=self.operator)).account.name
        if funds:
            await self.fund(name, funds)
        self.accounts[label] = name
        return name

    async def fund(self, account: str, minor: int) -> None:
        await self.account_admin.FundAccount(
            account_admin_pb2.FundAccountRequest(request_id=rid("fund"), account=account, amount=eur(minor)),
            metadata=self.operator,
        )

    async def register(self, label: str, partner: str | None) -> str:
        request = settlement_admin_pb2.RegisterParticipantRequest(
            request_id=rid("reg"),
            type=settlement_admin_pb2.PARTICIPANT_TYPE_WALLET
            if partner
            else settlement_admin_pb2.PARTICIPANT_TYPE_BANK,
            partner=f"partners/{partner}" if partner else "",
            settlement_account=self.accounts[label],
            net_debit_caps=[settlement_admin_pb2.NetDebitCap(currency_code="EUR", cap=eur(1_000_000))],
        )
        return (await self.settlement.admin.RegisterParticipant(request, metadata=self.operator)).participant.name

    async def transfer(self, debit: str, credit: str, minor: int, reference: str) -> None:
        await self.ledger.CreateTransfer(
            ledger_pb2.CreateTransferRequest(
                request_id=rid("t"),
                debit_account=self.accounts.get(debit, debit),
                credit_account=self.accounts.get(credit, credit),
                amount=eur(minor),
                type=ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
                reference=reference,
            ),
            metadata=self.operator,
        )

    async def pay(self, payment: str, debit: str, credit: str, payer: str, payee: str, minor: int) -> None:
        """A payment as the saga makes it: the ledger moves it, its obligation is committed."""
        await self.transfer(debit, credit, minor, f"payments/{payment}")
        await self.settlement.reserve(payment, payer, payee, minor)
        await self.settlement.commit(payment)

    async def balance(self, label: str) -> int:
        """An account's booked balance, from its posted transfers."""
        account = self.accounts[label]
        listed = await self.ledger.ListTransfers(
            ledger_pb2.ListTransfersRequest(account=account, page_size=500), metadata=self.operator
        )
        posted = [t for t in listed.transfers if t.state == ledger_pb2.TRANSFER_STATE_POSTED]
        credits = sum(t.amount.minor_units for t in posted if t.credit_account == account)
        return credits - sum(t.amount.minor_units for t in posted if t.debit_account == account)

    async def legs(self, window: str) -> list[tuple[str, str, int]]:
        """The ledger transfers referencing the window, as (debit, credit, amount) by label."""
        labels = {name: label for label, name in self.accounts.items()}
        listed = await self.ledger.ListTransfers(
            ledger_pb2.ListTransfersRequest(reference=window, page_size=500), metadata=self.operator
        )
        return sorted(
            (labels[t.debit_account], labels[t.credit_account], t.amount.minor_units) for t in listed.transfers
        )

    async def settle(self, window: str) -> settlement_pb2.SettlementWindow:
        return await self.settlement.settle(window)

    async def reconcile(self, window: str) -> list[tuple[int, str, int, int]]:
        report = (
            await self.settlement.admin.ReconcileSettlementWindow(
                settlement_admin_pb2.ReconcileSettlementWindowRequest(name=window), metadata=self.operator
            )
        ).report
        assert report.clean == (not report.differences)
        return [(d.kind, d.participant, d.expected.minor_units, d.actual.minor_units) for d in report.differences]

    async def totals_balanced(self) -> bool:
        totals = await self.account_admin.GetLedgerTotals(
            account_admin_pb2.GetLedgerTotalsRequest(), metadata=self.operator
        )
        return all(t.balanced and t.net.minor_units == 0 for t in totals.totals)


@pytest.fixture
async def bank(urls: dict[str, str]) -> AsyncIterator[Bank]:
    issuer = TestIssuer()
    jwks = static_jwks(issuer.jwks)
    common = {"port": 0, "token_issuer": issuer.issuer, "token_audience": issuer.audience}
    async with AsyncExitStack() as stack:
        consents = FakeConsents()
        account = await start_service(
            account_spec(lambda _runtime: consents),
            AccountSettings(database_url=urls["account"], service_name="account", **common),
            jwks_fetcher=jwks,
        )
        stack.push_async_callback(account.stop, 0)
        settlement = await start_service(
            settlement_spec(identity=False),
            SettlementSettings(
                database_url=urls["settlement"],
                service_name="settlement",
                account_target=f"127.0.0.1:{account.port}",
                **common,
            ),
            jwks_fetcher=jwks,
        )
        stack.push_async_callback(settlement.stop, 0)
        account_channel = await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{account.port}"))
        settlement_channel = await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{settlement.port}"))
        operator = auth(issuer.token("service:ops", scopes=OPERATOR))
        mesh = Mesh(settlement_channel, issuer)
        mesh.operator = mesh.saga = operator
        yield Bank(mesh, account_channel, urls["settlement"], operator, {})


async def _three_participants(bank: Bank, *, bank_overdraft: int) -> dict[str, str]:
    await bank.open("alice", customer=True, funds=10_000)
    await bank.open("bank", overdraft=bank_overdraft)
    await bank.open("w1")
    await bank.open("w2", overdraft=5_000)  # a wallet that pays out before it settles
    return {
        "bank": await bank.register("bank", None),
        "w1": await bank.register("w1", "p1"),
        "w2": await bank.register("w2", "p2"),
    }


async def test_settling_moves_each_net_in_the_ledger_and_reconciliation_proves_it(bank: Bank) -> None:
    who = await _three_participants(bank, bank_overdraft=1_000_000)
    await bank.pay("top-up-1", "alice", "w1", who["bank"], who["w1"], 2_500)  # a wallet top-up
    await bank.pay("top-up-2", "alice", "w1", who["bank"], who["w1"], 1_000)
    await bank.pay("to-alice", "w2", "alice", who["w2"], who["bank"], 700)  # w2 pays a bank customer
    window = (await bank.settlement.close()).closed_window.name
    assert await bank.reconcile(window) == []

    settled = await bank.settle(window)
    assert settled.state == settlement_pb2.SETTLEMENT_WINDOW_STATE_SETTLED
    # w1 was owed 3 500: paid out of its settlement account; w2 owed 700: paid in. The bank's
    # account moves by the rest: it paid 2 800 net.
    assert await bank.legs(window) == [("bank", "w2", 700), ("w1", "bank", 3_500)]
    assert [await bank.balance(label) for label in ("w1", "w2", "bank")] == [0, 0, 2_800]
    assert await bank.totals_balanced()
    assert await bank.reconcile(window) == []
    for participant in who.values():
        position = await bank.settlement.public.GetPosition(
            settlement_pb2.GetPositionRequest(participant=participant, currency_code="EUR"), metadata=bank.operator
        )
        assert position.position.net_position.minor_units == 0

    # Settling again moves nothing; a transfer the wrong way round on the window is seen.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await bank.settle(window)
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(await bank.legs(window)) == 2
    await bank.transfer("bank", "w1", 3_500, window)  # "pays" w1 again, into its account
    kind = settlement_admin_pb2.DIFFERENCE_KIND_SETTLEMENT_MISMATCH
    # What left each account: the bank's should be its net (-2 800: it paid), w1's its 3 500.
    assert set(await bank.reconcile(window)) == {(kind, who["bank"], -2_800, 700), (kind, who["w1"], 3_500, 0)}


async def test_a_refused_leg_moves_nothing_then_settling_again_posts_once(bank: Bank) -> None:
    who = await _three_participants(bank, bank_overdraft=0)
    await bank.pay("top-up", "alice", "w1", who["bank"], who["w1"], 100)
    await bank.pay("to-alice", "w2", "alice", who["w2"], who["bank"], 700)
    window = (await bank.settlement.close()).closed_window.name
    # w1's payout (100 into the bank's account) is accepted, then w2's pay-in needs 700 of the
    # bank's account, which has 100 and no overdraft: the whole chain is refused.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await bank.settle(window)
    info = error_info(decode_status(refused.value.trailing_metadata()))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info is not None and (info.reason, info.metadata["participant"]) == ("INSUFFICIENT_FUNDS", who["w2"])
    assert await bank.legs(window) == []  # w1's leg did not post either
    assert [await bank.balance(label) for label in ("w1", "w2", "bank")] == [100, -700, 0]
    windows = await bank.settlement.public.ListSettlementWindows(
        settlement_pb2.ListSettlementWindowsRequest(), metadata=bank.operator
    )
    assert {w.name: w.state for w in windows.settlement_windows}[
        window
    ] == settlement_pb2.SETTLEMENT_WINDOW_STATE_CLOSED

    await bank.fund(bank.accounts["bank"], 600)  # the bank tops up its settlement account
    assert (await bank.settle(window)).state == settlement_pb2.SETTLEMENT_WINDOW_STATE_SETTLED
    assert await bank.legs(window) == [("bank", "w2", 700), ("w1", "bank", 100)]
    assert [await bank.balance(label) for label in ("w1", "w2", "bank")] == [0, 0, 0]
    assert await bank.reconcile(window) == []


class LostAnswer:
    """The real ledger adapter, whose answer to the chain is lost after the ledger posted it."""

    def __init__(self, ledger: GrpcLedger) -> None:
        self._ledger = ledger

    async def post_linked(self, request_id: str, legs: Sequence[SettlementLeg]) -> list[str]:
        await self._ledger.post_linked(request_id, legs)
        raise Unavailable("the answer was lost")


async def test_a_crash_between_the_ledger_post_and_the_window_update_is_recovered(bank: Bank) -> None:
    who = await _three_participants(bank, bank_overdraft=1_000_000)
    await bank.pay("top-up", "alice", "w1", who["bank"], who["w1"], 900)
    window = (await bank.settlement.close()).closed_window.name
    # Another settlement process posts the chain, then dies before recording the window.
    database = Database(bank.settlement_url, application_name="settlement-crashing")
    try:
        token = dict(bank.operator)["authorization"].removeprefix("Bearer ")

        async def bearer() -> str:
            return token

        crashing = SettleService(
            Transactions(partial(SettlementUnitOfWork, database)), LostAnswer(GrpcLedger(bank.account_channel, bearer))
        )
        with pytest.raises(Unavailable):
            await crashing.settle(IdempotencyKey("ops", "SettleSettlementWindow", rid("s"), "f"), window.split("/")[-1])
    finally:
        await database.dispose()
    assert await bank.legs(window) == [("w1", "bank", 900)]  # the money moved
    [(kind, *_)] = await bank.reconcile(window)
    assert kind == settlement_admin_pb2.DIFFERENCE_KIND_SETTLEMENT_NOT_RECORDED

    assert (await bank.settle(window)).state == settlement_pb2.SETTLEMENT_WINDOW_STATE_SETTLED
    assert await bank.legs(window) == [("w1", "bank", 900)]  # posted once
    assert [await bank.balance(label) for label in ("w1", "bank")] == [0, 900]
    assert await bank.reconcile(window) == []
    assert await bank.totals_balanced()
