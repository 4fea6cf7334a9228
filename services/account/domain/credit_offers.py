"""The bank's credit line offer from the customer's own ledger history (issue 28 item 2; no I/O).

The figures come from the ledger over the rules' window: months with income and the average
monthly income, days the end-of-day balance was below zero, disputes on the customer's
payments. Refusals first (each with its reason); then the first band whose minimum income the
customer reaches gives the limit (its share of the monthly income, rounded down to whole
currency units, capped) and the price (APR in basis points). No band: refused.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BASIS_POINTS = 10_000
MINOR_PER_UNIT = 100  # the mesh's currencies have two minor digits


class Refusal(enum.Enum):
    """Why no offer (stable reasons)."""

    NOT_ENOUGH_INCOME_HISTORY = "NOT_ENOUGH_INCOME_HISTORY"
    OPEN_DISPUTES = "OPEN_DISPUTES"
    OVERDRAWN_RECENTLY = "OVERDRAWN_RECENTLY"
    INCOME_TOO_LOW = "INCOME_TOO_LOW"


@dataclass(frozen=True)
class Band:
    min_monthly_income: int
    limit_share_bps: int
    max_limit: int
    apr_bps: int


@dataclass(frozen=True)
class CreditRules:
    history_days: int
    validity: dt.timedelta
    min_income_months: int
    max_disputes: int
    max_negative_days: int
    bands: Sequence[Band]  # highest minimum income first

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CreditRules:
        """From the rules file's YAML; bands sorted by minimum income, highest first."""
        bands = sorted((Band(**band) for band in data["bands"]), key=lambda b: -b.min_monthly_income)
        if any(b.limit_share_bps < 0 or b.max_limit < 0 or b.apr_bps < 0 for b in bands):
            raise ValueError("credit bands: shares, limits and rates are not negative")
        refuse = data["refuse"]
        return cls(
            history_days=int(data["history_days"]),
            validity=dt.timedelta(days=int(data["validity_days"])),
            min_income_months=int(refuse["min_income_months"]),
            max_disputes=int(refuse["max_disputes"]),
            max_negative_days=int(refuse["max_negative_days"]),
            bands=tuple(bands),
        )


@dataclass(frozen=True)
class LedgerHistory:
    """What the bank knows of the customer from its own ledger over the window."""

    monthly_income: Sequence[int]  # income credited in each month of the window, minor units
    negative_days: int
    disputes: int


@dataclass(frozen=True)
class Offer:
    limit: int  # minor units
    apr_bps: int
    expires_at: dt.datetime


def decide_offer(history: LedgerHistory, rules: CreditRules, now: dt.datetime) -> Offer | Refusal:
    """An offer, or the first refusal that applies."""
    if history.disputes > rules.max_disputes:
        return Refusal.OPEN_DISPUTES
    if history.negative_days > rules.max_negative_days:
        return Refusal.OVERDRAWN_RECENTLY
    months_with_income = [m for m in history.monthly_income if m > 0]
    if len(months_with_income) < rules.min_income_months:
        return Refusal.NOT_ENOUGH_INCOME_HISTORY
    average = sum(history.monthly_income) // max(len(history.monthly_income), 1)
    for band in rules.bands:
        if average >= band.min_monthly_income:
            share = average * band.limit_share_bps // BASIS_POINTS
            limit = min(share - share % MINOR_PER_UNIT, band.max_limit)
            if limit <= 0:
                return Refusal.INCOME_TOO_LOW
            return Offer(limit, band.apr_bps, now + rules.validity)
    return Refusal.INCOME_TOO_LOW
