"""A running settlement service over real gRPC, with tokens from a TestIssuer."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import grpc

from meshlib.auth.testing import TestIssuer
from meshlib.grpc_errors import decode_status, error_info
from openbank.common.v1 import money_pb2
from openbank.settlement.v1 import (
    position_pb2,
    position_pb2_grpc,
    settlement_admin_pb2,
    settlement_admin_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
)
from tests.integration.settlement.fake_ledger import FakeLedgerService

OPERATOR_SCOPES = ["settlement:admin", "settlement:read", "settlement:write", "ledger:read", "ledger:write"]
SAGA_SCOPES = ["settlement:write"]
_request_ids = itertools.count()


def rid(label: str = "req") -> str:
    """A fresh request_id."""
    return f"{label}-{next(_request_ids)}"


def eur(minor: int, currency: str = "EUR") -> money_pb2.Money:
    """Money in minor units."""
    return money_pb2.Money(currency_code=currency, minor_units=minor)


def auth(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying a bearer token."""
    return (("authorization", f"Bearer {token}"),)


async def expect_error(call: Awaitable[Any], code: grpc.StatusCode, reason: str) -> None:
    """The call fails with ``code`` and ErrorInfo ``reason``."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        info = error_info(decode_status(error.trailing_metadata()))
        assert (error.code(), info.reason if info else None) == (code, reason), error.details()
    else:
        raise AssertionError(f"expected {code.name} {reason}")


def reserve_request(
    payment: str, payer: str, payee: str, minor: int, request_id: str | None = None, currency: str = "EUR"
) -> position_pb2.ReserveObligationRequest:
    """A ReserveObligationRequest (participants by resource name), alone or as a batch item."""
    return position_pb2.ReserveObligationRequest(
        request_id=request_id or rid("res"),
        payment=f"payments/{payment}",
        payer=payer,
        payee=payee,
        amount=eur(minor, currency),
    )


def commit_request(payment: str, request_id: str | None = None) -> position_pb2.CommitObligationRequest:
    """A CommitObligationRequest, alone or as a batch item."""
    return position_pb2.CommitObligationRequest(request_id=request_id or rid("com"), name=f"obligations/{payment}")


@dataclass
class Mesh:
    """Stubs and tokens for one running settlement service (and its fake ledger, if it has one)."""

    channel: grpc.aio.Channel
    issuer: TestIssuer
    ledger: FakeLedgerService | None = None

    def __post_init__(self) -> None:
        self.positions = position_pb2_grpc.PositionServiceStub(self.channel)
        self.public = settlement_pb2_grpc.SettlementServiceStub(self.channel)
        self.admin = settlement_admin_pb2_grpc.SettlementAdminServiceStub(self.channel)
        self.operator = auth(self.issuer.token("operator-1", scopes=OPERATOR_SCOPES))
        self.saga = auth(self.issuer.token("service:payment", scopes=SAGA_SCOPES))

    def partner(self, partner_id: str) -> tuple[tuple[str, str], ...]:
        """A partner wallet's token (public reads only)."""
        return auth(self.issuer.token(partner_id, scopes=["settlement:read"], partner_id=partner_id))

    async def register(
        self, partner: str | None, cap: int = 1_000, currency: str = "EUR"
    ) -> settlement_admin_pb2.Participant:
        """Register a wallet (or the bank when ``partner`` is None) with one cap."""
        request = settlement_admin_pb2.RegisterParticipantRequest(
            request_id=rid("reg"),
            type=settlement_admin_pb2.PARTICIPANT_TYPE_BANK
            if partner is None
            else settlement_admin_pb2.PARTICIPANT_TYPE_WALLET,
            partner=f"partners/{partner}" if partner else "",
            settlement_account=f"accounts/settle-{partner or 'bank'}",
            net_debit_caps=[settlement_admin_pb2.NetDebitCap(currency_code=currency, cap=eur(cap, currency))],
        )
        return (await self.admin.RegisterParticipant(request, metadata=self.operator, timeout=10)).participant

    async def reserve(
        self, payment: str, payer: str, payee: str, minor: int, request_id: str | None = None
    ) -> position_pb2.Obligation:
        """Reserve an obligation (participants by resource name)."""
        request = position_pb2.ReserveObligationRequest(
            request_id=request_id or rid("res"),
            payment=f"payments/{payment}",
            payer=payer,
            payee=payee,
            amount=eur(minor),
        )
        return (await self.positions.ReserveObligation(request, metadata=self.saga, timeout=10)).obligation

    async def batch_reserve(
        self, items: list[position_pb2.ReserveObligationRequest], request_id: str | None = None
    ) -> list[position_pb2.BatchObligationResult]:
        """BatchReserveObligations."""
        request = position_pb2.BatchReserveObligationsRequest(request_id=request_id or rid("bres"), requests=items)
        return list((await self.positions.BatchReserveObligations(request, metadata=self.saga, timeout=30)).results)

    async def batch_commit(
        self, items: list[position_pb2.CommitObligationRequest], request_id: str | None = None
    ) -> list[position_pb2.BatchObligationResult]:
        """BatchCommitObligations."""
        request = position_pb2.BatchCommitObligationsRequest(request_id=request_id or rid("bcom"), requests=items)
        return list((await self.positions.BatchCommitObligations(request, metadata=self.saga, timeout=30)).results)

    async def commit(self, payment: str, request_id: str | None = None) -> position_pb2.Obligation:
        """Commit an obligation."""
        request = position_pb2.CommitObligationRequest(
            request_id=request_id or rid("com"), name=f"obligations/{payment}"
        )
        return (await self.positions.CommitObligation(request, metadata=self.saga, timeout=30)).obligation

    async def release(self, payment: str, request_id: str | None = None) -> position_pb2.Obligation:
        """Release an obligation."""
        request = position_pb2.ReleaseObligationRequest(
            request_id=request_id or rid("rel"), name=f"obligations/{payment}"
        )
        return (await self.positions.ReleaseObligation(request, metadata=self.saga, timeout=10)).obligation

    async def close(self, currency: str = "EUR") -> settlement_admin_pb2.CloseSettlementWindowResponse:
        """Close the currency's open window."""
        request = settlement_admin_pb2.CloseSettlementWindowRequest(request_id=rid("close"), currency_code=currency)
        return await self.admin.CloseSettlementWindow(request, metadata=self.operator, timeout=30)

    async def settle(self, window: str) -> settlement_pb2.SettlementWindow:
        """Settle a window."""
        request = settlement_admin_pb2.SettleSettlementWindowRequest(request_id=rid("settle"), name=window)
        return (await self.admin.SettleSettlementWindow(request, metadata=self.operator, timeout=10)).window
