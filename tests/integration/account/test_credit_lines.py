"""The credit line's use cases on the real stores (SQLite and PostgreSQL) with controlled clocks:
an offer from the ledger, acceptance, drawing below zero to the limit, daily accrual booked once,
repayment, statement, closing (issue 28 item 2)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction
from functools import partial

import pytest

from meshlib.errors import FailedPrecondition, NotFound, PermissionDenied
from meshlib.money import Amount
from meshlib.storage import Database
from meshlib.storage.migrations import upgrade_to_head
from services.account.admin_service import AccountAdminService
from services.account.bootstrap import VERSIONS_DIR
from services.account.credit_events import SqlCreditOutbox
from services.account.credit_service import CreditService, income_account_id
from services.account.domain.credit_interest import accrue_day
from services.account.domain.credit_lines import OfferState
from services.account.domain.credit_offers import Band, CreditRules, Refusal
from services.account.domain.ledger import AccountType, OpenAccountCommand, TransferRequest, TransferType
from services.account.ledger_service import LedgerService
from services.account.read_service import ConsentCaller
from services.account.unit_of_work import AccountUnitOfWork
from tests.integration.account.harness import FakeConsents, SettableClock

START = dt.datetime(2026, 5, 1, 8, tzinfo=dt.UTC)
# One 30-day window, one month of income is enough; 40% of it, capped at 1000.00, at 18.25%.
RULES = CreditRules(
    history_days=30,
    validity=dt.timedelta(days=14),
    min_income_months=1,
    max_disputes=0,
    max_negative_days=0,
    bands=(Band(min_monthly_income=50_000, limit_share_bps=4_000, max_limit=100_000, apr_bps=1_825),),
)
CALLER = ConsentCaller(partner_id="partner-1", consent_id="consent-1")


@dataclass
class Bank:
    credit: CreditService
    ledger: LedgerService
    admin: AccountAdminService
    clock: SettableClock
    day: list[dt.date]
    account: str
    shop: str
    failpoints: list[str]
    outbox: SqlCreditOutbox

    async def pay(self, transfer_id: str, amount: int, *, to_customer: bool = False) -> None:
        debit, credit = (self.shop, self.account) if to_customer else (self.account, self.shop)
        await self.ledger.create_transfer(
            TransferRequest(transfer_id, debit, credit, Amount("EUR", amount), TransferType.SINGLE_PHASE)
        )

    async def balance(self) -> int:
        return (await self.ledger.get_account(self.account)).current

    async def ledger_sums_to_zero(self) -> None:
        totals, _ = await self.admin.ledger_totals()
        for total in totals:
            assert total.debits_posted == total.credits_posted
            assert total.debits_pending == total.credits_pending


@pytest.fixture
async def bank(database_url: str) -> AsyncIterator[Bank]:
    database = Database(database_url)
    await upgrade_to_head(database, VERSIONS_DIR, "account")
    clock = SettableClock(START)
    day = [START.date()]
    uow = partial(AccountUnitOfWork, database)
    ledger = LedgerService(uow, clock=clock)
    admin = AccountAdminService(uow, ledger, clock=clock)
    ids = []
    for name, customer in (("alice", "cust-1"), ("shop", "cust-2")):
        account = await admin.open_account(
            OpenAccountCommand(
                request_id=f"open-{name}",
                customer_id=customer,
                currency="EUR",
                type=AccountType.CURRENT,
                overdraft_limit=None,
                display_name=name,
            )
        )
        ids.append(account.id)
    consents = FakeConsents()
    consents.grant("consent-1", [ids[0]], permissions=frozenset({"CREDIT"}))
    failpoints: list[str] = []

    def failpoint(point: str) -> None:
        if point in failpoints:
            raise RuntimeError(f"crash at {point}")  # the transaction rolls back, as a dead process's

    credit = CreditService(uow, consents, RULES, clock=clock, accrual_day=lambda: day[0], failpoint=failpoint)
    await ledger.fund_account("fund-shop", ids[1], Amount("EUR", 10_000_000), "")
    try:
        yield Bank(credit, ledger, admin, clock, day, ids[0], ids[1], failpoints, SqlCreditOutbox(uow))
    finally:
        await database.dispose()


async def test_no_income_is_a_refusal_with_its_reason_not_an_error(bank: Bank) -> None:
    offer = await bank.credit.request_offer(CALLER, "req-1", bank.account)
    assert offer.state is OfferState.REFUSED and offer.refusal is Refusal.NOT_ENOUGH_INCOME_HISTORY
    assert offer.limit == 0
    # The same request_id answers the same decision; the offer is readable by the partner.
    assert (await bank.credit.request_offer(CALLER, "req-1", bank.account)).offer_id == offer.offer_id
    assert (await bank.credit.get_offer(CALLER, offer.offer_id)).state is OfferState.REFUSED


async def test_the_consent_must_grant_credit_and_cover_the_account(bank: Bank) -> None:
    with pytest.raises(NotFound):
        await bank.credit.request_offer(CALLER, "req-x", bank.shop)
    other = ConsentCaller(partner_id="partner-1", consent_id="consent-2")
    bank.credit._consents.grant("consent-2", [bank.account], permissions=frozenset({"READ_BALANCES"}))  # type: ignore[attr-defined]
    with pytest.raises(PermissionDenied):
        await bank.credit.request_offer(other, "req-y", bank.account)


async def offered(bank: Bank, salary: int = 250_000) -> str:
    await bank.pay("salary-1", salary, to_customer=True)
    bank.clock.now += dt.timedelta(hours=1)
    offer = await bank.credit.request_offer(CALLER, "req-offer", bank.account)
    assert offer.state is OfferState.OFFERED, offer
    return offer.offer_id


async def test_accepted_offer_lets_the_account_go_below_zero_down_to_the_limit_and_no_further(bank: Bank) -> None:
    offer_id = await offered(bank)
    offer = await bank.credit.get_offer(CALLER, offer_id)
    assert offer.limit == 100_000 and offer.apr_bps == 1_825  # 40% of 2500.00 is 1000.00, the cap
    with pytest.raises(FailedPrecondition) as refused:
        await bank.pay("too-much", 250_001)
    assert refused.value.reason == "INSUFFICIENT_FUNDS"
    accepted, view = await bank.credit.accept("cust-1", "accept-1", offer_id)
    assert accepted.state is OfferState.ACCEPTED and view.line.limit == 100_000
    # A replay answers the same line; another customer sees nothing.
    _, again = await bank.credit.accept("cust-1", "accept-1", offer_id)
    assert again.line.line_id == view.line.line_id
    with pytest.raises(NotFound):
        await bank.credit.accept("cust-2", "accept-2", offer_id)
    await bank.pay("draw", 250_000 + 100_000)  # exactly to -1000.00
    assert await bank.balance() == -100_000
    with pytest.raises(FailedPrecondition) as refused:
        await bank.pay("one-more-cent", 1)
    assert refused.value.reason == "INSUFFICIENT_FUNDS"
    # No second offer while the line is open.
    with pytest.raises(FailedPrecondition) as exists:
        await bank.credit.request_offer(CALLER, "req-2", bank.account)
    assert exists.value.reason == "CREDIT_LINE_EXISTS"
    await bank.ledger_sums_to_zero()


async def test_an_expired_offer_cannot_be_accepted(bank: Bank) -> None:
    offer_id = await offered(bank)
    bank.clock.now += dt.timedelta(days=15)
    assert (await bank.credit.get_offer(CALLER, offer_id)).state is OfferState.EXPIRED
    with pytest.raises(FailedPrecondition) as expired:
        await bank.credit.accept("cust-1", "accept-late", offer_id)
    assert expired.value.reason == "CREDIT_OFFER_EXPIRED"
    assert (await bank.ledger.get_account(bank.account)).overdraft_limit == 0


async def test_a_crash_before_the_acceptance_commits_leaves_nothing_and_the_retry_opens_one_line(bank: Bank) -> None:
    offer_id = await offered(bank)
    bank.failpoints.append("before_accept_commit")
    with pytest.raises(RuntimeError):
        await bank.credit.accept("cust-1", "accept-1", offer_id)
    assert (await bank.ledger.get_account(bank.account)).overdraft_limit == 0
    assert (await bank.credit.customer_offer("cust-1", offer_id)).state is OfferState.OFFERED
    bank.failpoints.clear()
    _, view = await bank.credit.accept("cust-1", "accept-1", offer_id)
    lines, _ = await bank.credit.customer_lines("cust-1", 0, "")
    assert [line.line.line_id for line in lines] == [view.line.line_id]


async def test_daily_interest_is_booked_once_per_day_exactly_by_the_rule_and_repayments_reduce_what_is_owed(
    bank: Bank,
) -> None:
    offer_id = await offered(bank)
    _, view = await bank.credit.accept("cust-1", "accept-1", offer_id)
    line_id = view.line.line_id
    await bank.pay("draw", 250_000 + 33_333)  # owes 333.33
    # Nothing is due on the opening day itself.
    assert await bank.credit.accrue_due() == 0
    expected, carry, balance = [], Fraction(0), -33_333
    for _ in range(5):
        accrual = accrue_day(balance, 1_825, carry)
        expected.append(accrual.charged)
        carry, balance = accrual.carry, balance - accrual.charged
    bank.day[0] += dt.timedelta(days=5)
    # A crash in the middle of a day's booking rolls that day back; the rerun books each day once.
    bank.failpoints.append("before_accrual_commit")
    with pytest.raises(RuntimeError):
        await bank.credit.accrue_due()
    bank.failpoints.clear()
    bank.clock.now += dt.timedelta(minutes=2)  # the crashed run's lease runs out
    assert await bank.credit.accrue_due() == 5
    assert await bank.credit.accrue_due() == 0
    assert await bank.balance() == -33_333 - sum(expected)
    income = await bank.ledger.get_account(income_account_id("EUR"))
    assert income.type is AccountType.INTEREST_INCOME and income.current == sum(expected)
    line = await bank.credit.get_line(CALLER, line_id)
    assert line.line.interest_charged == sum(expected) and line.owed == 33_333 + sum(expected)
    assert [m.kind for m in line.statement.lines[:5]] == ["INTEREST"] * 5
    await bank.ledger_sums_to_zero()
    # Closing while owed is refused; a repayment (an ordinary credit) clears it, then it closes.
    with pytest.raises(FailedPrecondition) as owed:
        await bank.credit.close("cust-1", "close-1", line_id)
    assert owed.value.reason == "CREDIT_LINE_OWED"
    await bank.pay("repay", 50_000, to_customer=True)
    after = await bank.credit.get_line(CALLER, line_id)
    assert after.owed == 0 and after.repaid == 33_333 + sum(expected)
    closed = await bank.credit.close("cust-1", "close-2", line_id)
    assert closed.line.state.value == "CLOSED"
    assert (closed.owed, closed.repaid) == (0, 33_333 + sum(expected))
    assert (await bank.ledger.get_account(bank.account)).overdraft_limit == 0
    with pytest.raises(FailedPrecondition) as refused:
        await bank.pay("below-zero-again", 50_000 - 33_333 - sum(expected) + 1)
    assert refused.value.reason == "INSUFFICIENT_FUNDS"
    bank.clock.now += dt.timedelta(seconds=1)
    await bank.pay("after-closing", 1_000, to_customer=True)  # not the closed line's any more
    assert (await bank.credit.customer_line("cust-1", line_id)).repaid == 33_333 + sum(expected)
    await bank.ledger_sums_to_zero()


async def test_interest_the_limit_cannot_take_is_deferred_not_booked_beyond_it(bank: Bank) -> None:
    offer_id = await offered(bank)
    await bank.credit.accept("cust-1", "accept-1", offer_id)
    await bank.pay("draw", 250_000 + 100_000)  # at the limit
    bank.day[0] += dt.timedelta(days=3)
    assert await bank.credit.accrue_due() == 3
    assert await bank.balance() == -100_000  # never below the limit
    [view], _ = await bank.credit.customer_lines("cust-1", 0, "")
    assert view.line.interest_charged == 0 and view.line.deferred > 0
    deferred = view.line.deferred
    await bank.pay("repay", 20_000, to_customer=True)
    bank.day[0] += dt.timedelta(days=1)
    assert await bank.credit.accrue_due() == 1
    [view], _ = await bank.credit.customer_lines("cust-1", 0, "")
    assert view.line.deferred == 0 and view.line.interest_charged > deferred
    await bank.ledger_sums_to_zero()


async def test_each_change_of_an_offer_or_line_is_an_event_for_the_partner_in_the_same_transaction(bank: Bank) -> None:
    refused = await bank.credit.request_offer(CALLER, "req-1", bank.account)
    offer_id = await offered(bank)
    bank.failpoints.append("before_accept_commit")
    with pytest.raises(RuntimeError):
        await bank.credit.accept("cust-1", "accept-1", offer_id)  # rolled back: no event either
    bank.failpoints.clear()
    _, view = await bank.credit.accept("cust-1", "accept-1", offer_id)
    await bank.credit.close("cust-1", "close-1", view.line.line_id)
    rows = await bank.outbox.rows_after(0, 100)
    assert [(r.partner_id, r.consent_id, r.resource, r.state, r.reason, r.related) for r in rows] == [
        ("partner-1", "consent-1", f"creditOffers/{refused.offer_id}", "REFUSED", "NOT_ENOUGH_INCOME_HISTORY", ""),
        ("partner-1", "consent-1", f"creditOffers/{offer_id}", "OFFERED", "", ""),
        ("partner-1", "consent-1", f"creditOffers/{offer_id}", "ACCEPTED", "", f"creditLines/{view.line.line_id}"),
        ("partner-1", "consent-1", f"creditLines/{view.line.line_id}", "ACTIVE", "", f"creditOffers/{offer_id}"),
        ("partner-1", "consent-1", f"creditLines/{view.line.line_id}", "CLOSED", "", f"creditOffers/{offer_id}"),
    ]
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)


async def drawn_then_repaid_two_days_later(bank: Bank) -> tuple[str, list[int]]:
    """Owes 333.33 through May 1 and 2, repaid on May 3 before any accrual ran: the two days'
    interest (at the rule, on -333.33 each) is what those days owe."""
    offer_id = await offered(bank)
    _, view = await bank.credit.accept("cust-1", "accept-1", offer_id)
    await bank.pay("draw", 250_000 + 33_333)
    bank.clock.now = dt.datetime(2026, 5, 3, 10, tzinfo=dt.UTC)
    bank.day[0] = bank.clock.now.date()
    await bank.pay("repay", 33_333, to_customer=True)
    first = accrue_day(-33_333, 1_825)
    second = accrue_day(-33_333 - first.charged, 1_825, first.carry)
    return view.line.line_id, [first.charged, second.charged]


async def test_a_late_accrual_charges_each_day_on_its_own_end_of_day_balance(bank: Bank) -> None:
    _, expected = await drawn_then_repaid_two_days_later(bank)
    assert await bank.credit.accrue_due() == 2
    assert await bank.balance() == -sum(expected) and sum(expected) > 0
    await bank.ledger_sums_to_zero()


async def test_closing_books_the_days_already_over_first_so_their_interest_is_owed(bank: Bank) -> None:
    line_id, expected = await drawn_then_repaid_two_days_later(bank)
    with pytest.raises(FailedPrecondition) as owed:
        await bank.credit.close("cust-1", "close-1", line_id)
    assert (owed.value.reason, owed.value.metadata["owed_minor_units"]) == ("CREDIT_LINE_OWED", str(sum(expected)))
    await bank.pay("repay-interest", sum(expected), to_customer=True)
    closed = await bank.credit.close("cust-1", "close-2", line_id)
    assert closed.line.state.value == "CLOSED" and closed.line.interest_charged == sum(expected)
    assert await bank.credit.accrue_due() == 0
    await bank.ledger_sums_to_zero()


async def test_an_offer_past_its_validity_is_marked_expired_once_and_its_partner_told(bank: Bank) -> None:
    offer_id = await offered(bank)
    assert await bank.credit.expire_offers() == 0  # still valid
    bank.clock.now += dt.timedelta(days=15)
    assert await asyncio.gather(bank.credit.expire_offers(), bank.credit.expire_offers()) in ([1, 0], [0, 1])
    assert await bank.credit.expire_offers() == 0
    rows = await bank.outbox.rows_after(0, 100)
    assert [(r.resource, r.state) for r in rows][-2:] == [
        (f"creditOffers/{offer_id}", "OFFERED"),
        (f"creditOffers/{offer_id}", "EXPIRED"),
    ]
    assert (await bank.credit.get_offer(CALLER, offer_id)).state is OfferState.EXPIRED
    with pytest.raises(FailedPrecondition) as late:
        await bank.credit.accept("cust-1", "accept-late", offer_id)
    assert late.value.reason == "CREDIT_OFFER_EXPIRED"


async def test_a_frozen_accounts_interest_is_deferred_until_it_is_active_again(bank: Bank) -> None:
    offer_id = await offered(bank)
    _, view = await bank.credit.accept("cust-1", "accept-1", offer_id)
    await bank.pay("draw", 250_000 + 33_333)
    await bank.admin.freeze_account("freeze-1", bank.account, "fraud review")
    bank.day[0] += dt.timedelta(days=2)
    assert await bank.credit.accrue_due() == 2  # the ledger refuses postings: deferred, not an error
    assert await bank.balance() == -33_333
    [frozen], _ = await bank.credit.customer_lines("cust-1", 0, "")
    assert frozen.line.accrued_through == bank.day[0] - dt.timedelta(days=1) and frozen.line.deferred > 0
    await bank.admin.unfreeze_account("unfreeze-1", bank.account)
    bank.day[0] += dt.timedelta(days=1)
    assert await bank.credit.accrue_due() == 1
    expected, carry, balance = 0, Fraction(0), -33_333
    for _ in range(3):
        accrual = accrue_day(balance, 1_825, carry)
        expected, carry = expected + accrual.charged, accrual.carry
    line = await bank.credit.get_line(CALLER, view.line.line_id)
    assert line.line.deferred == 0 and line.line.interest_charged == expected
    assert await bank.balance() == -33_333 - expected
    await bank.ledger_sums_to_zero()


async def test_two_offers_accepted_at_once_open_one_line_on_the_account(bank: Bank) -> None:
    first = await offered(bank)
    second = (await bank.credit.request_offer(CALLER, "req-offer-2", bank.account)).offer_id
    outcomes = await asyncio.gather(
        bank.credit.accept("cust-1", "accept-1", first),
        bank.credit.accept("cust-1", "accept-2", second),
        return_exceptions=True,
    )
    opened = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(opened) == 1 and len(refused) == 1, outcomes
    assert isinstance(refused[0], FailedPrecondition) and refused[0].reason in (
        "CREDIT_LINE_EXISTS",
        "CREDIT_ACCOUNT_NOT_ELIGIBLE",
    )
    lines, _ = await bank.credit.customer_lines("cust-1", 0, "")
    assert len(lines) == 1 and (await bank.ledger.get_account(bank.account)).overdraft_limit == lines[0].line.limit
