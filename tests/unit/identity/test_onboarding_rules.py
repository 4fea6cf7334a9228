"""The bank's checks of an application (services/identity/domain/onboarding.py) and the shipped
rules and screening list files."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshlib.errors import InvalidArgument
from services.identity.domain.onboarding import (
    ApplicationState,
    RawApplication,
    Reason,
    ScreeningList,
    age_in_years,
    decide,
    normalise_name,
    validate,
)
from services.identity.onboarding_service import load_rules, load_screening_list
from services.identity.settings import IdentitySettings

NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
RULES = load_rules(IdentitySettings.model_fields["onboarding_rules_file"].default)
SCREENING = load_screening_list(IdentitySettings.model_fields["screening_list_file"].default)
RAW = RawApplication(
    given_name="Jana",
    family_name="Nováková",
    birth_date="1990-04-12",
    email="jana@example.org",
    country_code="CZ",
    document_type="PASSPORT",
    document_number="X1234567",
    document_expiry="2030-01-01",
    evidence_method="NFC_CHIP_AND_LIVENESS",
    verified_at=NOW - dt.timedelta(days=1),
    evidence_reference="",
    terms_version="2026-01",
    terms_accepted_at=NOW - dt.timedelta(minutes=1),
    currency="EUR",
)


def outcome(raw: RawApplication = RAW, *, duplicate: bool = False) -> tuple[ApplicationState, Reason]:
    return decide(validate(raw, RULES, NOW), RULES, SCREENING, duplicate=duplicate, now=NOW)


def test_the_shipped_files_are_read() -> None:
    assert RULES.minimum_age_years == 18 and RULES.documents["DRIVING_LICENCE"] == "refer"
    assert SCREENING.screen("Ivan Sanctioned", dt.date(1970, 1, 1)) is Reason.SANCTIONS_MATCH


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, (ApplicationState.APPROVED, Reason.CHECKS_PASSED)),
        (
            {"given_name": "ivan", "family_name": "SANCTIONED", "birth_date": "1970-01-01"},
            (ApplicationState.DECLINED, Reason.SANCTIONS_MATCH),
        ),
        (
            {"given_name": "Sanctioned,", "family_name": "Ivan", "birth_date": "1971-01-01"},
            (ApplicationState.REFERRED, Reason.WATCHLIST_POSSIBLE_MATCH),
        ),
        (
            {"given_name": "Ivana", "family_name": "Watched"},
            (ApplicationState.REFERRED, Reason.WATCHLIST_POSSIBLE_MATCH),
        ),
        ({"birth_date": "2008-12-08"}, (ApplicationState.DECLINED, Reason.UNDER_MINIMUM_AGE)),
        ({"birth_date": "2008-12-07"}, (ApplicationState.APPROVED, Reason.CHECKS_PASSED)),
        ({"verified_at": NOW - dt.timedelta(days=31)}, (ApplicationState.DECLINED, Reason.EVIDENCE_TOO_OLD)),
        ({"document_type": "LIBRARY_CARD"}, (ApplicationState.DECLINED, Reason.DOCUMENT_NOT_ACCEPTED)),
        ({"document_expiry": "2026-12-05"}, (ApplicationState.DECLINED, Reason.DOCUMENT_EXPIRED)),
        ({"document_expiry": "2026-12-06"}, (ApplicationState.APPROVED, Reason.CHECKS_PASSED)),
        ({"document_type": "DRIVING_LICENCE"}, (ApplicationState.REFERRED, Reason.DOCUMENT_NEEDS_REVIEW)),
    ],
)
def test_each_check_gives_its_outcome(change: dict[str, object], expected: tuple[ApplicationState, Reason]) -> None:
    assert outcome(replace(RAW, **change)) == expected  # type: ignore[arg-type]


def test_a_duplicate_is_declined_before_anything_else() -> None:
    sanctioned = replace(RAW, given_name="Ivan", family_name="Sanctioned", birth_date="1970-01-01")
    assert outcome(sanctioned, duplicate=True) == (ApplicationState.DECLINED, Reason.DUPLICATE_CUSTOMER)


def test_the_same_person_has_the_same_identity_key_however_spelled() -> None:
    one = validate(RAW, RULES, NOW)
    other = validate(replace(RAW, given_name=" JANA ", family_name="novakova"), RULES, NOW)
    assert one.identity_key() == other.identity_key()
    assert one.document_key() == validate(replace(RAW, document_number="x123 4567"), RULES, NOW).document_key()


def test_bad_input_names_every_field() -> None:
    bad = replace(RAW, birth_date="12/04/1990", email="nope", terms_version="2019", verified_at=None, currency="XXX")
    with pytest.raises(InvalidArgument) as refused:
        validate(bad, RULES, NOW)
    fields = {v.field for v in refused.value.violations}
    assert {
        "applicant.birth_date",
        "applicant.email",
        "terms.terms_version",
        "evidence.verify_time",
        "currency_code",
    } <= fields


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1990",
        "1990-1-1",
        "19900101",
        "1990-W01-1",
        "1990-02-30",
        "\u0661\u0669\u0669\u0660-\u0660\u0661-\u0660\u0661",
        "x" * 5000,
    ],
)
def test_a_malformed_date_is_bad_input_naming_its_field(text: str) -> None:
    bad = replace(RAW, birth_date=text, document_expiry=text)
    with pytest.raises(InvalidArgument) as refused:
        validate(bad, RULES, NOW)
    assert {v.field for v in refused.value.violations} == {"applicant.birth_date", "evidence.document_expiry_date"}


@given(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2026, 12, 7)))
def test_age_is_completed_years(born: dt.date) -> None:
    today = NOW.date()
    age = age_in_years(born, today)

    # Had the birthday of year ``age`` by today, not yet that of ``age + 1``.
    def birthday(years: int) -> dt.date:
        try:
            return born.replace(year=born.year + years)
        except ValueError:  # 29 February in a common year: the day after 28 February
            return dt.date(born.year + years, 3, 1)

    assert birthday(age) <= today < birthday(age + 1)


@given(st.text(alphabet=st.characters(categories=["L", "Zs", "P"]), max_size=40))
def test_normalised_names_ignore_case_order_and_punctuation(name: str) -> None:
    words = name.split()
    shuffled = ", ".join(reversed(words)).upper()
    assert normalise_name(shuffled) == normalise_name(name)
    screened = ScreeningList.of([(name, None)])
    if normalise_name(name):
        assert screened.screen(shuffled, dt.date(2000, 1, 1)) is Reason.WATCHLIST_POSSIBLE_MATCH
