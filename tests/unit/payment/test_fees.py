"""The fee schedule's rules (no gRPC, no database): exact integers, never negative, monotone."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.money import Amount
from services.payment.domain.fees import (
    MAX_BASIS_POINTS,
    FeeRule,
    FeeSchedule,
    load_fee_schedule,
    parse_fee_schedule,
    proportional_minor,
)

SHIPPED = Path(__file__).parents[3] / "services" / "payment" / "fee_schedule.yaml"


@pytest.mark.parametrize(
    ("amount", "basis_points", "expected"),
    [
        (10_000, 25, 25),  # 0.25 % of 100.00 is 0.25
        (100, 150, 2),  # 1.5 exactly: half-up
        (99, 150, 1),  # 1.485
        (300, 50, 2),  # 1.5 again: half-up, not to even (2 either way)
        (500, 50, 3),  # 2.5: half-up gives 3 (banker's rounding would give 2)
        (1, 4_999, 0),  # 0.4999
        (1, 5_000, 1),  # 0.5
        (0, 10_000, 0),
        (123_456_789, 10_000, 123_456_789),  # 100 %
        (10**17 + 1, 1, 10**13),  # exact far beyond what a float holds
    ],
)
def test_the_proportional_part_is_rounded_half_up_to_the_minor_unit(
    amount: int, basis_points: int, expected: int
) -> None:
    assert proportional_minor(amount, basis_points) == expected


def test_a_fee_is_fixed_plus_proportional_kept_between_its_minimum_and_maximum() -> None:
    rule = FeeRule(fixed_minor=10, basis_points=100, min_minor=15, max_minor=60)
    assert [rule.fee_minor(amount) for amount in (0, 100, 449, 450, 2_000, 5_000, 10**9)] == [
        15,
        15,
        15,
        15,
        30,
        60,
        60,
    ]
    assert FeeRule(fixed_minor=25).fee_minor(10**9) == 25
    assert FeeRule().fee_minor(10**9) == 0


def test_a_partners_rule_overrides_the_default_type_by_type() -> None:
    schedule = parse_fee_schedule(
        {
            "default": {"WALLET_TOP_UP": {"fixed_minor": 10, "basis_points": 25}, "TRANSFER": {"fixed_minor": 5}},
            "partners": {"wallet-a": {"WALLET_TOP_UP": {"basis_points": 100, "max_minor": 50}}},
        }
    )
    eur = Amount("EUR", 10_000)
    assert schedule.fee_for("wallet-a", "WALLET_TOP_UP", eur) == Amount("EUR", 50)  # its own, capped
    assert schedule.fee_for("wallet-a", "TRANSFER", eur) == Amount("EUR", 5)  # the default's
    assert schedule.fee_for("wallet-b", "WALLET_TOP_UP", eur) == Amount("EUR", 35)  # 10 + 25
    assert schedule.fee_for("wallet-b", "BILL_PAYMENT", eur) == Amount("EUR", 0)  # named nowhere
    assert schedule.fee_for("wallet-b", "WALLET_TOP_UP", Amount("JPY", 10_000)).currency == "JPY"


def test_the_shipped_file_charges_nothing_and_an_empty_document_is_no_fees() -> None:
    shipped = load_fee_schedule(SHIPPED)
    assert shipped == FeeSchedule()
    assert shipped.fee_for("demo-wallet", "WALLET_TOP_UP", Amount("EUR", 10**6)) == Amount("EUR", 0)
    assert parse_fee_schedule(None) == FeeSchedule()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"default": {"TOP_UP": {"fixed_minor": 1}}}, "unknown payment type 'TOP_UP'"),
        ({"default": {"TRANSFER": {"fixed_minor": -1}}}, "fixed_minor must be a whole number"),
        ({"default": {"TRANSFER": {"basis_points": 2.5}}}, "basis_points must be a whole number"),
        ({"default": {"TRANSFER": {"basis_points": True}}}, "basis_points must be a whole number"),
        ({"default": {"TRANSFER": {"basis_points": 10_001}}}, "at most 10000"),
        ({"default": {"TRANSFER": {"min_minor": 10, "max_minor": 5}}}, "max_minor must not be below min_minor"),
        ({"default": {"TRANSFER": {"percent": 1}}}, "unknown fields ['percent']"),
        ({"partners": {"w": {"TRANSFER": 5}}}, "partners.w.TRANSFER: expected fields"),
        ({"partners": ["w"]}, "expected a mapping of partner id"),
        ({"defaults": {}}, "unknown keys ['defaults']"),
        (["TRANSFER"], "expected a mapping"),
    ],
)
def test_a_bad_schedule_fails_start_up_naming_what_is_wrong(document: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_fee_schedule(document)
    assert message in str(caught.value)


rules = st.builds(
    lambda fixed, bp, low, span: FeeRule(fixed, bp, low, None if span is None else low + span),
    st.integers(0, 10**6),
    st.integers(0, MAX_BASIS_POINTS),
    st.integers(0, 10**6),
    st.none() | st.integers(0, 10**6),
)
amounts = st.integers(0, 10**15)


@settings(max_examples=500, deadline=None)
@given(rule=rules, amount=amounts, more=amounts)
def test_a_fee_is_an_exact_non_negative_integer_monotone_in_the_amount(rule: FeeRule, amount: int, more: int) -> None:
    fee = rule.fee_minor(amount)
    assert isinstance(fee, int) and fee >= 0
    assert rule.fee_minor(amount + more) >= fee, "a larger payment never costs less"
    assert fee >= rule.min_minor
    if rule.max_minor is not None:
        assert fee <= rule.max_minor
    # Without bounds: the fixed part plus the exact proportion, off by at most half a minor unit
    # (checked in integers: |2 * 10_000 * (fee - fixed) - 2 * amount * bp| <= 10_000).
    plain = FeeRule(rule.fixed_minor, rule.basis_points).fee_minor(amount)
    assert abs(2 * 10_000 * (plain - rule.fixed_minor) - 2 * amount * rule.basis_points) <= 10_000
    assert plain - rule.fixed_minor <= amount, "the proportional part never exceeds the amount"
