"""What a mandate has used of its periodic limits in their current periods (MandateService)."""

from __future__ import annotations

from meshlib.auth.consent import ConsentLookup, ConsentView
from meshlib.errors import FailedPrecondition
from services.payment.domain import checks, mandates
from services.payment.ports import Clock, utc_now
from services.payment.queries import UnitOfWorkFactory


class MandateUsage:
    """Reads the same running sums the periodic limits are checked against."""

    def __init__(self, uow: UnitOfWorkFactory, consents: ConsentLookup, clock: Clock = utc_now) -> None:
        self._uow = uow
        self._consents = consents
        self._clock = clock

    async def for_partner(self, partner_id: str, consent_id: str) -> tuple[str, list[mandates.PeriodUsage]]:
        """The calling partner's mandate (its token's consent), usable now."""
        consent = await self._consents.get(consent_id, partner_id=partner_id)
        consent.require_usable(checks.PAYMENT_PERMISSION, self._clock())
        return await self._usage(consent)

    async def for_customer(self, customer_id: str, consent_id: str) -> tuple[str, list[mandates.PeriodUsage]]:
        """One of the customer's mandates, in any state (the customer's dashboard)."""
        return await self._usage(await self._consents.get_of_customer(consent_id, customer_id=customer_id))

    async def _usage(self, consent: ConsentView) -> tuple[str, list[mandates.PeriodUsage]]:
        """The mandate's currency and each periodic limit's current period with its usage."""
        mandate = consent.mandate
        if mandate is None:
            raise FailedPrecondition("the consent is not a payment mandate", reason="CONSENT_NOT_A_MANDATE")
        usage = []
        async with self._uow(read_only=True) as uow:
            for limit, start, end in mandates.windows(mandate, self._clock()):
                used = await uow.limits.spent("consent_id", consent.consent_id, mandate.currency, start.date())
                usage.append(mandates.PeriodUsage(limit, start, end, used))
        return mandate.currency, usage
