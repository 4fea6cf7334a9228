"""The credit line's use cases (issue 28 item 2), no gRPC and no SQL.

Partners, under a consent granting CREDIT that covers the account: ask for an offer (the
bank decides from the account's own ledger, services/account/domain/credit_lines.py), read
offers, lines and statements. The bank's customer app, for the customer it authenticated:
show an offer, accept it (the line opens and the account's overdraft limit becomes its limit,
in one transaction), list lines, close one when nothing is owed. The accrual job books each
line's daily interest, one transaction per line and day (the posting and the line's new
state commit together; the posting's id is the line's and the day's), so a crash at any
point leaves either the whole day or nothing, and a rerun books it once.

Every change is one :class:`meshlib.storage.Transactions` run, idempotent by request_id where
the rpc has one, with its audit record.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from meshlib.auth.consent import ConsentLookup, ConsentView
from meshlib.errors import FailedPrecondition, MeshError, NotFound
from meshlib.idempotency import validate_request_id
from meshlib.money import Amount
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size, time_and_id
from meshlib.storage import IdempotencyKey, Transactions
from meshlib.storage.idempotent import Codec
from services.account.domain import credit_lines as rules
from services.account.domain.credit_lines import CreditLine, CreditOffer, LineState, OfferState, Statement
from services.account.domain.credit_offers import CreditRules, Refusal
from services.account.domain.ledger import (
    Account,
    AccountType,
    Transfer,
    TransferRequest,
    TransferType,
    bank_account,
)
from services.account.ledger_service import Clock, UowFactory, utc_now
from services.account.read_service import ConsentCaller
from services.account.transfers import audit_account, create_transfers
from services.account.unit_of_work import AccountUnitOfWork

log = logging.getLogger("services.account.credit")

CREDIT_PERMISSION = "CREDIT"
CUSTOMER_SCOPE = "credit-customer"
PARTNER_SCOPE = "credit-partner"
# Crash tests: the process exits here, inside the transaction, before it commits.
FAILPOINTS = frozenset({"before_accept_commit", "before_accrual_commit"})
Failpoint = Callable[[str], None]
DayClock = Callable[[], dt.date]
# When an accrual day ends, in the clock's time (the time entries are booked at).
DayEnd = Callable[[dt.date], dt.datetime]


def utc_day_end(day: dt.date) -> dt.datetime:
    """The end of a UTC day: midnight after it."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def _no_failpoint(point: str) -> None:
    return None


def _offer_not_found(offer_id: str) -> NotFound:
    return NotFound("credit offer not found", metadata={"resource_name": f"creditOffers/{offer_id}"})


def _line_not_found(line_id: str) -> NotFound:
    return NotFound("credit line not found", metadata={"resource_name": f"creditLines/{line_id}"})


def _offer_data(offer: CreditOffer) -> dict[str, Any]:
    return {
        "id": offer.offer_id,
        "account": offer.account_id,
        "customer": offer.customer_id,
        "partner": offer.partner_id,
        "consent": offer.consent_id,
        "currency": offer.currency,
        "state": offer.state.value,
        "refusal": offer.refusal.value if offer.refusal else None,
        "limit": offer.limit,
        "apr": offer.apr_bps,
        "expires": offer.expires_at.isoformat() if offer.expires_at else None,
        "created": offer.created_at.isoformat(),
        "updated": offer.updated_at.isoformat(),
        "line": offer.line_id,
    }


def _offer_from(data: dict[str, Any]) -> CreditOffer:
    return CreditOffer(
        offer_id=data["id"],
        account_id=data["account"],
        customer_id=data["customer"],
        partner_id=data["partner"],
        consent_id=data["consent"],
        currency=data["currency"],
        state=OfferState(data["state"]),
        refusal=Refusal(data["refusal"]) if data["refusal"] else None,
        limit=data["limit"],
        apr_bps=data["apr"],
        expires_at=dt.datetime.fromisoformat(data["expires"]) if data["expires"] else None,
        created_at=dt.datetime.fromisoformat(data["created"]),
        updated_at=dt.datetime.fromisoformat(data["updated"]),
        line_id=data["line"],
    )


OFFER_CODEC: Codec[CreditOffer] = Codec.json(_offer_data, _offer_from)
# An acceptance or a closing answers with ids only: the replay reads the rows back.
IDS_CODEC: Codec[tuple[str, str]] = Codec.json(list, lambda data: (data[0], data[1]))


@dataclass(frozen=True)
class LineView:
    """A line with its running figures from the ledger."""

    line: CreditLine
    owed: int
    repaid: int
    statement: Statement


class _DaysDue(FailedPrecondition):
    """A day ended between the accrual and the closing (retried; surfaced only if it persists)."""

    def __init__(self) -> None:
        super().__init__("the credit line's interest is being booked; try again", reason="CREDIT_LINE_OWED")


# The ledger refuses the day's posting for now: the limit is reached, or the account is frozen
# by the bank. The charge stays deferred and is booked with a later day's.
_DEFERRING = frozenset({"INSUFFICIENT_FUNDS", "ACCOUNT_NOT_ACTIVE"})


def income_account_id(currency: str) -> str:
    """The bank's interest income account of ``currency`` (one per currency, a fixed id)."""
    return f"interest-income-{currency.lower()}"


class CreditService:
    """Offers, acceptance, lines, statements, closing, and the daily accrual."""

    def __init__(
        self,
        uow: UowFactory,
        consents: ConsentLookup,
        credit_rules: CreditRules,
        *,
        clock: Clock = utc_now,
        accrual_day: DayClock | None = None,
        day_end: DayEnd = utc_day_end,
        failpoint: Failpoint = _no_failpoint,
        lease: dt.timedelta = dt.timedelta(seconds=60),
    ) -> None:
        self._tx = Transactions(uow, clock=clock)
        self._consents = consents
        self._rules = credit_rules
        self._now = clock
        self._day = accrual_day or (lambda: clock().date())
        self._day_end = day_end
        self._failpoint = failpoint
        self._lease = lease
        self._income_ready: set[str] = set()

    # ---- partners ----

    async def _consent(self, caller: ConsentCaller) -> ConsentView:
        consent = await self._consents.get(caller.consent_id, partner_id=caller.partner_id)
        consent.require_usable(CREDIT_PERMISSION, self._now())
        return consent

    async def request_offer(self, caller: ConsentCaller, request_id: str, account_id: str) -> CreditOffer:
        """The bank's decision on one of the consent's accounts (OFFERED or REFUSED)."""
        validate_request_id(request_id)
        consent = await self._consent(caller)
        consent.require_account(account_id)
        key = IdempotencyKey(
            f"{PARTNER_SCOPE}:{caller.partner_id}",
            "RequestCreditOffer",
            request_id,
            filter_fingerprint(account=account_id),
        )

        async def operation(uow: AccountUnitOfWork) -> CreditOffer:
            account = await uow.accounts.get(account_id)
            if account is None or not account.type.is_customer or account.customer_id != consent.customer_id:
                raise NotFound("account not found", metadata={"resource_name": f"accounts/{account_id}"})
            rules.check_eligible(account)
            active = await uow.credit.active_line_of(account_id)
            if active is not None:
                raise rules.line_exists(active.line_id)
            if account.overdraft_limit:
                raise rules.has_overdraft(account_id)
            now = self._now()
            movements = await uow.credit.movements(
                account_id, account.customer_id, now - dt.timedelta(days=self._rules.history_days)
            )
            history = rules.ledger_history(movements, account.current, now, self._rules.history_days)
            offer = rules.decide(
                uuid.uuid4().hex, account, caller.partner_id, caller.consent_id, history, self._rules, now
            )
            await uow.credit.add_offer(offer)
            await uow.credit.add_event(rules.offer_event(offer))
            _audit_offer(uow, "credit.offer", offer)
            return offer

        offer = await self._tx.run(operation, key=key, codec=OFFER_CODEC)
        log.info("credit offer decided", extra={"offer": offer.offer_id, "state": offer.state.value})
        return offer.current(self._now())

    async def get_offer(self, caller: ConsentCaller, offer_id: str) -> CreditOffer:
        """An offer on one of the consent's accounts, made for this partner."""
        consent = await self._consent(caller)
        offer = await self._tx.read(lambda uow: uow.credit.get_offer(offer_id))
        if offer is None or offer.partner_id != caller.partner_id or offer.account_id not in consent.account_ids:
            raise _offer_not_found(offer_id)
        return offer.current(self._now())

    async def get_line(self, caller: ConsentCaller, line_id: str) -> LineView:
        """A line on one of the consent's accounts, with its figures and statement."""
        consent = await self._consent(caller)
        view = await self._view(line_id)
        if view.line.account_id not in consent.account_ids or view.line.customer_id != consent.customer_id:
            raise _line_not_found(line_id)
        return view

    async def _view(self, line_id: str) -> LineView:
        async def read(uow: AccountUnitOfWork) -> LineView:
            line = await uow.credit.get_line(line_id)
            if line is None:
                raise _line_not_found(line_id)
            return await _line_view(uow, line)

        return await self._tx.read(read)

    # ---- the customer, on the bank's pages ----

    async def customer_offer(self, customer_id: str, offer_id: str) -> CreditOffer:
        """One of the customer's offers."""
        offer = await self._tx.read(lambda uow: uow.credit.get_offer(offer_id))
        if offer is None or offer.customer_id != customer_id:
            raise _offer_not_found(offer_id)
        return offer.current(self._now())

    async def accept(self, customer_id: str, request_id: str, offer_id: str) -> tuple[CreditOffer, LineView]:
        """The customer accepts an OFFERED offer: the line opens, the account's limit is set."""
        key = IdempotencyKey(
            f"{CUSTOMER_SCOPE}:{customer_id}", "AcceptCreditOffer", request_id, filter_fingerprint(offer=offer_id)
        )

        async def operation(uow: AccountUnitOfWork) -> tuple[str, str]:
            offer = await uow.credit.get_offer(offer_id, lock=True)
            if offer is None or offer.customer_id != customer_id:
                raise _offer_not_found(offer_id)
            account = (await uow.accounts.lock([offer.account_id])).get(offer.account_id)
            assert account is not None  # offers reference accounts (foreign key)
            now = self._now()
            line = rules.open_line(offer, now, self._day())
            accepted = offer.accepted(line.line_id, now)  # state and expiry first
            rules.check_eligible(account)
            active = await uow.credit.active_line_of(account.id)
            if active is not None:
                raise rules.line_exists(active.line_id)
            if account.overdraft_limit:
                raise rules.has_overdraft(account.id)
            await uow.credit.add_line(line)
            await uow.credit.save_offer(accepted)
            await uow.credit.set_overdraft_limit(account.id, line.limit, now)
            await uow.credit.add_event(rules.offer_event(accepted))
            await uow.credit.add_event(rules.line_event(line, accepted))
            _audit_offer(uow, "credit.offer.accept", accepted)
            _audit_line(uow, "credit.line.open", line)
            self._failpoint("before_accept_commit")
            return offer_id, line.line_id

        _, line_id = await self._tx.run(operation, key=key, codec=IDS_CODEC)
        log.info("credit line opened", extra={"offer": offer_id, "line": line_id})
        offer = await self.customer_offer(customer_id, offer_id)
        return offer, await self._view(line_id)

    async def customer_lines(self, customer_id: str, requested_size: int, token: str) -> tuple[list[LineView], str]:
        """The customer's lines, newest first, with their figures."""
        size = page_size(requested_size)
        filters = filter_fingerprint(customer=customer_id)
        after = time_and_id(decode_page_token(token, filters))

        async def read(uow: AccountUnitOfWork) -> list[LineView]:
            lines = await uow.credit.customer_lines(customer_id, after, size + 1)
            return [await _line_view(uow, line) for line in lines]

        views = await self._tx.read(read)
        next_token = ""
        if len(views) > size:
            views = views[:size]
            last = views[-1].line
            next_token = encode_page_token({"t": last.opened_at.isoformat(), "id": last.line_id}, filters)
        return views, next_token

    async def customer_line(self, customer_id: str, line_id: str) -> LineView:
        """One of the customer's lines with its statement."""
        view = await self._view(line_id)
        if view.line.customer_id != customer_id:
            raise _line_not_found(line_id)
        return view

    async def close(self, customer_id: str, request_id: str, line_id: str) -> LineView:
        """The customer closes an ACTIVE line when nothing is owed; the account's limit is zero again.

        The days already over are accrued first (the job may not have booked them yet): their
        interest is owed, so a line repaid to zero before they were booked still owes it."""
        key = IdempotencyKey(
            f"{CUSTOMER_SCOPE}:{customer_id}", "CloseCreditLine", request_id, filter_fingerprint(line=line_id)
        )

        async def operation(uow: AccountUnitOfWork) -> tuple[str, str]:
            line = await uow.credit.get_line(line_id, lock=True)
            if line is None or line.customer_id != customer_id:
                raise _line_not_found(line_id)
            if line.state is LineState.ACTIVE and line.accrued_through < self._accrued_by():
                raise _DaysDue()
            account = (await uow.accounts.lock([line.account_id]))[line.account_id]
            now = self._now()
            closed = line.closed(account, now)
            await uow.credit.save_line(closed)
            await uow.credit.set_overdraft_limit(account.id, 0, now)
            offer = await uow.credit.get_offer(line.offer_id)
            assert offer is not None  # a line is opened by its offer
            await uow.credit.add_event(rules.line_event(closed, offer))
            _audit_line(uow, "credit.line.close", closed)
            return line_id, ""

        for _ in range(3):  # a day may end between the accrual and the closing
            await self._accrue_through(line_id, customer_id)
            try:
                await self._tx.run(operation, key=key, codec=IDS_CODEC)
                break
            except _DaysDue:
                continue
        else:
            raise _DaysDue()
        log.info("credit line closed", extra={"line": line_id})
        return await self._view(line_id)

    async def _accrue_through(self, line_id: str, customer_id: str) -> None:
        """Book the customer's line's days that are over (none if it is not theirs or closed)."""
        line = await self._tx.read(lambda uow: uow.credit.get_line(line_id))
        through = self._accrued_by()
        if line is None or line.customer_id != customer_id or line.state is not LineState.ACTIVE:
            return
        if line.accrued_through >= through:
            return
        while await self._accrue_day(line_id, through):
            pass

    # ---- the background jobs: offers expiring, the daily accrual ----

    async def expire_offers(self, limit: int = 100) -> int:
        """Mark up to ``limit`` offers past their validity EXPIRED and tell their partners;
        how many. Each in its own transaction, changed only if still OFFERED: once, whichever
        replica's sweep (or the customer's acceptance) gets there first."""
        now = self._now()
        due = await self._tx.read(lambda uow: uow.credit.expiring_offers(now, limit))
        expired = 0
        for offer_id in due:

            async def operation(uow: AccountUnitOfWork, offer_id: str = offer_id) -> bool:
                if not await uow.credit.expire_offer(offer_id, self._now()):
                    return False
                offer = await uow.credit.get_offer(offer_id)
                assert offer is not None
                await uow.credit.add_event(rules.offer_event(offer))
                _audit_offer(uow, "credit.offer.expire", offer)
                return True

            expired += await self._tx.run(operation)
        return expired

    async def accrue_due(self, limit: int = 100) -> int:
        """Book every day due of up to ``limit`` lines (each under its lease); how many days."""
        through = self._accrued_by()
        now = self._now()
        due = await self._tx.read(lambda uow: uow.credit.due_for_accrual(through, now, limit))
        days = 0
        for line_id in due:
            if not await self._tx.run(lambda uow, i=line_id: uow.credit.claim(i, self._now(), self._lease)):
                continue  # another replica holds it
            try:
                while await self._accrue_day(line_id, through):
                    days += 1
            except MeshError:  # a line the ledger refuses must not stop the others' days
                log.exception("credit accrual failed", extra={"line": line_id})
        return days

    def _accrued_by(self) -> dt.date:
        """The last day to accrue now: a day accrues once it is over."""
        return self._day() - dt.timedelta(days=1)

    async def _accrue_day(self, line_id: str, through: dt.date) -> bool:
        """The line's next due day, booked in one transaction; False when none is due."""

        async def operation(uow: AccountUnitOfWork) -> bool:
            line = await uow.credit.get_line(line_id, lock=True)
            if line is None or line.state is not LineState.ACTIVE or line.accrued_through >= through:
                return False
            income = income_account_id(line.currency)
            locked = await uow.accounts.lock([line.account_id, income])
            now = self._now()
            day = line.accrued_through + dt.timedelta(days=1)
            balance = await _end_of_day_balance(uow, locked[line.account_id], self._day_end(day))
            accrual = rules.accrue(line, day, balance, now)
            after = accrual.line
            if accrual.to_book:
                after = await self._book(uow, accrual, income) or after
            # The lease is kept until the last due day is booked (then freed with it).
            last = accrual.day >= through
            if not await uow.credit.save_line(after, accrued_before=line.accrued_through, release=last):
                raise RuntimeError("the line was accrued under our lock")  # never: the row is ours
            self._failpoint("before_accrual_commit")
            return True

        await self._ensure_income_account(await self._currency_of(line_id))
        return await self._tx.run(operation)

    async def _book(self, uow: AccountUnitOfWork, accrual: rules.DayAccrual, income: str) -> CreditLine | None:
        """Post the day's interest; None when the ledger cannot take it now (it stays deferred)."""
        line = accrual.line
        request = TransferRequest(
            transfer_id=accrual.transfer_id,
            debit_account_id=line.account_id,
            credit_account_id=income,
            amount=Amount(line.currency, accrual.to_book),
            type=TransferType.SINGLE_PHASE,
            reference=f"creditLines/{line.line_id}",
            description=f"interest {accrual.day.isoformat()} on credit line",
        )
        applied, _ = await create_transfers(uow, [request], self._now)
        [answer] = applied.answers
        if isinstance(answer, Transfer):
            booked = rules.booked(accrual)
            _audit_line(uow, "credit.line.interest", booked, amount=accrual.to_book, day=accrual.day)
            return booked
        if isinstance(answer, MeshError) and answer.reason in _DEFERRING:
            log.info(
                "interest deferred",
                extra={"line": line.line_id, "amount": accrual.to_book, "reason": answer.reason},
            )
            return None
        raise answer

    async def _currency_of(self, line_id: str) -> str:
        line = await self._tx.read(lambda uow: uow.credit.get_line(line_id))
        if line is None:
            raise _line_not_found(line_id)
        return line.currency

    async def _ensure_income_account(self, currency: str) -> None:
        """The bank's interest income account of ``currency``, opened on first use."""
        account_id = income_account_id(currency)
        if account_id in self._income_ready:
            return

        async def operation(uow: AccountUnitOfWork) -> None:
            if await uow.accounts.get(account_id) is not None:
                return
            now = self._now()
            account = bank_account(
                account_id, currency, AccountType.INTEREST_INCOME, f"Interest income {currency}", now
            )
            await uow.accounts.add(account)
            audit_account(uow, "account.open", account)

        try:
            await self._tx.run(operation)
        except IntegrityError:
            pass  # another replica opened it first
        self._income_ready.add(account_id)


async def _end_of_day_balance(uow: AccountUnitOfWork, account: Account, day_end: dt.datetime) -> int:
    """The booked balance when the day ended: today's, less what was booked since (a run
    catching up on days must not charge them on today's balance). The line's interest booked
    late for earlier days counts as theirs (later days are not booked yet)."""
    later = await uow.credit.movements(account.id, None, day_end)
    return account.current - sum(m.signed for m in later if not m.is_interest)


async def _line_view(uow: AccountUnitOfWork, line: CreditLine) -> LineView:
    account = await uow.accounts.get(line.account_id)
    assert account is not None
    movements = await uow.credit.movements(line.account_id, None, line.opened_at)
    balance = account.current
    if line.closed_at is not None:  # the line's statement ends with it: the balance then
        closed_at = line.closed_at
        balance -= sum(m.signed for m in movements if m.booking_time > closed_at)
        movements = [m for m in movements if m.booking_time <= closed_at]
    statement = rules.statement(movements, balance)
    # Owed: what the balance is below zero, and interest charged that the ledger could not take yet.
    owed = statement.owed + line.deferred if line.state is LineState.ACTIVE else 0
    return LineView(line, owed, statement.repaid, statement)


def _audit_offer(uow: AccountUnitOfWork, action: str, offer: CreditOffer) -> None:
    uow.audit.record(
        action,
        f"creditOffers/{offer.offer_id}",
        outcome=offer.state.value,
        customer_id=offer.customer_id,
        details={
            "account": f"accounts/{offer.account_id}",
            "partner": offer.partner_id,
            "limit_minor": offer.limit,
            "apr_bps": offer.apr_bps,
            "refusal": offer.refusal.value if offer.refusal else "",
            "credit_line": offer.line_id or "",
        },
    )


def _audit_line(uow: AccountUnitOfWork, action: str, line: CreditLine, **extra: object) -> None:
    details: dict[str, object] = {
        "account": f"accounts/{line.account_id}",
        "limit_minor": line.limit,
        "apr_bps": line.apr_bps,
        "accrued_through": line.accrued_through.isoformat(),
    }
    details.update({name: value.isoformat() if isinstance(value, dt.date) else value for name, value in extra.items()})
    uow.audit.record(
        action, f"creditLines/{line.line_id}", outcome=line.state.value, customer_id=line.customer_id, details=details
    )
