"""The gRPC servicer of openbank.scheme.v1.ClearingService: protobuf in, protobuf out."""

from __future__ import annotations

import grpc

from meshlib.auth.context import require_caller
from openbank.scheme.v1 import scheme_pb2, scheme_pb2_grpc
from schemesim import converters
from schemesim.clearing import ClearingService


class ClearingServicer(scheme_pb2_grpc.ClearingServiceServicer):
    """The scheme's three rpcs over the clearing use cases."""

    def __init__(self, clearing: ClearingService) -> None:
        self._clearing = clearing

    async def SubmitCreditTransfer(
        self, request: scheme_pb2.SubmitCreditTransferRequest, context: grpc.aio.ServicerContext
    ) -> scheme_pb2.SubmitCreditTransferResponse:
        """Receive a pacs.008 and answer its pacs.002 (or not, as the rules say)."""
        message_id, transfer, fingerprint = converters.submission(request)
        report = await self._clearing.submit(message_id, transfer, fingerprint, submitted_by=require_caller().subject)
        return scheme_pb2.SubmitCreditTransferResponse(status_report=converters.status_report(report))

    async def GetCreditTransferStatus(
        self, request: scheme_pb2.GetCreditTransferStatusRequest, context: grpc.aio.ServicerContext
    ) -> scheme_pb2.GetCreditTransferStatusResponse:
        """The current pacs.002 of a message id."""
        report = await self._clearing.status(converters.status_request(request))
        return scheme_pb2.GetCreditTransferStatusResponse(status_report=converters.status_report(report))

    async def ListReturns(
        self, request: scheme_pb2.ListReturnsRequest, context: grpc.aio.ServicerContext
    ) -> scheme_pb2.ListReturnsResponse:
        """The pacs.004 feed after a cursor."""
        after, size, filters = converters.returns_request(request)
        returns = await self._clearing.list_returns(after, size)
        return scheme_pb2.ListReturnsResponse(
            returns=[converters.payment_return(item) for item in returns],
            next_page_token=converters.next_page_token(returns, size, filters),
        )
