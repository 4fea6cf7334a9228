"""Payment mandates (UK Open Banking VRP): the rules a mandate must meet when the partner asks.

A mandate is fixed when its consent is created and never widened: the customer sees exactly
these parameters before authorising, and can only revoke them (or let them expire).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from meshlib.errors import FieldCollector
from meshlib.mandates import ALIGNMENTS, MANDATE_TYPES, PERIOD_TYPES, Mandate, PeriodicLimit
from meshlib.money import amount_from_fields
from meshlib.names import ID_PATTERN

# What a mandate's consent may grant: paying under it and asking whether funds are there.
MANDATE_PERMISSIONS = frozenset({"INITIATE_PAYMENTS", "CONFIRM_FUNDS"})
REQUIRED_PERMISSION = "INITIATE_PAYMENTS"
# There is no calendar fortnight (UK OB: the ISO calendar defines none).
_CONSENT_ALIGNED_ONLY = frozenset({"FORTNIGHT"})


@dataclass(frozen=True)
class PeriodicLimitRequest:
    """One requested periodic limit, unvalidated (names without their enum prefixes)."""

    period_type: str
    alignment: str
    maximum: tuple[str, int] | None


@dataclass(frozen=True)
class MandateRequest:
    """The mandate of a CreateConsent, unvalidated."""

    mandate_type: str
    creditor_account: str | None  # the id of accounts/{id}, as given
    creditor_wallet: str | None  # the id of partners/{id}, as given
    maximum_individual: tuple[str, int] | None
    periodic_limits: tuple[PeriodicLimitRequest, ...] = ()
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None


def new_mandate(
    request: MandateRequest, partner_id: str, expires_at: dt.datetime | None, now: dt.datetime, errors: FieldCollector
) -> Mandate | None:
    """The validated mandate (violations, named ``mandate.<field>``, go to ``errors``)."""
    ok = errors.check(request.mandate_type in MANDATE_TYPES, "mandate.type", "must be SWEEPING or OTHER")
    if request.creditor_account is not None:
        ok &= errors.check(
            bool(ID_PATTERN.match(request.creditor_account)), "mandate.creditor_account", "must be accounts/{id}"
        )
    elif request.creditor_wallet is not None:
        ok &= errors.check(
            request.creditor_wallet == partner_id, "mandate.creditor_wallet", "must be the calling partner's own wallet"
        )
    else:
        ok = errors.check(False, "mandate.creditor_account", "a creditor (account or wallet) is required")
    maximum = None
    if request.maximum_individual is None:
        ok = errors.check(False, "mandate.maximum_individual_amount", "required")
    else:
        maximum = amount_from_fields(*request.maximum_individual, "mandate.maximum_individual_amount", errors)
        ok &= maximum is not None
    limits: list[PeriodicLimit] = []
    seen: set[str] = set()
    for index, wanted in enumerate(request.periodic_limits):
        field = f"mandate.periodic_limits[{index}]"
        ok &= errors.check(wanted.period_type in PERIOD_TYPES, f"{field}.period_type", f"one of {PERIOD_TYPES}")
        ok &= errors.check(wanted.alignment in ALIGNMENTS, f"{field}.period_alignment", "CALENDAR or CONSENT")
        ok &= errors.check(
            not (wanted.period_type in _CONSENT_ALIGNED_ONLY and wanted.alignment == "CALENDAR"),
            f"{field}.period_alignment",
            "a fortnight is consent-aligned only",
        )
        ok &= errors.check(wanted.period_type not in seen, f"{field}.period_type", "at most one limit per period type")
        seen.add(wanted.period_type)
        amount = None
        if wanted.maximum is None:
            ok = errors.check(False, f"{field}.maximum_amount", "required")
        else:
            amount = amount_from_fields(*wanted.maximum, f"{field}.maximum_amount", errors)
            ok &= amount is not None
        if amount is not None and maximum is not None:
            ok &= errors.check(
                amount.currency == maximum.currency,
                f"{field}.maximum_amount.currency_code",
                "must be the currency of maximum_individual_amount",
            )
        if amount is not None:
            limits.append(PeriodicLimit(wanted.period_type, wanted.alignment, amount.minor_units))
    valid_from = request.valid_from or now
    valid_to = request.valid_to or expires_at
    if expires_at is not None:
        ok &= errors.check(valid_from < expires_at, "mandate.valid_from_time", "must be before expire_time")
        if request.valid_to is not None:
            ok &= errors.check(
                valid_from < request.valid_to <= expires_at,
                "mandate.valid_to_time",
                "must be after valid_from_time and not after expire_time",
            )
    if not ok or maximum is None or valid_to is None:
        return None
    return Mandate(
        mandate_type=request.mandate_type,
        creditor_account_id=request.creditor_account,
        creditor_wallet_partner_id=request.creditor_wallet if request.creditor_account is None else None,
        currency=maximum.currency,
        maximum_individual_minor=maximum.minor_units,
        periodic_limits=tuple(limits),
        valid_from=valid_from,
        valid_to=valid_to,
    )


def check_mandate_consent(permissions: frozenset[str], consent_limits: list[str], errors: FieldCollector) -> None:
    """A mandate's consent pays under the mandate (and may confirm funds), with no limits of its
    own (``consent_limits``: the names of the consent-level limit fields that are set)."""
    errors.check(
        REQUIRED_PERMISSION in permissions and permissions <= MANDATE_PERMISSIONS,
        "permissions",
        "a mandate grants INITIATE_PAYMENTS and optionally CONFIRM_FUNDS, nothing else",
    )
    for field in consent_limits:
        errors.add(field, "a mandate's limits are its own: no consent-level limits")
