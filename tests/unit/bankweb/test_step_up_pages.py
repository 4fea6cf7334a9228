"""The step-up pages' rules without gRPC (bankweb.step_up over a fake payment service): only the
signed-in customer's waiting payments are listed or reachable, confirming or declining needs a
sign-in of the last five minutes, a malformed code never reaches payment, payment's refusals
read in the customer's words. Over HTTP (the Starlette app in process): a form without the
session's CSRF token or from another site reaches nothing, a stale sign-in is sent to sign in
and back."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from starlette.applications import Starlette

from bankweb.dashboard import APPROVE_WITHIN, ActionRefused, Dashboard, SignInAgain
from bankweb.flows import AuthorisationFlow, PageError
from bankweb.ports import Session
from bankweb.sessions import AttemptLimiter, MemorySessionStore
from bankweb.step_up import Confirmed, PaymentConfirmations, PaymentToConfirm
from bankweb.step_up_web import StepUpRoutes
from meshlib.errors import FailedPrecondition

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
RIGHT = "246810"


def _waiting(payment_id: str) -> PaymentToConfirm:
    return PaymentToConfirm(
        payment_id, "partners/acme", "c1", "EUR 300.00", "Account shop-1", "at this bank", "", NOW, 5
    )


class FakePayment:
    """Alice has one payment waiting; bob one; records what reached payment."""

    def __init__(self) -> None:
        self.waiting = {"customers/alice": [_waiting("p-alice")], "customers/bob": [_waiting("p-bob")]}
        self.calls: list[tuple[str, str, str]] = []

    async def payments_to_confirm(self, customer: str) -> list[PaymentToConfirm]:
        return list(self.waiting.get(customer, []))

    async def confirm_payment(self, payment_id: str, customer: str, code: str) -> Confirmed:
        self.calls.append(("confirm", payment_id, code))
        if code != RIGHT:
            raise FailedPrecondition("no match", reason="AUTHORISATION_CODE_INVALID")
        self.waiting[customer] = [p for p in self.waiting[customer] if p.payment_id != payment_id]
        return Confirmed(payment_id, "SETTLED", "EUR 300.00", "Account shop-1")

    async def decline_payment(self, payment_id: str, customer: str) -> None:
        self.calls.append(("decline", payment_id, ""))
        self.waiting[customer] = [p for p in self.waiting[customer] if p.payment_id != payment_id]


class FakeConsents:
    async def customer_consents(self, customer: str) -> list[object]:
        return []


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


def _pages(clock: Clock) -> tuple[PaymentConfirmations, FakePayment, AuthorisationFlow, MemorySessionStore]:
    sessions = MemorySessionStore()
    flow = AuthorisationFlow(None, sessions, AttemptLimiter(5, 50, 60), 900, clock=clock)  # type: ignore[arg-type]
    payment = FakePayment()
    pages = PaymentConfirmations(Dashboard(flow, None), payment, FakeConsents())  # type: ignore[arg-type]
    return pages, payment, flow, sessions


def _signed_in(customer: str, at: dt.datetime) -> Session:
    return Session("s", {"customer": customer, "username": "alice", "signed_in_at": at.isoformat(), "csrf": "t"})


async def test_only_the_customer_s_own_payments_with_a_recent_sign_in_and_a_well_formed_code() -> None:
    clock = Clock()
    pages, payment, _, _ = _pages(clock)
    alice = _signed_in("customers/alice", NOW)
    assert [p.payment_id for p in (await pages.page(alice)).payments] == ["p-alice"]
    with pytest.raises(PageError):
        await pages.confirm(alice, "p-bob", RIGHT)  # bob's: not found, never sent
    with pytest.raises(ActionRefused):
        await pages.confirm(alice, "p-alice", "12ab56")  # not 6 digits: never sent
    with pytest.raises(ActionRefused) as wrong:
        await pages.confirm(alice, "p-alice", "000000")
    assert "does not match this payment" in wrong.value.message
    assert payment.calls == [("confirm", "p-alice", "000000")]
    clock.now = NOW + APPROVE_WITHIN
    with pytest.raises(SignInAgain):
        await pages.confirm(alice, "p-alice", RIGHT)
    clock.now = NOW
    assert (await pages.confirm(alice, "p-alice", RIGHT)).startswith("Confirmed. EUR 300.00 was paid")
    with pytest.raises(PageError):
        await pages.decline(alice, "p-alice")  # no longer waiting


async def test_over_http_a_forged_or_cross_site_form_reaches_nothing_and_a_stale_sign_in_signs_in_again() -> None:
    clock = Clock()
    pages, payment, flow, sessions = _pages(clock)
    routes = StepUpRoutes(flow, pages, sessions, secure_cookies=False)
    await sessions.save("s1", _signed_in("customers/alice", NOW).data, 900)
    app = Starlette(routes=routes.routes())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bank", cookies={"bank_session": "s1"}) as web:
        page = await web.get("/payments/confirm/p-alice")
        assert page.status_code == 200 and 'id="amount">EUR 300.00' in page.text
        assert (await web.get("/payments/confirm/p-bob")).status_code == 404
        form = {"csrf_token": "t", "decision": "confirm", "authentication_code": RIGHT}
        assert (await web.post("/payments/confirm/p-alice", data={**form, "csrf_token": "other"})).status_code == 403
        cross_site = await web.post("/payments/confirm/p-alice", data=form, headers={"sec-fetch-site": "cross-site"})
        assert cross_site.status_code == 403 and payment.calls == []
        wrong = await web.post("/payments/confirm/p-alice", data={**form, "authentication_code": "000000"})
        assert wrong.status_code == 409 and "does not match this payment" in wrong.text
        clock.now = NOW + APPROVE_WITHIN
        stale = await web.post("/payments/confirm/p-alice", data=form)
        assert (stale.status_code, stale.headers["location"]) == (303, "/sign-in?next=payments")
        clock.now = NOW
        done = await web.post("/payments/confirm/p-alice", data={**form, "decision": "decline"})
        assert (done.status_code, done.headers["location"]) == (303, "/payments/confirm")
        listed = await web.get("/payments/confirm")
        assert "Declined. The payment of EUR 300.00" in listed.text and 'id="none"' in listed.text
    assert payment.calls == [("confirm", "p-alice", "000000"), ("decline", "p-alice", "")]
