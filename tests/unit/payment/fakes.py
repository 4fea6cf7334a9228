"""In-memory fakes of payment's ports: the ledger, settlement positions, the journal and register.

They keep the rules the real peers keep (idempotent by payment, post and void of one hold
exclude each other, commit and release of one obligation too) and count what would be money
moved twice. The journal keeps only what was written: a crash loses what a run had not
written yet, as a killed process does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

from meshlib.auth.consent import ConsentView
from meshlib.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from meshlib.storage import IdempotencyKey
from services.payment.domain.checks import LedgerAccountInfo, PartnerLimits
from services.payment.domain.payments import ParticipantInfo, Payment, PaymentState
from services.payment.domain.refunds import check_refundable, refundable_minor
from services.payment.domain.saga import History, Outcome, Step, StepRecord
from services.payment.ports import JournalEntry, RefundRegistration, Registration

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


class Crash(BaseException):
    """The process died here (a BaseException, so no handler in the code under test catches it)."""


class Faults:
    """Scripted failures of peer calls: ``before`` (the call never arrived) or ``after`` (it was
    applied and its answer lost), each an UNAVAILABLE the saga sees; and refusals."""

    def __init__(self) -> None:
        self.before: dict[str, int] = {}
        self.after: dict[str, int] = {}
        self.refuse: dict[str, Exception] = {}

    def enter(self, what: str) -> None:
        if what in self.refuse:
            raise self.refuse[what]
        if self.before.get(what, 0) > 0:
            self.before[what] -= 1
            raise Unavailable(f"{what} unreachable")

    def leave(self, what: str) -> None:
        if self.after.get(what, 0) > 0:
            self.after[what] -= 1
            raise Unavailable(f"{what} answer lost")


class FakeLedger:
    """Holds by payment id (a fee's by ``{payment}-fee``, created, posted and voided linked with
    its payment's, all or none, as the real chain rpcs do); balances of the debtor accounts and of
    the wallet's settlement account the fees come from."""

    def __init__(self, faults: Faults | None = None, funds: int = 1_000_000, wallet_funds: int = 1_000_000) -> None:
        self.faults = faults or Faults()
        self.holds: dict[str, str] = {}
        self.amounts: dict[str, int] = {}
        self.funds = funds
        self.wallet_funds = wallet_funds
        self.posted = 0
        self.fees_posted = 0
        self.twice: list[str] = []
        self.calls: list[str] = []

    @staticmethod
    def _legs(payment: Payment) -> list[str]:
        return [payment.payment_id, *([f"{payment.payment_id}-fee"] if payment.has_fee else [])]

    async def describe_account(self, account_id: str) -> LedgerAccountInfo:
        return LedgerAccountInfo(account_id, "cust1", "EUR", True)

    async def hold(self, payment: Payment) -> None:
        self.calls.append("hold")
        self.faults.enter("hold")
        if payment.payment_id not in self.holds:
            if payment.amount.minor_units > self.funds - self.held():
                raise FailedPrecondition("not enough money", reason="INSUFFICIENT_FUNDS")
            if payment.fee_minor > self.wallet_funds - self.held(fees=True):
                raise FailedPrecondition("not enough money for the fee", reason="INSUFFICIENT_FUNDS")
            self.holds[payment.payment_id] = "PENDING"
            self.amounts[payment.payment_id] = payment.amount.minor_units
            if payment.has_fee:
                self.holds[f"{payment.payment_id}-fee"] = "PENDING"
                self.amounts[f"{payment.payment_id}-fee"] = payment.fee_minor
        self.faults.leave("hold")

    def held(self, *, fees: bool = False) -> int:
        return sum(
            self.amounts[p] for p, state in self.holds.items() if state == "PENDING" and p.endswith("-fee") == fees
        )

    async def post(self, payment: Payment) -> None:
        self.calls.append("post")
        self.faults.enter("post")
        for leg in self._legs(payment):  # checked first: every leg posts or none does
            state = self.holds.get(leg)
            if state is None:
                raise NotFound("no such transfer")
            if state == "VOIDED":
                raise FailedPrecondition("voided", reason="TRANSFER_ALREADY_VOIDED")
        for leg in self._legs(payment):
            if self.holds[leg] == "PENDING":
                self.holds[leg] = "POSTED"
                if leg.endswith("-fee"):
                    self.fees_posted += self.amounts[leg]
                    self.wallet_funds -= self.amounts[leg]
                else:
                    self.posted += self.amounts[leg]
                    self.funds -= self.amounts[leg]
        self.faults.leave("post")

    async def void(self, payment: Payment) -> None:
        self.calls.append("void")
        self.faults.enter("void")
        if any(self.holds.get(leg) == "POSTED" for leg in self._legs(payment)):
            raise FailedPrecondition("posted", reason="TRANSFER_ALREADY_POSTED")
        for leg in self._legs(payment):
            if self.holds.get(leg) == "PENDING":
                self.holds[leg] = "VOIDED"
        self.faults.leave("void")

    async def hold_state(self, payment: Payment) -> str | None:
        self.faults.enter("hold_state")
        return self.holds.get(payment.payment_id)


class FakePositions:
    """Obligations by payment id (a fee's by ``{payment}-fee``, payer the wallet: its own calls,
    as the real adapter sends them), against the payer's net debit cap; the participants."""

    def __init__(self, faults: Faults | None = None, cap: int = 1_000_000, wallet_cap: int = 1_000_000) -> None:
        self.faults = faults or Faults()
        self.cap = cap
        self.wallet_cap = wallet_cap
        self.obligations: dict[str, str] = {}
        self.amounts: dict[str, int] = {}
        self.committed = 0
        self.fees_committed = 0

    async def bank(self) -> ParticipantInfo:
        return ParticipantInfo("bank", "", True, "bank-settlement")

    async def wallet(self, partner_id: str) -> ParticipantInfo:
        return ParticipantInfo(f"wallet-{partner_id}", partner_id, False, f"wallet-account-{partner_id}")

    async def scheme(self) -> ParticipantInfo:
        return ParticipantInfo("scheme", "", False, "scheme-clearing", is_scheme=True)

    def _reserved(self, *, fees: bool = False) -> int:
        return sum(
            self.amounts[p]
            for p, s in self.obligations.items()
            if s in ("RESERVED", "COMMITTED") and p.endswith("-fee") == fees
        )

    @staticmethod
    def _names(payment: Payment) -> list[str]:
        return ([payment.payment_id] if payment.needs_settlement else []) + (
            [f"{payment.payment_id}-fee"] if payment.has_fee else []
        )

    @staticmethod
    def _what(call: str, name: str) -> str:
        return f"{call}_fee" if name.endswith("-fee") else call

    async def reserve(self, payment: Payment) -> None:
        for name in self._names(payment):
            fee = name.endswith("-fee")
            self.faults.enter(self._what("reserve", name))
            if name not in self.obligations:
                amount = payment.fee_minor if fee else payment.amount.minor_units
                if amount > (self.wallet_cap if fee else self.cap) - self._reserved(fees=fee):
                    await self.release(payment)  # all or none, as the adapter does
                    raise FailedPrecondition("over the cap", reason="NET_DEBIT_CAP_EXCEEDED")
                self.obligations[name] = "RESERVED"
                self.amounts[name] = amount
            self.faults.leave(self._what("reserve", name))

    async def commit(self, payment: Payment) -> None:
        for name in self._names(payment):
            self.faults.enter(self._what("commit", name))
            state = self.obligations.get(name)
            if state is None:
                raise NotFound("no such obligation")
            if state == "RELEASED":
                raise FailedPrecondition("released", reason="OBLIGATION_RELEASED")
            if state == "RESERVED":
                self.obligations[name] = "COMMITTED"
                if name.endswith("-fee"):
                    self.fees_committed += self.amounts[name]
                else:
                    self.committed += self.amounts[name]
            self.faults.leave(self._what("commit", name))

    async def release(self, payment: Payment) -> None:
        for name in self._names(payment):
            self.faults.enter(self._what("release", name))
            state = self.obligations.get(name)
            if state == "COMMITTED":
                raise FailedPrecondition("committed", reason="OBLIGATION_COMMITTED")
            if state == "RESERVED":
                self.obligations[name] = "RELEASED"
            self.faults.leave(self._what("release", name))


class FakeConsents:
    """Consents by id; a lookup of a consent in ``gates`` waits for its event (to hold a payment back)."""

    def __init__(self, *views: ConsentView) -> None:
        self.views = {view.consent_id: view for view in views}
        self.gates: dict[str, asyncio.Event] = {}

    async def get(self, consent_id: str, *, partner_id: str) -> ConsentView:
        if consent_id in self.gates:
            await self.gates[consent_id].wait()
        view = self.views.get(consent_id)
        if view is None or view.partner_id != partner_id:
            raise NotFound("consent not found")
        return view

    async def get_of_customer(self, consent_id: str, *, customer_id: str) -> ConsentView:
        view = self.views.get(consent_id)
        if view is None or view.customer_id != customer_id:
            raise NotFound("consent not found")
        return view


class FakePartners:
    """No partner limits unless set."""

    def __init__(self) -> None:
        self.by_partner: dict[str, PartnerLimits] = {}

    async def limits(self, partner_id: str) -> PartnerLimits:
        return self.by_partner.get(partner_id, PartnerLimits(partner_id))


@dataclasses.dataclass
class _Row:
    payment: Payment
    records: list[StepRecord]
    events: list[tuple[PaymentState | None, PaymentState]]
    funds_requested: bool


class InMemoryPayments:
    """The journal and the register in memory: what is written stays, nothing else does."""

    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}
        self.keys: dict[tuple[str, str, str], tuple[str, str]] = {}
        self.writes = 0
        self.parked: dict[str, dt.timedelta] = {}

    # -- register --------------------------------------------------------------------------

    async def record(self, registration: Registration) -> tuple[Payment, bool]:
        key = registration.key
        existing = await self.replay(key)
        if existing is not None:
            return existing, False
        stored = registration.payment.recorded_at(NOW).moved(PaymentState.ACCEPTED, NOW)
        events = [(None, PaymentState.RECEIVED), (PaymentState.RECEIVED, PaymentState.ACCEPTED)]
        self.rows[stored.payment_id] = _Row(stored, list(registration.opening), events, True)
        self.keys[(key.method, key.scope, key.request_id)] = (key.fingerprint, stored.payment_id)
        self.writes += 1
        return stored, True

    async def replay(self, key: IdempotencyKey) -> Payment | None:
        saved = self.keys.get((key.method, key.scope, key.request_id))
        if saved is None:
            return None
        if saved[0] != key.fingerprint:
            raise AlreadyExists("request_id reused with another payload", reason="REQUEST_ID_REUSED")
        return self.rows[saved[1]].payment

    async def cancel(
        self, payment_id: str, partner_id: str, consent_id: str, key: IdempotencyKey, trace_id: str
    ) -> Payment:
        row = self.rows.get(payment_id)
        if row is None or row.payment.partner_id != partner_id:
            raise NotFound("payment not found")
        if row.payment.state is not PaymentState.CANCELLED:
            if row.funds_requested or row.payment.state not in (PaymentState.RECEIVED, PaymentState.ACCEPTED):
                raise FailedPrecondition("too late", reason="PAYMENT_NOT_CANCELLABLE")
            self._move_row(row, row.payment.state, PaymentState.CANCELLED, "", "")
            row.records.append(StepRecord(Step.CANCEL, Outcome.SUCCEEDED))
        return row.payment

    async def refund_facts(self, original_id: str) -> tuple[Payment, int] | None:
        row = self.rows.get(original_id)
        if row is None:
            return None
        refunds = [r.payment for r in self.rows.values() if r.payment.original_payment_id == original_id]
        return row.payment, refundable_minor(row.payment, [(r.state, r.amount.minor_units) for r in refunds])

    async def record_refund(self, registration: RefundRegistration) -> tuple[Payment, bool]:
        key = registration.key
        existing = await self.replay(key)
        if existing is not None:
            return existing, False
        refund = registration.refund
        facts = await self.refund_facts(refund.original_payment_id)
        assert facts is not None
        check_refundable(facts[0], dataclasses.replace(registration.request, amount=refund.amount), facts[1])
        stored = refund.recorded_at(NOW).moved(PaymentState.ACCEPTED, NOW)
        events = [(None, PaymentState.RECEIVED), (PaymentState.RECEIVED, PaymentState.ACCEPTED)]
        self.rows[stored.payment_id] = _Row(stored, list(registration.opening), events, True)
        self.keys[(key.method, key.scope, key.request_id)] = (key.fingerprint, stored.payment_id)
        self.writes += 1
        return stored, True

    def add_settled(self, payment: Payment) -> Payment:
        """A payment that settled earlier (to refund)."""
        settled = dataclasses.replace(payment, state=PaymentState.SETTLED)
        self.rows[settled.payment_id] = _Row(settled, [], [], True)
        return settled

    # -- journal ---------------------------------------------------------------------------

    async def record_entry(self, entry: JournalEntry) -> Payment:
        row = self.rows[entry.payment_id]
        row.records.extend(entry.records)
        for move in entry.moves:
            if row.payment.state is move.from_state:
                self._move_row(row, move.from_state, move.to_state, move.reason, move.message)
        self.writes += 1
        return row.payment

    async def request_funds(self, entry: JournalEntry) -> Payment | None:
        row = self.rows[entry.payment_id]
        if row.payment.state not in (PaymentState.RECEIVED, PaymentState.ACCEPTED):
            return None
        row.funds_requested = True
        return await self.record_entry(entry)

    async def load(self, payment_id: str) -> tuple[Payment, History]:
        row = self.rows[payment_id]
        return row.payment, History(tuple(row.records))

    async def claim(self, payment_id: str) -> bool:
        return not self.rows[payment_id].payment.state.final

    async def due_for_recovery(self, older_than: dt.timedelta | None, limit: int) -> list[str]:
        return [pid for pid, row in self.rows.items() if not row.payment.state.final][:limit]

    def _move_row(self, row: _Row, from_state: PaymentState, to: PaymentState, reason: str, message: str) -> None:
        row.payment = row.payment.moved(to, NOW, reason, message)
        row.events.append((from_state, to))


class Journal:
    """The journal port over :class:`InMemoryPayments` (``record`` is the journal's, not the register's)."""

    def __init__(self, store: InMemoryPayments) -> None:
        self._store = store

    async def record(self, entry: JournalEntry) -> Payment:
        return await self._store.record_entry(entry)

    async def request_funds(self, entry: JournalEntry) -> Payment | None:
        return await self._store.request_funds(entry)

    async def load(self, payment_id: str) -> tuple[Payment, History]:
        return await self._store.load(payment_id)

    async def claim(self, payment_id: str) -> bool:
        return await self._store.claim(payment_id)

    async def due_for_recovery(self, older_than: dt.timedelta | None, limit: int) -> list[str]:
        return await self._store.due_for_recovery(older_than, limit)

    async def park(self, payment_id: str, delay: dt.timedelta) -> None:
        self._store.parked[payment_id] = delay

    async def awaiting_clearing(self, limit: int) -> list[str]:
        rows = self._store.rows.items()
        return [pid for pid, row in rows if row.payment.is_external and not row.payment.state.final][:limit]
