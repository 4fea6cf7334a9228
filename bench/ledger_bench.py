"""The ledger alone (no gRPC): LedgerService's transfers, and a bare batched writer of the same rows.

The bar compares the ledger's batched path with the least any code could do to store the same
rows in the same store: one transaction per 500 transfers holding an ``executemany`` INSERT of
the transfers, one of their entries (a debit and a credit each), an UPDATE of the four
accounts' totals and the idempotency record, with no reads, no checks and no objects.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from functools import partial
from typing import Any

import sqlalchemy as sa

from bench.loadloop import closed_loop
from bench.procstat import sample_cpu
from bench.ratios import LEDGER_CONCURRENCY
from bench.scenarios import Run, record_loop

LEDGER_BATCH_SIZE = 500  # BatchCreateTransfers' maximum
ACCOUNTS_PER_WORKER = 4


class BareBatchWriter:
    """Writes a batch's rows with nothing but the statements: what the ledger's batch costs at least."""

    def __init__(self, database: Any, accounts: list[str]) -> None:
        from meshlib.idempotency import idempotency_table
        from meshlib.storage import BulkInsert
        from services.account.tables import accounts as accounts_table
        from services.account.tables import entries, transfers

        self._database = database
        self._seq = dict.fromkeys(accounts, 10**6)  # above anything the ledger wrote on these accounts
        self._transfers = BulkInsert(
            transfers,
            (
                "id", "debit_account_id", "credit_account_id", "amount", "currency", "type", "state",
                "timeout_us", "expires_at", "reference", "description", "created_at", "updated_at",
            ),
        )  # fmt: skip
        self._entries = BulkInsert(
            entries,
            (
                "account_id", "seq", "transfer_id", "direction", "amount", "currency", "status",
                "booking_time", "reference", "description",
            ),
        )  # fmt: skip
        keys = idempotency_table(sa.MetaData())
        self._key = BulkInsert(keys, ("scope", "method", "request_id", "fingerprint", "response", "created_at"))
        self._update = (
            accounts_table.update()
            .where(accounts_table.c.id == sa.bindparam("account_id"))
            .values(
                debits_posted=accounts_table.c.debits_posted + sa.bindparam("debits"),
                credits_posted=accounts_table.c.credits_posted + sa.bindparam("credits"),
                last_entry_seq=sa.bindparam("last_entry_seq"),
                updated_at=sa.bindparam("updated_at"),
            )
        )

    async def write(self, pairs: list[tuple[str, str]]) -> int:
        """Store one transfer of 1 minor unit per (debit, credit) pair, in one transaction."""
        from meshlib.ids import time_ordered_id

        now = dt.datetime.now(dt.UTC)
        transfer_rows, entry_rows = [], []
        debits: dict[str, int] = {}
        credits: dict[str, int] = {}
        for debit, credit in pairs:
            transfer_id = time_ordered_id()
            transfer_rows.append(
                (transfer_id, debit, credit, 1, "EUR", "SINGLE_PHASE", "POSTED", None, None, "", "", now, now)
            )
            for account, direction in ((debit, "DEBIT"), (credit, "CREDIT")):
                self._seq[account] += 1
                entry_rows.append(
                    (account, self._seq[account], transfer_id, direction, 1, "EUR", "POSTED", now, "", "")
                )
            debits[debit] = debits.get(debit, 0) + 1
            credits[credit] = credits.get(credit, 0) + 1
        updates = [
            {
                "account_id": account,
                "debits": debits.get(account, 0),
                "credits": credits.get(account, 0),
                "last_entry_seq": self._seq[account],
                "updated_at": now,
            }
            for account in sorted(debits.keys() | credits.keys())  # the ledger's lock order
        ]
        response = os.urandom(24 * len(pairs))  # about the size of the ledger's recorded answer
        key_row = ("ledger", "BatchCreateTransfers", uuid.uuid4().hex, uuid.uuid4().hex, response, now)
        database = self._database
        if database.is_sqlite:
            await database.sqlite_writer.acquire()
        try:
            async with database.engine.begin() as connection:
                await self._transfers.execute(connection, transfer_rows)
                await self._entries.execute(connection, entry_rows)
                await connection.execute(self._update, updates)
                await self._key.execute(connection, [key_row])
        finally:
            if database.is_sqlite:
                database.sqlite_writer.release()
        return len(pairs)


async def ledger(run: Run, store: str, url: str) -> None:
    """Transfers/s of LedgerService on ``url``: one per transaction (information), then batched,
    taking turns with the bare batched writer round after round at each concurrency."""
    from meshlib.ids import time_ordered_id
    from meshlib.money import Amount
    from meshlib.server import freeze_startup_heap
    from meshlib.storage import Database
    from meshlib.storage.migrations import upgrade_to_head
    from services.account.admin_service import AccountAdminService
    from services.account.bootstrap import VERSIONS_DIR
    from services.account.domain.ledger import AccountType, OpenAccountCommand, TransferRequest, TransferType
    from services.account.ledger_service import LedgerService
    from services.account.settings import AccountSettings
    from services.account.unit_of_work import AccountUnitOfWork

    # The service's own pool size, so the figure is what the service process could do.
    database = Database(url, pool_size=AccountSettings().db_pool_size, application_name="bench-ledger")
    try:
        await upgrade_to_head(database, VERSIONS_DIR, "account")
        uow = partial(AccountUnitOfWork, database)
        service = LedgerService(uow)
        admin = AccountAdminService(uow, service)
        workers = max(run.options.concurrency)
        accounts: list[str] = []
        for index in range(
            ACCOUNTS_PER_WORKER * workers * 2
        ):  # the first half the ledger's, the rest the bare writer's
            opened = await admin.open_account(
                OpenAccountCommand(
                    request_id=f"bench-open-{index}",
                    customer_id=None,
                    currency="EUR",
                    type=AccountType.SETTLEMENT,
                    overdraft_limit=None,
                    display_name=f"bench {index}",
                )
            )
            await service.fund_account(f"bench-fund-{index}", opened.id, Amount("EUR", 10**12), "bench funds")
            accounts.append(opened.id)
        bare_accounts = accounts[ACCOUNTS_PER_WORKER * workers :]
        bare = BareBatchWriter(database, bare_accounts)

        def transfer(debit: str, credit: str) -> TransferRequest:
            # Time-ordered ids, as the payment service mints them (and TigerBeetle recommends).
            return TransferRequest(
                transfer_id=time_ordered_id(),
                debit_account_id=debit,
                credit_account_id=credit,
                amount=Amount("EUR", 1),
                type=TransferType.SINGLE_PHASE,
            )

        def pairs(base: int, owned: list[str]) -> list[tuple[str, str]]:
            return [(owned[base + (k % 2)], owned[base + 2 + (k % 2)]) for k in range(LEDGER_BATCH_SIZE)]

        async def single(index: int) -> int:
            base = index * ACCOUNTS_PER_WORKER  # each worker its own accounts: no lock queue between workers
            await service.create_transfer(transfer(accounts[base], accounts[base + 1]))
            return 1

        async def batched(index: int) -> int:
            items = [transfer(debit, credit) for debit, credit in pairs(index * ACCOUNTS_PER_WORKER, accounts)]
            results = await service.batch_create(uuid.uuid4().hex, list(items))
            return sum(1 for result in results if not result.error_reason)

        async def bare_batched(index: int) -> int:
            return await bare.write(pairs(index * ACCOUNTS_PER_WORKER, bare_accounts))

        # As the account service does once it is up (MeshServer.serve_until_stopped): the
        # set-up heap leaves the collector's reach, so full collections walk only new objects.
        freeze_startup_heap()
        pids = {"bench (ledger)": os.getpid()}

        async def point(target: str, operation: Any, concurrency: int, round_number: int) -> None:
            before = sample_cpu(pids)
            result = await closed_loop(
                operation, concurrency=concurrency, warmup=run.options.warmup, duration=run.options.duration
            )
            after = sample_cpu(pids)
            measured = record_loop(run, "ledger", target, concurrency, result, store, before, after, pids, "transfers")
            measured.round = round_number
            run.say(
                f"  ledger/{store}/{target} c{concurrency} #{round_number}: {measured.calls_per_second:.0f} transfers/s"
            )

        for concurrency in run.options.concurrency:
            await point("ledger-single", single, concurrency, 1)
        for concurrency in run.options.concurrency:
            # The bar's concurrency in rounds; the others once, as information.
            rounds = run.options.rounds if concurrency == LEDGER_CONCURRENCY else 1
            for round_number in range(1, rounds + 1):
                await point("ledger-batched", batched, concurrency, round_number)
                await point("bare-batched", bare_batched, concurrency, round_number)
    finally:
        await database.dispose()
