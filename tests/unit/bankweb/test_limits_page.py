"""The "Limits and features" page's rules without gRPC (bankweb.isolation over a fake payment
service): a restore needs a sign-in of the last five minutes, is always for the signed-in
customer, and the dashboard's notice lists only what is paused or lowered. Over HTTP (the
Starlette app in process): a signed-out or stale sign-in is sent to sign in, a form without
the session's CSRF token or from another site changes nothing."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from starlette.applications import Starlette

from bankweb.dashboard import APPROVE_WITHIN, ActionRefused, Dashboard, SignInAgain
from bankweb.flows import AuthorisationFlow
from bankweb.isolation import Capability, CustomerLimits
from bankweb.isolation_web import IsolationRoutes
from bankweb.ports import Session
from bankweb.sessions import AttemptLimiter, MemorySessionStore
from meshlib.errors import FailedPrecondition

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


class FakePayment:
    """Alice's bill payments paused, her daily limit lowered; records the restores."""

    def __init__(self) -> None:
        self.restored: list[tuple[str, str]] = []

    async def capabilities(self, customer: str) -> list[Capability]:
        if customer != "customers/alice":
            return []
        return [
            Capability("TRANSFER", "ACTIVE"),
            Capability("BILL_PAYMENT", "PAUSED", reason="never used for 365 days"),
            Capability("DAILY_LIMIT", "LOWERED", limit="EUR 500.00", reason="low use for 90 days"),
        ]

    async def restore(self, customer: str, capability: str) -> Capability:
        if capability == "TRANSFER":
            raise FailedPrecondition("not isolated", reason="CAPABILITY_NOT_ISOLATED")
        self.restored.append((customer, capability))
        return Capability(capability, "ACTIVE")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


def _limits(clock: Clock) -> tuple[CustomerLimits, FakePayment, AuthorisationFlow, MemorySessionStore]:
    sessions = MemorySessionStore()
    flow = AuthorisationFlow(None, sessions, AttemptLimiter(5, 50, 60), 900, clock=clock)  # type: ignore[arg-type]
    payment = FakePayment()
    return CustomerLimits(Dashboard(flow, None), payment), payment, flow, sessions  # type: ignore[arg-type]


def _signed_in(customer: str, at: dt.datetime) -> Session:
    return Session("s", {"customer": customer, "username": "alice", "signed_in_at": at.isoformat(), "csrf": "t"})


async def test_a_restore_needs_a_recent_sign_in_and_is_for_the_signed_in_customer_only() -> None:
    clock = Clock()
    limits, payment, _, _ = _limits(clock)
    alice = _signed_in("customers/alice", NOW)
    page = await limits.page(alice)
    assert [c.capability for c in page.isolated] == ["BILL_PAYMENT", "DAILY_LIMIT"]
    assert [c.capability for c in page.active] == ["TRANSFER"]
    assert "Bill payments" in await limits.restore(alice, "BILL_PAYMENT")
    assert payment.restored == [("customers/alice", "BILL_PAYMENT")]
    with pytest.raises(ActionRefused):
        await limits.restore(alice, "TRANSFER")  # not paused
    with pytest.raises(ActionRefused):
        await limits.restore(alice, "EVERYTHING")  # not a capability: never sent
    clock.now = NOW + APPROVE_WITHIN
    with pytest.raises(SignInAgain):
        await limits.restore(alice, "DAILY_LIMIT")
    assert payment.restored == [("customers/alice", "BILL_PAYMENT")]
    # The dashboard's notice still shows within the longer sign-in.
    assert [c.capability for c in await limits.notice(alice)] == ["BILL_PAYMENT", "DAILY_LIMIT"]


async def test_over_http_a_stale_sign_in_goes_to_sign_in_and_a_forged_form_changes_nothing() -> None:
    clock = Clock()
    limits, payment, flow, sessions = _limits(clock)
    routes = IsolationRoutes(flow, limits, sessions, secure_cookies=False)
    await sessions.save("s1", _signed_in("customers/alice", NOW).data, 900)
    app = Starlette(routes=routes.routes())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bank", cookies={"bank_session": "s1"}) as web:
        page = await web.get("/limits")
        assert page.status_code == 200 and 'id="capability-BILL_PAYMENT"' in page.text
        assert "Lowered to EUR 500.00 a day" in page.text
        forged = await web.post("/limits/BILL_PAYMENT/restore", data={"csrf_token": "other"})
        assert forged.status_code == 403
        cross_site = await web.post(
            "/limits/BILL_PAYMENT/restore", data={"csrf_token": "t"}, headers={"sec-fetch-site": "cross-site"}
        )
        assert cross_site.status_code == 403 and payment.restored == []
        done = await web.post("/limits/BILL_PAYMENT/restore", data={"csrf_token": "t"})
        assert (done.status_code, done.headers["location"]) == (303, "/limits")
        assert payment.restored == [("customers/alice", "BILL_PAYMENT")]
        clock.now = NOW + APPROVE_WITHIN
        stale = await web.post("/limits/DAILY_LIMIT/restore", data={"csrf_token": "t"})
        assert (stale.status_code, stale.headers["location"]) == (303, "/sign-in?next=limits")
        assert (await web.get("/limits")).headers["location"] == "/sign-in?next=limits"
    assert payment.restored == [("customers/alice", "BILL_PAYMENT")]
