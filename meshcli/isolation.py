"""``openbank-mesh isolation show customers/{id}``: dynamic isolation, what the bank paused or
lowered for one customer (and why, under which policy version) and what is active. Talks to the
payment service's IsolationAdminService (scope ``payments:admin``)."""

from __future__ import annotations

import argparse

import grpc

from meshcli.operator import Operator, command_failed
from meshcli.tables import print_json_lines, print_table
from meshcli.targets import add_mesh_options, mesh_ports
from meshlib.errors import MeshError
from openbank.payment.v1 import isolation_pb2, isolation_pb2_grpc

_STATUS = "CUSTOMER_CAPABILITY_STATUS_"


def add_isolation_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``isolation show CUSTOMER``."""
    isolation = commands.add_parser("isolation", help="dynamic isolation: a customer's paused capabilities")
    isolation_commands = isolation.add_subparsers(dest="isolation_command", required=True)
    show = isolation_commands.add_parser("show", help="a customer's capabilities and where each stands")
    show.add_argument("customer", help="customers/{id}")
    add_mesh_options(show, json_rows=True)


async def run_isolation_command(args: argparse.Namespace) -> int:
    """Run one ``isolation`` command; the exit code."""
    operator = Operator(args.data_dir, host=args.host, ports=mesh_ports(args.data_dir, args.base_port))
    try:
        stub = isolation_pb2_grpc.IsolationAdminServiceStub(operator.channel("payment"))
        answer = await stub.GetCustomerIsolation(
            isolation_pb2.GetCustomerIsolationRequest(customer=args.customer), metadata=await operator.metadata()
        )
        if args.json:
            print_json_lines(list(answer.capabilities))
            return 0
        rows = []
        for c in answer.capabilities:
            status = isolation_pb2.CustomerCapabilityStatus.Name(c.status).removeprefix(_STATUS)
            limit = f"{c.limit.minor_units} {c.limit.currency_code}" if c.HasField("limit") else ""
            used = "never"
            if c.HasField("last_use_time"):
                used = c.last_use_time.ToDatetime().isoformat(timespec="seconds")
            rows.append((c.capability, status, limit, used, c.reason, c.policy_version, c.changed_by))
        print_table(("CAPABILITY", "STATUS", "LIMIT", "LAST USED", "WHY", "POLICY", "BY"), rows)
        print(f"policy in force: {answer.policy_version}")
        return 0
    except (grpc.aio.AioRpcError, MeshError) as error:
        return command_failed(error, with_metadata=True)
    finally:
        await operator.close()
