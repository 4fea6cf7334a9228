"""A payment mandate's control parameters, checked at payment time (UK Open Banking VRP).

Plain Python over plain values. The creditor, the currency, the per-payment maximum and the
validity depend on the payment alone (``check_payment``); the periodic limits depend on what
the mandate's payments already add up to in each current period (``check_periods``), which
the payment register reads inside the writers' critical section, so payments racing for the
last of a period's allowance cannot both get it.

Periods are whole UTC days (a payment counts in the period of the UTC day it was made, as the
running sums are kept per day), either calendar periods or periods counted from the UTC day
of the mandate's ``valid_from`` (UK OB's PeriodAlignment Calendar / Consent):

- CALENDAR: a day from 00:00 UTC, a week from Monday, a month from the 1st, a half-year from
  1 January or 1 July, a year from 1 January. The customer's own budgeting periods ("at most
  500 a month"), the default a bank statement shows.
- CONSENT: from the anchor day, every 7 or 14 days, or every 1, 6 or 12 months on the anchor's
  day of the month, on the month's last day when it has none (an anchor on the 31st gives
  31 Jan, 28 Feb, 31 Mar: always from the anchor, never chained). Every period is whole, the
  first one included, so a mandate set up on the 30th cannot spend a month's limit twice
  within two days.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass

from meshlib.errors import FailedPrecondition
from meshlib.mandates import Mandate, PeriodicLimit
from meshlib.money import Amount

_DAYS = {"DAY": 1, "WEEK": 7, "FORTNIGHT": 14}
_MONTHS = {"MONTH": 1, "HALF_YEAR": 6, "YEAR": 12}


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def add_months(anchor: dt.date, months: int) -> dt.date:
    """``anchor`` moved by ``months``, on the anchor's day or the month's last day if shorter."""
    index = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return dt.date(year, month, min(anchor.day, calendar.monthrange(year, month)[1]))


def period_window(limit: PeriodicLimit, valid_from: dt.datetime, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The current period of ``limit`` at ``now``: [start, end) at UTC midnights."""
    today = now.astimezone(dt.UTC).date()
    kind = limit.period_type
    if limit.alignment == "CALENDAR" and kind != "FORTNIGHT":  # no calendar fortnight exists
        if kind == "DAY":
            start = today
        elif kind == "WEEK":
            start = today - dt.timedelta(days=today.weekday())
        else:
            step = _MONTHS[kind]
            start = dt.date(today.year, (today.month - 1) // step * step + 1, 1)
        end = start + dt.timedelta(days=_DAYS[kind]) if kind in _DAYS else add_months(start, _MONTHS[kind])
        return _midnight(start), _midnight(end)
    anchor = valid_from.astimezone(dt.UTC).date()
    if kind in _DAYS:
        length = _DAYS[kind]
        start = anchor + dt.timedelta(days=(today - anchor).days // length * length)
        return _midnight(start), _midnight(start + dt.timedelta(days=length))
    step = _MONTHS[kind]
    count = ((today.year - anchor.year) * 12 + today.month - anchor.month) // step
    # The estimate may be one period late (today before the anchor's day in its month).
    while add_months(anchor, count * step) > today:
        count -= 1
    return _midnight(add_months(anchor, count * step)), _midnight(add_months(anchor, (count + 1) * step))


def check_payment(
    mandate: Mandate,
    creditor_account_id: str | None,
    creditor_wallet_partner_id: str | None,
    amount: Amount,
    now: dt.datetime,
) -> None:
    """The mandate's creditor, in its validity, in its currency, at most its per-payment maximum."""
    same_creditor = (
        creditor_account_id == mandate.creditor_account_id
        if mandate.creditor_account_id
        else not creditor_account_id and creditor_wallet_partner_id == mandate.creditor_wallet_partner_id
    )
    if not same_creditor:
        raise FailedPrecondition(
            "a payment under this mandate must pay the mandate's creditor",
            reason="MANDATE_CREDITOR_MISMATCH",
            metadata={"creditor": mandate.creditor_name},
        )
    if not mandate.valid_from <= now < mandate.valid_to:
        raise FailedPrecondition(
            "the mandate is not valid at this time",
            reason="MANDATE_NOT_VALID_NOW",
            metadata={"valid_from": mandate.valid_from.isoformat(), "valid_to": mandate.valid_to.isoformat()},
        )
    if amount.currency != mandate.currency:
        raise FailedPrecondition(
            "the mandate pays in another currency",
            reason="MANDATE_AMOUNT_EXCEEDED",
            metadata={"currency": mandate.currency},
        )
    if amount.minor_units > mandate.maximum_individual_minor:
        raise FailedPrecondition(
            "the amount is above the mandate's maximum per payment",
            reason="MANDATE_AMOUNT_EXCEEDED",
            metadata={"maximum_minor": str(mandate.maximum_individual_minor)},
        )


@dataclass(frozen=True)
class PeriodUsage:
    """One periodic limit in its current period: the window, the limit, what is used."""

    limit: PeriodicLimit
    start: dt.datetime
    end: dt.datetime
    used_minor: int

    @property
    def remaining_minor(self) -> int:
        """What is left of the limit in this period (never negative)."""
        return max(0, self.limit.maximum_minor - self.used_minor)


def windows(mandate: Mandate, now: dt.datetime) -> list[tuple[PeriodicLimit, dt.datetime, dt.datetime]]:
    """Each periodic limit with its current period."""
    return [(limit, *period_window(limit, mandate.valid_from, now)) for limit in mandate.periodic_limits]


def check_periods(mandate: Mandate, amount: Amount, usage: list[PeriodUsage]) -> None:
    """The payment fits in every periodic limit's current period (``usage``: one per limit)."""
    for period in usage:
        if period.used_minor + amount.minor_units > period.limit.maximum_minor:
            raise FailedPrecondition(
                "the payment would exceed one of the mandate's periodic limits",
                reason="MANDATE_PERIOD_LIMIT_EXCEEDED",
                metadata={
                    "period_type": period.limit.period_type,
                    "period_alignment": period.limit.alignment,
                    "period_end": period.end.isoformat(),
                    "remaining_minor": str(period.remaining_minor),
                },
            )
