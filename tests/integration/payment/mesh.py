"""Account + settlement + payment running in-process over real gRPC (port 0), for payment tests.

Tokens come from one ``TestIssuer`` that every service trusts; the payment service gets a
service token from it, a fake consent lookup and fake partner limits (identity is not run).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from meshlib.app import start_service
from meshlib.auth.testing import TestIssuer
from meshlib.auth.verifier import static_jwks
from openbank.account.v1 import (
    account_admin_pb2,
    account_admin_pb2_grpc,
    account_pb2,
    account_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
)
from openbank.common.v1 import money_pb2
from openbank.payment.v1 import payment_admin_pb2, payment_admin_pb2_grpc, payment_pb2, payment_pb2_grpc
from openbank.settlement.v1 import (
    position_pb2,
    position_pb2_grpc,
    settlement_admin_pb2,
    settlement_admin_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
)
from services.account.bootstrap import account_spec
from services.account.settings import AccountSettings
from services.payment.bootstrap import SERVICE_SCOPES, IdentitySide, payment_spec
from services.payment.settings import PaymentSettings
from services.settlement.bootstrap import settlement_spec
from services.settlement.settings import SettlementSettings
from tests.support.consents import consent_view
from tests.unit.payment.fakes import FakeConsents, FakePartners

ISSUER = "https://identity.openbank.local"
CUSTOMER = "cust-1"


def money(minor: int, currency: str = "EUR") -> money_pb2.Money:
    """A Money message."""
    return money_pb2.Money(currency_code=currency, minor_units=minor)


@dataclass
class Mesh:
    """The running services, their stubs, and helpers to set up money and read it back."""

    issuer: TestIssuer
    consents: FakeConsents
    partners: FakePartners
    servers: dict[str, Any]
    channels: dict[str, grpc.aio.Channel]
    accounts: dict[str, str] = field(default_factory=dict)  # label -> account id
    participants: dict[str, str] = field(default_factory=dict)  # label -> participant id
    # How the payment service was started, to start another replica on the same database.
    payment_spec: Any = None
    payment_settings: Any = None

    # -- stubs and tokens ------------------------------------------------------------------

    def operator(self) -> tuple[tuple[str, str], ...]:
        """Operator metadata with every admin scope."""
        scopes = ["ledger:admin", "ledger:read", "ledger:write", "settlement:admin", "settlement:read"]
        scopes += ["settlement:write", "payments:admin"]
        return (("authorization", f"Bearer {self.issuer.token('service:ops', scopes=scopes)}"),)

    def partner(self, partner_id: str = "partner-1", consent_id: str = "c1") -> tuple[tuple[str, str], ...]:
        """A partner's consent-bound metadata."""
        token = self.issuer.token(
            partner_id,
            scopes=["payments:write", "payments:read", "accounts:read"],
            partner_id=partner_id,
            consent_id=consent_id,
        )
        return (("authorization", f"Bearer {token}"),)

    @property
    def payments(self) -> payment_pb2_grpc.PaymentServiceStub:
        """PaymentService."""
        return payment_pb2_grpc.PaymentServiceStub(self.channels["payment"])

    @property
    def payment_admin(self) -> payment_admin_pb2_grpc.PaymentAdminServiceStub:
        """PaymentAdminService."""
        return payment_admin_pb2_grpc.PaymentAdminServiceStub(self.channels["payment"])

    @property
    def ledger(self) -> ledger_pb2_grpc.LedgerServiceStub:
        """LedgerService."""
        return ledger_pb2_grpc.LedgerServiceStub(self.channels["account"])

    # -- set-up ----------------------------------------------------------------------------

    async def open_account(self, label: str, *, customer: str | None = CUSTOMER, funds: int = 0) -> str:
        """Open (and fund) an EUR account."""
        admin = account_admin_pb2_grpc.AccountAdminServiceStub(self.channels["account"])
        kind = account_pb2.ACCOUNT_TYPE_CURRENT if customer else account_pb2.ACCOUNT_TYPE_SETTLEMENT
        answer = await admin.OpenAccount(
            account_admin_pb2.OpenAccountRequest(
                request_id=f"open-{label}-{uuid.uuid4().hex[:8]}",
                customer=f"customers/{customer}" if customer else "",
                currency_code="EUR",
                type=kind,
                display_name=label,
            ),
            metadata=self.operator(),
        )
        account_id = answer.account.name.rsplit("/", 1)[-1]
        self.accounts[label] = account_id
        if funds:
            await admin.FundAccount(
                account_admin_pb2.FundAccountRequest(
                    request_id=f"fund-{label}-{uuid.uuid4().hex[:8]}", account=answer.account.name, amount=money(funds)
                ),
                metadata=self.operator(),
            )
        return account_id

    async def register(self, label: str, *, partner: str | None, account_label: str, cap: int) -> str:
        """Register a settlement participant (the bank when ``partner`` is None)."""
        admin = settlement_admin_pb2_grpc.SettlementAdminServiceStub(self.channels["settlement"])
        answer = await admin.RegisterParticipant(
            settlement_admin_pb2.RegisterParticipantRequest(
                request_id=f"reg-{label}",
                type=settlement_admin_pb2.PARTICIPANT_TYPE_WALLET
                if partner
                else settlement_admin_pb2.PARTICIPANT_TYPE_BANK,
                partner=f"partners/{partner}" if partner else "",
                settlement_account=f"accounts/{self.accounts[account_label]}",
                net_debit_caps=[settlement_admin_pb2.NetDebitCap(currency_code="EUR", cap=money(cap))],
            ),
            metadata=self.operator(),
        )
        participant_id = answer.participant.name.rsplit("/", 1)[-1]
        self.participants[label] = participant_id
        return participant_id

    def grant(self, consent_id: str, partner_id: str, account_labels: list[str], **limits: Any) -> None:
        """An authorised consent with INITIATE_PAYMENTS over the accounts."""
        self.consents.views[consent_id] = consent_view(
            **{
                "consent_id": consent_id,
                "partner_id": partner_id,
                "customer_id": CUSTOMER,
                "permissions": frozenset({"INITIATE_PAYMENTS", "READ_BALANCES", "READ_ACCOUNTS"}),
                "account_ids": frozenset(self.accounts[label] for label in account_labels),
                "expires_at": dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
                **limits,
            }
        )

    # -- reads -----------------------------------------------------------------------------

    async def available(self, label: str, consent_id: str = "c1", partner_id: str = "partner-1") -> int:
        """A customer account's available balance (through the consent-bound AccountService)."""
        stub = account_pb2_grpc.AccountServiceStub(self.channels["account"])
        answer = await stub.GetBalance(
            account_pb2.GetBalanceRequest(account=f"accounts/{self.accounts[label]}"),
            metadata=self.partner(partner_id, consent_id),
        )
        return answer.balance.available.minor_units

    async def balance(self, label: str) -> tuple[int, int]:
        """(current, available) of a customer account."""
        stub = account_pb2_grpc.AccountServiceStub(self.channels["account"])
        answer = await stub.GetBalance(
            account_pb2.GetBalanceRequest(account=f"accounts/{self.accounts[label]}"), metadata=self.partner()
        )
        return answer.balance.current.minor_units, answer.balance.available.minor_units

    async def position(self, label: str) -> tuple[int, int]:
        """(net, reserved) of a participant in EUR."""
        stub = settlement_pb2_grpc.SettlementServiceStub(self.channels["settlement"])
        answer = await stub.GetPosition(
            settlement_pb2.GetPositionRequest(
                participant=f"participants/{self.participants[label]}", currency_code="EUR"
            ),
            metadata=self.operator(),
        )
        return answer.position.net_position.minor_units, answer.position.reserved.minor_units

    async def ledger_balanced(self) -> bool:
        """GetLedgerTotals: every currency nets to zero."""
        admin = account_admin_pb2_grpc.AccountAdminServiceStub(self.channels["account"])
        answer = await admin.GetLedgerTotals(account_admin_pb2.GetLedgerTotalsRequest(), metadata=self.operator())
        return all(t.balanced and t.net.minor_units == 0 for t in answer.totals)

    async def hold_state(self, payment_name: str) -> str:
        """The state of a payment's ledger hold ("" when it does not exist)."""
        try:
            answer = await self.ledger.GetTransfer(
                ledger_pb2.GetTransferRequest(name=f"transfers/{payment_name.rsplit('/', 1)[-1]}-hold"),
                metadata=self.operator(),
            )
        except grpc.aio.AioRpcError:
            return ""
        return ledger_pb2.TransferState.Name(answer.transfer.state).removeprefix("TRANSFER_STATE_")

    async def obligation_state(self, payment_name: str) -> str:
        """The state of a payment's obligation ("" when there is none)."""
        stub = position_pb2_grpc.PositionServiceStub(self.channels["settlement"])
        try:
            answer = await stub.GetObligation(
                position_pb2.GetObligationRequest(name=f"obligations/{payment_name.rsplit('/', 1)[-1]}"),
                metadata=self.operator(),
            )
        except grpc.aio.AioRpcError:
            return ""
        return position_pb2.ObligationState.Name(answer.obligation.state).removeprefix("OBLIGATION_STATE_")

    # -- payments --------------------------------------------------------------------------

    async def top_up(
        self,
        amount: int,
        *,
        request_id: str | None = None,
        debtor: str = "alice",
        partner: str = "partner-1",
        consent: str = "c1",
    ) -> payment_pb2.Payment:
        """CreatePayment of a wallet top-up to the partner's own wallet."""
        answer = await self.payments.CreatePayment(
            payment_pb2.CreatePaymentRequest(
                request_id=request_id or uuid.uuid4().hex,
                debtor_account=f"accounts/{self.accounts[debtor]}",
                creditor_wallet=f"partners/{partner}",
                amount=money(amount),
                type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
            ),
            metadata=self.partner(partner, consent),
        )
        return answer.payment

    async def transfer(
        self, amount: int, *, creditor: str = "bob", request_id: str | None = None, consent: str = "c1"
    ) -> payment_pb2.Payment:
        """CreatePayment of a transfer between two of the bank's accounts."""
        answer = await self.payments.CreatePayment(
            payment_pb2.CreatePaymentRequest(
                request_id=request_id or uuid.uuid4().hex,
                debtor_account=f"accounts/{self.accounts['alice']}",
                creditor_account=f"accounts/{self.accounts[creditor]}",
                amount=money(amount),
                type=payment_pb2.PAYMENT_TYPE_TRANSFER,
            ),
            metadata=self.partner("partner-1", consent),
        )
        return answer.payment

    async def told_states(self, names: list[str], timeout: float = 30) -> dict[str, list[int]]:
        """Each payment's states as the partner is told them, until each is SETTLED:
        WatchPayments from the start, read from the outbox that the relay also hands to the
        partner event log (issue 23)."""
        stream = self.payments.WatchPayments(
            payment_pb2.WatchPaymentsRequest(after_cursor="0"), metadata=self.partner()
        )
        told: dict[str, list[int]] = {name: [] for name in names}

        async def read() -> None:
            async for message in stream:
                if message.event.payment in told:
                    told[message.event.payment].append(message.event.state)
                if all(states[-1:] == [payment_pb2.PAYMENT_STATE_SETTLED] for states in told.values()):
                    return

        try:
            await asyncio.wait_for(read(), timeout)
        finally:
            stream.cancel()
        return told

    async def audit(self, payment_name: str) -> list[payment_admin_pb2.PaymentAuditEntry]:
        """The payment's audit trail."""
        answer = await self.payment_admin.GetPaymentAuditTrail(
            payment_admin_pb2.GetPaymentAuditTrailRequest(name=payment_name), metadata=self.operator()
        )
        return list(answer.entries)


def rpcs_handled(service: str, method: str) -> float:
    """Rpcs of ``service``/``method`` this process's servers have handled so far (any status)."""
    from meshlib.metrics import REGISTRY

    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "openbank_rpc_requests"
        for sample in metric.samples
        if sample.name.endswith("_total")
        and sample.labels.get("service") == service
        and sample.labels.get("method") == method
    )


@contextlib.asynccontextmanager
async def running_mesh(urls: dict[str, str], **payment_settings: Any) -> AsyncIterator[Mesh]:
    """Start account, settlement and payment on the given databases; stop them afterwards."""
    issuer = TestIssuer(issuer=ISSUER, audience="openbank-mesh")
    jwks = static_jwks(issuer.jwks)
    consents, partners = FakeConsents(), FakePartners()
    servers: dict[str, Any] = {}
    channels: dict[str, grpc.aio.Channel] = {}
    try:
        servers["account"] = await start_service(
            account_spec(consent_lookup=lambda runtime: consents),
            AccountSettings(port=0, database_url=urls["account"]),
            jwks_fetcher=jwks,
        )
        servers["settlement"] = await start_service(
            settlement_spec(identity=False),  # no identity here: the test issuer's tokens, unrevoked
            SettlementSettings(
                port=0, database_url=urls["settlement"], account_target=f"127.0.0.1:{servers['account'].port}"
            ),
            jwks_fetcher=jwks,
        )

        async def service_token() -> str:
            return issuer.token("service:payment", scopes=SERVICE_SCOPES)

        spec = payment_spec(
            identity=lambda runtime: IdentitySide(service_token, consents),
            partner_directory=lambda runtime, call: partners,
        )
        settings = {
            "port": 0,
            "database_url": urls["payment"],
            "account_target": f"127.0.0.1:{servers['account'].port}",
            "settlement_target": f"127.0.0.1:{servers['settlement'].port}",
            "recovery_interval_seconds": 0,
            "directory_cache_seconds": 0,
            "allow_dev_secrets": True,
            **payment_settings,
        }
        payment_settings = PaymentSettings(**settings)
        servers["payment"] = await start_service(spec, payment_settings, jwks_fetcher=jwks)
        for name, server in servers.items():
            channels[name] = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        yield Mesh(issuer, consents, partners, servers, channels, payment_spec=spec, payment_settings=payment_settings)
    finally:
        for channel in channels.values():
            await channel.close()
        for name in ("payment", "settlement", "account"):
            if name in servers:
                await servers[name].stop(0)


async def standard_mesh(mesh: Mesh, *, bank_cap: int = 1_000_000, funds: int = 100_000) -> Mesh:
    """alice (funded) and bob of customer cust-1, a bank and a partner-1 wallet, consent c1 over alice."""
    await mesh.open_account("alice", funds=funds)
    await mesh.open_account("bob")
    await mesh.open_account("bank-settlement", customer=None)
    await mesh.open_account("wallet-1", customer=None)
    await mesh.register("bank", partner=None, account_label="bank-settlement", cap=bank_cap)
    await mesh.register("wallet-1", partner="partner-1", account_label="wallet-1", cap=1_000_000)
    mesh.grant("c1", "partner-1", ["alice", "bob"])
    return mesh
