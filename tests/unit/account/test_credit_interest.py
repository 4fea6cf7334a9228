"""The credit line's daily interest rule (services/account/domain/credit_interest.py)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from services.account.domain.credit_interest import (
    Accrual,
    accrue_day,
    accrue_days,
    exact_daily_interest,
    round_half_even,
)

balances = st.integers(min_value=-10_000_000_00, max_value=1_000_000_00)
rates = st.integers(min_value=0, max_value=10_000)


def test_a_worked_example() -> None:
    # 1000.00 owed at 18.25% a year: exactly 50 cents a day.
    assert exact_daily_interest(-100_000, 1_825) == 50
    assert accrue_day(-100_000, 1_825).charged == 50
    # 10.00 owed at 10%: 100 * 1000 / 3650000 = 0.2739.. cents a day -> 0 charged, carried.
    days = accrue_days([-1_000] * 4, 1_000)
    assert [d.charged for d in days] == [0, 1, 0, 0] and days[-1].carry == Fraction(4_000, 3_650) - 1


def test_half_even_ties() -> None:
    assert [round_half_even(Fraction(n, 2)) for n in (1, 3, 5, -1)] == [0, 2, 2, 0]


@given(st.lists(balances, max_size=60), rates)
def test_the_charges_follow_the_exact_sum_within_half_a_unit(days: list[int], apr_bps: int) -> None:
    accruals = accrue_days(days, apr_bps)
    exact = sum((exact_daily_interest(b, apr_bps) for b in days), Fraction(0))
    charged = sum(a.charged for a in accruals)
    assert abs(exact - charged) <= Fraction(1, 2)
    assert all(a.charged >= 0 and isinstance(a.charged, int) for a in accruals)
    if accruals:
        assert accruals[-1].carry == exact - charged


@given(st.integers(min_value=0, max_value=1_000_000_00), rates)
def test_no_interest_on_a_balance_at_or_above_zero(balance: int, apr_bps: int) -> None:
    assert accrue_day(balance, apr_bps, Fraction(1, 3)) == Accrual(0, Fraction(1, 3))  # the carry waits
    assert accrue_day(balance, apr_bps).charged == 0


@given(balances, balances, rates)
def test_owing_more_never_costs_less(first: int, second: int, apr_bps: int) -> None:
    deeper, shallower = min(first, second), max(first, second)
    assert exact_daily_interest(deeper, apr_bps) >= exact_daily_interest(shallower, apr_bps)
