"""What the payments recorded together are checked against (SqlPaymentRegister's group):
limits, velocity and risk rules, dynamic isolation, mandate periods and saved request ids, each
read once per group and carried forward in memory for the payments accepted before it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from meshlib.errors import FailedPrecondition
from meshlib.idempotency import SavedAnswer
from meshlib.mandates import Mandate
from meshlib.storage import IdempotencyKey
from services.payment.domain import checks, isolation, mandates
from services.payment.domain.checks import CustomerHistory
from services.payment.domain.payments import Payment
from services.payment.domain.risk import RiskDecision, RiskOutcome, RiskRules, RiskSignals
from services.payment.isolation_repository import PaymentGate
from services.payment.ports import Registration
from services.payment.unit_of_work import PaymentUnitOfWork

K = TypeVar("K")
V = TypeVar("V")


class CarriedFacts:
    """What the payments recorded together are checked against, read once and carried forward.

    The database part (spent sums, customer histories, saved request ids) is read on first
    use; the payments accepted earlier in the group, not written yet, are added in memory.
    """

    def __init__(self, uow: PaymentUnitOfWork, rules: RiskRules, now: dt.datetime) -> None:
        self._uow = uow
        self._rules = rules
        self._now = now
        self._saved: dict[tuple[str, str, str], SavedAnswer] = {}
        self._replayable: dict[str, Payment] = {}
        # Each read once, then carried forward: (the value, how many accepted payments it includes).
        self._sums: dict[tuple[str, str, str, dt.datetime], tuple[int, int]] = {}
        self._histories: dict[tuple[str, str, str, str | None], tuple[CustomerHistory, int]] = {}
        self._accepted: list[Payment] = []
        self._answers: dict[tuple[str, str], list[tuple[str, str, bytes]]] = {}
        # Dynamic isolation: the customers' capabilities (read once per group), and what the
        # accepted payments used (a payment's uses wait in _using until it is accepted).
        self.capabilities: dict[str, dict[str, PaymentGate]] = {}
        self._capabilities_read: set[str] = set()
        self._using: dict[str, tuple[str, ...]] = {}
        self.uses: dict[str, set[str]] = {}

    async def load_capabilities(self, customer_ids: Sequence[str]) -> None:
        """The capabilities of the group's customers, in one statement."""
        wanted = {c for c in customer_ids if c and c not in self._capabilities_read}
        if wanted:
            self.capabilities.update(await self._uow.isolation.gates(wanted, self._now))
            self._capabilities_read |= wanted

    async def load_saved(self, registrations: Sequence[Registration]) -> None:
        """The saved answers of the group's request ids (a statement per partner), and their payments."""
        scopes: dict[tuple[str, str], list[str]] = {}
        for registration in registrations:
            key = registration.key
            scopes.setdefault((key.scope, key.method), []).append(key.request_id)
        for (scope, method), request_ids in scopes.items():
            found = await self._uow.idempotency.lookup_many(scope, method, request_ids)
            self._saved.update({(scope, method, request_id): answer for request_id, answer in found.items()})
        if self._saved:
            ids = sorted({answer.response.decode() for answer in self._saved.values()})
            self._replayable.update(await self._uow.payments.get_many(ids))

    def replay(self, key: IdempotencyKey) -> Payment | None:
        """The payment a request_id seen before answers (REQUEST_ID_REUSED for another payload)."""
        saved = self._saved.get((key.scope, key.method, key.request_id))
        if saved is None:
            return None
        payment = self._replayable.get(saved.answer_for(key.fingerprint).decode())
        assert payment is not None, "a saved CreatePayment answer names a stored payment"
        return payment

    async def check(self, registration: Registration, payment: Payment) -> RiskDecision:
        """The consent's and partner's limits, then the risk decision, given everything before it."""
        consent, limits, amount = registration.consent, registration.limits, payment.amount
        spent = 0
        # A sum is read only when a limit needs it (day rows of the running sums: at most 31).
        if consent.period_limit_minor is not None:
            since = checks.period_start(consent.period, self._now)
            spent = await self._spent("consent_id", payment.consent_id, amount.currency, since)
        checks.check_consent_limits(consent, amount, spent)
        if consent.mandate is not None:
            # Here, where the writers queue, so payments racing for a period's last allowance
            # are counted one after the other (the earlier ones of the group carried forward).
            mandates.check_payment(
                consent.mandate, payment.creditor_account_id, payment.creditor_wallet_partner_id, amount, self._now
            )
            mandates.check_periods(
                consent.mandate, amount, await self.mandate_usage(consent.consent_id, consent.mandate)
            )
        spent_today = 0
        if limits.daily_minor is not None:
            since = checks.day_start(self._now)
            spent_today = await self._spent("partner_id", payment.partner_id, amount.currency, since)
        checks.check_partner_limits(limits, amount, spent_today)
        history = await self._history(payment)
        if payment.customer_id:
            await self._check_isolation(payment, not history.paid_beneficiary_before)
        signals = RiskSignals(
            payment.partner_id,
            amount.minor_units,
            history,
            self._now,
            registration.psu,
            registration.identity,
            limits.risk_tier,
        )
        decision = self._rules.decide(signals)
        if decision.outcome is RiskOutcome.REFUSE:
            raise RiskRefused(decision)
        return decision

    async def _check_isolation(self, payment: Payment, new_creditor: bool) -> None:
        """The customer's paused capabilities and lowered daily limit (dynamic isolation), before
        the risk decision: a refusal here is the customer's own setting, not a risk."""
        await self.load_capabilities([payment.customer_id])
        states = self.capabilities.get(payment.customer_id, {})
        amount = payment.amount
        spent_today = 0
        if isolation.needs_spent_today(states):
            since = checks.day_start(self._now)
            spent_today = await self._spent("customer_id", payment.customer_id, amount.currency, since)
        isolation.check_payment(
            states,
            payment_type=payment.payment_type,
            new_creditor=new_creditor,
            amount_minor=amount.minor_units,
            currency=amount.currency,
            spent_today_minor=spent_today,
        )
        self._using[payment.payment_id] = isolation.used_by(payment.payment_type, new_creditor)

    async def mandate_usage(self, consent_id: str, mandate: Mandate) -> list[mandates.PeriodUsage]:
        """What the mandate's payments add up to in each periodic limit's current period."""
        return [
            mandates.PeriodUsage(
                limit, start, end, await self._spent("consent_id", consent_id, mandate.currency, start)
            )
            for limit, start, end in mandates.windows(mandate, self._now)
        ]

    def accept(self, key: IdempotencyKey, stored: Payment) -> None:
        """Count an accepted payment for the ones after it, and save its answer with the group."""
        self._accepted.append(stored)
        self._replayable[stored.payment_id] = stored
        used = self._using.pop(stored.payment_id, ())
        if used:
            self.uses.setdefault(stored.customer_id, set()).update(used)
        answer = SavedAnswer(key.request_id, key.fingerprint, stored.payment_id.encode())
        self._saved[(key.scope, key.method, key.request_id)] = answer
        self._answers.setdefault((key.scope, key.method), []).append(
            (answer.request_id, answer.fingerprint, answer.response)
        )

    def new_answers(self) -> dict[tuple[str, str], list[tuple[str, str, bytes]]]:
        """The accepted payments' idempotency answers, by (scope, method)."""
        return self._answers

    async def _spent(self, column: str, value: str, currency: str, since: dt.datetime) -> int:
        def plus(total: int, earlier: Payment) -> int:
            counts = getattr(earlier, column) == value and earlier.amount.currency == currency
            return total + earlier.amount.minor_units if counts and earlier.created_at >= since else total

        return await self._carried(
            self._sums,
            (column, value, currency, since),
            lambda: self._uow.limits.spent(column, value, currency, since.date()),
            plus,
        )

    async def _history(self, payment: Payment) -> CustomerHistory:
        def plus(history: CustomerHistory, earlier: Payment) -> CustomerHistory:
            if earlier.customer_id != payment.customer_id:
                return history
            same_currency = earlier.amount.currency == payment.amount.currency
            return history.plus_new_payment(earlier.amount.minor_units, same_currency=same_currency)

        key = (
            payment.customer_id,
            payment.amount.currency,
            payment.creditor_account_id or "",
            payment.creditor_wallet_partner_id,
        )
        return await self._carried(
            self._histories,
            key,
            lambda: self._uow.limits.customer_history(payment.customer_id, payment, self._rules.windows, self._now),
            plus,
        )

    async def _carried(
        self,
        cache: dict[K, tuple[V, int]],
        key: K,
        read: Callable[[], Awaitable[V]],
        plus: Callable[[V, Payment], V],
    ) -> V:
        """A value read once per group (``read``), with each payment accepted since folded in
        (``plus``); the cache remembers how many accepted payments the value includes."""
        value, applied = cache[key] if key in cache else (await read(), 0)
        for earlier in self._accepted[applied:]:
            value = plus(value, earlier)
        cache[key] = (value, len(self._accepted))
        return value


class RiskRefused(FailedPrecondition):
    """The risk decision refused the payment outright (its reason and rules for the partner)."""

    def __init__(self, decision: RiskDecision) -> None:
        super().__init__(
            "the payment was refused by the bank's risk rules", reason=decision.reason, metadata=decision.metadata()
        )
        self.decision = decision
