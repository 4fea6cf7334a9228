"""Account repositories: they hide SQL from the service layer.

Locking: :meth:`AccountRepository.lock` takes the account rows in sorted id order with
one ``SELECT ... WHERE id IN (...) ORDER BY id FOR UPDATE`` on PostgreSQL, so two transfers
over the same pair of accounts queue instead of deadlocking. SQLite's ``BEGIN IMMEDIATE``
already serialises writers, so there a plain read is enough. A batch of posts locks its
holds first the same way (:meth:`TransferRepository.lock_many`, sorted by id), then their
accounts: the single post's order (transfer row, then accounts).

Writes are set-based: the statements are built once at import (so SQLAlchemy's compiled
cache always hits) and run once per transaction with a list of parameter sets
(``executemany``), whether one transfer or a batch of 500 is written; transfers and
entries go through :class:`meshlib.storage.BulkInsert` (positional rows, no per-row
SQLAlchemy parameter processing). Rows read enum values
through ``_value_`` (the plain attribute behind ``Enum.value``'s descriptor): these loops
run thousands of times per batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.idempotency import upsert
from meshlib.storage import BulkInsert, as_utc
from services.account.domain.ledger import (
    Account,
    AccountStatus,
    AccountType,
    Direction,
    Entry,
    EntryStatus,
    Transfer,
    TransferState,
    TransferType,
)
from services.account.domain.movements import Movement
from services.account.tables import PENDING_ENTRY, account_events, accounts, consent_reads, entries, transfers


def _account(row: Any) -> Account:
    return Account(
        id=row.id,
        number=row.number,
        currency=row.currency,
        type=AccountType(row.type),
        status=AccountStatus(row.status),
        overdraft_limit=row.overdraft_limit,
        customer_id=row.customer_id,
        display_name=row.display_name,
        opened_at=as_utc(row.opened_at),
        updated_at=as_utc(row.updated_at),
        debits_posted=row.debits_posted,
        credits_posted=row.credits_posted,
        debits_pending=row.debits_pending,
        credits_pending=row.credits_pending,
        last_entry_seq=row.last_entry_seq,
    )


def _transfer(row: Any) -> Transfer:
    return Transfer(
        id=row.id,
        debit_account_id=row.debit_account_id,
        credit_account_id=row.credit_account_id,
        amount=row.amount,
        currency=row.currency,
        type=TransferType(row.type),
        state=TransferState(row.state),
        timeout=None if row.timeout_us is None else dt.timedelta(microseconds=row.timeout_us),
        expires_at=as_utc(row.expires_at),
        reference=row.reference,
        description=row.description,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


def _entry(row: Any) -> Entry:
    return Entry(
        account_id=row.account_id,
        seq=row.seq,
        transfer_id=row.transfer_id,
        direction=Direction(row.direction),
        amount=row.amount,
        currency=row.currency,
        status=EntryStatus(row.status),
        booking_time=as_utc(row.booking_time),
        reference=row.reference,
        description=row.description,
    )


_MICROSECOND = dt.timedelta(microseconds=1)

# The hot statements, built once: the same statement object every time is a compiled-cache hit.
_MANY_ACCOUNTS = sa.select(accounts).where(accounts.c.id.in_(sa.bindparam("ids", expanding=True)))
_READ_ACCOUNTS = _MANY_ACCOUNTS.order_by(accounts.c.id)
_LOCK_ACCOUNTS = _READ_ACCOUNTS.with_for_update()
# The two accounts of one transfer: a fixed IN list, so no per-call expansion of the statement
# (SQLAlchemy rewrites an expanding IN with a regular expression on every execution).
_READ_PAIR = (
    sa.select(accounts)
    .where(accounts.c.id.in_([sa.bindparam("first"), sa.bindparam("second")]))
    .order_by(accounts.c.id)
)
_LOCK_PAIR = _READ_PAIR.with_for_update()
_SAVE_ACCOUNT = (
    accounts.update()
    .where(accounts.c.id == sa.bindparam("account_id"))
    .values(
        status=sa.bindparam("status"),
        debits_posted=sa.bindparam("debits_posted"),
        credits_posted=sa.bindparam("credits_posted"),
        debits_pending=sa.bindparam("debits_pending"),
        credits_pending=sa.bindparam("credits_pending"),
        last_entry_seq=sa.bindparam("last_entry_seq"),
        updated_at=sa.bindparam("updated_at"),
    )
)
_GET_TRANSFER = sa.select(transfers).where(transfers.c.id == sa.bindparam("transfer_id"))
_LOCK_TRANSFER = _GET_TRANSFER.with_for_update()
_MANY_TRANSFERS = sa.select(transfers).where(transfers.c.id.in_(sa.bindparam("ids", expanding=True)))
# Sorted like the account locks: two batches over the same holds queue instead of deadlocking.
_READ_TRANSFERS_SORTED = _MANY_TRANSFERS.order_by(transfers.c.id)
_LOCK_TRANSFERS = _READ_TRANSFERS_SORTED.with_for_update()
_SAVE_TRANSFER_STATE = (
    transfers.update()
    .where(transfers.c.id == sa.bindparam("transfer_id"))
    .values(state=sa.bindparam("state"), updated_at=sa.bindparam("updated_at"))
)
_DROP_PENDING_ENTRIES = entries.delete().where(
    entries.c.transfer_id.in_(sa.bindparam("transfer_ids", expanding=True)), PENDING_ENTRY
)
_INSERT_TRANSFERS = BulkInsert(
    transfers,
    (
        "id",
        "debit_account_id",
        "credit_account_id",
        "amount",
        "currency",
        "type",
        "state",
        "timeout_us",
        "expires_at",
        "reference",
        "description",
        "created_at",
        "updated_at",
    ),
)
_INSERT_ENTRIES = BulkInsert(
    entries,
    (
        "account_id",
        "seq",
        "transfer_id",
        "direction",
        "amount",
        "currency",
        "status",
        "booking_time",
        "reference",
        "description",
    ),
)

_INSERT_MOVEMENTS = BulkInsert(
    account_events,
    (
        "account_id",
        "customer_id",
        "direction",
        "amount",
        "currency",
        "masked_number",
        "reference",
        "transfer_id",
        "event_time",
    ),
)


@dataclass(frozen=True)
class CurrencyTotals:
    """Sums over every account of one currency."""

    currency: str
    account_count: int
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int

    @property
    def net(self) -> int:
        """Sum of all current balances; zero when the double-entry invariant holds."""
        return self.credits_posted - self.debits_posted

    @property
    def balanced(self) -> bool:
        """Net zero and matching pending sums."""
        return self.net == 0 and self.debits_pending == self.credits_pending


class AccountRepository:
    """Accounts and their running totals."""

    def __init__(self, connection: AsyncConnection, *, row_locks: bool) -> None:
        self._connection = connection
        self._row_locks = row_locks

    async def get(self, account_id: str) -> Account | None:
        """One account, unlocked (reads)."""
        row = (await self._connection.execute(sa.select(accounts).where(accounts.c.id == account_id))).first()
        return _account(row) if row else None

    async def lock(self, account_ids: Iterable[str]) -> dict[str, Account]:
        """Lock and load accounts in sorted id order (the one lock order of the service).

        One statement whatever the number of accounts: PostgreSQL sorts the rows by id
        before it locks them, so every caller takes the locks in the same order.
        """
        ids = sorted(set(account_ids))
        if not ids:
            return {}
        if len(ids) <= 2:
            pair = _LOCK_PAIR if self._row_locks else _READ_PAIR
            rows = await self._connection.execute(pair, {"first": ids[0], "second": ids[-1]})
        else:
            query = _LOCK_ACCOUNTS if self._row_locks else _READ_ACCOUNTS
            rows = await self._connection.execute(query, {"ids": ids})
        return {row.id: _account(row) for row in rows}

    async def many(self, account_ids: Iterable[str]) -> dict[str, Account]:
        """Accounts by id (one unlocked SELECT), each id once; missing ids are absent from the answer.

        The reads of a page of accounts and of BatchGetLedgerAccounts: a prebuilt statement
        with an expanding IN, so a batch of any size is a compiled-cache hit.
        """
        ids = list(set(account_ids))
        if not ids:
            return {}
        if len(ids) <= 2:  # GetLedgerAccount's batch of one: the fixed pair statement, no expansion
            rows = await self._connection.execute(_READ_PAIR, {"first": ids[0], "second": ids[-1]})
        else:
            rows = await self._connection.execute(_MANY_ACCOUNTS, {"ids": ids})
        return {row.id: _account(row) for row in rows}

    async def equity_id(self, currency: str) -> str | None:
        """The id of the bank equity account of ``currency``, if there is one."""
        return (
            await self._connection.execute(sa.select(accounts.c.id).where(accounts.c.equity_currency == currency))
        ).scalar_one_or_none()

    async def add(self, account: Account) -> None:
        """Store a new account."""
        await self._connection.execute(
            accounts.insert().values(
                id=account.id,
                number=account.number,
                currency=account.currency,
                type=account.type.value,
                status=account.status.value,
                overdraft_limit=account.overdraft_limit,
                customer_id=account.customer_id,
                display_name=account.display_name,
                equity_currency=account.currency if account.type is AccountType.BANK_EQUITY else None,
                debits_posted=account.debits_posted,
                credits_posted=account.credits_posted,
                debits_pending=account.debits_pending,
                credits_pending=account.credits_pending,
                last_entry_seq=account.last_entry_seq,
                opened_at=account.opened_at,
                updated_at=account.updated_at,
            )
        )

    async def save(self, account: Account) -> None:
        """Persist an account's totals, status and entry sequence (the caller holds its lock)."""
        await self.save_many([account])

    async def save_many(self, changed: Iterable[Account]) -> None:
        """Persist several accounts in one ``executemany`` UPDATE (the caller holds their locks)."""
        rows = [
            {
                "account_id": account.id,
                "status": account.status._value_,
                "debits_posted": account.debits_posted,
                "credits_posted": account.credits_posted,
                "debits_pending": account.debits_pending,
                "credits_pending": account.credits_pending,
                "last_entry_seq": account.last_entry_seq,
                "updated_at": account.updated_at,
            }
            for account in changed
        ]
        if rows:
            await self._connection.execute(_SAVE_ACCOUNT, rows)

    async def totals(self) -> list[CurrencyTotals]:
        """Per-currency sums, sorted by currency."""
        rows = await self._connection.execute(
            sa.select(
                accounts.c.currency,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(accounts.c.debits_posted), 0),
                sa.func.coalesce(sa.func.sum(accounts.c.credits_posted), 0),
                sa.func.coalesce(sa.func.sum(accounts.c.debits_pending), 0),
                sa.func.coalesce(sa.func.sum(accounts.c.credits_pending), 0),
            )
            .group_by(accounts.c.currency)
            .order_by(accounts.c.currency)
        )
        return [CurrencyTotals(row[0], int(row[1]), *(int(v) for v in row[2:])) for row in rows]

    async def all(self) -> list[Account]:
        """Every account (tests and reconciliation)."""
        return [_account(row) for row in await self._connection.execute(sa.select(accounts).order_by(accounts.c.id))]


@dataclass(frozen=True)
class TransferFilter:
    """ListTransfers filters (combined with AND)."""

    account_id: str | None = None
    reference: str | None = None
    from_time: dt.datetime | None = None
    to_time: dt.datetime | None = None


class TransferRepository:
    """Transfers; their ids are the clients' request ids."""

    def __init__(self, connection: AsyncConnection, *, row_locks: bool) -> None:
        self._connection = connection
        self._row_locks = row_locks

    async def get(self, transfer_id: str, *, lock: bool = False) -> Transfer | None:
        """One transfer; ``lock`` takes its row lock (post, void, expire)."""
        query = _LOCK_TRANSFER if lock and self._row_locks else _GET_TRANSFER
        row = (await self._connection.execute(query, {"transfer_id": transfer_id})).first()
        return _transfer(row) if row else None

    async def many(self, transfer_ids: Iterable[str]) -> dict[str, Transfer]:
        """The transfers that exist among ``transfer_ids`` (one unlocked SELECT), by id."""
        ids = list(transfer_ids)
        if not ids:
            return {}
        if len(ids) == 1:  # a single rpc's batch of one: no expanding IN to rewrite
            rows = await self._connection.execute(_GET_TRANSFER, {"transfer_id": ids[0]})
        else:
            rows = await self._connection.execute(_MANY_TRANSFERS, {"ids": ids})
        return {row.id: _transfer(row) for row in rows}

    async def lock_many(self, transfer_ids: Iterable[str]) -> dict[str, Transfer]:
        """Lock and load transfers in sorted id order (one statement), by id; missing ids are absent.

        The batch form of ``get(lock=True)``: the transfer rows come before the account rows
        in the service's one lock order.
        """
        ids = sorted(set(transfer_ids))
        if not ids:
            return {}
        if len(ids) == 1:  # a single rpc's batch of one: no expanding IN to rewrite
            query = _LOCK_TRANSFER if self._row_locks else _GET_TRANSFER
            rows = await self._connection.execute(query, {"transfer_id": ids[0]})
        else:
            query = _LOCK_TRANSFERS if self._row_locks else _READ_TRANSFERS_SORTED
            rows = await self._connection.execute(query, {"ids": ids})
        return {row.id: _transfer(row) for row in rows}

    async def add_many(self, new: Iterable[Transfer]) -> None:
        """Store new transfers in one ``executemany`` INSERT."""
        await _INSERT_TRANSFERS.execute(
            self._connection,
            [
                (
                    transfer.id,
                    transfer.debit_account_id,
                    transfer.credit_account_id,
                    transfer.amount,
                    transfer.currency,
                    transfer.type._value_,
                    transfer.state._value_,
                    None if transfer.timeout is None else transfer.timeout // _MICROSECOND,
                    transfer.expires_at,
                    transfer.reference,
                    transfer.description,
                    transfer.created_at,
                    transfer.updated_at,
                )
                for transfer in new
            ],
        )

    async def save_states(self, changed: Iterable[Transfer]) -> None:
        """Persist several state changes in one ``executemany`` UPDATE (the caller holds the rows)."""
        rows = [
            {"transfer_id": transfer.id, "state": transfer.state._value_, "updated_at": transfer.updated_at}
            for transfer in changed
        ]
        if rows:
            await self._connection.execute(_SAVE_TRANSFER_STATE, rows)

    async def due_for_expiry(self, now: dt.datetime, limit: int) -> list[str]:
        """Ids of pending transfers whose timeout has elapsed, oldest deadline first."""
        rows = await self._connection.execute(
            sa.select(transfers.c.id)
            .where(transfers.c.state == TransferState.PENDING.value, transfers.c.expires_at <= now)
            .order_by(transfers.c.expires_at)
            .limit(limit)
        )
        return [row.id for row in rows]

    async def open_holds(self) -> list[Transfer]:
        """Every transfer still in state PENDING (invariant checks)."""
        rows = await self._connection.execute(
            sa.select(transfers).where(transfers.c.state == TransferState.PENDING.value)
        )
        return [_transfer(row) for row in rows]

    async def page(self, filters: TransferFilter, after: tuple[dt.datetime, str] | None, limit: int) -> list[Transfer]:
        """Newest first by (created_at, id); ``after`` is the last row of the previous page."""
        query = sa.select(transfers)
        if filters.account_id:
            query = query.where(
                sa.or_(
                    transfers.c.debit_account_id == filters.account_id,
                    transfers.c.credit_account_id == filters.account_id,
                )
            )
        if filters.reference:
            query = query.where(transfers.c.reference == filters.reference)
        if filters.from_time:
            query = query.where(transfers.c.created_at >= filters.from_time)
        if filters.to_time:
            query = query.where(transfers.c.created_at < filters.to_time)
        if after is not None:
            created_at, transfer_id = after
            query = query.where(
                sa.or_(
                    transfers.c.created_at < created_at,
                    sa.and_(transfers.c.created_at == created_at, transfers.c.id < transfer_id),
                )
            )
        query = query.order_by(transfers.c.created_at.desc(), transfers.c.id.desc()).limit(limit)
        return [_transfer(row) for row in await self._connection.execute(query)]


class EntryRepository:
    """Statement lines per account."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(self, new_entries: list[Entry]) -> None:
        """Store new lines in one ``executemany`` INSERT."""
        await _INSERT_ENTRIES.execute(
            self._connection,
            [
                (
                    e.account_id,
                    e.seq,
                    e.transfer_id,
                    e.direction._value_,
                    e.amount,
                    e.currency,
                    e.status._value_,
                    e.booking_time,
                    e.reference,
                    e.description,
                )
                for e in new_entries
            ],
        )

    async def add_movements(self, movements: list[Movement]) -> None:
        """Write the postings' outbox rows in one ``executemany`` INSERT (none: no statement)."""
        if movements:
            await _INSERT_MOVEMENTS.execute(
                self._connection,
                [
                    (
                        m.account_id,
                        m.customer_id,
                        m.direction._value_,
                        m.amount,
                        m.currency,
                        m.masked_number,
                        m.reference,
                        m.transfer_id,
                        m.booking_time,
                    )
                    for m in movements
                ],
            )

    async def drop_pending_many(self, transfer_ids: Iterable[str]) -> None:
        """Remove the pending lines of several holds in one DELETE."""
        ids = list(transfer_ids)
        if ids:
            await self._connection.execute(_DROP_PENDING_ENTRIES, {"transfer_ids": ids})

    async def page(
        self,
        account_id: str,
        *,
        from_time: dt.datetime | None,
        to_time: dt.datetime | None,
        after: tuple[dt.datetime, int] | None,
        limit: int,
    ) -> list[Entry]:
        """Newest first by (booking_time, seq); ``after`` is the last line of the previous page."""
        query = sa.select(entries).where(entries.c.account_id == account_id)
        if from_time:
            query = query.where(entries.c.booking_time >= from_time)
        if to_time:
            query = query.where(entries.c.booking_time < to_time)
        if after is not None:
            booking_time, seq = after
            query = query.where(
                sa.or_(
                    entries.c.booking_time < booking_time,
                    sa.and_(entries.c.booking_time == booking_time, entries.c.seq < seq),
                )
            )
        query = query.order_by(entries.c.booking_time.desc(), entries.c.seq.desc()).limit(limit)
        return [_entry(row) for row in await self._connection.execute(query)]


class ConsentReadRepository:
    """Reads counted per consent and UTC day (the consent's reads_per_day quota)."""

    def __init__(self, connection: AsyncConnection, dialect: str) -> None:
        self._connection = connection
        self._dialect = dialect

    async def increment(self, consent_id: str, day: dt.date, by: int = 1) -> int:
        """Count ``by`` more reads in one atomic upsert; returns the day's count including them."""
        statement = upsert(self._dialect)(consent_reads).values(consent_id=consent_id, day=day, count=by)
        statement = statement.on_conflict_do_update(
            index_elements=[consent_reads.c.consent_id, consent_reads.c.day],
            set_={"count": consent_reads.c.count + by},
        ).returning(consent_reads.c.count)
        return int((await self._connection.execute(statement)).scalar_one())

    async def purge(self, before: dt.date) -> int:
        """Forget the counters of days before ``before``."""
        result = await self._connection.execute(consent_reads.delete().where(consent_reads.c.day < before))
        return result.rowcount or 0
