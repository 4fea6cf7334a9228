"""Partners' risk-sharing agreements from identity's PartnerService (the payment service's token)."""

from __future__ import annotations

import grpc

from meshlib.clients import PeerCaller
from services.payment.domain.disputes import RiskSharing


class GrpcRiskAgreements:
    """Read when a dispute is accepted (rare: no cache; a changed agreement applies at once)."""

    def __init__(self, channel: grpc.aio.Channel, call: PeerCaller) -> None:
        from openbank.identity.v1 import partner_pb2_grpc

        self._stub = partner_pb2_grpc.PartnerServiceStub(channel)
        self._call = call

    async def risk_sharing(self, partner_id: str) -> RiskSharing:
        """The partner's shares (all zero without an agreement)."""
        from openbank.identity.v1 import partner_pb2

        answer = await self._call(
            self._stub.GetPartner, partner_pb2.GetPartnerRequest(name=f"partners/{partner_id}"), "identity.GetPartner"
        )
        agreement = answer.partner.risk_sharing
        return RiskSharing(
            fraud_bps=agreement.fraud_share_bps,
            not_received_bps=agreement.not_received_share_bps,
            wrong_amount_bps=agreement.wrong_amount_share_bps,
        )
