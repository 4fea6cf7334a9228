"""gRPC servicers for settlement: protobuf in, protobuf out, nothing else."""

from __future__ import annotations

import grpc

from meshlib.auth.context import require_caller
from meshlib.storage import IdempotencyKey
from openbank.settlement.v1 import (
    position_pb2,
    position_pb2_grpc,
    settlement_admin_pb2,
    settlement_admin_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
)
from services.settlement import converters
from services.settlement.obligation_batches import ObligationBatches
from services.settlement.participant_service import ParticipantService
from services.settlement.position_service import PositionService
from services.settlement.reconciliation_service import ReconciliationService
from services.settlement.service_common import Viewer
from services.settlement.settle_service import SettleService
from services.settlement.window_service import WindowService

# Sees every participant: the read-only operator tier (settlement:operate and :admin include it).
OPERATOR_SCOPE = "settlement:monitor"


def _key(request: object, method: str) -> IdempotencyKey:
    # Idempotency keys are scoped to the caller: two clients never share one. A batch's items
    # get the same scope, so an item's key is the one the single rpc would use.
    return converters.request_key(request, require_caller().subject, method)  # type: ignore[arg-type]


def _viewer() -> Viewer:
    caller = require_caller()
    return Viewer(operator=caller.has_scopes((OPERATOR_SCOPE,)), partner_id=caller.partner_id)


class PositionServicer(position_pb2_grpc.PositionServiceServicer):
    """Obligations for the payment saga."""

    def __init__(self, positions: PositionService, batches: ObligationBatches) -> None:
        self._positions = positions
        self._batches = batches

    async def ReserveObligation(
        self, request: position_pb2.ReserveObligationRequest, context: grpc.aio.ServicerContext
    ) -> position_pb2.ReserveObligationResponse:
        """Reserve against the payer's net debit cap."""
        key = _key(request, "ReserveObligation")
        payment_id, payer_id, payee_id, amount, kind = converters.reserve_args(request)
        result = await self._positions.reserve(key, payment_id, payer_id, payee_id, amount, kind)
        return position_pb2.ReserveObligationResponse(obligation=converters.obligation(result))

    async def CommitObligation(
        self, request: position_pb2.CommitObligationRequest, context: grpc.aio.ServicerContext
    ) -> position_pb2.CommitObligationResponse:
        """Commit into the open window."""
        key = _key(request, "CommitObligation")
        result = await self._positions.commit(key, converters.obligation_id(request.name))
        return position_pb2.CommitObligationResponse(obligation=converters.obligation(result))

    async def ReleaseObligation(
        self, request: position_pb2.ReleaseObligationRequest, context: grpc.aio.ServicerContext
    ) -> position_pb2.ReleaseObligationResponse:
        """Give the reservation back."""
        key = _key(request, "ReleaseObligation")
        result = await self._positions.release(key, converters.obligation_id(request.name))
        return position_pb2.ReleaseObligationResponse(obligation=converters.obligation(result))

    async def GetObligation(
        self, request: position_pb2.GetObligationRequest, context: grpc.aio.ServicerContext
    ) -> position_pb2.GetObligationResponse:
        """One obligation."""
        result = await self._positions.get(converters.obligation_id(request.name))
        return position_pb2.GetObligationResponse(obligation=converters.obligation(result))

    async def BatchReserveObligations(
        self, request: position_pb2.BatchReserveObligationsRequest, context: grpc.aio.ServicerContext
    ) -> position_pb2.BatchReserveObligationsResponse:
        """Reserve many in one transaction, one result each."""
        scope = require_caller().subject
        batch = converters.request_key(request, scope, "BatchReserveObligations")
        results = await self._batches.reserve(batch, converters.reserve_items(request.requests, scope))
        return position_pb2.BatchReserveObligationsResponse(results=[converters.batch_result(r) for r in results])

    async def BatchCommitObligations(
        self, request: position_pb2.BatchCommitObligationsRequest, context: grpc.aio.ServicerContext
    ) -> position_pb2.BatchCommitObligationsResponse:
        """Commit many in one transaction, one result each."""
        scope = require_caller().subject
        batch = converters.request_key(request, scope, "BatchCommitObligations")
        results = await self._batches.commit(batch, converters.commit_items(request.requests, scope))
        return position_pb2.BatchCommitObligationsResponse(results=[converters.batch_result(r) for r in results])


class SettlementServicer(settlement_pb2_grpc.SettlementServiceServicer):
    """Partner-facing reads (own data only) and the same reads for operators."""

    def __init__(self, windows: WindowService) -> None:
        self._windows = windows

    async def GetPosition(
        self, request: settlement_pb2.GetPositionRequest, context: grpc.aio.ServicerContext
    ) -> settlement_pb2.GetPositionResponse:
        """A participant's position in one currency."""
        participant_id = converters.participant_id(request.participant, "participant")
        code = converters.currency(request.currency_code)
        view = await self._windows.position(_viewer(), participant_id, code)
        return settlement_pb2.GetPositionResponse(position=converters.position(view))

    async def ListSettlementWindows(
        self, request: settlement_pb2.ListSettlementWindowsRequest, context: grpc.aio.ServicerContext
    ) -> settlement_pb2.ListSettlementWindowsResponse:
        """Windows, newest first."""
        windows, next_token = await self._windows.list(
            _viewer(),
            currency=converters.optional_currency(request.currency_code),
            state=converters.window_state_filter(request.state),
            requested_page_size=request.page_size,
            page_token=request.page_token,
        )
        return settlement_pb2.ListSettlementWindowsResponse(
            settlement_windows=[converters.window(w) for w in windows], next_page_token=next_token
        )

    async def GetSettlementReport(
        self, request: settlement_pb2.GetSettlementReportRequest, context: grpc.aio.ServicerContext
    ) -> settlement_pb2.GetSettlementReportResponse:
        """A window's net settlement report (a partner's own part of it)."""
        report = await self._windows.report(_viewer(), converters.window_id(request.window, "window"))
        return settlement_pb2.GetSettlementReportResponse(report=converters.report(report))


class SettlementAdminServicer(settlement_admin_pb2_grpc.SettlementAdminServiceServicer):
    """Operators: participants, caps, windows, reconciliation, exports."""

    def __init__(
        self,
        participants: ParticipantService,
        windows: WindowService,
        reconciliation: ReconciliationService,
        settlement: SettleService,
    ) -> None:
        self._participants = participants
        self._windows = windows
        self._reconciliation = reconciliation
        self._settlement = settlement

    async def RegisterParticipant(
        self, request: settlement_admin_pb2.RegisterParticipantRequest, context: grpc.aio.ServicerContext
    ) -> settlement_admin_pb2.RegisterParticipantResponse:
        """Register the bank or a wallet."""
        key = _key(request, "RegisterParticipant")
        participant_type, partner_id, account, caps = converters.register_args(request)
        result = await self._participants.register(key, participant_type, partner_id, account, caps)
        return settlement_admin_pb2.RegisterParticipantResponse(participant=converters.participant(result))

    async def UpdateNetDebitCap(
        self, request: settlement_admin_pb2.UpdateNetDebitCapRequest, context: grpc.aio.ServicerContext
    ) -> settlement_admin_pb2.UpdateNetDebitCapResponse:
        """Set a cap."""
        key = _key(request, "UpdateNetDebitCap")
        participant_id, cap = converters.update_cap_args(request)
        result = await self._participants.update_cap(key, participant_id, cap)
        return settlement_admin_pb2.UpdateNetDebitCapResponse(participant=converters.participant(result))

    async def GetParticipant(
        self, request: settlement_admin_pb2.GetParticipantRequest, context: grpc.aio.ServicerContext
    ) -> settlement_admin_pb2.GetParticipantResponse:
        """One participant."""
        result = await self._participants.get(converters.participant_id(request.name))
        return settlement_admin_pb2.GetParticipantResponse(participant=converters.participant(result))

    async def ListParticipants(
        self, request: settlement_admin_pb2.ListParticipantsRequest, context: grpc.aio.ServicerContext
    ) -> settlement_admin_pb2.ListParticipantsResponse:
        """Participants, oldest first."""
        found, next_token = await self._participants.list(request.page_size, request.page_token)
        return settlement_admin_pb2.ListParticipantsResponse(
            participants=[converters.participant(p) for p in found], next_page_token=next_token
        )

    async def DeactivateParticipant(
        self, request: settlement_admin_pb2.DeactivateParticipantRequest, context: grpc.aio.ServicerContext
    ) -> settlement_admin_pb2.DeactivateParticipantResponse:
        """Stop new obligations involving it."""
        key = _key(request, "DeactivateParticipant")
        result = await self._participants.deactivate(key, converters.participant_id(request.name))
        return settlement_admin_pb2.DeactivateParticipantResponse(participant=converters.participant(result))

    async def ActivateParticipant(
        self, request: settlement_admin_pb2.ActivateParticipantRequest, context: grpc.aio.ServicerContext
    ) -> settlement_admin_pb2.ActivateParticipantResponse:
        """Allow new obligations again."""
        key = _key(request, "ActivateParticipant")
        result = await self._participants.activate(key, converters.participant_id(request.name))
        return settlement_admin_pb2.ActivateParticipantResponse(participant=converters.participant(result))

    async def CloseSettlementWindow(
        self, request: settlement_admin_pb2.CloseSettlementWindowRequest, context: grpc.aio.ServicerContext
    ) -> settlement_admin_pb2.CloseSettlementWindowResponse:
        """Close the open window and open the next."""
        key = _key(request, "CloseSettlementWindow")
        window_id, code = converters.close_target(request)
        closed, following = await self._windows.close(key, window_id=window_id, currency=code)
        return settlement_admin_pb2.CloseSettlementWindowResponse(
            closed_window=converters.window(closed), next_window=converters.window(following)
        )

    async def SettleSettlementWindow(
        self, request: settlement_admin_pb2.SettleSettlementWindowRequest, context: grpc.aio.ServicerContext
    ) -> settlement_admin_pb2.SettleSettlementWindowResponse:
        """Settle a closed window: its nets move in the ledger, then it is SETTLED."""
        key = _key(request, "SettleSettlementWindow")
        window_id = converters.window_id(request.name)
        reference = converters.settlement_reference(request.settlement_reference)
        result = await self._settlement.settle(key, window_id, reference)
        return settlement_admin_pb2.SettleSettlementWindowResponse(window=converters.window(result))

    async def ReconcileSettlementWindow(
        self, request: settlement_admin_pb2.ReconcileSettlementWindowRequest, context: grpc.aio.ServicerContext
    ) -> settlement_admin_pb2.ReconcileSettlementWindowResponse:
        """Compare the window with the ledger."""
        result = await self._reconciliation.reconcile(converters.window_id(request.name))
        return settlement_admin_pb2.ReconcileSettlementWindowResponse(report=converters.reconciliation(result))

    async def ExportSettlementReport(
        self, request: settlement_admin_pb2.ExportSettlementReportRequest, context: grpc.aio.ServicerContext
    ) -> settlement_admin_pb2.ExportSettlementReportResponse:
        """The full report as CSV or JSON."""
        window_id = converters.window_id(request.name)
        report_format = converters.report_format(request.format)
        report = await self._windows.report(Viewer(operator=True), window_id)
        return converters.export(report, report_format)
