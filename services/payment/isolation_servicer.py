"""gRPC: dynamic isolation, the bank app's list and restore (CustomerCapabilityService) and the
operators' view (IsolationAdminService). Thin: converters in, isolation.CustomerIsolation, out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import grpc
from google.protobuf import timestamp_pb2

from meshlib.audit import Actor
from meshlib.auth.context import require_caller
from meshlib.errors import FieldCollector
from meshlib.idempotency import validate_request_id
from meshlib.names import parse_name
from openbank.common.v1 import money_pb2
from openbank.payment.v1 import isolation_pb2, isolation_pb2_grpc
from services.payment.domain.isolation import CapabilityState, IsolationPolicy
from services.payment.isolation import CustomerIsolation


def _stamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def capability_message(state: CapabilityState) -> isolation_pb2.CustomerCapability:
    """A customer's capability as the contract shows it."""
    message = isolation_pb2.CustomerCapability(
        capability=state.capability,
        status=isolation_pb2.CustomerCapabilityStatus.Value(f"CUSTOMER_CAPABILITY_STATUS_{state.status.value}"),
        reason=state.reason,
        changed_by=state.changed_by,
        policy_version=state.policy_version,
    )
    if state.limit_minor is not None:
        message.limit.CopyFrom(money_pb2.Money(currency_code=state.currency, minor_units=state.limit_minor))
    if state.last_used_at is not None:
        message.last_use_time.CopyFrom(_stamp(state.last_used_at))
    if state.changed_at is not None:
        message.change_time.CopyFrom(_stamp(state.changed_at))
    return message


def _customer(name: str) -> str:
    errors = FieldCollector()
    customer_id = parse_name(name, "customers", "customer", errors)
    errors.raise_if_any()
    return customer_id


class CustomerCapabilityServicer(isolation_pb2_grpc.CustomerCapabilityServiceServicer):
    """The bank's customer app: the customer's capabilities, and restoring one."""

    def __init__(self, isolation: CustomerIsolation) -> None:
        self._isolation = isolation

    async def GetCustomerCapabilities(
        self, request: isolation_pb2.GetCustomerCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> isolation_pb2.GetCustomerCapabilitiesResponse:
        """Every capability of the customer."""
        require_caller()
        states = await self._isolation.capabilities(_customer(request.customer))
        return isolation_pb2.GetCustomerCapabilitiesResponse(capabilities=[capability_message(s) for s in states])

    async def RestoreCustomerCapability(
        self, request: isolation_pb2.RestoreCustomerCapabilityRequest, context: grpc.aio.ServicerContext
    ) -> isolation_pb2.RestoreCustomerCapabilityResponse:
        """ACTIVE again, audited with the customer (and the app that asked)."""
        validate_request_id(request.request_id)
        customer_id = _customer(request.customer)
        actor = Actor("customer", customer_id, client_id=require_caller().client_id, customer_id=customer_id)
        state = await self._isolation.restore(customer_id, request.capability, actor)
        return isolation_pb2.RestoreCustomerCapabilityResponse(capability=capability_message(state))


class IsolationAdminServicer(isolation_pb2_grpc.IsolationAdminServiceServicer):
    """The operators' view of a customer's capabilities."""

    def __init__(self, isolation: CustomerIsolation, policy: Callable[[], IsolationPolicy]) -> None:
        self._isolation = isolation
        self._policy = policy

    async def GetCustomerIsolation(
        self, request: isolation_pb2.GetCustomerIsolationRequest, context: grpc.aio.ServicerContext
    ) -> isolation_pb2.GetCustomerIsolationResponse:
        """The customer's capabilities and the policy version in force."""
        require_caller()
        states = await self._isolation.capabilities(_customer(request.customer))
        return isolation_pb2.GetCustomerIsolationResponse(
            capabilities=[capability_message(s) for s in states], policy_version=self._policy().version
        )
