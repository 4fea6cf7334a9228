"""Checks a payment must pass before any money moves: consent and limits (the risk rules,
which read the customer's history below, are domain.risk).

Plain Python over plain values: the service layer gathers the figures (sums, counts) in
its transaction and these functions decide. Each failure is a FAILED_PRECONDITION with the
contract's reason and no payment is created.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from meshlib.auth.consent import ConsentView
from meshlib.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from meshlib.money import Amount

PAYMENT_PERMISSION = "INITIATE_PAYMENTS"
SCHEDULE_PERMISSION = "SCHEDULE_PAYMENTS"


def check_consent(consent: ConsentView, debtor_account_id: str, now: dt.datetime) -> None:
    """Authorised, unexpired, unpaused, grants INITIATE_PAYMENTS and covers the debtor account."""
    consent.require_usable(PAYMENT_PERMISSION, now)
    consent.require_account(debtor_account_id)


def check_schedule_permission(consent: ConsentView, now: dt.datetime) -> None:
    """A future-dated payment or a standing order (and each of its executions) needs
    SCHEDULE_PAYMENTS besides INITIATE_PAYMENTS."""
    consent.require_usable(SCHEDULE_PERMISSION, now)


@dataclass(frozen=True)
class LedgerAccountInfo:
    """What the ledger says about an account: owner, currency, whether it can move money."""

    account_id: str
    customer_id: str | None
    currency: str
    active: bool


def check_debtor_account(info: LedgerAccountInfo, consent: ConsentView, amount: Amount) -> None:
    """The debtor account is the consenting customer's own, open, and in the payment's currency.

    An account of someone else answers NOT_FOUND, exactly as if it did not exist, even when
    its id was (wrongly) put into the consent.
    """
    if consent.customer_id and info.customer_id != consent.customer_id:
        raise NotFound("account not found", metadata={"resource_name": f"accounts/{info.account_id}"})
    if not info.active:
        raise FailedPrecondition("the debtor account cannot make payments", reason="ACCOUNT_NOT_ACTIVE")
    if info.currency != amount.currency:
        raise InvalidArgument(
            FieldViolation("amount.currency_code", f"must be the debtor account's currency ({info.currency})"),
            reason="CURRENCY_MISMATCH",
        )


def period_start(period: str | None, now: dt.datetime) -> dt.datetime:
    """Start (UTC) of the consent's current limit period: calendar day, ISO week or month."""
    day = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "WEEK":
        return day - dt.timedelta(days=day.weekday())
    if period == "MONTH":
        return day.replace(day=1)
    return day


def day_start(now: dt.datetime) -> dt.datetime:
    """Start of the current UTC day (partner daily limits)."""
    return period_start("DAY", now)


def check_consent_limits(consent: ConsentView, amount: Amount, spent_in_period_minor: int) -> None:
    """The consent's per-payment and per-period limits (``spent`` excludes rejected payments)."""
    if consent.limit_currency and consent.limit_currency != amount.currency:
        raise FailedPrecondition(
            "the consent's limits are in another currency",
            reason="CONSENT_LIMIT_EXCEEDED",
            metadata={"limit_currency": consent.limit_currency},
        )
    if consent.per_payment_limit_minor is not None and amount.minor_units > consent.per_payment_limit_minor:
        raise FailedPrecondition(
            "the amount is above the consent's per-payment limit",
            reason="PAYMENT_LIMIT_EXCEEDED",
            metadata={"limit": "consent"},
        )
    if (
        consent.period_limit_minor is not None
        and spent_in_period_minor + amount.minor_units > consent.period_limit_minor
    ):
        raise FailedPrecondition(
            "the payment would exceed the consent's limit for the period",
            reason="CONSENT_LIMIT_EXCEEDED",
            metadata={"limit": "period", "period": consent.period or "DAY"},
        )


@dataclass(frozen=True)
class PartnerLimits:
    """A partner's payment limits (identity's Partner), None for none."""

    partner_id: str
    per_payment_minor: int | None = None
    daily_minor: int | None = None
    currency: str | None = None
    # The partner's risk tier (LOW, MEDIUM, HIGH) from the same registration; "": not known.
    risk_tier: str = ""


def check_partner_limits(limits: PartnerLimits, amount: Amount, spent_today_minor: int) -> None:
    """The partner's per-payment limit (PAYMENT_LIMIT_EXCEEDED) and daily limit (PARTNER_LIMIT_EXCEEDED)."""
    if limits.currency and limits.currency != amount.currency:
        # Limits are kept in one currency; another currency is not comparable: refuse.
        raise FailedPrecondition(
            "the partner's limits are in another currency",
            reason="PARTNER_LIMIT_EXCEEDED",
            metadata={"limit_currency": limits.currency},
        )
    if limits.per_payment_minor is not None and amount.minor_units > limits.per_payment_minor:
        raise FailedPrecondition(
            "the amount is above the partner's per-payment limit",
            reason="PAYMENT_LIMIT_EXCEEDED",
            metadata={"limit": "partner"},
        )
    if limits.daily_minor is not None and spent_today_minor + amount.minor_units > limits.daily_minor:
        raise FailedPrecondition("the payment would exceed the partner's daily limit", reason="PARTNER_LIMIT_EXCEEDED")


@dataclass(frozen=True)
class CustomerHistory:
    """What the velocity rules need to know about the paying customer's recent payments."""

    payments_in_window: dict[int, int] = field(default_factory=dict)  # window seconds -> count
    paid_beneficiary_before: bool = False
    average_amount_minor: float = 0.0
    history_count: int = 0
    total_amount_minor: int = 0  # of the history_count payments (the average's numerator)

    def plus_new_payment(self, amount_minor: int, *, same_currency: bool) -> CustomerHistory:
        """The history once one more payment of the customer, made just now, is recorded.

        It counts in every window; in the count and the average only in the history's own
        currency. It is not settled, so ``paid_beneficiary_before`` stays as it is.
        """
        count, total = self.history_count, self.total_amount_minor
        if same_currency:
            count, total = count + 1, total + amount_minor
        return CustomerHistory(
            payments_in_window={seconds: n + 1 for seconds, n in self.payments_in_window.items()},
            paid_beneficiary_before=self.paid_beneficiary_before,
            average_amount_minor=total / count if count else 0.0,
            history_count=count,
            total_amount_minor=total,
        )
