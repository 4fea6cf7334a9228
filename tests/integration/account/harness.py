"""A running account service over real gRPC, for the account integration tests."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc

from meshlib.app import start_service
from meshlib.auth.consent import ConsentView
from meshlib.auth.testing import TestIssuer
from meshlib.auth.verifier import static_jwks
from meshlib.errors import NotFound
from meshlib.grpc_errors import decode_status, error_info
from openbank.account.v1 import (
    account_admin_pb2,
    account_admin_pb2_grpc,
    account_pb2,
    account_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
)
from openbank.common.v1 import money_pb2
from services.account.bootstrap import account_spec
from services.account.settings import AccountSettings
from tests.support.consents import consent_view

LEDGER_SCOPES = ("ledger:read", "ledger:write", "ledger:admin")
ALL_PERMISSIONS = frozenset({"READ_ACCOUNTS", "READ_BALANCES", "READ_TRANSACTIONS", "CONFIRM_FUNDS"})


class SettableClock:
    """A clock the test moves by assigning ``now``."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class FakeConsents:
    """An in-memory ConsentLookup."""

    consents: dict[str, ConsentView] = field(default_factory=dict)
    calls: int = 0

    async def get(self, consent_id: str, *, partner_id: str) -> ConsentView:
        """The consent if it belongs to the partner."""
        self.calls += 1
        consent = self.consents.get(consent_id)
        if consent is None or consent.partner_id != partner_id:
            raise NotFound("consent not found")
        return consent

    def grant(
        self,
        consent_id: str,
        account_names: list[str],
        *,
        customer_id: str = "cust-1",
        partner_id: str = "partner-1",
        permissions: frozenset[str] = ALL_PERMISSIONS,
        reads_per_day: int = 0,
        state: str = "AUTHORISED",
    ) -> None:
        """Register an authorised consent over some accounts."""
        self.consents[consent_id] = consent_view(
            consent_id=consent_id,
            partner_id=partner_id,
            customer_id=customer_id,
            state=state,
            permissions=permissions,
            account_ids=frozenset(name.removeprefix("accounts/") for name in account_names),
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1),
            reads_per_day=reads_per_day,
        )


def money(minor_units: int, currency: str = "EUR") -> money_pb2.Money:
    """A Money message."""
    return money_pb2.Money(currency_code=currency, minor_units=minor_units)


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call."""
    info = error_info(decode_status(error.trailing_metadata()))
    return info.reason if info else ""


def new_id(prefix: str = "r") -> str:
    """A fresh request id."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


@dataclass
class AccountHarness:
    """Stubs, tokens and helpers around one running account service."""

    server: object
    channel: grpc.aio.Channel
    issuer: TestIssuer
    consents: FakeConsents
    database_url: str

    def __post_init__(self) -> None:
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(self.channel)
        self.admin = account_admin_pb2_grpc.AccountAdminServiceStub(self.channel)
        self.accounts = account_pb2_grpc.AccountServiceStub(self.channel)
        self.internal = self.metadata(scopes=LEDGER_SCOPES, subject="service:payment")

    def metadata(self, *, scopes: tuple[str, ...], subject: str = "partner-1", **claims: object) -> tuple:
        """Call metadata with a fresh token."""
        token = self.issuer.token(subject, scopes=list(scopes), **claims)
        return (("authorization", f"Bearer {token}"),)

    def partner(self, consent_id: str, partner_id: str = "partner-1") -> tuple:
        """Metadata of a partner call bound to a consent."""
        return self.metadata(
            scopes=("accounts:read", "funds:confirm"),
            subject=partner_id,
            partner_id=partner_id,
            consent_id=consent_id,
        )

    async def open(
        self,
        *,
        customer: str = "cust-1",
        currency: str = "EUR",
        overdraft: int = 0,
        account_type: int = account_pb2.ACCOUNT_TYPE_CURRENT,
    ) -> account_pb2.Account:
        """Open an account."""
        request = account_admin_pb2.OpenAccountRequest(
            request_id=new_id("open"),
            customer=f"customers/{customer}" if customer else "",
            currency_code=currency,
            type=account_type,
            display_name="Everyday account",
        )
        if overdraft:
            request.overdraft_limit.CopyFrom(money(overdraft, currency))
        answer = await self.admin.OpenAccount(request, metadata=self.internal, timeout=10)
        return answer.account

    async def fund(self, account: str, minor_units: int, currency: str = "EUR") -> ledger_pb2.Transfer:
        """Credit an account from the bank's equity."""
        answer = await self.admin.FundAccount(
            account_admin_pb2.FundAccountRequest(
                request_id=new_id("fund"), account=account, amount=money(minor_units, currency)
            ),
            metadata=self.internal,
            timeout=10,
        )
        return answer.transfer

    async def transfer(
        self,
        debit: str,
        credit: str,
        minor_units: int,
        *,
        pending_seconds: int | None = None,
        request_id: str | None = None,
        currency: str = "EUR",
        reference: str = "",
    ) -> ledger_pb2.Transfer:
        """Create a transfer (single-phase, or pending with a timeout)."""
        request = ledger_pb2.CreateTransferRequest(
            request_id=request_id or new_id("t"),
            debit_account=debit,
            credit_account=credit,
            amount=money(minor_units, currency),
            type=ledger_pb2.TRANSFER_TYPE_PENDING if pending_seconds else ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
            reference=reference,
        )
        if pending_seconds:
            request.timeout.seconds = pending_seconds
        return (await self.ledger.CreateTransfer(request, metadata=self.internal, timeout=10)).transfer

    async def totals(self) -> account_admin_pb2.GetLedgerTotalsResponse:
        """The ledger totals."""
        return await self.admin.GetLedgerTotals(
            account_admin_pb2.GetLedgerTotalsRequest(), metadata=self.internal, timeout=10
        )

    async def balance_of(self, account: str) -> account_pb2.Balance:
        """An account's balance read through a consent covering it (consent "c-balance-probe")."""
        self.consents.grant("c-balance-probe", [account], customer_id=None)  # type: ignore[arg-type]
        answer = await self.accounts.GetBalance(
            account_pb2.GetBalanceRequest(account=account), metadata=self.partner("c-balance-probe"), timeout=10
        )
        return answer.balance


@asynccontextmanager
async def running_account_service(database_url: str, **overrides: object) -> AsyncIterator[AccountHarness]:
    """Start the service on port 0 with a TestIssuer and an in-memory consent lookup."""
    issuer = TestIssuer()
    consents = FakeConsents()
    settings = AccountSettings(
        port=0,
        database_url=database_url,
        service_name="account",
        token_issuer=issuer.issuer,
        token_audience=issuer.audience,
        log_format="console",
        **overrides,
    )
    server = await start_service(
        account_spec(lambda _runtime: consents), settings, jwks_fetcher=static_jwks(issuer.jwks)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield AccountHarness(server, channel, issuer, consents, database_url)
    finally:
        await server.stop(0)
