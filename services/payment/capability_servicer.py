"""gRPC servicer of CapabilityAdminService (the bank's kill switch): protobuf in, protobuf out."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from meshlib.auth.context import require_caller
from meshlib.idempotency import validate_request_id
from meshlib.names import parse_name
from openbank.payment.v1 import capability_pb2, capability_pb2_grpc
from services.payment.capabilities import ALL_PARTNERS, CapabilitySwitches, Switch


def _switch_message(switch: Switch) -> capability_pb2.CapabilitySwitch:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(switch.switched_off_at)
    return capability_pb2.CapabilitySwitch(
        capability=switch.capability,
        partner="" if switch.scope == ALL_PARTNERS else f"partners/{switch.scope}",
        switch_time=stamp,
        operator=switch.operator,
    )


class CapabilityAdminServicer(capability_pb2_grpc.CapabilityAdminServiceServicer):
    """Switch payment capabilities off and on."""

    def __init__(self, switches: CapabilitySwitches) -> None:
        self._switches = switches

    async def SetCapability(
        self, request: capability_pb2.SetCapabilityRequest, context: grpc.aio.ServicerContext
    ) -> capability_pb2.SetCapabilityResponse:
        """Off or on, for a partner or all."""
        operator = require_caller().subject
        validate_request_id(request.request_id)
        partner_id = parse_name(request.partner, "partners", field="partner") if request.partner else None
        switches = await self._switches.switch(request.capability, partner_id, on=request.enabled, operator=operator)
        return capability_pb2.SetCapabilityResponse(switches=[_switch_message(s) for s in switches])

    async def GetCapabilitySwitches(
        self, request: capability_pb2.GetCapabilitySwitchesRequest, context: grpc.aio.ServicerContext
    ) -> capability_pb2.GetCapabilitySwitchesResponse:
        """Every capability switched off."""
        require_caller()
        return capability_pb2.GetCapabilitySwitchesResponse(
            switches=[_switch_message(s) for s in await self._switches.list()]
        )
