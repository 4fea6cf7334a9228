"""``openbank-mesh capability``: the bank's kill switch. ``off`` / ``on`` a payment capability (a
payment type) for one partner (``--partner``) or for every partner, and ``list`` what is off.
Talks to the payment service's CapabilityAdminService (scope ``payments:admin``)."""

from __future__ import annotations

import argparse
import uuid

import grpc

from meshcli.operator import Operator, command_failed
from meshcli.tables import print_json_lines, print_table
from meshcli.targets import add_mesh_options, mesh_ports
from meshlib.errors import MeshError
from openbank.payment.v1 import capability_pb2, capability_pb2_grpc

CAPABILITIES = ("WALLET_TOP_UP", "TRANSFER", "BILL_PAYMENT", "EXTERNAL_TRANSFER")


def add_capability_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``capability off | on | list``."""
    capability = commands.add_parser("capability", help="the kill switch: payment capabilities off or on")
    capability_commands = capability.add_subparsers(dest="capability_command", required=True)

    for verb, text in (("off", "switch a capability off"), ("on", "switch a capability back on")):
        switch = add_mesh_options(capability_commands.add_parser(verb, help=text), json_rows=True)
        switch.add_argument("capability", choices=CAPABILITIES, help="a payment type")
        switch.add_argument("--partner", default="", help="only for this partner (partners/{id}); default: all")
    add_mesh_options(capability_commands.add_parser("list", help="what is switched off, and for whom"), json_rows=True)


async def run_capability_command(args: argparse.Namespace) -> int:
    """Run one ``capability`` command; the exit code."""
    operator = Operator(args.data_dir, host=args.host, ports=mesh_ports(args.data_dir, args.base_port))
    try:
        stub = capability_pb2_grpc.CapabilityAdminServiceStub(operator.channel("payment"))
        metadata = await operator.metadata()
        if args.capability_command == "list":
            answer = await stub.GetCapabilitySwitches(capability_pb2.GetCapabilitySwitchesRequest(), metadata=metadata)
        else:
            request = capability_pb2.SetCapabilityRequest(
                request_id=f"cli-{uuid.uuid4().hex}",
                capability=args.capability,
                partner=args.partner,
                enabled=args.capability_command == "on",
            )
            answer = await stub.SetCapability(request, metadata=metadata)
        switches = list(answer.switches)
        if args.json:
            print_json_lines(switches)
            return 0
        print_table(
            ("CAPABILITY", "OFF FOR", "SINCE", "BY"),
            [
                (
                    s.capability,
                    s.partner or "every partner",
                    s.switch_time.ToDatetime().isoformat(timespec="seconds"),
                    s.operator,
                )
                for s in switches
            ],
        )
        return 0
    except (grpc.aio.AioRpcError, MeshError) as error:
        return command_failed(error, with_metadata=True)
    finally:
        await operator.close()
