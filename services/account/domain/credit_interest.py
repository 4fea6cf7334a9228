"""Daily interest on a credit line (issue 28 item 2), in integer minor units with exact rounding.

The rule: each day, on the end-of-day balance when it is below zero, the exact interest is
``owed * apr_bps / (10_000 * 365)`` minor units (a fraction). Add the remainder carried from the
previous days, charge the whole minor units of that sum rounded half-even, carry what is left
(between -1/2 and 1/2 a minor unit) to the next day. So over any run of days the interest
charged differs from the exact sum by less than one minor unit, and never by a growing amount.
A day on a zero or positive balance accrues nothing and keeps the carry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

BASIS_POINTS = 10_000
DAYS_PER_YEAR = 365


@dataclass(frozen=True)
class Accrual:
    """One day's charge (whole minor units, never negative) and the remainder carried on."""

    charged: int
    carry: Fraction


def exact_daily_interest(end_of_day_balance: int, apr_bps: int) -> Fraction:
    """The exact interest of one day, in minor units (zero unless the balance is negative)."""
    if apr_bps < 0:
        raise ValueError("the rate must not be negative")
    if end_of_day_balance >= 0:
        return Fraction(0)
    return Fraction(-end_of_day_balance * apr_bps, BASIS_POINTS * DAYS_PER_YEAR)


def round_half_even(value: Fraction) -> int:
    """The nearest integer, ties to the even one (Python's round on a Fraction does exactly that)."""
    return round(value)


def accrue_day(end_of_day_balance: int, apr_bps: int, carry: Fraction = Fraction(0)) -> Accrual:
    """One day's accrual: the exact interest plus the carry, charged in whole units (half-even)."""
    due = exact_daily_interest(end_of_day_balance, apr_bps) + carry
    if due == carry and end_of_day_balance >= 0:
        return Accrual(0, carry)
    charged = max(round_half_even(due), 0)
    return Accrual(charged, due - charged)


def accrue_days(end_of_day_balances: Iterable[int], apr_bps: int, carry: Fraction = Fraction(0)) -> list[Accrual]:
    """Each day's accrual in order, the carry passed from one day to the next."""
    accruals = []
    for balance in end_of_day_balances:
        accrual = accrue_day(balance, apr_bps, carry)
        accruals.append(accrual)
        carry = accrual.carry
    return accruals
