"""Accounts and agents as banks and the scheme check them: IBANs (ISO 13616, mod 97-10) and BICs (ISO 9362)."""

from __future__ import annotations

import re

# IBAN length per country (the SWIFT IBAN registry, as the simulator knows it). A country
# that is not here has no IBAN: such an "IBAN" is an incorrect account number.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

_IBAN_SHAPE = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
_BIC_SHAPE = re.compile(r"^[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?$")
_BBAN_SHAPE = re.compile(r"^[A-Z0-9]{11,30}$")


def _as_digits(text: str) -> str:
    """Letters as two-digit numbers (A=10 ... Z=35), digits as they are (ISO 13616)."""
    return "".join(str(int(char, 36)) for char in text)


def iban_problem(iban: str) -> str | None:
    """What is wrong with an IBAN in electronic format, or None when it is a valid IBAN."""
    if not _IBAN_SHAPE.match(iban):
        return "must be two upper-case letters, two check digits and 11-30 upper-case letters or digits"
    expected = IBAN_LENGTHS.get(iban[:2])
    if expected is None:
        return f"{iban[:2]} is not an IBAN country"
    if len(iban) != expected:
        return f"an IBAN of {iban[:2]} has {expected} characters"
    if int(_as_digits(iban[4:] + iban[:4])) % 97 != 1:
        return "the check digits are wrong"
    return None


def is_iban(value: str) -> bool:
    """A valid IBAN: registered country, its length, correct check digits (mod 97-10)."""
    return iban_problem(value) is None


def make_iban(country: str, bban: str) -> str:
    """The IBAN of a country's basic bank account number, with its check digits computed."""
    if len(country) != 2 or not country.isalpha() or not country.isupper() or not _BBAN_SHAPE.match(bban):
        raise ValueError("need an upper-case country code and an upper-case alphanumeric BBAN")
    check = 98 - int(_as_digits(bban + country + "00")) % 97
    return f"{country}{check:02d}{bban}"


def is_bic(value: str) -> bool:
    """A well-formed BIC (ISO 9362): bank code, country, location, optional branch."""
    return bool(_BIC_SHAPE.match(value))
