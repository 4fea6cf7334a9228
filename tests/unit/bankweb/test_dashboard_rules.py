"""The dashboard's rules without HTTP or gRPC: amounts typed by the customer, how long a
sign-in lasts, and that only the signed-in customer's own consents are shown or changed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from bankweb.dashboard import (
    APPROVE_WITHIN,
    SIGNED_IN_FOR,
    ActionRefused,
    Dashboard,
    NotSignedIn,
    SignInAgain,
    parse_amount,
    parse_count,
)
from bankweb.flows import AuthorisationFlow, PageError
from bankweb.ports import AccountChoice, ConsentCard, ConsentSummary, LimitChange, Limits, Session
from bankweb.sessions import AttemptLimiter, MemorySessionStore

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def test_amounts_are_read_exactly_in_minor_units() -> None:
    assert parse_amount("12.5", "x") == 1250
    assert parse_amount(" 1,000.05 ", "x") == 100_005
    assert parse_amount("7", "x") == 700
    assert parse_amount("", "x") is None
    for bad in ("-1", "1.234", "1e3", "12,5.0.0", "abc", "0x10"):
        with pytest.raises(ActionRefused):
            parse_amount(bad, "x")
    assert parse_count("10") == 10 and parse_count("") is None
    for bad in ("-1", "1.5", "ten", "9999999999"):
        with pytest.raises(ActionRefused):
            parse_count(bad)


def _card(consent_id: str, **fields: Any) -> ConsentCard:
    summary = ConsentSummary(name=f"consents/{consent_id}", permissions=("See",), expire_time=NOW)
    values: dict[str, Any] = {
        "consent_id": consent_id,
        "partner_display_name": "Acme Wallet",
        "state": "AUTHORISED",
        "paused": False,
        "summary": summary,
        "accounts": ("accounts/a1",),
        "limits": Limits(currency="EUR", per_payment=10_000),
    }
    values.update(fields)
    return ConsentCard(**values)


class FakeBank:
    """Two customers' consents; records what was changed."""

    def __init__(self) -> None:
        self.consents = {"customers/alice": [_card("c-alice")], "customers/bob": [_card("c-bob")]}
        self.changes: list[tuple[str, str, object]] = []

    async def customer_consents(self, customer: str) -> list[ConsentCard]:
        return self.consents.get(customer, [])

    async def customer_accounts(self, customer: str) -> list[AccountChoice]:
        return [AccountChoice("accounts/a1", "Everyday", "••••1234", "EUR")]

    async def pause(self, consent_id: str, customer: str) -> None:
        self.changes.append(("pause", consent_id, customer))

    async def lower_limits(self, consent_id: str, customer: str, change: LimitChange) -> None:
        self.changes.append(("limits", consent_id, change))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


def _dashboard(clock: Clock) -> tuple[Dashboard, FakeBank]:
    bank = FakeBank()
    flow = AuthorisationFlow(bank, MemorySessionStore(), AttemptLimiter(5, 50, 60), 900, clock=clock)  # type: ignore[arg-type]
    return Dashboard(flow, bank), bank  # type: ignore[arg-type]


def _signed_in(customer: str, at: dt.datetime) -> Session:
    return Session("s", {"customer": customer, "username": "u", "signed_in_at": at.isoformat(), "csrf": "t"})


async def test_a_sign_in_lasts_at_most_its_absolute_lifetime() -> None:
    clock = Clock()
    dashboard, _ = _dashboard(clock)
    session = _signed_in("customers/alice", NOW)
    assert dashboard.customer(session) == "customers/alice"
    clock.now = NOW + SIGNED_IN_FOR - dt.timedelta(seconds=1)
    assert dashboard.customer(session) == "customers/alice"
    clock.now = NOW + SIGNED_IN_FOR
    with pytest.raises(NotSignedIn):
        dashboard.customer(session)
    for not_signed_in in (None, Session("s", {"csrf": "t"}), Session("s", {"customer": "customers/alice"})):
        with pytest.raises(NotSignedIn):
            dashboard.customer(not_signed_in)


async def test_only_the_customers_own_consents_are_shown_or_changed() -> None:
    dashboard, bank = _dashboard(Clock())
    alice = _signed_in("customers/alice", NOW)
    assert (await dashboard.consent(alice, "c-alice")).consent_id == "c-alice"
    with pytest.raises(PageError) as missing:
        await dashboard.consent(alice, "c-bob")
    assert missing.value.status == 404
    with pytest.raises(PageError):
        await dashboard.pause(alice, "c-bob")
    assert bank.changes == []
    assert "Paused" in await dashboard.pause(alice, "c-alice")
    assert bank.changes == [("pause", "c-alice", "customers/alice")]


async def test_lowering_limits_sends_only_what_the_customer_typed() -> None:
    dashboard, bank = _dashboard(Clock())
    alice = _signed_in("customers/alice", NOW)
    await dashboard.lower_limits(alice, "c-alice", "5.00", "", "3")
    assert bank.changes == [("limits", "c-alice", LimitChange("EUR", per_payment=500, reads_per_day=3))]
    for fields in (("", "", ""), ("", "10.00", "")):  # nothing typed; no total limit to lower
        with pytest.raises(ActionRefused):
            await dashboard.lower_limits(alice, "c-alice", *fields)


async def test_approving_needs_a_recent_sign_in() -> None:
    clock = Clock()
    dashboard, _ = _dashboard(clock)
    session = _signed_in("customers/alice", NOW)
    clock.now = NOW + APPROVE_WITHIN
    assert dashboard.customer(session) == "customers/alice"  # the dashboard still works
    with pytest.raises(SignInAgain):
        await dashboard.approvals(session)
    with pytest.raises(SignInAgain):
        await dashboard.decide_approval(session, "a" * 32, True, ("accounts/a1",))
