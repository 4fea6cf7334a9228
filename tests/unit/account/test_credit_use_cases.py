"""The credit line's use cases (services/account/credit_service.py) over an in-memory unit of
work and consent lookup (no database, no gRPC): what an offer decision, an acceptance and a
closing change, together or not at all, and who may see what. The accrual, which books
through the ledger's own transfer code, is tested on the real stores
(tests/integration/account/test_credit_lines.py)."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from meshlib.errors import FailedPrecondition, NotFound, PermissionDenied
from services.account.credit_service import CreditService
from services.account.domain.credit_lines import (
    CreditEvent,
    CreditLine,
    CreditOffer,
    LineState,
    Movement,
    OfferState,
)
from services.account.domain.credit_offers import Band, CreditRules, Refusal
from services.account.domain.ledger import Account, Direction
from services.account.read_service import ConsentCaller
from tests.support.consents import consent_view
from tests.unit.account.samples import sample_account

NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
RULES = CreditRules(
    history_days=30,
    validity=dt.timedelta(days=14),
    min_income_months=1,
    max_disputes=0,
    max_negative_days=0,
    bands=(Band(min_monthly_income=50_000, limit_share_bps=4_000, max_limit=100_000, apr_bps=1_825),),
)
CALLER = ConsentCaller(partner_id="p1", consent_id="c1")


@dataclass
class State:
    accounts: dict[str, Account]
    movements: dict[str, list[Movement]] = field(default_factory=dict)
    offers: dict[str, CreditOffer] = field(default_factory=dict)
    lines: dict[str, CreditLine] = field(default_factory=dict)
    events: list[CreditEvent] = field(default_factory=list)
    keys: dict[tuple[str, str, str], tuple[str, bytes]] = field(default_factory=dict)
    audit: list[tuple[str, str]] = field(default_factory=list)


class FakeUnitOfWork:
    """A copy of the state to change; the store takes it only on commit."""

    def __init__(self, store: list[State], read_only: bool = False) -> None:
        self._store = store
        self.state = copy.deepcopy(store[0])
        state = self.state

        class Accounts:
            async def get(self, account_id: str) -> Account | None:
                return state.accounts.get(account_id)

            async def lock(self, ids: Any) -> dict[str, Account]:
                return {i: state.accounts[i] for i in ids if i in state.accounts}

        class Credit:
            async def add_offer(self, offer: CreditOffer) -> None:
                state.offers[offer.offer_id] = offer

            async def get_offer(self, offer_id: str, *, lock: bool = False) -> CreditOffer | None:
                return state.offers.get(offer_id)

            async def save_offer(self, offer: CreditOffer) -> None:
                state.offers[offer.offer_id] = offer

            async def add_line(self, line: CreditLine) -> None:
                assert not any(
                    other.account_id == line.account_id and other.state is LineState.ACTIVE
                    for other in state.lines.values()
                ), "the unique index: one active line per account"
                state.lines[line.line_id] = line

            async def get_line(self, line_id: str, *, lock: bool = False) -> CreditLine | None:
                return state.lines.get(line_id)

            async def active_line_of(self, account_id: str) -> CreditLine | None:
                return next(
                    (x for x in state.lines.values() if x.account_id == account_id and x.state is LineState.ACTIVE),
                    None,
                )

            async def save_line(
                self, line: CreditLine, *, accrued_before: dt.date | None = None, release: bool = True
            ) -> bool:
                state.lines[line.line_id] = line
                return True

            async def customer_lines(self, customer_id: str, before: Any, limit: int) -> list[CreditLine]:
                return [x for x in state.lines.values() if x.customer_id == customer_id][:limit]

            async def set_overdraft_limit(self, account_id: str, limit: int, now: dt.datetime) -> None:
                state.accounts[account_id].overdraft_limit = limit

            async def movements(self, account_id: str, customer_id: str | None, since: dt.datetime) -> list[Movement]:
                return [m for m in state.movements.get(account_id, []) if m.booking_time >= since]

            async def add_event(self, event: CreditEvent) -> None:
                state.events.append(event)

        class Keys:
            async def lookup(self, scope: str, method: str, request_id: str, fingerprint: str) -> bytes | None:
                found = state.keys.get((scope, method, request_id))
                return found[1] if found else None

            async def save(
                self, scope: str, method: str, request_id: str, fingerprint: str, answer: bytes, at: Any
            ) -> None:
                state.keys[(scope, method, request_id)] = (fingerprint, answer)

        class Audit:
            def record(self, action: str, resource: str, **details: Any) -> None:
                state.audit.append((action, resource))

        self.accounts, self.credit, self.idempotency, self.audit = Accounts(), Credit(), Keys(), Audit()

    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def commit(self) -> None:
        self._store[0] = self.state


class Failpoints(list[str]):
    def __call__(self, point: str) -> None:
        if point in self:
            raise RuntimeError(point)


@dataclass
class Bank:
    credit: CreditService
    store: list[State]
    failpoints: Failpoints

    @property
    def state(self) -> State:
        return self.store[0]


def bank(*, salary: int = 0) -> Bank:
    alice = sample_account("a1", at=NOW, customer_id="cust1", balance=salary)
    store = [State({"a1": alice, "b1": sample_account("b1", at=NOW, customer_id="cust2")})]
    if salary:
        store[0].movements["a1"] = [Movement(NOW - dt.timedelta(days=3), Direction.CREDIT, salary, "t1", "salary")]
    consents = _Consents()
    failpoints = Failpoints()
    service = CreditService(
        lambda read_only=False: FakeUnitOfWork(store, read_only),  # type: ignore[arg-type, return-value]
        consents,
        RULES,
        clock=lambda: NOW,
        failpoint=failpoints,
    )
    return Bank(service, store, failpoints)


class _Consents:
    def __init__(self) -> None:
        self.view = consent_view(permissions=frozenset({"CREDIT"}), account_ids=frozenset({"a1"}))

    async def get(self, consent_id: str, *, partner_id: str) -> Any:
        if consent_id != "c1" or partner_id != "p1":
            raise NotFound("consent not found")
        return self.view


async def test_the_decision_is_recorded_once_per_request_id_with_its_event() -> None:
    refused = bank()
    offer = await refused.credit.request_offer(CALLER, "r1", "a1")
    assert (offer.state, offer.refusal) == (OfferState.REFUSED, Refusal.NOT_ENOUGH_INCOME_HISTORY)
    assert (await refused.credit.request_offer(CALLER, "r1", "a1")).offer_id == offer.offer_id
    assert len(refused.state.offers) == 1 and [e.state for e in refused.state.events] == ["REFUSED"]
    offered = bank(salary=250_000)
    offer = await offered.credit.request_offer(CALLER, "r1", "a1")
    assert (offer.state, offer.limit, offer.apr_bps) == (OfferState.OFFERED, 100_000, 1_825)
    assert offered.state.audit == [("credit.offer", f"creditOffers/{offer.offer_id}")]


async def test_only_the_consents_accounts_and_only_with_the_credit_permission() -> None:
    b = bank(salary=250_000)
    with pytest.raises(NotFound):
        await b.credit.request_offer(CALLER, "r1", "b1")  # not in the consent
    offer = await b.credit.request_offer(CALLER, "r2", "a1")
    with pytest.raises(NotFound):
        await b.credit.get_offer(ConsentCaller("p2", "c1"), offer.offer_id)  # another partner's consent
    with pytest.raises(NotFound):
        await b.credit.customer_offer("cust2", offer.offer_id)  # another customer
    b.credit._consents.view = replace(b.credit._consents.view, permissions=frozenset({"READ_BALANCES"}))  # type: ignore[attr-defined]
    with pytest.raises(PermissionDenied):
        await b.credit.get_offer(CALLER, offer.offer_id)
    assert b.state.events[-1].state == "OFFERED" and len(b.state.events) == 1


async def test_acceptance_opens_the_line_and_sets_the_limit_together_or_not_at_all() -> None:
    b = bank(salary=250_000)
    offer = await b.credit.request_offer(CALLER, "r1", "a1")
    b.failpoints.append("before_accept_commit")
    with pytest.raises(RuntimeError):
        await b.credit.accept("cust1", "k1", offer.offer_id)
    assert b.state.accounts["a1"].overdraft_limit == 0 and not b.state.lines
    assert b.state.offers[offer.offer_id].state is OfferState.OFFERED and len(b.state.events) == 1
    b.failpoints.clear()
    accepted, view = await b.credit.accept("cust1", "k1", offer.offer_id)
    assert accepted.state is OfferState.ACCEPTED and accepted.line_id == view.line.line_id
    assert b.state.accounts["a1"].overdraft_limit == 100_000
    assert [e.state for e in b.state.events] == ["OFFERED", "ACCEPTED", "ACTIVE"]
    _, again = await b.credit.accept("cust1", "k1", offer.offer_id)  # the same request: the same line
    assert again.line.line_id == view.line.line_id and len(b.state.lines) == 1
    with pytest.raises(FailedPrecondition) as twice:
        await b.credit.accept("cust1", "k2", offer.offer_id)
    assert twice.value.reason == "INVALID_STATE_TRANSITION"


async def test_closing_needs_nothing_owed_and_gives_the_limit_back() -> None:
    b = bank(salary=250_000)
    offer = await b.credit.request_offer(CALLER, "r1", "a1")
    _, view = await b.credit.accept("cust1", "k1", offer.offer_id)
    b.state.accounts["a1"].debits_posted = 300_000  # drawn to -500.00
    with pytest.raises(FailedPrecondition) as owed:
        await b.credit.close("cust1", "c1", view.line.line_id)
    assert (owed.value.reason, owed.value.metadata["owed_minor_units"]) == ("CREDIT_LINE_OWED", "50000")
    b.state.accounts["a1"].credits_posted = 300_000  # repaid to zero
    b.state.accounts["a1"].debits_pending = 1  # but a debit held: still owed
    with pytest.raises(FailedPrecondition):
        await b.credit.close("cust1", "c2", view.line.line_id)
    b.state.accounts["a1"].debits_pending = 0
    with pytest.raises(NotFound):
        await b.credit.close("cust2", "c3", view.line.line_id)
    closed = await b.credit.close("cust1", "c4", view.line.line_id)
    assert closed.line.state is LineState.CLOSED and b.state.accounts["a1"].overdraft_limit == 0
    assert [e.state for e in b.state.events][-1] == "CLOSED"
    with pytest.raises(FailedPrecondition) as again:
        await b.credit.close("cust1", "c5", view.line.line_id)
    assert again.value.reason == "INVALID_STATE_TRANSITION"


async def test_a_partner_reads_a_line_only_over_an_account_of_its_consent_and_customer() -> None:
    b = bank(salary=250_000)
    offer = await b.credit.request_offer(CALLER, "r1", "a1")
    _, view = await b.credit.accept("cust1", "k1", offer.offer_id)
    assert (await b.credit.get_line(CALLER, view.line.line_id)).line.line_id == view.line.line_id
    consents = b.credit._consents  # type: ignore[attr-defined]
    granted = consents.view
    for other in (
        replace(granted, account_ids=frozenset({"b1"})),  # no longer covers the line's account
        replace(granted, customer_id="cust2"),  # another customer's consent naming the account
    ):
        consents.view = other
        with pytest.raises(NotFound):
            await b.credit.get_line(CALLER, view.line.line_id)


async def test_interest_deferred_at_the_limit_is_owed_even_at_a_zero_balance() -> None:
    b = bank(salary=250_000)
    offer = await b.credit.request_offer(CALLER, "r1", "a1")
    _, view = await b.credit.accept("cust1", "k1", offer.offer_id)
    line_id = view.line.line_id
    b.state.lines[line_id] = replace(b.state.lines[line_id], deferred=17)  # the ledger could not take it yet
    with pytest.raises(FailedPrecondition) as owed:
        await b.credit.close("cust1", "c1", line_id)
    assert (owed.value.reason, owed.value.metadata["owed_minor_units"]) == ("CREDIT_LINE_OWED", "17")
    assert (await b.credit.customer_line("cust1", line_id)).owed == 17  # what the dashboard and wallet show


async def test_an_account_with_the_banks_own_overdraft_is_refused_saying_so() -> None:
    b = bank(salary=250_000)
    b.state.accounts["a1"].overdraft_limit = 10_000
    with pytest.raises(FailedPrecondition) as refused:
        await b.credit.request_offer(CALLER, "r1", "a1")
    assert refused.value.reason == "CREDIT_ACCOUNT_NOT_ELIGIBLE" and "overdraft" in str(refused.value)
    assert b.state.offers == {} and b.state.events == []
