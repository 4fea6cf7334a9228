"""FeeCharges: a new payment's fee by the schedule, where it goes, and the start-up checks."""

from __future__ import annotations

import pytest

from meshlib.errors import FailedPrecondition, InvalidArgument
from meshlib.money import Amount
from services.payment.domain.fees import FeeRule, FeeSchedule
from services.payment.domain.payments import ParticipantInfo
from services.payment.fee_charges import FeeCharges, FeeLeg, check_fee_setup
from tests.unit.payment.fakes import FakePositions

SCHEDULE = FeeSchedule(
    default={"WALLET_TOP_UP": FeeRule(fixed_minor=10, basis_points=25, max_minor=500)},
    partners={"w2": {"WALLET_TOP_UP": FeeRule(basis_points=15, min_minor=5)}},
)
INCOME = {"EUR": "fee-income-eur"}


async def test_the_fee_goes_from_the_partners_wallet_settlement_account_to_the_fee_income_account() -> None:
    charges = FeeCharges(SCHEDULE, INCOME, FakePositions())
    # 10 + 0.25 % of 10_000 = 35.
    assert await charges.leg("w1", "WALLET_TOP_UP", Amount("EUR", 10_000)) == FeeLeg(
        35, "wallet-account-w1", "fee-income-eur", "wallet-w1", "bank"
    )
    # w2's own rule: 0.15 % of 1_000 = 1.5 -> 2, at least 5.
    leg = await charges.leg("w2", "WALLET_TOP_UP", Amount("EUR", 1_000))
    assert leg is not None and leg.fee_minor == 5
    assert await charges.leg("w1", "TRANSFER", Amount("EUR", 10_000)) is None  # a type the schedule does not name
    assert await charges.leg("w1", "WALLET_TOP_UP", Amount("GBP", 10_000)) is None  # no income account in GBP


async def test_a_partner_without_a_settlement_wallet_cannot_be_charged() -> None:
    class NoWallets(FakePositions):
        async def wallet(self, partner_id: str) -> ParticipantInfo:
            raise InvalidArgument.field("creditor_wallet", "no wallet", reason="BENEFICIARY_INVALID")

    with pytest.raises(FailedPrecondition) as refused:
        await FeeCharges(SCHEDULE, INCOME, NoWallets()).leg("w1", "WALLET_TOP_UP", Amount("EUR", 100))
    assert refused.value.reason == "PARTICIPANT_NOT_ACTIVE"


def test_start_up_refuses_a_charging_schedule_without_an_income_account_and_a_charged_refund() -> None:
    check_fee_setup(FeeSchedule(), {})  # the shipped schedule: no fees, no account needed
    check_fee_setup(FeeSchedule(default={"REFUND": FeeRule()}), {})  # a REFUND rule that charges nothing
    with pytest.raises(ValueError, match="OBM_FEE_INCOME_ACCOUNTS"):
        check_fee_setup(SCHEDULE, {})
    with pytest.raises(ValueError, match="refunds are charged nothing"):
        check_fee_setup(FeeSchedule(partners={"w1": {"REFUND": FeeRule(fixed_minor=1)}}), INCOME)


def test_the_shipped_schedule_charges_nothing_and_loads_with_the_default_settings() -> None:
    from services.payment.domain.fees import load_fee_schedule
    from services.payment.settings import PaymentSettings

    settings = PaymentSettings()
    check_fee_setup(load_fee_schedule(settings.fee_schedule_file), settings.fee_income_accounts)
    assert load_fee_schedule(settings.fee_schedule_file) == FeeSchedule()
