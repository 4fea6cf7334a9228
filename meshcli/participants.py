"""``openbank-mesh participant list``: every settlement participant by name, and where each
stands against its net debit cap in each of its currencies (what the bank watches)."""

from __future__ import annotations

import argparse

import grpc

from meshcli.commands import _show, list_partners
from meshcli.operator import Operator, command_failed
from meshcli.tables import print_json_lines, print_table
from meshcli.targets import add_mesh_options, mesh_ports
from meshlib.errors import MeshError
from openbank.identity.v1 import partner_pb2_grpc
from openbank.settlement.v1 import settlement_admin_pb2, settlement_admin_pb2_grpc, settlement_pb2, settlement_pb2_grpc


def add_participant_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``participant list``."""
    participant = commands.add_parser("participant", help="settlement participants and their positions")
    sub = participant.add_subparsers(dest="participant_command", required=True)
    listing = sub.add_parser("list", help="every participant by name: position, reserved, cap, headroom")
    add_mesh_options(listing, json_rows=True)


async def run_participant_command(args: argparse.Namespace) -> int:
    """List participants with their positions; exit 1 when one is over its cap."""
    from pathlib import Path

    data_dir = Path(args.data_dir)
    operator = Operator(data_dir, host=args.host, ports=mesh_ports(data_dir, args.base_port))
    try:
        admin = await operator.metadata()
        names = {
            p.name: p.display_name
            for p in await list_partners(partner_pb2_grpc.PartnerServiceStub(operator.channel("identity")), admin)
        }
        settlement_admin = settlement_admin_pb2_grpc.SettlementAdminServiceStub(operator.channel("settlement"))
        settlement = settlement_pb2_grpc.SettlementServiceStub(operator.channel("settlement"))
        rows: list[dict[str, object]] = []
        token = ""
        while True:
            page = await settlement_admin.ListParticipants(
                settlement_admin_pb2.ListParticipantsRequest(page_size=100, page_token=token), metadata=admin
            )
            for participant in page.participants:
                for cap in participant.net_debit_caps:
                    position = (
                        await settlement.GetPosition(
                            settlement_pb2.GetPositionRequest(
                                participant=participant.name, currency_code=cap.currency_code
                            ),
                            metadata=admin,
                        )
                    ).position
                    rows.append(
                        {
                            "participant": participant.name,
                            "name": names.get(participant.partner, participant.partner)
                            or (
                                "the clearing scheme"
                                if participant.type == settlement_admin_pb2.PARTICIPANT_TYPE_SCHEME
                                else "the bank"
                            ),
                            "status": settlement_admin_pb2.ParticipantStatus.Name(participant.status).removeprefix(
                                "PARTICIPANT_STATUS_"
                            ),
                            "currency": cap.currency_code,
                            "net": position.net_position,
                            "reserved": position.reserved,
                            "cap": position.net_debit_cap,
                            "headroom": position.headroom,
                        }
                    )
            token = page.next_page_token
            if not token:
                break
    except (grpc.aio.AioRpcError, MeshError) as error:
        return command_failed(error)
    finally:
        await operator.close()
    if args.json:
        print_json_lines(
            [
                {**row, **{k: row[k].minor_units for k in ("net", "reserved", "cap", "headroom")}}  # type: ignore[attr-defined]
                for row in rows
            ]
        )
    else:
        print_table(
            ("PARTICIPANT", "NAME", "STATUS", "CUR", "NET POSITION", "RESERVED", "NET DEBIT CAP", "HEADROOM"),
            [
                (
                    r["participant"],
                    r["name"],
                    r["status"],
                    r["currency"],
                    _show(r["net"]),  # type: ignore[arg-type]
                    _show(r["reserved"]),  # type: ignore[arg-type]
                    _show(r["cap"]),  # type: ignore[arg-type]
                    _show(r["headroom"]),  # type: ignore[arg-type]
                )
                for r in rows
            ],
        )
    over = [r for r in rows if r["headroom"].minor_units < 0]  # type: ignore[attr-defined]
    return 1 if over else 0
