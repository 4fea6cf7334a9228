"""Partner-facing, consent-bound reads of a customer's accounts (no gRPC).

Every call asks the live consent (a :class:`~meshlib.auth.consent.ConsentLookup`) whether
it is usable for the rpc's permission and whether it covers the account; an account outside
the consent, or of another customer, is NOT_FOUND. Each call counts towards the consent's
reads_per_day (0 = unlimited), per UTC day, through :class:`ReadQuota`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol

from meshlib.auth.consent import ConsentLookup, ConsentView
from meshlib.errors import InvalidArgument, NotFound, QuotaViolation, ResourceExhausted
from meshlib.money import Amount
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint
from meshlib.storage import Transactions
from services.account.domain.ledger import Account, AccountStatus, Entry
from services.account.ledger_service import Clock, UowFactory, utc_now
from services.account.unit_of_work import AccountUnitOfWork

READ_ACCOUNTS = "READ_ACCOUNTS"
READ_BALANCES = "READ_BALANCES"
READ_TRANSACTIONS = "READ_TRANSACTIONS"
CONFIRM_FUNDS = "CONFIRM_FUNDS"


@dataclass(frozen=True)
class ConsentCaller:
    """Who reads: the partner and the consent its token is bound to."""

    partner_id: str
    consent_id: str


@dataclass(frozen=True)
class AccountPage:
    """One page of ListAccounts."""

    accounts: list[Account]
    next_page_token: str


@dataclass(frozen=True)
class EntryPage:
    """One page of ListTransactions."""

    entries: list[Entry]
    next_page_token: str


def _bad_token() -> InvalidArgument:
    return InvalidArgument.field("page_token", "not a token this server issued", reason="PAGE_TOKEN_INVALID")


def _seconds_to_next_utc_midnight(now: dt.datetime) -> float:
    tomorrow = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return max(1.0, (tomorrow - now).total_seconds())


@dataclass
class _Allowance:
    """Reads this replica may still admit for one consent on one UTC day."""

    day: dt.date
    left: int = 0
    exhausted: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ReadQuota:
    """A consent's reads_per_day, enforced without a database write on every read.

    Each replica claims reads from the durable per-consent, per-day counter in blocks (one
    atomic upsert per block) and spends them from memory, so a read of an unlimited consent
    never writes and a limited one writes once per block. Blocks are a twentieth of the quota
    (1 to 100 reads), so the total admitted across replicas never exceeds reads_per_day; what
    a replica holds unspent when it stops is lost for that day, at most one block.
    """

    MAX_BLOCK = 100

    def __init__(self, uow: UowFactory) -> None:
        self._transactions = Transactions(uow)
        self._allowances: dict[str, _Allowance] = {}

    @classmethod
    def block_size(cls, reads_per_day: int) -> int:
        """How many reads one claim asks for."""
        return max(1, min(cls.MAX_BLOCK, reads_per_day // 20))

    async def take(self, consent: ConsentView, now: dt.datetime) -> None:
        """Admit one read of ``consent`` or raise CONSENT_READS_EXHAUSTED until UTC midnight."""
        limit = consent.reads_per_day
        if not limit:
            return
        day = now.date()
        allowance = self._allowances.get(consent.consent_id)
        if allowance is None or allowance.day != day:
            self._forget_other_days(day)
            allowance = self._allowances[consent.consent_id] = _Allowance(day)
        if allowance.left == 0 and not allowance.exhausted:
            async with allowance.lock:
                if allowance.left == 0 and not allowance.exhausted:  # nobody claimed while we queued
                    granted = await self._claim(consent.consent_id, day, limit)
                    allowance.left += granted
                    allowance.exhausted = granted == 0
        if allowance.left == 0:
            raise _exhausted(consent, now)
        allowance.left -= 1

    async def _claim(self, consent_id: str, day: dt.date, limit: int) -> int:
        block = self.block_size(limit)

        async def operation(uow: AccountUnitOfWork) -> int:
            claimed = await uow.consent_reads.increment(consent_id, day, by=block)
            granted = max(0, min(block, limit - (claimed - block)))
            if granted < block:
                # The day's last, partial block (or nothing left): the counter stops at the quota,
                # so refused reads do not count.
                await uow.consent_reads.increment(consent_id, day, by=granted - block)
            return granted

        return await self._transactions.run(operation)

    def _forget_other_days(self, day: dt.date) -> None:
        for consent_id in [key for key, held in self._allowances.items() if held.day != day]:
            del self._allowances[consent_id]


def _exhausted(consent: ConsentView, now: dt.datetime) -> ResourceExhausted:
    return ResourceExhausted(
        "the consent's reads per day are used up",
        reason="CONSENT_READS_EXHAUSTED",
        retry_after_seconds=_seconds_to_next_utc_midnight(now),
        violations=[QuotaViolation(f"consents/{consent.consent_id}", f"reads_per_day: {consent.reads_per_day}")],
    )


class ReadRecorder(Protocol):
    """Where admitted reads are counted for the customer's dashboard (read_activity.ReadActivity)."""

    def note(self, consent_id: str, permission: str, at: dt.datetime) -> None: ...


class AccountReadService:
    """ListAccounts, GetAccount, GetBalance, ListTransactions, ConfirmFunds within a consent."""

    def __init__(
        self,
        uow: UowFactory,
        consents: ConsentLookup,
        clock: Clock = utc_now,
        quota: ReadQuota | None = None,
        activity: ReadRecorder | None = None,
    ) -> None:
        self._transactions = Transactions(uow, clock=clock)
        self._consents = consents
        self._now = clock
        self._quota = quota or ReadQuota(uow)
        self._activity = activity

    async def _authorise(self, caller: ConsentCaller, permission: str, account_id: str | None = None) -> ConsentView:
        consent = await self._consents.get(caller.consent_id, partner_id=caller.partner_id)
        now = self._now()
        consent.require_usable(permission, now)
        if account_id is not None:
            consent.require_account(account_id)
        await self._quota.take(consent, now)
        if self._activity is not None:
            self._activity.note(consent.consent_id, permission, now)
        return consent

    async def _owned_account(self, consent: ConsentView, account_id: str) -> Account:
        account = await self._transactions.read(lambda uow: uow.accounts.get(account_id))
        if account is None or not _visible(consent, account):
            raise NotFound("account not found", metadata={"resource_name": f"accounts/{account_id}"})
        return account

    async def list_accounts(self, caller: ConsentCaller, size: int, page_token: str) -> AccountPage:
        """The consent's accounts, ordered by id."""
        consent = await self._authorise(caller, READ_ACCOUNTS)
        filters_hash = filter_fingerprint(consent=caller.consent_id)
        cursor = decode_page_token(page_token, filters_hash)
        after = ""
        if cursor is not None:
            after = cursor.get("after")
            if not isinstance(after, str):
                raise _bad_token()
        ids = sorted(account_id for account_id in consent.account_ids if account_id > after)
        page_ids, rest = ids[:size], ids[size:]
        found = await self._transactions.read(lambda uow: uow.accounts.many(page_ids))
        accounts = [found[i] for i in page_ids if i in found and _visible(consent, found[i])]
        next_token = encode_page_token({"after": page_ids[-1]}, filters_hash) if rest else ""
        return AccountPage(accounts, next_token)

    async def get_account(self, caller: ConsentCaller, account_id: str) -> Account:
        """One account of the consent."""
        consent = await self._authorise(caller, READ_ACCOUNTS, account_id)
        return await self._owned_account(consent, account_id)

    async def get_balance(self, caller: ConsentCaller, account_id: str) -> Account:
        """The account with its running totals (the balance is derived from them)."""
        consent = await self._authorise(caller, READ_BALANCES, account_id)
        return await self._owned_account(consent, account_id)

    async def list_transactions(
        self,
        caller: ConsentCaller,
        account_id: str,
        *,
        from_time: dt.datetime | None,
        to_time: dt.datetime | None,
        size: int,
        page_token: str,
    ) -> EntryPage:
        """Statement lines, newest first, keyset-paginated over (booking_time, seq)."""
        if from_time and to_time and from_time > to_time:
            raise InvalidArgument.field("from_booking_time", "must not be after to_booking_time")
        consent = await self._authorise(caller, READ_TRANSACTIONS, account_id)
        await self._owned_account(consent, account_id)
        filters_hash = filter_fingerprint(
            consent=caller.consent_id,
            account=account_id,
            from_time=from_time.isoformat() if from_time else None,
            to_time=to_time.isoformat() if to_time else None,
        )
        cursor = decode_page_token(page_token, filters_hash)
        after = None
        if cursor is not None:
            try:
                after = (dt.datetime.fromisoformat(cursor["t"]), int(cursor["s"]))
            except (KeyError, TypeError, ValueError):
                raise _bad_token() from None
        rows = await self._transactions.read(
            lambda uow: uow.entries.page(account_id, from_time=from_time, to_time=to_time, after=after, limit=size + 1)
        )
        next_token = ""
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1]
            next_token = encode_page_token({"t": last.booking_time.isoformat(), "s": last.seq}, filters_hash)
        return EntryPage(rows, next_token)

    async def confirm_funds(self, caller: ConsentCaller, account_id: str, amount: Amount) -> bool:
        """Whether the account is active and its available balance covers ``amount`` now."""
        consent = await self._authorise(caller, CONFIRM_FUNDS, account_id)
        account = await self._owned_account(consent, account_id)
        if amount.currency != account.currency:
            raise InvalidArgument.field(
                "amount.currency_code", "must be the account's currency", reason="CURRENCY_MISMATCH"
            )
        return account.status is AccountStatus.ACTIVE and account.can_debit(amount.minor_units)


def _visible(consent: ConsentView, account: Account) -> bool:
    """Only customer accounts of the consent's customer exist for a partner."""
    if not account.type.is_customer:
        return False
    return consent.customer_id is None or account.customer_id == consent.customer_id
