"""The bank's products on the customer's dashboard (bankweb/dashboard.py, _products.html) over a
fake bank: the signed-in customer's own applications and credit lines; the close button only
on an open line that owes nothing; the connections still show when the products cannot."""

from __future__ import annotations

import datetime as dt

from jinja2 import Environment, FileSystemLoader, select_autoescape

from bankweb.dashboard import Dashboard
from bankweb.flows import AuthorisationFlow
from bankweb.grpc_bank import credit_line_view
from bankweb.ports import AccountChoice, ApplicationLine, ConsentCard, CreditLineView, Session
from bankweb.sessions import AttemptLimiter, MemorySessionStore
from bankweb.web_base import TEMPLATES
from meshlib.errors import Unavailable
from openbank.common.v1 import money_pb2
from openbank.credit.v1 import credit_pb2

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def _eur(minor_units: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", minor_units=minor_units)


def _line(line_id: str, owed: int, state: int = credit_pb2.CREDIT_LINE_STATE_ACTIVE) -> CreditLineView:
    return credit_line_view(
        credit_pb2.CreditLine(
            name=f"creditLines/{line_id}",
            account="accounts/a1",
            state=state,
            limit=_eur(50_000),
            apr_bps=1190,
            owed=_eur(owed),
            interest_charged=_eur(37),
            repaid=_eur(10_000),
        )
    )


class FakeBank:
    """Alice has an application and two lines; Bob has his own; ``down`` makes products fail."""

    def __init__(self) -> None:
        self.down = False
        self.applications = {
            "customers/alice": [ApplicationLine("app-alice", "Acme Wallet", "ACTIVE", NOW, "accounts/a1")],
            "customers/bob": [ApplicationLine("app-bob", "Other Wallet", "REFERRED", NOW)],
        }
        self.lines = {"customers/alice": [_line("owing", 12_345), _line("clear", 0)], "customers/bob": []}

    async def customer_consents(self, customer: str) -> list[ConsentCard]:
        return []

    async def customer_accounts(self, customer: str) -> list[AccountChoice]:
        return [AccountChoice("accounts/a1", "Everyday", "••••1234", "EUR")]

    async def customer_applications(self, customer: str) -> list[ApplicationLine]:
        if self.down:
            raise Unavailable("identity is down")
        return self.applications[customer]

    async def customer_credit_lines(self, customer: str) -> list[CreditLineView]:
        if self.down:
            raise Unavailable("account is down")
        return self.lines[customer]


def _dashboard(bank: FakeBank) -> Dashboard:
    flow = AuthorisationFlow(bank, MemorySessionStore(), AttemptLimiter(5, 50, 60), 900, clock=lambda: NOW)  # type: ignore[arg-type]
    return Dashboard(flow, bank)  # type: ignore[arg-type]


def _alice() -> Session:
    return Session(
        "s", {"customer": "customers/alice", "username": "alice", "signed_in_at": NOW.isoformat(), "csrf": "t"}
    )


def _render(overview: object) -> str:
    environment = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(default=True))
    return environment.get_template("consents.html").render(page=overview, csrf="t", signed_in=True, notice="")


def test_a_lines_figures_in_words_and_what_is_still_available() -> None:
    line = _line("owing", 12_345)
    assert (line.limit, line.owed, line.available) == ("EUR 500.00", "EUR 123.45", "EUR 376.55")
    assert (line.interest_charged, line.repaid, line.rate) == ("EUR 0.37", "EUR 100.00", "11.90 % a year")
    assert not line.closable and _line("clear", 0).closable
    assert not _line("closed", 0, credit_pb2.CREDIT_LINE_STATE_CLOSED).closable
    assert _line("over", 60_000).available == "EUR 0.00"


async def test_the_customer_sees_its_own_products_and_may_close_only_a_line_owing_nothing() -> None:
    overview = await _dashboard(FakeBank()).overview(_alice())
    assert [a.application_id for a in overview.applications] == ["app-alice"]
    assert not overview.products_missing
    page = _render(overview)
    assert 'id="application-app-alice"' in page and "Account open and active" in page and "app-bob" not in page
    assert 'action="/credit/lines/clear/close"' in page and 'id="close-clear"' in page
    assert 'id="close-owing"' not in page and 'id="close-later-owing"' in page
    assert "EUR 123.45" in page and "11.90 % a year" in page


async def test_the_connections_still_show_when_the_products_cannot() -> None:
    bank = FakeBank()
    bank.down = True
    overview = await _dashboard(bank).overview(_alice())
    assert overview.products_missing and overview.applications == [] and overview.credit_lines == []
    assert 'id="products-missing"' in _render(overview)
