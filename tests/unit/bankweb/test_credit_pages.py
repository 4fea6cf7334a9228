"""The credit pages' rules without gRPC (bankweb.credit over a fake account service): accepting
an offer or closing a line needs a sign-in of the last five minutes and is for the signed-in
customer only (another's offer is not found); the bank's refusals show in the customer's words.
Over HTTP (the Starlette app in process): signed out, the offer page sends the customer to sign
in and brings them back to the offer; a forged or cross-site form accepts nothing."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from starlette.applications import Starlette

from bankweb.credit import CreditOffers, OfferView
from bankweb.credit_web import CreditRoutes
from bankweb.dashboard import APPROVE_WITHIN, ActionRefused, Dashboard, SignInAgain
from bankweb.flows import AuthorisationFlow, PageError
from bankweb.ports import Session
from bankweb.sessions import AttemptLimiter, MemorySessionStore
from meshlib.errors import FailedPrecondition, NotFound

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
OFFER = "5b1e" + "0" * 28
LINE = "a1" + "0" * 30


class FakeCredit:
    """Alice's offer; records acceptances and closings; a line with something owed."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str, str]] = []
        self.closed: list[tuple[str, str]] = []
        self.owed = True

    def _offer(self, state: str) -> OfferView:
        return OfferView(OFFER, "accounts/a1", state, "EUR 300.00", "36.50 % a year", "EUR 9.00", NOW, "")

    async def credit_offer(self, offer_id: str, customer: str) -> OfferView:
        if offer_id != OFFER or customer != "customers/alice":
            raise NotFound("credit offer not found")
        return self._offer("ACCEPTED" if self.accepted else "OFFERED")

    async def accept_credit_offer(self, offer_id: str, customer: str) -> OfferView:
        self.accepted.append((customer, offer_id))
        return self._offer("ACCEPTED")

    async def close_credit_line(self, line_id: str, customer: str) -> None:
        if self.owed:
            raise FailedPrecondition("owed", reason="CREDIT_LINE_OWED")
        self.closed.append((customer, line_id))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


def _offers(clock: Clock) -> tuple[CreditOffers, FakeCredit, AuthorisationFlow, MemorySessionStore]:
    sessions = MemorySessionStore()
    flow = AuthorisationFlow(None, sessions, AttemptLimiter(5, 50, 60), 900, clock=clock)  # type: ignore[arg-type]
    credit = FakeCredit()
    return CreditOffers(Dashboard(flow, None), credit), credit, flow, sessions  # type: ignore[arg-type]


def _signed_in(customer: str, at: dt.datetime) -> Session:
    return Session("s", {"customer": customer, "username": "alice", "signed_in_at": at.isoformat(), "csrf": "t"})


async def test_accepting_and_closing_need_a_recent_sign_in_of_the_customer_whose_they_are() -> None:
    clock = Clock()
    offers, credit, _, _ = _offers(clock)
    alice, bob = _signed_in("customers/alice", NOW), _signed_in("customers/bob", NOW)
    assert (await offers.offer(alice, OFFER)).state == "OFFERED"
    with pytest.raises(PageError):
        await offers.accept(bob, OFFER)  # not bob's: not found, nothing sent
    assert "below zero down to EUR 300.00" in await offers.accept(alice, OFFER)
    assert credit.accepted == [("customers/alice", OFFER)]
    with pytest.raises(ActionRefused) as owed:
        await offers.close(alice, LINE)
    assert "Repay what you owe first" in owed.value.message
    credit.owed = False
    clock.now = NOW + APPROVE_WITHIN
    with pytest.raises(SignInAgain):
        await offers.close(alice, LINE)
    assert credit.closed == []


async def test_over_http_signed_out_goes_to_sign_in_and_back_and_a_forged_form_accepts_nothing() -> None:
    clock = Clock()
    offers, credit, flow, sessions = _offers(clock)
    routes = CreditRoutes(flow, offers, sessions, secure_cookies=False)
    app = Starlette(routes=routes.routes())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bank") as web:
        signed_out = await web.get(f"/credit/offers/{OFFER}")
        assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/sign-in?next=credit")
        back = await web.get("/credit")  # after signing in: the offer the customer opened
        assert back.headers["location"] == f"/credit/offers/{OFFER}"
    await sessions.save("s1", _signed_in("customers/alice", NOW).data, 900)
    async with httpx.AsyncClient(transport=transport, base_url="http://bank", cookies={"bank_session": "s1"}) as web:
        page = await web.get(f"/credit/offers/{OFFER}")
        assert page.status_code == 200 and 'id="accept"' in page.text and "EUR 300.00" in page.text
        forged = await web.post(f"/credit/offers/{OFFER}", data={"csrf_token": "other", "decision": "accept"})
        assert forged.status_code == 403
        cross_site = await web.post(
            f"/credit/offers/{OFFER}",
            data={"csrf_token": "t", "decision": "accept"},
            headers={"sec-fetch-site": "cross-site"},
        )
        assert cross_site.status_code == 403 and credit.accepted == []
        done = await web.post(f"/credit/offers/{OFFER}", data={"csrf_token": "t", "decision": "accept"})
        assert (done.status_code, done.headers["location"]) == (303, f"/credit/offers/{OFFER}")
        assert credit.accepted == [("customers/alice", OFFER)]
        credit.owed = False
        for forged_close in (
            await web.post(f"/credit/lines/{LINE}/close", data={"csrf_token": "other"}),
            await web.post(
                f"/credit/lines/{LINE}/close", data={"csrf_token": "t"}, headers={"sec-fetch-site": "cross-site"}
            ),
        ):
            assert forged_close.status_code == 403
        assert credit.closed == []  # a forged or cross-site close reaches nothing
        credit.owed = True
        closing = await web.post(f"/credit/lines/{LINE}/close", data={"csrf_token": "t"})
        assert (closing.status_code, closing.headers["location"]) == (303, "/consents")  # refused: a notice
        clock.now = NOW + APPROVE_WITHIN
        stale = await web.get(f"/credit/offers/{OFFER}")
        assert stale.headers["location"] == "/sign-in?next=credit"
