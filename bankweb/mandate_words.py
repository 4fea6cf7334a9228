"""A payment mandate (VRP, sweeping) in the customer's words: its creditor, limits and
validity before they authorise it, and what it used so far on their dashboard."""

from __future__ import annotations

import datetime as dt

from bankweb.ports import UsageLine
from openbank.common.v1 import mandate_period_pb2, money_pb2
from openbank.identity.v1 import consent_pb2
from openbank.payment.v1 import mandate_pb2

_PERIOD_NAMES = {
    mandate_period_pb2.MANDATE_PERIOD_TYPE_DAY: ("day", "day"),
    mandate_period_pb2.MANDATE_PERIOD_TYPE_WEEK: ("week (from Monday)", "week"),
    mandate_period_pb2.MANDATE_PERIOD_TYPE_FORTNIGHT: ("fortnight", "fortnight"),
    mandate_period_pb2.MANDATE_PERIOD_TYPE_MONTH: ("calendar month", "month"),
    mandate_period_pb2.MANDATE_PERIOD_TYPE_HALF_YEAR: ("half-year (from January and July)", "half-year"),
    mandate_period_pb2.MANDATE_PERIOD_TYPE_YEAR: ("calendar year", "year"),
}


def _money(money: money_pb2.Money) -> str:
    units = abs(money.minor_units)
    return f"{money.currency_code} {'-' if money.minor_units < 0 else ''}{units // 100:,}.{units % 100:02d}"


def _day(stamp: object) -> str:
    return stamp.ToDatetime(tzinfo=dt.UTC).strftime("%d %B %Y")  # type: ignore[attr-defined]


def period_words(period_type: int, alignment: int, valid_from: str) -> str:
    """``per calendar month``, or ``per month, counted from 31 January 2026``."""
    calendar_name, plain_name = _PERIOD_NAMES.get(period_type, ("period", "period"))
    if (
        alignment == mandate_period_pb2.MANDATE_PERIOD_ALIGNMENT_CONSENT
        and period_type != mandate_period_pb2.MANDATE_PERIOD_TYPE_DAY
    ):
        return f"per {plain_name}, counted from {valid_from}"
    return f"per {calendar_name}"


def mandate_lines(consent: consent_pb2.Consent) -> tuple[str, ...]:
    """The mandate of a consent as sentences (empty when the consent is no mandate)."""
    if not consent.HasField("mandate"):
        return ()
    mandate = consent.mandate
    valid_from = _day(mandate.valid_from_time)
    if mandate.WhichOneof("creditor") == "creditor_wallet":
        creditor = "Pays only into your balance with this app (sweeping)"
    else:
        creditor = f"Pays only to the account {mandate.creditor_account.removeprefix('accounts/')}"
    lines = [creditor, f"At most {_money(mandate.maximum_individual_amount)} per payment"]
    for limit in mandate.periodic_limits:
        words = period_words(limit.period_type, limit.period_alignment, valid_from)
        lines.append(f"At most {_money(limit.maximum_amount)} {words}")
    lines.append(f"From {valid_from} until {_day(mandate.valid_to_time)}, without asking you each time")
    return tuple(lines)


def usage_lines(periods: list[mandate_pb2.MandatePeriodUsage], valid_from: str) -> list[UsageLine]:
    """What the mandate used in each periodic limit's current period."""
    return [
        UsageLine(
            period=period_words(p.period_type, p.period_alignment, valid_from),
            used=_money(p.used_amount),
            remaining=_money(p.remaining_amount),
            maximum=_money(p.maximum_amount),
            ends=p.end_time.ToDatetime(tzinfo=dt.UTC),
        )
        for p in periods
    ]
