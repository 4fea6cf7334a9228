"""Payment service layer: initiation (checks, idempotency, saga), cancel, reads, events, recovery."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from meshlib.admission import WaveAdmission
from meshlib.auth.consent import ConsentLookup, ConsentView
from meshlib.coalesce import Coalescer, together_or_alone
from meshlib.errors import FailedPrecondition, InvalidArgument, MeshError, NotFound, ResourceExhausted
from meshlib.idempotency import SavedAnswer
from meshlib.ids import time_ordered_id
from meshlib.money import Amount
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size
from meshlib.periodic import Periodic
from meshlib.storage import retry_on_conflict
from services.payment.domain import checks
from services.payment.domain.checks import CustomerHistory, PartnerLimits, VelocityRules
from services.payment.domain.payments import ParticipantInfo, Payment, PaymentState
from services.payment.repository import PaymentEvent, SagaStep
from services.payment.saga import PaymentSaga, RecoveryResult, current_trace_id
from services.payment.unit_of_work import PaymentUnitOfWork

log = logging.getLogger("services.payment")

UnitOfWorkFactory = Callable[..., PaymentUnitOfWork]
Clock = Callable[[], dt.datetime]
K = TypeVar("K")
V = TypeVar("V")
CREATE_METHOD = "CreatePayment"
CANCEL_METHOD = "CancelPayment"
RECOVER_METHOD = "RecoverPayments"
OPERATOR_SCOPE = "operators"


def utc_now() -> dt.datetime:
    """The wall clock, in UTC."""
    return dt.datetime.now(dt.UTC)


class PartnerDirectory(Protocol):
    """Where a partner's payment limits come from (identity)."""

    async def limits(self, partner_id: str) -> PartnerLimits: ...


class Participants(Protocol):
    """Settlement participants: the bank and the partners' wallets."""

    async def bank(self) -> ParticipantInfo: ...
    async def wallet(self, partner_id: str) -> ParticipantInfo: ...


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
class Recording:
    """A CreatePayment past its checks outside the database, waiting for its recording transaction."""

    partner_id: str
    consent: ConsentView
    limits: PartnerLimits
    new: NewPayment
    payment: Payment
    trace_id: str


class _RecordingGroup:
    """What the payments recorded together need to know, read once per group and carried forward.

    The database part (spent sums, customer histories, saved request ids) is read on first
    use; the payments accepted earlier in the group, not written yet, are added in memory, so
    each payment sees exactly what it would see if the ones before it were recorded.
    """

    def __init__(self, uow: PaymentUnitOfWork, rules: VelocityRules, now: dt.datetime) -> None:
        self._uow = uow
        self._rules = rules
        self._now = now
        self._saved: dict[tuple[str, str], SavedAnswer] = {}
        self._replayable: dict[str, Payment] = {}
        # Each read once, then carried forward: (the value, how many accepted payments it includes).
        self._sums: dict[tuple[str, str, str, dt.datetime], tuple[int, int]] = {}
        self._histories: dict[tuple[str, str, str, str | None], tuple[CustomerHistory, int]] = {}
        self._accepted: list[Payment] = []
        self._answers: dict[str, list[tuple[str, str, bytes]]] = {}

    async def load_saved(self, recordings: list[Recording]) -> None:
        """The saved answers of the group's request ids (a statement per partner), and their payments."""
        partners: dict[str, list[str]] = {}
        for recording in recordings:
            partners.setdefault(recording.partner_id, []).append(recording.new.request_id)
        for partner_id, request_ids in partners.items():
            found = await self._uow.idempotency.lookup_many(partner_id, CREATE_METHOD, request_ids)
            self._saved.update({(partner_id, request_id): answer for request_id, answer in found.items()})
        if self._saved:
            ids = sorted({answer.response.decode() for answer in self._saved.values()})
            self._replayable.update(await self._uow.payments.get_many(ids))

    def replay(self, recording: Recording) -> Payment | None:
        """The payment a request_id seen before answers (REQUEST_ID_REUSED for another payload)."""
        saved = self._saved.get((recording.partner_id, recording.new.request_id))
        if saved is None:
            return None
        payment = self._replayable.get(saved.answer_for(recording.new.fingerprint).decode())
        assert payment is not None, "a saved CreatePayment answer names a stored payment"
        return payment

    async def check(self, recording: Recording, payment: Payment) -> None:
        """The consent's and partner's limits and the velocity rules, given everything before it."""
        consent, limits, amount = recording.consent, recording.limits, payment.amount
        spent = 0
        # A sum is read only when a limit needs it (day rows of the running sums: at most 31).
        if consent.period_limit_minor is not None:
            spent = await self._spent(
                "consent_id", payment.consent_id, amount.currency, checks.period_start(consent.period, self._now)
            )
        checks.check_consent_limits(consent, amount, spent)
        spent_today = 0
        if limits.daily_minor is not None:
            spent_today = await self._spent(
                "partner_id", payment.partner_id, amount.currency, checks.day_start(self._now)
            )
        checks.check_partner_limits(limits, amount, spent_today)
        self._rules.check(amount, await self._history(payment))

    def accept(self, recording: Recording, stored: Payment) -> None:
        """Count an accepted payment for the ones after it, and save its answer with the group."""
        self._accepted.append(stored)
        self._replayable[stored.payment_id] = stored
        answer = SavedAnswer(recording.new.request_id, recording.new.fingerprint, stored.payment_id.encode())
        self._saved[(recording.partner_id, recording.new.request_id)] = answer
        self._answers.setdefault(recording.partner_id, []).append(
            (answer.request_id, answer.fingerprint, answer.response)
        )

    def new_answers(self) -> dict[str, list[tuple[str, str, bytes]]]:
        """The accepted payments' idempotency answers, by partner (the key's scope)."""
        return self._answers

    async def _spent(self, column: str, value: str, currency: str, since: dt.datetime) -> int:
        def plus(total: int, earlier: Payment) -> int:
            counts = getattr(earlier, column) == value and earlier.amount.currency == currency
            return total + earlier.amount.minor_units if counts and earlier.created_at >= since else total

        return await self._carried(
            self._sums,
            (column, value, currency, since),
            lambda: self._uow.payments.spent(column, value, currency, since.date()),
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
            lambda: self._uow.payments.customer_history(payment.customer_id, payment, self._rules.windows, self._now),
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


class AccountDirectory(Protocol):
    """The ledger's view of an account (owner, currency, status), asked before money moves."""

    async def describe_account(self, account_id: str) -> checks.LedgerAccountInfo: ...


class PaymentCommands:
    """CreatePayment and CancelPayment."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        saga: PaymentSaga,
        consents: ConsentLookup,
        partners: PartnerDirectory,
        participants: Participants,
        rules: VelocityRules,
        *,
        lease: dt.timedelta,
        saga_inline: bool = True,
        clock: Clock = utc_now,
        accounts: AccountDirectory | None = None,
        admission: WaveAdmission | None = None,
    ) -> None:
        self._uow = uow
        self._accounts = accounts
        self._saga = saga
        self._consents = consents
        self._partners = partners
        self._participants = participants
        self._rules = rules
        self._lease = lease
        self._saga_inline = saga_inline
        self._clock = clock
        # Payments start in waves, so each of their downstream calls and transactions is one batch.
        self._admission = admission
        # Group commit: the recording transactions of the payments being created share one.
        self._recorder: Coalescer[Recording, tuple[Payment, bool]] = Coalescer(
            self._record_many, max_in_flight=1, name="payment.create.group_commit"
        )

    async def _replay(self, scope: str, method: str, request_id: str, fingerprint: str) -> Payment | None:
        async with self._uow(read_only=True) as uow:
            saved = await uow.idempotency.lookup(scope, method, request_id, fingerprint)
            return await uow.payments.get(saved.decode()) if saved is not None else None

    async def create(self, partner_id: str, consent_id: str, new: NewPayment) -> Payment:
        """Check, record (RECEIVED) and run the saga; a replay answers the same payment as it is now.

        Admitted with the next wave of payments when the service has an admission policy.
        """
        if self._admission is None:
            return await self._create(partner_id, consent_id, new)
        return await self._admission.run(lambda: self._create(partner_id, consent_id, new))

    async def _create(self, partner_id: str, consent_id: str, new: NewPayment) -> Payment:
        """The payment's checks, recording transaction and saga (see :meth:`create`).

        The request_id is looked up in the recording transaction, and before that only when a
        check fails (a replay must get its first answer even if, say, the consent was revoked
        since): a new payment, the common case, pays for no extra read transaction.
        """
        now = self._clock()
        try:
            consent = await self._consents.get(consent_id, partner_id=partner_id)
            checks.check_consent(consent, new.debtor_account_id, now)
            if self._accounts is not None:
                debtor = await self._accounts.describe_account(new.debtor_account_id)
                checks.check_debtor_account(debtor, consent, new.amount)
            creditor_ledger, payer, payee = await self._route(partner_id, new)
            limits = await self._partners.limits(partner_id)
        except MeshError:
            existing = await self._replay(partner_id, CREATE_METHOD, new.request_id, new.fingerprint)
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
            creditor_ledger_account_id=creditor_ledger,
            payer_participant_id=payer,
            payee_participant_id=payee,
        )

        stored, created = await self._recorder.submit(
            Recording(partner_id, consent, limits, new, payment, current_trace_id())
        )
        if created and self._saga_inline:
            return await self._saga.run(stored.payment_id, hold_started=True, payment=stored)
        return stored

    async def _record_many(self, recordings: list[Recording]) -> list[tuple[Payment, bool] | BaseException]:
        """Record the payments created together in one transaction (group commit).

        If the shared transaction itself fails (a write, not a refusal), each payment is
        recorded alone in its own transaction, retried on conflict as before.
        """
        return await together_or_alone(
            recordings,
            self._record_together,
            lambda recording: retry_on_conflict(lambda: self._record_alone(recording)),
            what="payment.create.group_commit",
        )

    async def _record_together(self, recordings: list[Recording]) -> list[tuple[Payment, bool] | BaseException]:
        async with self._uow() as uow:
            outcomes = await self._record_in(uow, recordings)
            await uow.commit()
        return outcomes

    async def _record_alone(self, recording: Recording) -> tuple[Payment, bool]:
        (outcome,) = await self._record_together([recording])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _record_in(
        self, uow: PaymentUnitOfWork, recordings: list[Recording]
    ) -> list[tuple[Payment, bool] | BaseException]:
        """The recording transaction of payments created together: checks in order, then the rows.

        Each payment is checked in the writers' critical section as if the ones before it were
        already recorded (limits and velocity rules stay exact: the sums read once are carried
        forward in memory), a refused payment writes nothing, and a request_id seen earlier
        (saved, or earlier in the group) answers its payment. The accepted ones are written
        together: a statement per table, not per payment. All are stamped with one time, the
        moment they are recorded.
        """
        now = self._clock()
        group = _RecordingGroup(uow, self._rules, now)
        await group.load_saved(recordings)
        outcomes: list[tuple[Payment, bool] | BaseException] = []
        accepted: list[tuple[Payment, str]] = []
        for recording in recordings:
            try:
                replayed = group.replay(recording)
                if replayed is not None:
                    outcomes.append((replayed, False))
                    continue
                payment = dataclasses.replace(recording.payment, created_at=now, updated_at=now)
                await group.check(recording, payment)
            except MeshError as refused:
                outcomes.append(refused)
                continue
            stored = dataclasses.replace(payment, state=PaymentState.ACCEPTED) if self._saga_inline else payment
            group.accept(recording, stored)
            accepted.append((payment, recording.trace_id))
            outcomes.append((stored, True))
        if not accepted:
            return outcomes
        if self._saga_inline:
            # Accepted, and the holds recorded as started, in this transaction (one commit less).
            await self._saga.start_in(uow, accepted, now)
        else:
            await uow.payments.add_many([payment for payment, _ in accepted], lease_until=now + self._lease)
            await uow.steps.add_many(
                [SagaStep(payment.payment_id, "validate", "succeeded", "", trace, now) for payment, trace in accepted]
            )
            await uow.events.add_many([(payment, None, PaymentState.RECEIVED) for payment, _ in accepted], now)
        for partner_id, answers in group.new_answers().items():
            await uow.idempotency.save_many(partner_id, CREATE_METHOD, answers, now)
        return outcomes

    async def _route(self, partner_id: str, new: NewPayment) -> tuple[str, str, str]:
        """Where the ledger credits the money, and the settlement payer/payee (empty if none)."""
        if new.creditor_wallet_partner_id is None:
            assert new.creditor_account_id is not None
            return new.creditor_account_id, "", ""
        if new.creditor_wallet_partner_id != partner_id:
            raise InvalidArgument.field(
                "creditor_wallet", "must be the calling partner's own wallet", reason="BENEFICIARY_INVALID"
            )
        wallet = await self._participants.wallet(partner_id)
        bank = await self._participants.bank()
        return wallet.settlement_account_id, bank.participant_id, wallet.participant_id

    async def cancel(
        self, partner_id: str, consent_id: str, payment_id: str, request_id: str, fingerprint: str
    ) -> Payment:
        """Cancel before funds are held; an already cancelled payment is returned unchanged."""
        existing = await self._replay(partner_id, CANCEL_METHOD, request_id, fingerprint)
        if existing is not None:
            return existing
        await require_usable_consent(self._consents, partner_id, consent_id, self._clock())

        async def change() -> Payment:
            async with self._uow() as uow:
                payment = await uow.payments.get(payment_id)
                if payment is None or payment.partner_id != partner_id or payment.consent_id != consent_id:
                    raise NotFound("payment not found")
                if payment.state is not PaymentState.CANCELLED:
                    now = self._clock()
                    if not await uow.payments.cancel(payment_id, now):
                        raise FailedPrecondition(
                            "funds are already held or the payment is final", reason="PAYMENT_NOT_CANCELLABLE"
                        )
                    await uow.steps.add(SagaStep(payment_id, "cancel", "succeeded", "", current_trace_id(), now))
                    await uow.events.add(payment, payment.state, PaymentState.CANCELLED, "", now)
                await uow.idempotency.save(
                    partner_id, CANCEL_METHOD, request_id, fingerprint, payment_id.encode(), self._clock()
                )
                stored = await uow.payments.get(payment_id)
                await uow.commit()
            assert stored is not None
            return stored

        return await retry_on_conflict(change)

    async def recover(self, request_id: str, fingerprint: str, older_than: dt.timedelta) -> RecoveryResult:
        """RecoverPayments: one pass now; a replay of the request_id answers the first pass's counts."""
        async with self._uow(read_only=True) as uow:
            saved = await uow.idempotency.lookup(OPERATOR_SCOPE, RECOVER_METHOD, request_id, fingerprint)
        if saved is not None:
            return RecoveryResult(**json.loads(saved))
        result = await self._saga.recover(older_than=older_than)

        async def remember() -> None:
            async with self._uow() as uow:
                if await uow.idempotency.lookup(OPERATOR_SCOPE, RECOVER_METHOD, request_id, fingerprint) is None:
                    answer = json.dumps(dataclasses.asdict(result)).encode()
                    await uow.idempotency.save(
                        OPERATOR_SCOPE, RECOVER_METHOD, request_id, fingerprint, answer, self._clock()
                    )
                    await uow.commit()

        await retry_on_conflict(remember)
        return result

    async def purge_idempotency_keys(self, retention: dt.timedelta = dt.timedelta(hours=48)) -> int:
        """Forget idempotency keys past their retention (kept at least 24 h; 48 h here)."""
        async with self._uow() as uow:
            purged = await uow.idempotency.purge(self._clock() - retention)
            await uow.commit()
        return purged


async def require_usable_consent(consents: ConsentLookup, partner_id: str, consent_id: str, now: dt.datetime) -> None:
    """The caller's consent, live: authorised, unexpired, unpaused, granting INITIATE_PAYMENTS."""
    consent = await consents.get(consent_id, partner_id=partner_id)
    consent.require_usable(checks.PAYMENT_PERMISSION, now)


class PaymentQueries:
    """Read side of payments."""

    def __init__(self, uow: UnitOfWorkFactory, consents: ConsentLookup, clock: Clock = utc_now):
        self._uow = uow
        self._consents = consents
        self._clock = clock

    async def get_for_consent(self, payment_id: str, partner_id: str, consent_id: str) -> Payment:
        """A payment of the caller's consent; any other is NOT_FOUND, exactly like a missing one."""
        await require_usable_consent(self._consents, partner_id, consent_id, self._clock())
        async with self._uow(read_only=True) as uow:
            payment = await uow.payments.get(payment_id)
        if payment is None or payment.partner_id != partner_id or payment.consent_id != consent_id:
            raise NotFound("payment not found")
        return payment

    async def get(self, payment_id: str) -> Payment:
        """Any payment (operators)."""
        async with self._uow(read_only=True) as uow:
            payment = await uow.payments.get(payment_id)
        if payment is None:
            raise NotFound("payment not found")
        return payment

    async def list_for_consent(
        self,
        partner_id: str,
        consent_id: str,
        *,
        state: PaymentState | None,
        from_time: dt.datetime | None,
        to_time: dt.datetime | None,
        requested_page_size: int,
        page_token: str,
    ) -> tuple[list[Payment], str]:
        """The consent's payments, newest first, with the next page token."""
        await require_usable_consent(self._consents, partner_id, consent_id, self._clock())
        size = page_size(requested_page_size)
        filters = filter_fingerprint(
            partner=partner_id,
            consent=consent_id,
            state=state.name if state else "",
            start=from_time.isoformat() if from_time else "",
            end=to_time.isoformat() if to_time else "",
        )
        cursor = decode_page_token(page_token, filters) or {}
        before = (dt.datetime.fromisoformat(cursor["t"]), cursor["id"]) if cursor else None
        async with self._uow(read_only=True) as uow:
            found = await uow.payments.list_for_consent(
                partner_id, consent_id, state=state, from_time=from_time, to_time=to_time, before=before, limit=size + 1
            )
        page, more = found[:size], len(found) > size
        token = (
            encode_page_token({"t": page[-1].created_at.isoformat(), "id": page[-1].payment_id}, filters)
            if more
            else ""
        )
        return page, token

    async def stuck(
        self, older_than: dt.timedelta, requested_page_size: int, page_token: str
    ) -> tuple[list[Payment], str]:
        """Payments stuck mid-saga, oldest id first, with the next page token."""
        size = page_size(requested_page_size)
        filters = filter_fingerprint(older_than=older_than.total_seconds())
        cursor = decode_page_token(page_token, filters) or {}
        async with self._uow(read_only=True) as uow:
            found = await uow.payments.stuck(self._clock() - older_than, cursor.get("after"), size + 1)
        page, more = found[:size], len(found) > size
        return page, encode_page_token({"after": page[-1].payment_id}, filters) if more else ""

    async def audit_trail(self, payment_id: str) -> list[SagaStep]:
        """Every recorded step of a payment, oldest first."""
        async with self._uow(read_only=True) as uow:
            if await uow.payments.get(payment_id) is None:
                raise NotFound("payment not found")
            return await uow.steps.for_payment(payment_id)


def parse_cursor(cursor: str) -> int:
    """A stream cursor is the outbox sequence number, as decimal text."""
    if not cursor.isdigit() or len(cursor) > 18:
        raise InvalidArgument.field("after_cursor", "malformed cursor: resume with a cursor from an event")
    return int(cursor)


class PaymentEvents:
    """WatchPayments: replay the partner's outbox after a cursor, then poll it for new rows.

    Polling the table (not an in-process signal) keeps two replicas sharing one database
    correct: an event committed by either is seen by both, and writers commit in sequence
    order, so ``seq > cursor`` never skips one.
    """

    def __init__(
        self, uow: UnitOfWorkFactory, *, poll_seconds: float = 0.1, max_streams_per_partner: int = 5, batch: int = 200
    ) -> None:
        self._uow = uow
        self._poll = poll_seconds
        self._max_streams = max_streams_per_partner
        self._batch = batch
        self._open: Counter[str] = Counter()

    async def watch(self, partner_id: str, after_cursor: str) -> AsyncIterator[PaymentEvent]:
        """The partner's events after ``after_cursor`` (empty: from now on), for as long as the caller reads."""
        if after_cursor:
            position = parse_cursor(after_cursor)
        else:
            async with self._uow(read_only=True) as uow:
                position = await uow.events.last_seq()
        if self._open[partner_id] >= self._max_streams:
            raise ResourceExhausted("too many open streams", reason="TOO_MANY_STREAMS")
        self._open[partner_id] += 1
        try:
            while True:
                async with self._uow(read_only=True) as uow:
                    events = await uow.events.after(partner_id, position, self._batch)
                for event in events:
                    position = event.seq
                    yield event
                if len(events) < self._batch:
                    await asyncio.sleep(self._poll)
        finally:
            self._open[partner_id] -= 1


class RecoveryLoop:
    """Runs saga recovery at start-up and then every ``interval`` seconds; purges old keys hourly."""

    def __init__(self, saga: PaymentSaga, commands: PaymentCommands, interval_seconds: float) -> None:
        self._saga = saga
        self._commands = commands
        self._interval = interval_seconds
        self._passes = 0
        self._periodic = Periodic("payment-recovery", interval_seconds, self._pass) if interval_seconds > 0 else None

    async def start(self) -> None:
        """Start the loop (no-op when the interval is 0)."""
        if self._periodic is not None:
            await self._periodic.start()

    async def stop(self) -> None:
        """Stop the loop; an interrupted step is replayed by the next pass (steps are idempotent)."""
        if self._periodic is not None:
            await self._periodic.stop()

    async def run_once(self) -> RecoveryResult:
        """One pass."""
        return await self._saga.recover()

    async def _pass(self) -> None:
        passes, self._passes = self._passes, self._passes + 1
        result = await self.run_once()
        if result.examined:
            log.info("recovery pass", extra=result.__dict__)
        if passes % max(1, int(3600 / self._interval)) == 0:
            await self._commands.purge_idempotency_keys()
