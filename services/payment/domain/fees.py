"""The fee schedule: what the bank charges a partner for each payment it makes (pure rules).

Per partner (by partner id), with a default for every partner the file does not name, per
payment type: a fixed part and a proportional part in basis points (1 bp = 0.01 %), the
total optionally kept between a minimum and a maximum. Exact integers only: the
proportional part is rounded half-up to the minor unit, ``fee = clamp(fixed +
round_half_up(amount * bp / 10_000), min, max)``; amounts are in the payment's currency's
minor units. A partner's schedule names only the types it changes: a type it does not name
falls back to the default's rule, and a type neither names costs nothing.

Configuration, not code: read once at start-up from a YAML file (see
``services/payment/fee_schedule.yaml``); a bad file fails start-up loudly, as the velocity
rules' does (:func:`services.payment.domain.checks.load_rules`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshlib.money import Amount

BASIS_POINTS_PER_UNIT = 10_000
# The payment types a rule may name (PaymentType's values without the prefix).
PAYMENT_TYPES = frozenset({"WALLET_TOP_UP", "TRANSFER", "BILL_PAYMENT", "REFUND"})
# Limits that keep a typo from becoming a fee larger than any payment: at most 100 %, and at
# most 10^12 minor units fixed.
MAX_BASIS_POINTS = BASIS_POINTS_PER_UNIT
MAX_FIXED_MINOR = 10**12


def proportional_minor(amount_minor: int, basis_points: int) -> int:
    """``amount * bp / 10_000`` rounded half-up to the minor unit (both non-negative), exactly."""
    if amount_minor < 0 or basis_points < 0:
        raise ValueError("amount and basis points must not be negative")
    return (2 * amount_minor * basis_points + BASIS_POINTS_PER_UNIT) // (2 * BASIS_POINTS_PER_UNIT)


@dataclass(frozen=True)
class FeeRule:
    """The fee of one payment type: fixed + proportional, kept within [min_minor, max_minor]."""

    fixed_minor: int = 0
    basis_points: int = 0
    min_minor: int = 0
    max_minor: int | None = None

    def __post_init__(self) -> None:
        for name in ("fixed_minor", "basis_points", "min_minor", "max_minor"):
            value = getattr(self, name)
            if value is None and name == "max_minor":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a whole number, zero or more (got {value!r})")
        if self.basis_points > MAX_BASIS_POINTS:
            raise ValueError(f"basis_points must be at most {MAX_BASIS_POINTS} (100 %)")
        if max(self.fixed_minor, self.min_minor, self.max_minor or 0) > MAX_FIXED_MINOR:
            raise ValueError(f"fixed amounts must be at most {MAX_FIXED_MINOR} minor units")
        if self.max_minor is not None and self.max_minor < self.min_minor:
            raise ValueError("max_minor must not be below min_minor")

    def fee_minor(self, amount_minor: int) -> int:
        """The fee of a payment of ``amount_minor`` (zero or more) in the same minor units."""
        fee = max(self.fixed_minor + proportional_minor(amount_minor, self.basis_points), self.min_minor)
        return fee if self.max_minor is None else min(fee, self.max_minor)


NO_FEE = FeeRule()


@dataclass(frozen=True)
class FeeSchedule:
    """The default rules per payment type, and each named partner's own."""

    default: Mapping[str, FeeRule] = field(default_factory=dict)
    partners: Mapping[str, Mapping[str, FeeRule]] = field(default_factory=dict)

    def rule_for(self, partner_id: str, payment_type: str) -> FeeRule:
        """The partner's rule for the type, else the default's, else no fee."""
        own = self.partners.get(partner_id, {})
        return own.get(payment_type) or self.default.get(payment_type) or NO_FEE

    def fee_for(self, partner_id: str, payment_type: str, amount: Amount) -> Amount:
        """The fee the partner owes for a payment of ``amount`` (same currency; zero: no fee)."""
        return Amount(amount.currency, self.rule_for(partner_id, payment_type).fee_minor(amount.minor_units))


_RULE_FIELDS = frozenset(FeeRule.__dataclass_fields__)


def _parse_types(where: str, entries: Any) -> dict[str, FeeRule]:
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        raise ValueError(f"fee schedule {where}: expected payment types, got {type(entries).__name__}")
    rules: dict[str, FeeRule] = {}
    for payment_type, entry in entries.items():
        if payment_type not in PAYMENT_TYPES:
            raise ValueError(
                f"fee schedule {where}: unknown payment type {payment_type!r} (one of {sorted(PAYMENT_TYPES)})"
            )
        if not isinstance(entry, dict):
            raise ValueError(f"fee schedule {where}.{payment_type}: expected fields {sorted(_RULE_FIELDS)}")
        unknown = set(entry) - _RULE_FIELDS
        if unknown:
            raise ValueError(f"fee schedule {where}.{payment_type}: unknown fields {sorted(unknown)}")
        try:
            rules[payment_type] = FeeRule(**entry)
        except ValueError as error:
            raise ValueError(f"fee schedule {where}.{payment_type}: {error}") from None
    return rules


def parse_fee_schedule(document: Any) -> FeeSchedule:
    """A schedule from a parsed YAML document (``default`` and ``partners``); empty: no fees."""
    if document is None:
        return FeeSchedule()
    if not isinstance(document, dict):
        raise ValueError("fee schedule: expected a mapping with 'default' and 'partners'")
    unknown = set(document) - {"default", "partners"}
    if unknown:
        raise ValueError(f"fee schedule: unknown keys {sorted(unknown)}")
    partners = document.get("partners") or {}
    if not isinstance(partners, dict):
        raise ValueError("fee schedule partners: expected a mapping of partner id to payment types")
    return FeeSchedule(
        default=_parse_types("default", document.get("default")),
        partners={str(partner): _parse_types(f"partners.{partner}", types) for partner, types in partners.items()},
    )


def load_fee_schedule(path: Path) -> FeeSchedule:
    """Read the fee schedule file."""
    return parse_fee_schedule(yaml.safe_load(path.read_text()))
