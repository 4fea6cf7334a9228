"""Money as integers in minor units plus an ISO 4217 currency; never floats."""

from __future__ import annotations

from dataclasses import dataclass

from meshlib.errors import FieldCollector, InvalidArgument

# ISO 4217 minor-unit exponents for the currencies the mesh accepts.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AED": 2,
    "AUD": 2,
    "BGN": 2,
    "BHD": 3,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CLP": 0,
    "CNY": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "GBP": 2,
    "GHS": 2,
    "HKD": 2,
    "HUF": 2,
    "IDR": 2,
    "ILS": 2,
    "INR": 2,
    "ISK": 0,
    "JOD": 3,
    "JPY": 0,
    "KES": 2,
    "KRW": 0,
    "KWD": 3,
    "MXN": 2,
    "MYR": 2,
    "NGN": 2,
    "NOK": 2,
    "NZD": 2,
    "OMR": 3,
    "PHP": 2,
    "PLN": 2,
    "RON": 2,
    "SAR": 2,
    "SEK": 2,
    "SGD": 2,
    "THB": 2,
    "TND": 3,
    "TRY": 2,
    "TZS": 2,
    "UGX": 0,
    "USD": 2,
    "VND": 0,
    "XOF": 0,
    "ZAR": 2,
}

# Amounts fit in a signed 64-bit column with room for sums of many of them.
MAX_MINOR_UNITS = 10**15


@dataclass(frozen=True, order=True)
class Amount:
    """An exact amount: integer minor units of one currency."""

    currency: str
    minor_units: int

    def __post_init__(self) -> None:
        if not isinstance(self.minor_units, int) or isinstance(self.minor_units, bool):
            raise TypeError("minor_units must be an int")

    def _same(self, other: Amount) -> None:
        if other.currency != self.currency:
            raise ValueError(f"currency mismatch: {self.currency} vs {other.currency}")

    def __add__(self, other: Amount) -> Amount:
        self._same(other)
        return Amount(self.currency, self.minor_units + other.minor_units)

    def __sub__(self, other: Amount) -> Amount:
        self._same(other)
        return Amount(self.currency, self.minor_units - other.minor_units)

    def __neg__(self) -> Amount:
        return Amount(self.currency, -self.minor_units)

    @classmethod
    def zero(cls, currency: str) -> Amount:
        """Nothing, in a currency."""
        return cls(currency, 0)

    def format(self) -> str:
        """Human form for logs and the CLI, e.g. ``EUR 12.34``."""
        exponent = CURRENCY_EXPONENTS.get(self.currency, 2)
        sign = "-" if self.minor_units < 0 else ""
        units, minor = divmod(abs(self.minor_units), 10**exponent) if exponent else (abs(self.minor_units), 0)
        return f"{self.currency} {sign}{units}" + (f".{minor:0{exponent}d}" if exponent else "")


def validate_currency(code: str, field: str, errors: FieldCollector | None = None) -> bool:
    """Check an ISO 4217 code the mesh supports."""
    ok = code in CURRENCY_EXPONENTS
    if not ok:
        message = "must be a supported ISO 4217 currency code (e.g. EUR)"
        if errors is None:
            raise InvalidArgument.field(field, message)
        errors.add(field, message)
    return ok


def amount_from_fields(
    currency: str,
    minor_units: int,
    field: str,
    errors: FieldCollector,
    *,
    positive: bool = True,
    allow_zero: bool = False,
) -> Amount | None:
    """Validate a Money message's two fields into an Amount (violations go to ``errors``)."""
    ok = validate_currency(currency, f"{field}.currency_code", errors)
    if positive and (minor_units < 0 or (minor_units == 0 and not allow_zero)):
        errors.add(f"{field}.minor_units", "must be greater than zero" if not allow_zero else "must not be negative")
        ok = False
    if abs(minor_units) > MAX_MINOR_UNITS:
        errors.add(f"{field}.minor_units", f"must be at most {MAX_MINOR_UNITS}")
        ok = False
    return Amount(currency, minor_units) if ok else None
