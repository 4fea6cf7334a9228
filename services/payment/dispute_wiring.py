"""Wiring of disputes (called by bootstrap): the use cases on the SQL store, identity's agreements,
the servicers and the sweep that accepts overdue disputes and completes interrupted ones."""

from __future__ import annotations

import datetime as dt

import grpc

from meshlib.clients import PeerCaller
from meshlib.periodic import Periodic
from meshlib.server import ServiceRegistration
from meshlib.storage import Transactions
from openbank.payment.v1 import dispute_pb2_grpc
from services.payment.adapters.risk_agreements import GrpcRiskAgreements
from services.payment.adapters.sql_disputes import SqlDisputes
from services.payment.dispute_servicer import DisputeAdminServicer, DisputeServicer
from services.payment.disputes import Disputes
from services.payment.domain.disputes import DisputeDeadlines
from services.payment.ports import Participants, PaymentRegister
from services.payment.refund_payment import RefundPayment
from services.payment.settings import PaymentSettings
from services.payment.unit_of_work import PaymentUnitOfWork


def dispute_wiring(
    settings: PaymentSettings,
    transactions: Transactions[PaymentUnitOfWork],
    *,
    register: PaymentRegister,
    refund: RefundPayment,
    participants: Participants,
    identity: grpc.aio.Channel,
    call: PeerCaller,
) -> tuple[list[ServiceRegistration], list[Periodic]]:
    """The two servicers' registrations and the sweep, if it runs (start/stop it with the service)."""
    disputes = Disputes(
        store=SqlDisputes(transactions),
        payments=register,
        refund=refund,
        agreements=GrpcRiskAgreements(identity, call),
        participants=participants,
        loss_accounts=settings.dispute_loss_accounts,
        deadlines=DisputeDeadlines(
            dt.timedelta(days=settings.dispute_filing_days), dt.timedelta(days=settings.dispute_decision_days)
        ),
    )

    async def sweep() -> None:
        await disputes.sweep()

    registrations = [
        ServiceRegistration(
            "openbank.payment.v1.DisputeService",
            DisputeServicer(disputes),
            dispute_pb2_grpc.add_DisputeServiceServicer_to_server,
        ),
        ServiceRegistration(
            "openbank.payment.v1.DisputeAdminService",
            DisputeAdminServicer(disputes),
            dispute_pb2_grpc.add_DisputeAdminServiceServicer_to_server,
        ),
    ]
    if not settings.dispute_sweep_seconds:
        return registrations, []
    return registrations, [Periodic("dispute-sweep", settings.dispute_sweep_seconds, sweep)]
