"""CreatePayment: validate, check limits, record, run the saga."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from meshlib.admission import WaveAdmission
from meshlib.audit import actor_of
from meshlib.auth.consent import ConsentLookup
from meshlib.auth.context import current_caller
from meshlib.errors import InvalidArgument, MeshError
from meshlib.ids import time_ordered_id
from meshlib.money import Amount
from meshlib.storage import IdempotencyKey
from services.payment.domain import checks, mandates, schedules
from services.payment.domain.payments import ExternalCreditor, Payment, PaymentState
from services.payment.domain.risk import IdentitySignals, PsuContext
from services.payment.domain.saga import TRANSIENT_REASONS, History, opening, plan_for
from services.payment.fee_charges import FeeCharges, FeeLeg
from services.payment.ports import (
    CREATE_METHOD,
    STANDING_ORDER_METHOD,
    Clock,
    IdentityRiskSignals,
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
    # A future-dated payment: SCHEDULED until then (None or within a minute: now).
    requested_execution_at: dt.datetime | None = None
    # An execution of a standing order (its key's method is STANDING_ORDER_METHOD, and a
    # refused execution is recorded REJECTED instead of failing the call).
    standing_order_id: str = ""
    execution_number: int = 0
    customer_id: str = ""
    # A payment to another bank (EXTERNAL_TRANSFER): its creditor there.
    external_creditor: ExternalCreditor | None = None
    # The customer present, as the partner describes them (a risk signal).
    psu: PsuContext = dataclasses.field(default_factory=PsuContext)

    @property
    def method(self) -> str:
        """Whose request ids the key is one of."""
        return STANDING_ORDER_METHOD if self.standing_order_id else CREATE_METHOD


@dataclass(frozen=True)
class Route:
    """Where the ledger credits the money, and the settlement payer and payee (empty if none)."""

    creditor_ledger_account_id: str
    payer_participant_id: str = ""
    payee_participant_id: str = ""


class Router:
    """Where a payment's money goes in the ledger, and between which settlement participants."""

    def __init__(self, participants: Participants) -> None:
        self._participants = participants

    async def route(self, partner_id: str, new: NewPayment) -> Route:
        """An account of the bank as it is; a wallet (the partner's own only) via its settlement
        account; another bank via the bank's clearing account at the scheme (the bank owes the scheme)."""
        if new.external_creditor is not None:
            scheme = await self._participants.scheme()
            bank = await self._participants.bank()
            return Route(scheme.settlement_account_id, bank.participant_id, scheme.participant_id)
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


CreatePaymentHandler = Callable[[str, str, NewPayment], Awaitable[Payment]]


class CapabilityCheck(Protocol):
    """The bank's kill switch (services/payment/capabilities.py)."""

    async def check(self, partner_id: str, capability: str) -> None: ...


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
        fees: FeeCharges | None = None,
        identity_signals: IdentityRiskSignals | None = None,
        capabilities: CapabilityCheck | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._fees = fees
        self._capabilities = capabilities
        self._identity_signals = identity_signals
        self._consents = consents
        self._ledger = ledger
        self._router = Router(participants)
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
        key = IdempotencyKey(partner_id, new.method, new.request_id, new.fingerprint)
        now = self._clock()
        requested = new.requested_execution_at
        scheduled = requested is not None and requested > now + schedules.IMMEDIATE_WITHIN
        try:
            if self._capabilities is not None:  # the bank's kill switch
                await self._capabilities.check(partner_id, new.payment_type)
            if new.external_creditor is not None:
                self._saga.require_scheme()
            consent = await self._consents.get(consent_id, partner_id=partner_id)
            checks.check_consent(consent, new.debtor_account_id, now)
            if consent.mandate is not None:  # checked again, with its periodic limits, when recorded
                mandates.check_payment(
                    consent.mandate, new.creditor_account_id, new.creditor_wallet_partner_id, new.amount, now
                )
            if scheduled or new.standing_order_id:
                checks.check_schedule_permission(consent, now)
            debtor = await self._ledger.describe_account(new.debtor_account_id)
            checks.check_debtor_account(debtor, consent, new.amount)
            if scheduled:
                checks.check_consent_limits(consent, new.amount, 0)  # the per-payment limit cannot change
            route = await self._router.route(partner_id, new)
            limits = await self._partners.limits(partner_id)
            fee: FeeLeg | None = None
            if self._fees is not None:
                fee = await self._fees.leg(partner_id, new.payment_type, new.amount)
            identity = IdentitySignals()
            if self._identity_signals is not None and consent.customer_id and not scheduled:
                identity = await self._identity_signals.recent(consent.customer_id, consent_id)
        except MeshError as refused:
            existing = await self._register.replay(key)
            if existing is not None:
                return existing
            if new.standing_order_id and refused.reason not in TRANSIENT_REASONS:
                return await self._refused(partner_id, consent_id, new, key, refused, now)
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
            state=PaymentState.SCHEDULED if scheduled else PaymentState.RECEIVED,
            created_at=now,
            updated_at=now,
            remittance_information=new.remittance_information,
            end_to_end_id=new.end_to_end_id,
            customer_id=consent.customer_id or "",
            creditor_ledger_account_id=route.creditor_ledger_account_id,
            payer_participant_id=route.payer_participant_id,
            payee_participant_id=route.payee_participant_id,
            requested_execution_at=requested if scheduled else None,
            standing_order_id=new.standing_order_id,
            execution_number=new.execution_number,
            external_creditor=new.external_creditor,
            **(dataclasses.asdict(fee) if fee is not None else {}),
        )
        actor = actor_of(current_caller(), "payment")
        if scheduled:
            stored, _ = await self._register.record_scheduled(payment, key, current_trace_id(), actor)
            return stored
        with traced("payment.saga", payment.payment_id):
            records = opening(plan_for(payment))
            try:
                stored, created = await self._register.record(
                    Registration(
                        payment, key, consent, limits, records, current_trace_id(), actor, new.psu, identity
                    )
                )
            except MeshError as refused:  # a limit or a rule, checked where the writers queue
                if new.standing_order_id and refused.reason not in TRANSIENT_REASONS:
                    return await self._refused(partner_id, consent_id, new, key, refused, now)
                raise
            if not created or stored.state.waiting:
                return stored  # a payment the risk decision holds waits for the customer or an operator
            return await self._saga.drive(stored, History(records))

    async def _refused(
        self,
        partner_id: str,
        consent_id: str,
        new: NewPayment,
        key: IdempotencyKey,
        refused: MeshError,
        now: dt.datetime,
    ) -> Payment:
        """A standing order's execution the checks refused: a REJECTED payment with the reason,
        so the wallet sees it (the order goes on)."""
        payment = refused_execution(partner_id, consent_id, new, now)
        return await self._register.record_refused(
            payment, key, refused.reason or "FAILED_PRECONDITION", str(refused), current_trace_id()
        )


def refused_execution(partner_id: str, consent_id: str, new: NewPayment, now: dt.datetime) -> Payment:
    """A standing order's execution that will not run, as the payment that records it (RECEIVED,
    to be stored REJECTED with the reason)."""
    return Payment(
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
        customer_id=new.customer_id,
        standing_order_id=new.standing_order_id,
        execution_number=new.execution_number,
    )


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
