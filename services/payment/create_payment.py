"""CreatePayment: validate, check limits, record, run the saga."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from meshlib.admission import WaveAdmission
from meshlib.audit import actor_of
from meshlib.auth.consent import ConsentLookup
from meshlib.auth.context import current_caller
from meshlib.errors import InvalidArgument, MeshError
from meshlib.ids import time_ordered_id
from meshlib.money import Amount
from meshlib.storage import IdempotencyKey
from services.payment.domain import checks
from services.payment.domain.payments import Payment, PaymentState
from services.payment.domain.saga import History, opening, plan_for
from services.payment.ports import (
    CREATE_METHOD,
    Clock,
    Ledger,
    Participants,
    PartnerDirectory,
    PaymentRegister,
    Registration,
    utc_now,
)
from services.payment.saga import SagaRunner, current_trace_id, traced


@dataclass(frozen=True)
class NewPayment:
    """A validated CreatePayment request."""

    request_id: str
    fingerprint: str
    debtor_account_id: str
    creditor_account_id: str | None
    creditor_wallet_partner_id: str | None
    amount: Amount
    payment_type: str
    remittance_information: str = ""
    end_to_end_id: str = ""


@dataclass(frozen=True)
class Route:
    """Where the ledger credits the money, and the settlement payer and payee (empty if none)."""

    creditor_ledger_account_id: str
    payer_participant_id: str = ""
    payee_participant_id: str = ""


CreatePaymentHandler = Callable[[str, str, NewPayment], Awaitable[Payment]]


class CreatePayment:
    """A partner initiates a payment under its consent."""

    def __init__(
        self,
        *,
        consents: ConsentLookup,
        ledger: Ledger,
        participants: Participants,
        partners: PartnerDirectory,
        register: PaymentRegister,
        saga: SagaRunner,
        clock: Clock = utc_now,
    ) -> None:
        self._consents = consents
        self._ledger = ledger
        self._participants = participants
        self._partners = partners
        self._register = register
        self._saga = saga
        self._clock = clock

    async def __call__(self, partner_id: str, consent_id: str, new: NewPayment) -> Payment:
        """Check, record and run the saga; a replay answers the same payment as it is now.

        The request id is looked up when the payment is recorded, and before that only when a
        check fails (a replay must get its first answer even if, say, the consent was revoked
        since): a new payment, the common case, pays for no extra read.
        """
        key = IdempotencyKey(partner_id, CREATE_METHOD, new.request_id, new.fingerprint)
        now = self._clock()
        try:
            consent = await self._consents.get(consent_id, partner_id=partner_id)
            checks.check_consent(consent, new.debtor_account_id, now)
            debtor = await self._ledger.describe_account(new.debtor_account_id)
            checks.check_debtor_account(debtor, consent, new.amount)
            route = await self._route(partner_id, new)
            limits = await self._partners.limits(partner_id)
        except MeshError:
            existing = await self._register.replay(key)
            if existing is not None:
                return existing
            raise
        payment = Payment(
            payment_id=time_ordered_id(),
            partner_id=partner_id,
            consent_id=consent_id,
            debtor_account_id=new.debtor_account_id,
            creditor_account_id=new.creditor_account_id,
            creditor_wallet_partner_id=new.creditor_wallet_partner_id,
            amount=new.amount,
            payment_type=new.payment_type,
            state=PaymentState.RECEIVED,
            created_at=now,
            updated_at=now,
            remittance_information=new.remittance_information,
            end_to_end_id=new.end_to_end_id,
            customer_id=consent.customer_id or "",
            creditor_ledger_account_id=route.creditor_ledger_account_id,
            payer_participant_id=route.payer_participant_id,
            payee_participant_id=route.payee_participant_id,
        )
        with traced("payment.saga", payment.payment_id):
            records = opening(plan_for(payment))
            stored, created = await self._register.record(
                Registration(
                    payment, key, consent, limits, records, current_trace_id(), actor_of(current_caller(), "payment")
                )
            )
            if not created:
                return stored
            return await self._saga.drive(stored, History(records))

    async def _route(self, partner_id: str, new: NewPayment) -> Route:
        if new.creditor_wallet_partner_id is None:
            assert new.creditor_account_id is not None
            return Route(new.creditor_account_id)
        if new.creditor_wallet_partner_id != partner_id:
            raise InvalidArgument.field(
                "creditor_wallet", "must be the calling partner's own wallet", reason="BENEFICIARY_INVALID"
            )
        wallet = await self._participants.wallet(partner_id)
        bank = await self._participants.bank()
        return Route(wallet.settlement_account_id, bank.participant_id, wallet.participant_id)


class AdmittedInWaves:
    """CreatePayment admitted with the next wave of payments (``meshlib.admission``).

    The payments of a wave reach each later step together, so each of their downstream
    batches and shared transactions holds the wave. Speed only: the use case is unchanged.
    """

    def __init__(self, create: CreatePaymentHandler, admission: WaveAdmission) -> None:
        self._create = create
        self._admission = admission

    async def __call__(self, partner_id: str, consent_id: str, new: NewPayment) -> Payment:
        """Wait for admission, then create."""
        return await self._admission.run(lambda: self._create(partner_id, consent_id, new))
