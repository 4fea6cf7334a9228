"""Shared helpers for settlement's integration tests: a migrated store, the service layer on
it, and small builders."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import partial

import sqlalchemy as sa

from meshlib.money import Amount
from meshlib.storage import Database, IdempotencyKey, Transactions
from meshlib.storage.migrations import upgrade_to_head
from services.settlement.bootstrap import VERSIONS_DIR
from services.settlement.domain.participants import NetDebitCap, Participant, ParticipantType
from services.settlement.obligation_batches import ObligationBatches
from services.settlement.participant_service import ParticipantService
from services.settlement.position_service import PositionService
from services.settlement.service_common import SettlementTransactions
from services.settlement.settle_service import SettleService
from services.settlement.tables import metadata
from services.settlement.unit_of_work import SettlementUnitOfWork
from services.settlement.window_service import WindowService
from tests.unit.settlement.fakes import FakeLedger

_keys = itertools.count()


def key(label: str = "r", fingerprint: str = "f", method: str = "Test") -> IdempotencyKey:
    """A fresh idempotency key (or a chosen one, to test replays)."""
    return IdempotencyKey(scope="tester", method=method, request_id=f"{label}-{next(_keys)}", fingerprint=fingerprint)


@dataclass
class Layer:
    """The settlement service layer on one migrated database."""

    database: Database
    transactions: SettlementTransactions
    positions: PositionService
    windows: WindowService
    participants: ParticipantService
    batches: ObligationBatches
    ledger: FakeLedger
    settlement: SettleService

    def uow(self, read_only: bool = True) -> SettlementUnitOfWork:
        """A unit of work for direct checks."""
        return SettlementUnitOfWork(self.database, read_only=read_only)

    async def wallet(self, partner: str, cap: int = 1_000, currency: str = "EUR") -> Participant:
        """Register a wallet with one cap."""
        return await self.participants.register(
            key(), ParticipantType.WALLET, partner, f"accounts/settle-{partner}", [NetDebitCap(currency, cap, 80)]
        )

    async def bank(self, cap: int = 1_000_000, currency: str = "EUR") -> Participant:
        """Register the bank."""
        return await self.participants.register(
            key(), ParticipantType.BANK, None, "accounts/bank-settlement", [NetDebitCap(currency, cap, 80)]
        )

    async def pay(self, payment: str, payer: str, payee: str, minor: int, currency: str = "EUR") -> None:
        """Reserve and commit one obligation."""
        await self.positions.reserve(key(), payment, payer, payee, Amount(currency, minor))
        await self.positions.commit(key(), payment)

    async def wipe(self) -> None:
        """Empty every table and the fake ledger (Hypothesis examples share one database)."""
        self.ledger.transfers.clear()
        self.ledger.chains.clear()
        async with self.database.engine.begin() as connection:
            for table in reversed(metadata.sorted_tables):
                await connection.execute(sa.delete(table))


async def migrated_layer(url: str) -> Layer:
    """Migrate a fresh database and build the service layer on it."""
    database = Database(url, application_name="settlement-test")
    await upgrade_to_head(database, VERSIONS_DIR, "settlement")
    transactions = Transactions(partial(SettlementUnitOfWork, database))
    ledger = FakeLedger()
    return Layer(
        database,
        transactions,
        PositionService(transactions),
        WindowService(transactions),
        ParticipantService(transactions),
        ObligationBatches(transactions),
        ledger,
        SettleService(transactions, ledger),
    )
