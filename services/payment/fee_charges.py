"""What a new payment is charged: its fee by the schedule, and where the fee goes.

The fee is fixed once, when the payment is created (a scheduled payment's too), and stored
with it: the saga and recovery use the stored fee and never ask the schedule again. The
partner that makes the payment pays it, from its wallet's settlement account (its settlement
participant), to the bank's fee-income account of the payment's currency; in settlement the
wallet owes the bank the fee. A refund is charged nothing and returns no fee.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from meshlib.errors import FailedPrecondition, InvalidArgument
from meshlib.money import Amount
from services.payment.domain.fees import FeeRule, FeeSchedule
from services.payment.ports import Participants

log = logging.getLogger("services.payment.fees")


@dataclass(frozen=True)
class FeeLeg:
    """A payment's fee and its legs, as the payment stores them."""

    fee_minor: int
    fee_debit_account_id: str
    fee_credit_account_id: str
    fee_payer_participant_id: str
    fee_payee_participant_id: str


def _charges(rule: FeeRule) -> bool:
    return bool(rule.fixed_minor or rule.basis_points or rule.min_minor)


def check_fee_setup(schedule: FeeSchedule, income_accounts: Mapping[str, str]) -> None:
    """Start-up check: a schedule that charges anything needs a fee-income account; refunds are
    charged nothing, so a REFUND rule that charges is refused rather than silently ignored."""
    rules = [*schedule.default.items(), *(i for own in schedule.partners.values() for i in own.items())]
    if any(payment_type == "REFUND" and _charges(rule) for payment_type, rule in rules):
        raise ValueError("fee schedule: refunds are charged nothing; remove the REFUND rules that charge")
    if any(_charges(rule) for _, rule in rules) and not income_accounts:
        raise ValueError(
            "the fee schedule charges fees but no fee-income account is set (OBM_FEE_INCOME_ACCOUNTS, "
            'e.g. {"EUR": "<account id>"})'
        )


class FeeCharges:
    """The fee of a new payment and its legs (None when it costs nothing)."""

    def __init__(self, schedule: FeeSchedule, income_accounts: Mapping[str, str], participants: Participants) -> None:
        check_fee_setup(schedule, income_accounts)
        self._schedule = schedule
        self._income = dict(income_accounts)
        self._participants = participants
        self._warned: set[str] = set()

    async def leg(self, partner_id: str, payment_type: str, amount: Amount) -> FeeLeg | None:
        """The fee the partner pays for the payment, with its accounts and participants."""
        fee = self._schedule.fee_for(partner_id, payment_type, amount)
        if fee.minor_units == 0:
            return None
        income = self._income.get(amount.currency)
        if income is None:  # the schedule applies to the currencies with a fee-income account
            if amount.currency not in self._warned:
                self._warned.add(amount.currency)
                log.warning(
                    "no fee-income account for the currency: no fee charged", extra={"currency": amount.currency}
                )
            return None
        try:
            wallet = await self._participants.wallet(partner_id)
        except InvalidArgument:
            raise FailedPrecondition(
                "the partner has no settlement wallet to pay the payment's fee from", reason="PARTICIPANT_NOT_ACTIVE"
            ) from None
        bank = await self._participants.bank()
        return FeeLeg(fee.minor_units, wallet.settlement_account_id, income, wallet.participant_id, bank.participant_id)
