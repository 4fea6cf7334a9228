"""A partner's disputes: the disputes the bank's customers (or its operators) opened on the
partner's payments, and their outcomes (an accepted one says the partner's share of the loss,
refunded out of its wallet, and the bank's).

Mixed into :class:`openbank_sdk.OpenBankClient`: a client-credentials token with
``payments:read`` (no consent), asked for on first use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from openbank.payment.v1 import dispute_pb2, dispute_pb2_grpc
from openbank_sdk.auth import ClientCredentialsTokens, ScopedTokenSources
from openbank_sdk.pagination import paginate


class DisputeCalls(ScopedTokenSources):
    """DisputeService for :class:`openbank_sdk.OpenBankClient` (its channel, credentials, invoker)."""

    invoker: Any

    def _disputes(self) -> tuple[dispute_pb2_grpc.DisputeServiceStub, ClientCredentialsTokens]:
        return dispute_pb2_grpc.DisputeServiceStub(self.channel), self._tokens_for("payments:read")

    def disputes(self, *, page_size: int = 0) -> AsyncIterator[dispute_pb2.Dispute]:
        """This partner's disputes, newest first (every page)."""
        stub, tokens = self._disputes()
        request = dispute_pb2.ListDisputesRequest(page_size=page_size)
        return paginate(lambda r: self.invoker.unary(stub.ListDisputes, r, tokens), request, "disputes")

    async def dispute(self, name: str) -> dispute_pb2.Dispute:
        """One of this partner's disputes (``disputes/{id}``)."""
        stub, tokens = self._disputes()
        answer = await self.invoker.unary(stub.GetDispute, dispute_pb2.GetDisputeRequest(name=name), tokens)
        return answer.dispute
