"""The conformance check of payment mandates (VRP, sweeping): authorised once, the wallet pays
its creditor without asking again, within every control parameter, and reads what it used.

A mixin of :class:`meshcli.conformance_checks.ConformanceRun`: it uses the run's client, the
partner, the customer's account and the way the run authorises consents.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import grpc

from meshcli.conformance_support import _expect, expect_error, ob
from openbank.identity.v1 import consent_pb2
from openbank.payment.v1 import payment_pb2

if TYPE_CHECKING:
    from meshcli.conformance_checks import ConformanceConfig

FAILED = grpc.StatusCode.FAILED_PRECONDITION


class MandateChecks:
    """Checks of a mandate's consent, payments under it and MandateService."""

    config: ConformanceConfig
    client: ob.OpenBankClient
    partner: str

    async def authorise_consent(self, pending: ob.PendingConsent) -> str:
        raise NotImplementedError

    async def mandate_payments(self) -> str:
        from openbank_sdk.mandates import DAY, mandate, periodic_limit

        _expect(bool(self.partner), "the partner is unknown (CreateConsent failed)")
        sweeping = mandate(
            ob.money(200, "EUR"),
            creditor_wallet=self.partner,
            periodic_limits=[periodic_limit(DAY, ob.money(300, "EUR"))],
        )
        pending = await self.client.create_consent(
            [ob.INITIATE_PAYMENTS, ob.CONFIRM_FUNDS], mandate=sweeping, valid_for=dt.timedelta(days=1)
        )
        _expect(pending.consent.mandate.creditor_wallet == self.partner, "the mandate's creditor was not kept")
        session = await self.client.exchange_code(await self.authorise_consent(pending), pending.pkce.verifier)
        account = self.config.customer_account
        paid = await session.create_payment(account, ob.money(200, "EUR"), creditor_wallet=self.partner)
        _expect(paid.state != payment_pb2.PAYMENT_STATE_UNSPECIFIED, "no state")
        refusals = [
            await expect_error(
                session.create_payment(account, ob.money(201, "EUR"), creditor_wallet=self.partner),
                FAILED,
                "MANDATE_AMOUNT_EXCEEDED",
            ),
            await expect_error(
                # Any other creditor is refused before the bank even looks it up.
                session.create_payment(account, ob.money(10, "EUR"), creditor_account="accounts/not-the-creditor"),
                FAILED,
                "MANDATE_CREDITOR_MISMATCH",
            ),
        ]
        if paid.state != payment_pb2.PAYMENT_STATE_REJECTED:  # a refused payment (no funds) does not count
            refusals.append(
                await expect_error(
                    session.create_payment(account, ob.money(101, "EUR"), creditor_wallet=self.partner),
                    FAILED,
                    "MANDATE_PERIOD_LIMIT_EXCEEDED",
                )
            )
            (day,) = await session.mandate_usage()
            _expect(day.used_amount.minor_units == 200, f"used {day.used_amount.minor_units}, want 200")
            _expect(day.remaining_amount.minor_units == 100, f"left {day.remaining_amount.minor_units}, want 100")
        revoked = await self.client.revoke_consent(pending.name)
        _expect(revoked.state == consent_pb2.CONSENT_STATE_REVOKED, f"state {revoked.state}")
        return f"{payment_pb2.PaymentState.Name(paid.state)}; " + ", ".join(r.split()[-1] for r in refusals)
