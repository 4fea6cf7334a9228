"""IBAN (ISO 13616, mod 97-10) and BIC (ISO 9362) checks of the scheme simulator."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlib.iban import IBAN_LENGTHS, iban_problem, is_bic, is_iban, make_iban

# Published examples (bank and registry documentation), all valid.
VALID = [
    "DE89370400440532013000",
    "GB82WEST12345698765432",
    "FR1420041010050500013M02606",
    "NL91ABNA0417164300",
    "BE68539007547034",
    "CH9300762011623852957",
    "NO9386011117947",
    "MT84MALT011000012345MTLCAST001S",
]


@pytest.mark.parametrize("iban", VALID)
def test_published_ibans_are_valid(iban: str) -> None:
    assert iban_problem(iban) is None


@pytest.mark.parametrize(
    ("iban", "problem"),
    [
        ("DE89370400440532013001", "check digits"),  # last digit changed
        ("DE98370400440532013000", "check digits"),  # check digits swapped
        ("DE8937040044053201300", "22 characters"),  # one digit short
        ("XX89370400440532013000", "not an IBAN country"),
        ("de89370400440532013000", "upper-case"),
        ("DE89 3704 0044 0532 0130 00", "upper-case"),
        ("", "upper-case"),
    ],
)
def test_wrong_ibans_say_why(iban: str, problem: str) -> None:
    found = iban_problem(iban)
    assert found is not None and problem in found
    assert not is_iban(iban)


def test_make_iban_computes_the_published_check_digits() -> None:
    assert make_iban("DE", "370400440532013000") == "DE89370400440532013000"
    assert make_iban("GB", "WEST12345698765432") == "GB82WEST12345698765432"
    with pytest.raises(ValueError):
        make_iban("de", "370400440532013000")


@given(
    country=st.sampled_from(sorted(IBAN_LENGTHS)),
    data=st.data(),
)
def test_made_ibans_are_valid_and_every_single_digit_error_is_caught(country: str, data: st.DataObject) -> None:
    length = IBAN_LENGTHS[country] - 4
    bban = data.draw(st.text(alphabet="0123456789", min_size=length, max_size=length))
    iban = make_iban(country, bban)
    assert is_iban(iban)
    # mod 97-10 catches every single substituted character (ISO 7064).
    position = data.draw(st.integers(min_value=2, max_value=len(iban) - 1))
    replacement = data.draw(st.sampled_from([d for d in "0123456789" if d != iban[position]]))
    assert not is_iban(iban[:position] + replacement + iban[position + 1 :])


@pytest.mark.parametrize("bic", ["COBADEFF", "COBADEFFXXX", "DEUTDEDB101", "OBNKGB2L"])
def test_bics(bic: str) -> None:
    assert is_bic(bic)


@pytest.mark.parametrize("bic", ["COBADEF", "COBADEFFXX", "cobadeff", "C0BADEFF", "COBA1EFF", ""])
def test_not_bics(bic: str) -> None:
    assert not is_bic(bic)
