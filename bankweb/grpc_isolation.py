"""Payment's CustomerCapabilityService for the "Limits and features" page, with the web app's
own token (consents:authorise)."""

from __future__ import annotations

import uuid

import grpc

from bankweb.grpc_bank import CALL_DEADLINE_SECONDS, money_words
from bankweb.isolation import Capability
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.clients import PeerCaller
from openbank.payment.v1 import isolation_pb2, isolation_pb2_grpc


def capability(message: isolation_pb2.CustomerCapability) -> Capability:
    """The capability as the page shows it."""
    status = isolation_pb2.CustomerCapabilityStatus.Name(message.status).removeprefix("CUSTOMER_CAPABILITY_STATUS_")
    return Capability(
        capability=message.capability,
        status=status,
        limit=money_words(message.limit) if message.HasField("limit") else "",
        reason=message.reason,
    )


class GrpcIsolation:
    """The customer's capabilities in the payment service."""

    def __init__(self, payment: grpc.aio.Channel, tokens: ServiceTokenSource) -> None:
        self._stub = isolation_pb2_grpc.CustomerCapabilityServiceStub(payment)
        self._call = PeerCaller(tokens.token, deadline_seconds=CALL_DEADLINE_SECONDS)

    async def capabilities(self, customer: str) -> list[Capability]:
        """Every capability of the customer."""
        request = isolation_pb2.GetCustomerCapabilitiesRequest(customer=customer)
        answer = await self._call(self._stub.GetCustomerCapabilities, request, "payment.GetCustomerCapabilities")
        return [capability(c) for c in answer.capabilities]

    async def restore(self, customer: str, name: str) -> Capability:
        """RestoreCustomerCapability for the signed-in customer."""
        request = isolation_pb2.RestoreCustomerCapabilityRequest(
            request_id=uuid.uuid4().hex, customer=customer, capability=name
        )
        answer = await self._call(self._stub.RestoreCustomerCapability, request, "payment.RestoreCustomerCapability")
        return capability(answer.capability)
