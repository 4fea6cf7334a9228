"""The credit line on the ledger's own rules (no I/O), property-tested: whatever payments, holds,
posts, voids, repayments and days of interest happen, no debit takes the account below minus
the line's limit, the ledger sums to zero, interest is booked exactly by the daily rule (what
the limit cannot take is deferred, not lost), and the line closes only when nothing is owed."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.errors import FailedPrecondition
from meshlib.money import Amount
from services.account.domain.credit_interest import exact_daily_interest
from services.account.domain.credit_lines import (
    CARRY_DENOMINATOR,
    CreditOffer,
    LineState,
    Movement,
    OfferState,
    accrue,
    booked,
    open_line,
    statement,
)
from services.account.domain.ledger import (
    AccountType,
    Direction,
    Transfer,
    TransferRequest,
    TransferType,
    create_transfer,
    post_transfer,
    void_transfer,
)
from tests.unit.account.samples import sample_account

NOW = dt.datetime(2026, 12, 7, 9, tzinfo=dt.UTC)
LIMIT = 50_000
APR = 1_890


def _offer() -> CreditOffer:
    return CreditOffer(
        "o1",
        "cust",
        "c1",
        "p1",
        "consent",
        "EUR",
        OfferState.OFFERED,
        None,
        LIMIT,
        APR,
        NOW + dt.timedelta(days=1),
        NOW,
        NOW,
    )


operations = st.lists(
    st.one_of(
        st.tuples(st.just("pay"), st.integers(1, 80_000)),
        st.tuples(st.just("hold"), st.integers(1, 80_000)),
        st.tuples(st.just("post"), st.integers(0, 10)),
        st.tuples(st.just("void"), st.integers(0, 10)),
        st.tuples(st.just("repay"), st.integers(1, 60_000)),
        st.tuples(st.just("day"), st.just(0)),
        st.tuples(st.just("day"), st.just(0)),
        # Spend all the limit allows but ``value`` (often less than a day's interest).
        st.tuples(st.just("to_limit"), st.integers(0, 40)),
    ),
    max_size=40,
)


class World:
    def __init__(self, opening_balance: int) -> None:
        self.customer = sample_account("cust", at=NOW, balance=0, overdraft_limit=LIMIT)
        self.shop = sample_account("shop", at=NOW, customer_id="c2")
        self.equity = sample_account("equity", at=NOW, type=AccountType.BANK_EQUITY, customer_id=None)
        self.income = sample_account("income", at=NOW, type=AccountType.INTEREST_INCOME, customer_id=None)
        self.accounts = {a.id: a for a in (self.customer, self.shop, self.equity, self.income)}
        self.line = open_line(_offer(), NOW, NOW.date())
        self.holds: list[Transfer] = []
        self.exact = Fraction(0)  # the exact interest of every day so far
        self.count = 0
        if opening_balance:
            self.move("equity", "cust", opening_balance)

    def move(
        self, debit: str, credit: str, amount: int, kind: TransferType = TransferType.SINGLE_PHASE
    ) -> Transfer | None:
        self.count += 1
        request = TransferRequest(
            f"t{self.count}",
            debit,
            credit,
            Amount("EUR", amount),
            kind,
            dt.timedelta(hours=1) if kind is TransferType.PENDING else None,
        )
        try:
            return create_transfer(request, self.accounts[debit], self.accounts[credit], NOW).transfer
        except FailedPrecondition as refused:
            assert refused.reason == "INSUFFICIENT_FUNDS"
            return None

    def day(self) -> None:
        day = self.line.accrued_through + dt.timedelta(days=1)
        self.exact += exact_daily_interest(self.customer.current, APR)
        accrual = accrue(self.line, day, self.customer.current, NOW)
        self.line = accrual.line
        if accrual.to_book and self.move("cust", "income", accrual.to_book) is not None:
            self.line = booked(accrual)

    def check(self) -> None:
        customer = self.customer
        assert customer.current - customer.debits_pending >= -LIMIT, "below minus the limit"
        assert sum(a.current for a in self.accounts.values()) == 0
        assert sum(a.debits_pending for a in self.accounts.values()) == sum(
            a.credits_pending for a in self.accounts.values()
        )
        assert self.line.interest_charged == self.income.current
        # Booked plus deferred interest is the exact interest, to within the carry (half a unit).
        charged = self.line.interest_charged + self.line.deferred
        assert abs(self.exact - charged) <= Fraction(1, 2)
        assert Fraction(self.line.carry_parts, CARRY_DENOMINATOR) == self.exact - charged


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 100_000), operations)
def test_no_debit_takes_the_account_below_minus_the_limit_and_the_ledger_sums_to_zero(
    opening: int, steps: list[tuple[str, int]]
) -> None:
    world = World(opening)
    world.check()
    for operation, value in steps:
        if operation == "pay":
            world.move("cust", "shop", value)
        elif operation == "hold":
            if (hold := world.move("cust", "shop", value, TransferType.PENDING)) is not None:
                world.holds.append(hold)
        elif operation in ("post", "void") and world.holds:
            hold = world.holds.pop(value % len(world.holds))
            rule = post_transfer if operation == "post" else void_transfer
            rule(hold, world.customer, world.shop, NOW)
        elif operation == "repay":
            world.move("equity", "cust", value)
        elif operation == "to_limit" and world.customer.spendable > value:
            world.move("cust", "shop", world.customer.spendable - value)
        elif operation == "day":
            world.day()
        world.check()
    # The line closes exactly when nothing is owed (booked, held or deferred).
    owed = max(0, world.customer.debits_pending - world.customer.current) + world.line.deferred
    if owed:
        with pytest.raises(FailedPrecondition) as refused:
            world.line.closed(world.customer, NOW)
        assert refused.value.reason == "CREDIT_LINE_OWED"
    else:
        assert world.line.closed(world.customer, NOW).state is LineState.CLOSED


@given(st.lists(st.tuples(st.sampled_from([Direction.DEBIT, Direction.CREDIT]), st.integers(1, 50_000)), max_size=30))
def test_the_statement_repaid_is_what_credits_took_off_what_was_owed(moves: list[tuple[Direction, int]]) -> None:
    movements = [Movement(NOW, direction, amount, f"t{i}", "") for i, (direction, amount) in enumerate(moves)]
    balance_now = sum(m.signed for m in movements)
    result = statement(movements, balance_now)
    owed, repaid = 0, 0
    balance = 0
    for m in movements:
        if m.direction is Direction.CREDIT:
            repaid += min(m.amount, max(0, -balance))
        balance += m.signed
        owed = max(0, -balance)
    assert result.repaid == repaid and result.owed == owed
    assert [line.balance_after for line in reversed(result.lines)] == [
        sum(m.signed for m in movements[: i + 1]) for i in range(len(movements))
    ]
