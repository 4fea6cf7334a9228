"""Credit offers and lines (issue 28 item 2): their states and rules, plain Python (no I/O).

An offer is the bank's decision on one account (credit_offers.decide_offer over the figures
:func:`ledger_history` takes from the ledger): OFFERED with a limit, a rate and an expiry, or
REFUSED with a reason (an outcome, not an error). The customer accepts an OFFERED offer on the
bank's page: a line opens and the account's overdraft limit becomes the line's limit (the
ledger's one check per debit, ``Account.can_debit``, then lets it go below zero down to the
limit). Interest accrues per day (credit_interest.accrue_day) on what is owed; a day's charge
that the limit cannot take is deferred and charged with the next day's. The customer closes
the line once nothing is owed.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from meshlib.errors import FailedPrecondition
from services.account.domain.credit_interest import BASIS_POINTS, DAYS_PER_YEAR, accrue_day
from services.account.domain.credit_offers import CreditRules, LedgerHistory, Offer, Refusal, decide_offer
from services.account.domain.ledger import Account, AccountStatus, AccountType, Direction

# The carry is a fraction of a minor unit over this denominator (the daily rate's), kept exact
# as an integer count of these parts.
CARRY_DENOMINATOR = BASIS_POINTS * DAYS_PER_YEAR
MONTH = dt.timedelta(days=30)
INTEREST_TRANSFER_PREFIX = "credit-interest-"
# A dispute the bank accepted is refunded to the customer with one of these return reasons
# (payment's RETURN_REASON_BY_CATEGORY); the ledger's statement text names it.
_DISPUTE_REFUND = re.compile(r"^refund \S+ of payment \S+ \((FRAD|UPAY|CUST)\)$")


class OfferState(enum.Enum):
    """OFFERED -> ACCEPTED | EXPIRED; REFUSED is final."""

    OFFERED = "OFFERED"
    REFUSED = "REFUSED"
    ACCEPTED = "ACCEPTED"
    EXPIRED = "EXPIRED"


class LineState(enum.Enum):
    """ACTIVE -> CLOSED."""

    ACTIVE = "ACTIVE"
    CLOSED = "CLOSED"


def _transition(message: str, state: str) -> FailedPrecondition:
    return FailedPrecondition(message, reason="INVALID_STATE_TRANSITION", metadata={"state": state})


_NOT_CURRENT = "credit is offered only on an active current account"


def not_eligible(account_id: str, why: str = _NOT_CURRENT) -> FailedPrecondition:
    """Credit only on an active current account of a customer, without an overdraft of its own."""
    return FailedPrecondition(
        why,
        reason="CREDIT_ACCOUNT_NOT_ELIGIBLE",
        metadata={"account": f"accounts/{account_id}"},
    )


def has_overdraft(account_id: str) -> FailedPrecondition:
    """The bank set the account an overdraft of its own: a line would replace it."""
    return not_eligible(account_id, "the account already has an overdraft the bank set")


def line_exists(line_id: str) -> FailedPrecondition:
    """The account already has an active line."""
    return FailedPrecondition(
        "the account already has an active credit line",
        reason="CREDIT_LINE_EXISTS",
        metadata={"credit_line": f"creditLines/{line_id}"},
    )


def check_eligible(account: Account) -> None:
    """CREDIT_ACCOUNT_NOT_ELIGIBLE unless an active current account of a customer."""
    if account.type is not AccountType.CURRENT or account.status is not AccountStatus.ACTIVE:
        raise not_eligible(account.id)
    if not account.customer_id:
        raise not_eligible(account.id)


@dataclass(frozen=True)
class CreditOffer:
    """The bank's decision on one account."""

    offer_id: str
    account_id: str
    customer_id: str
    partner_id: str
    consent_id: str
    currency: str
    state: OfferState
    refusal: Refusal | None
    limit: int
    apr_bps: int
    expires_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    line_id: str | None = None

    def current(self, now: dt.datetime) -> CreditOffer:
        """As it is at ``now``: an OFFERED offer past its expiry is EXPIRED (computed on read)."""
        if self.state is OfferState.OFFERED and self.expires_at is not None and now >= self.expires_at:
            return replace(self, state=OfferState.EXPIRED)
        return self

    def accepted(self, line_id: str, now: dt.datetime) -> CreditOffer:
        """OFFERED -> ACCEPTED; CREDIT_OFFER_EXPIRED past its expiry."""
        live = self.current(now)
        if live.state is OfferState.EXPIRED:
            raise FailedPrecondition(
                "the offer has expired", reason="CREDIT_OFFER_EXPIRED", metadata={"state": "EXPIRED"}
            )
        if live.state is not OfferState.OFFERED:
            raise _transition("only an offered credit offer can be accepted", live.state.value)
        return replace(self, state=OfferState.ACCEPTED, line_id=line_id, updated_at=now)


def decide(
    offer_id: str,
    account: Account,
    partner_id: str,
    consent_id: str,
    history: LedgerHistory,
    rules: CreditRules,
    now: dt.datetime,
) -> CreditOffer:
    """The offer the rules make on ``account`` from its history (eligibility checked before)."""
    assert account.customer_id
    decided = decide_offer(history, rules, now)
    common = dict(
        offer_id=offer_id,
        account_id=account.id,
        customer_id=account.customer_id,
        partner_id=partner_id,
        consent_id=consent_id,
        currency=account.currency,
        created_at=now,
        updated_at=now,
    )
    if isinstance(decided, Offer):
        return CreditOffer(
            **common,  # type: ignore[arg-type]
            state=OfferState.OFFERED,
            refusal=None,
            limit=decided.limit,
            apr_bps=decided.apr_bps,
            expires_at=decided.expires_at,
        )
    return CreditOffer(
        **common,  # type: ignore[arg-type]
        state=OfferState.REFUSED,
        refusal=decided,
        limit=0,
        apr_bps=0,
        expires_at=None,
    )


@dataclass(frozen=True)
class CreditLine:
    """An accepted offer's line on its account, with its accrual state."""

    line_id: str
    account_id: str
    customer_id: str
    offer_id: str
    currency: str
    state: LineState
    limit: int
    apr_bps: int
    # The last accrual day whose interest is booked (or deferred); the day before opening at first.
    accrued_through: dt.date
    # Exact interest not yet charged, in parts of CARRY_DENOMINATOR of a minor unit (|carry| <= 1/2 unit).
    carry_parts: int
    # Whole minor units charged but not booked: the limit could not take them yet.
    deferred: int
    interest_charged: int
    opened_at: dt.datetime
    updated_at: dt.datetime
    closed_at: dt.datetime | None = None

    @property
    def carry(self) -> Fraction:
        """The carried remainder, in minor units."""
        return Fraction(self.carry_parts, CARRY_DENOMINATOR)

    def closed(self, account: Account, now: dt.datetime) -> CreditLine:
        """ACTIVE -> CLOSED, only when nothing is owed (booked balance not negative, no debit
        held, no deferred interest). A carry under one minor unit is forgiven."""
        if self.state is not LineState.ACTIVE:
            raise _transition("only an active credit line can be closed", self.state.value)
        owed = max(0, account.debits_pending - account.current) + self.deferred
        if owed:
            raise FailedPrecondition(
                "the credit line cannot close while something is owed",
                reason="CREDIT_LINE_OWED",
                metadata={"owed_minor_units": str(owed)},
            )
        return replace(self, state=LineState.CLOSED, closed_at=now, updated_at=now, carry_parts=0)


def open_line(offer: CreditOffer, now: dt.datetime, accrual_day: dt.date) -> CreditLine:
    """The line an accepted offer opens; its first accrual day is ``accrual_day``."""
    return CreditLine(
        line_id=uuid.uuid4().hex,
        account_id=offer.account_id,
        customer_id=offer.customer_id,
        offer_id=offer.offer_id,
        currency=offer.currency,
        state=LineState.ACTIVE,
        limit=offer.limit,
        apr_bps=offer.apr_bps,
        accrued_through=accrual_day - dt.timedelta(days=1),
        carry_parts=0,
        deferred=0,
        interest_charged=0,
        opened_at=now,
        updated_at=now,
    )


@dataclass(frozen=True)
class DayAccrual:
    """One day's accrual of a line: what to book now, and the line after it."""

    day: dt.date
    to_book: int  # whole minor units to debit now (this day's charge plus what was deferred)
    line: CreditLine

    @property
    def transfer_id(self) -> str:
        """The posting's id: one per line and day, so a rerun can never book it twice."""
        return f"{INTEREST_TRANSFER_PREFIX}{self.line.line_id}-{self.day:%Y%m%d}"


def accrue(line: CreditLine, day: dt.date, balance: int, now: dt.datetime) -> DayAccrual:
    """The line's accrual for ``day`` (the next one due) on the account's booked ``balance``."""
    assert day == line.accrued_through + dt.timedelta(days=1), "days accrue in order, once each"
    accrual = accrue_day(balance, line.apr_bps, line.carry)
    carry_parts = accrual.carry * CARRY_DENOMINATOR
    assert carry_parts.denominator == 1
    to_book = accrual.charged + line.deferred
    after = replace(line, accrued_through=day, carry_parts=int(carry_parts), deferred=to_book, updated_at=now)
    return DayAccrual(day, to_book, after)


def booked(accrual: DayAccrual) -> CreditLine:
    """The line once the day's posting went through."""
    line = accrual.line
    return replace(line, deferred=0, interest_charged=line.interest_charged + accrual.to_book)


# ---- the partner's events ----


@dataclass(frozen=True)
class CreditEvent:
    """An offer's or a line's change of state, for the partner that asked for the offer."""

    partner_id: str
    consent_id: str
    kind: str  # OFFER | LINE
    resource: str
    state: str
    reason: str
    account_id: str
    related: str
    event_time: dt.datetime


def offer_event(offer: CreditOffer) -> CreditEvent:
    """The partner's event of an offer's state."""
    return CreditEvent(
        partner_id=offer.partner_id,
        consent_id=offer.consent_id,
        kind="OFFER",
        resource=f"creditOffers/{offer.offer_id}",
        state=offer.state.value,
        reason=offer.refusal.value if offer.refusal else "",
        account_id=offer.account_id,
        related=f"creditLines/{offer.line_id}" if offer.line_id else "",
        event_time=offer.updated_at,
    )


def line_event(line: CreditLine, offer: CreditOffer) -> CreditEvent:
    """The partner's event of a line's state (the partner that asked for its offer)."""
    return CreditEvent(
        partner_id=offer.partner_id,
        consent_id=offer.consent_id,
        kind="LINE",
        resource=f"creditLines/{line.line_id}",
        state=line.state.value,
        reason="",
        account_id=line.account_id,
        related=f"creditOffers/{offer.offer_id}",
        event_time=line.updated_at,
    )


# ---- figures from the ledger ----


@dataclass(frozen=True)
class Movement:
    """One booked entry of the account, with what the offer and the statement need of it."""

    booking_time: dt.datetime
    direction: Direction
    amount: int
    transfer_id: str
    description: str
    # The other side of the transfer is an account of the same customer (not income).
    own_transfer: bool = False

    @property
    def is_interest(self) -> bool:
        """A day's interest booked by the line."""
        return self.transfer_id.startswith(INTEREST_TRANSFER_PREFIX)

    @property
    def signed(self) -> int:
        """The change to the booked balance."""
        return self.amount if self.direction is Direction.CREDIT else -self.amount


def ledger_history(movements: Sequence[Movement], balance_now: int, now: dt.datetime, days: int) -> LedgerHistory:
    """The offer's figures over the last ``days`` days (movements in booking order).

    Income: credits from outside the customer's own accounts, per 30-day period counted back
    from now (dispute refunds are not income). Negative days: days whose end-of-day booked
    balance was below zero (rebuilt backwards from today's). Disputes: refunds of disputes
    the bank accepted, which the ledger books with the dispute's return reason.
    """
    since = now - dt.timedelta(days=days)
    periods = max(1, days // 30)
    income = [0] * periods
    disputes = 0
    for movement in movements:
        if movement.booking_time < since or movement.direction is not Direction.CREDIT:
            continue
        if _DISPUTE_REFUND.match(movement.description):
            disputes += 1
            continue
        if movement.own_transfer:
            continue
        period = min(periods - 1, int((now - movement.booking_time) / MONTH))
        income[periods - 1 - period] += movement.amount
    return LedgerHistory(income, _negative_days(movements, balance_now, now, days), disputes)


def _negative_days(movements: Sequence[Movement], balance_now: int, now: dt.datetime, days: int) -> int:
    """Days of the window whose end-of-day balance was below zero (today's balance counts as today's)."""
    by_day: dict[dt.date, int] = {}
    for movement in movements:
        day = movement.booking_time.date()
        by_day[day] = by_day.get(day, 0) + movement.signed
    balance, negative, day = balance_now, 0, now.date()
    for _ in range(days):
        if balance < 0:
            negative += 1
        balance -= by_day.get(day, 0)  # the end of the previous day
        day -= dt.timedelta(days=1)
    return negative


@dataclass(frozen=True)
class StatementLine:
    """A movement as the line's statement shows it."""

    movement: Movement
    kind: str  # DEBIT | CREDIT | INTEREST
    balance_after: int


@dataclass(frozen=True)
class Statement:
    """A line's totals and its movements, newest first."""

    owed: int
    repaid: int
    lines: list[StatementLine]


def statement(movements: Iterable[Movement], balance_now: int) -> Statement:
    """The movements since the line opened (in booking order) with their running balance.

    Repaid: the part of each credit that reduced what was owed (the balance below zero).
    """
    ordered = list(movements)
    balance = balance_now - sum(m.signed for m in ordered)
    repaid, lines = 0, []
    for movement in ordered:
        owed_before = max(0, -balance)
        balance += movement.signed
        if movement.direction is Direction.CREDIT:
            repaid += min(movement.amount, owed_before)
        kind = "INTEREST" if movement.is_interest else movement.direction.value
        lines.append(StatementLine(movement, kind, balance))
    lines.reverse()
    return Statement(max(0, -balance_now), repaid, lines)
