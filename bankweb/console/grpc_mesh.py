"""The mesh over gRPC, with the console's own internal client: identity (partner names),
settlement (participants, positions, windows and their actions), payment (the operators'
search) and every service's audit trail. Each call goes through meshlib's PeerCaller (the
service token, a deadline, the error decoded to a MeshError)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import grpc

from bankweb.console.operators import ADMIN, OPERATOR, READ_ONLY
from bankweb.console.ports import (
    AuditQuery,
    AuditRow,
    HeldRow,
    ParticipantRow,
    PaymentRow,
    Reconciliation,
    WindowRow,
)
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.clients import PeerCaller
from openbank.common.v1 import audit_pb2, audit_pb2_grpc, money_pb2
from openbank.identity.v1 import partner_pb2, partner_pb2_grpc
from openbank.payment.v1 import payment_admin_pb2, payment_admin_pb2_grpc, payment_pb2, risk_pb2, risk_pb2_grpc
from openbank.settlement.v1 import settlement_admin_pb2, settlement_admin_pb2_grpc, settlement_pb2, settlement_pb2_grpc

CALL_DEADLINE_SECONDS = 10.0
# What every page reads: partner names (ListPartners), positions and windows, the payments
# search and review queue, the audit trails.
_PAGES = ("identity:monitor", "settlement:read", "payments:monitor", "audit:read")
# The token each operator role acts with: the services refuse an action the role's tier lacks
# (PERMISSION_DENIED INSUFFICIENT_SCOPE), whatever the console's own check said. Pages are
# read with the read-only token.
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    READ_ONLY: (*_PAGES, "settlement:monitor"),
    OPERATOR: (*_PAGES, "settlement:operate"),
    ADMIN: (*_PAGES, "settlement:admin"),
}
# The console's client may ask for any of them (one token per role, each only its tier).
CONSOLE_SCOPES = tuple(sorted({scope for scopes in ROLE_SCOPES.values() for scope in scopes}))
AUDITED_SERVICES = ("identity", "account", "payment", "settlement")


def _time(stamp: Any, present: bool = True) -> dt.datetime | None:
    return stamp.ToDatetime(tzinfo=dt.UTC) if present and (stamp.seconds or stamp.nanos) else None


def window_row(window: settlement_pb2.SettlementWindow) -> WindowRow:
    """A window message as a row."""
    return WindowRow(
        name=window.name,
        currency=window.currency_code,
        state=settlement_pb2.SettlementWindowState.Name(window.state).removeprefix("SETTLEMENT_WINDOW_STATE_"),
        obligation_count=window.obligation_count,
        gross=window.gross_amount.minor_units,
        open_time=_time(window.open_time),
        close_time=_time(window.close_time),
        settle_time=_time(window.settle_time),
    )


def payment_row(payment: payment_pb2.Payment) -> PaymentRow:
    """A payment message as a row."""
    return PaymentRow(
        name=payment.name,
        partner=payment.partner,
        state=payment_pb2.PaymentState.Name(payment.state).removeprefix("PAYMENT_STATE_"),
        amount=payment.amount.minor_units,
        currency=payment.amount.currency_code,
        reason=payment.status_reason,
        reason_message=payment.status_reason_message,
        end_to_end_id=payment.end_to_end_id,
        create_time=_time(payment.create_time),
    )


def audit_row(record: audit_pb2.AuditRecord) -> AuditRow:
    """An audit record as a row."""
    try:
        details = json.loads(record.details_json or "{}")
    except ValueError:
        details = {}
    return AuditRow(
        service=record.service,
        sequence=record.sequence,
        occur_time=record.occur_time.ToDatetime(tzinfo=dt.UTC),
        action=record.action,
        outcome=record.outcome,
        resource=record.resource,
        actor=record.actor,
        actor_kind=record.actor_kind,
        details=details if isinstance(details, dict) else {},
    )


class GrpcMesh:
    """The console's view of the mesh through the services' contracts, as one role."""

    def __init__(
        self, channels: dict[str, grpc.aio.Channel], tokens: dict[str, ServiceTokenSource], role: str = READ_ONLY
    ) -> None:
        self._channels = channels
        self._tokens = tokens
        self._call = PeerCaller(tokens[role].token, deadline_seconds=CALL_DEADLINE_SECONDS)
        self._partners = partner_pb2_grpc.PartnerServiceStub(channels["identity"])
        self._settlement = settlement_pb2_grpc.SettlementServiceStub(channels["settlement"])
        self._settlement_admin = settlement_admin_pb2_grpc.SettlementAdminServiceStub(channels["settlement"])
        self._payments = payment_admin_pb2_grpc.PaymentAdminServiceStub(channels["payment"])
        self._risk = risk_pb2_grpc.RiskAdminServiceStub(channels["payment"])
        self._audits = {name: audit_pb2_grpc.AuditServiceStub(channels[name]) for name in AUDITED_SERVICES}

    def as_role(self, role: str) -> GrpcMesh:
        """The same mesh, called with the token of ``role`` (KeyError for an unknown role)."""
        return GrpcMesh(self._channels, self._tokens, role)

    async def _partner_names(self) -> dict[str, str]:
        names: dict[str, str] = {}
        token = ""
        while len(names) < 10_000:
            page = await self._call(
                self._partners.ListPartners,
                partner_pb2.ListPartnersRequest(page_size=100, page_token=token),
                "identity.ListPartners",
            )
            names.update({p.name: p.display_name for p in page.partners})
            token = page.next_page_token
            if not token:
                break
        return names

    async def participants(self) -> list[ParticipantRow]:
        """Every participant in each of its currencies, by name, against its cap."""
        names = await self._partner_names()
        rows: list[ParticipantRow] = []
        token = ""
        while len(rows) < 5_000:
            page = await self._call(
                self._settlement_admin.ListParticipants,
                settlement_admin_pb2.ListParticipantsRequest(page_size=100, page_token=token),
                "settlement.ListParticipants",
            )
            for participant in page.participants:
                status = settlement_admin_pb2.ParticipantStatus.Name(participant.status)
                for cap in participant.net_debit_caps:
                    position = (
                        await self._call(
                            self._settlement.GetPosition,
                            settlement_pb2.GetPositionRequest(
                                participant=participant.name, currency_code=cap.currency_code
                            ),
                            "settlement.GetPosition",
                        )
                    ).position
                    rows.append(
                        ParticipantRow(
                            participant=participant.name,
                            name=names.get(participant.partner, participant.partner) or "The bank",
                            status=status.removeprefix("PARTICIPANT_STATUS_"),
                            currency=cap.currency_code,
                            net=position.net_position.minor_units,
                            reserved=position.reserved.minor_units,
                            cap=position.net_debit_cap.minor_units,
                            headroom=position.headroom.minor_units,
                        )
                    )
            token = page.next_page_token
            if not token:
                break
        return rows

    async def windows(self, currency: str) -> list[WindowRow]:
        """The currency's windows, newest first (the last 50)."""
        page = await self._call(
            self._settlement.ListSettlementWindows,
            settlement_pb2.ListSettlementWindowsRequest(currency_code=currency, page_size=50),
            "settlement.ListSettlementWindows",
        )
        return [window_row(w) for w in page.settlement_windows]

    async def close_window(self, currency: str, request_id: str) -> tuple[WindowRow, WindowRow]:
        """Close the currency's open window; the closed one and the next."""
        answer = await self._call(
            self._settlement_admin.CloseSettlementWindow,
            settlement_admin_pb2.CloseSettlementWindowRequest(request_id=request_id, currency_code=currency),
            "settlement.CloseSettlementWindow",
        )
        return window_row(answer.closed_window), window_row(answer.next_window)

    async def settle_window(self, name: str, request_id: str, reference: str) -> WindowRow:
        """Settle a closed window (the ledger moves each net)."""
        answer = await self._call(
            self._settlement_admin.SettleSettlementWindow,
            settlement_admin_pb2.SettleSettlementWindowRequest(
                request_id=request_id, name=name, settlement_reference=reference
            ),
            "settlement.SettleSettlementWindow",
        )
        return window_row(answer.window)

    async def reconcile_window(self, name: str) -> Reconciliation:
        """Compare the window with the ledger."""
        answer = await self._call(
            self._settlement_admin.ReconcileSettlementWindow,
            settlement_admin_pb2.ReconcileSettlementWindowRequest(name=name),
            "settlement.ReconcileSettlementWindow",
        )
        differences = []
        for difference in answer.report.differences:
            kind = settlement_admin_pb2.DifferenceKind.Name(difference.kind).removeprefix("DIFFERENCE_KIND_")
            subject = difference.payment or difference.obligation or difference.participant
            differences.append(
                f"{kind} {subject}: expected {difference.expected.minor_units}, "
                f"actual {difference.actual.minor_units} {difference.detail}".strip()
            )
        return Reconciliation(answer.report.window, answer.report.clean, tuple(differences))

    async def update_cap(self, participant: str, currency: str, cap: int, request_id: str) -> None:
        """Set a participant's net debit cap in a currency."""
        await self._call(
            self._settlement_admin.UpdateNetDebitCap,
            settlement_admin_pb2.UpdateNetDebitCapRequest(
                request_id=request_id,
                participant=participant,
                cap=money_pb2.Money(currency_code=currency, minor_units=cap),
            ),
            "settlement.UpdateNetDebitCap",
        )

    async def payments(self, states: tuple[str, ...], partner: str, limit: int) -> list[PaymentRow]:
        """Payments in any of ``states``, newest first."""
        rows: list[PaymentRow] = []
        for state in states:
            answer = await self._call(
                self._payments.SearchPayments,
                payment_admin_pb2.SearchPaymentsRequest(
                    state=payment_pb2.PaymentState.Value(f"PAYMENT_STATE_{state}"), partner=partner, page_size=limit
                ),
                "payment.SearchPayments",
            )
            rows += [payment_row(p) for p in answer.payments]
        rows.sort(key=lambda row: row.create_time or dt.datetime.min.replace(tzinfo=dt.UTC), reverse=True)
        return rows[:limit]

    async def held_payments(self, limit: int) -> list[HeldRow]:
        """The review queue, oldest first."""
        answer = await self._call(
            self._risk.ListHeldPayments, risk_pb2.ListHeldPaymentsRequest(page_size=limit), "payment.ListHeldPayments"
        )
        return [
            HeldRow(
                name=held.payment.name,
                partner=held.payment.partner,
                amount=held.payment.amount.minor_units,
                currency=held.payment.amount.currency_code,
                score=held.decision.score,
                rules=tuple(held.decision.rules_fired),
                rules_version=held.decision.rules_version,
                signals=tuple(sorted(held.decision.signals.items())),
                decided=_time(held.decision.decide_time),
                expires=_time(held.decision.expire_time),
            )
            for held in answer.held_payments
        ]

    async def audit(self, query: AuditQuery) -> list[AuditRow]:
        """Matching records of one service's trail or all of them, newest first."""
        services = AUDITED_SERVICES if query.service == "all" else (query.service,)
        rows: list[AuditRow] = []
        for service in services:
            request = audit_pb2.ListAuditRecordsRequest(
                page_size=query.limit,
                partner=query.partner,
                payment=query.payment,
                actor=query.actor,
                action_prefix=query.action,
            )
            if query.since is not None:
                request.start_time.FromDatetime(query.since)
            answer = await self._call(self._audits[service].ListAuditRecords, request, f"{service}.ListAuditRecords")
            rows += [audit_row(r) for r in answer.records]
        rows.sort(key=lambda row: row.occur_time, reverse=True)
        return rows[: query.limit]
