"""``openbank-mesh audit``: read, export and verify the audit trails.

Each service (identity, account, payment, settlement) answers for its own trail through
``AuditService`` (scope ``audit:read``); the gateway's decisions are in hash-chained JSON-lines
files, one chain per replica, verified here from the files themselves. A service's database
can be verified directly too (``--database``), without trusting the running service.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from meshcli.operator import Operator
from meshcli.targets import add_mesh_options, mesh_ports
from meshlib.audit import AuditStore, ChainReport, audit_tables, verify_directory
from meshlib.errors import MeshError
from meshlib.grpc_errors import decode_rpc_error
from openbank.common.v1 import audit_pb2, audit_pb2_grpc

SERVICES = ("identity", "account", "payment", "settlement")


def add_audit_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``audit list | export | verify``."""
    audit = commands.add_parser("audit", help="read, export (JSON lines) and verify the audit trails")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)

    def connection(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_mesh_options(parser)
        parser.add_argument(
            "--service", choices=[*SERVICES, "all"], default="all", help="whose trail (default: every service)"
        )
        return parser

    def filters(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--partner", default="", help="only records about this partner id")
        parser.add_argument("--consent", default="", help="only records about this consent id")
        parser.add_argument("--payment", default="", help="only records about this payment id")
        parser.add_argument("--actor", default="", help="only records by this actor (a token's subject)")
        parser.add_argument("--action", default="", help="only actions starting with this, e.g. partner.")
        parser.add_argument("--since", type=_time, help="from this time (ISO 8601, UTC if no offset)")
        parser.add_argument("--until", type=_time, help="before this time (ISO 8601)")
        return parser

    listing = filters(connection(audit_commands.add_parser("list", help="records, newest first")))
    listing.add_argument("--limit", type=int, default=50, help="how many records per service (default 50)")
    export = filters(connection(audit_commands.add_parser("export", help="every matching record as JSON lines")))
    export.add_argument("--output", type=Path, help="write to this file (default: standard output)")
    verify = connection(audit_commands.add_parser("verify", help="check the hash chains; exit 1 if one is broken"))
    verify.add_argument("--anchor", type=_anchor, help="SEQUENCE:HASH kept earlier (with one --service)")
    verify.add_argument("--database", help="verify this service database URL directly instead of over gRPC")
    verify.add_argument("--dir", type=Path, help="verify the gateway's audit files in this folder instead")


def _time(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _anchor(text: str) -> tuple[int, str]:
    sequence, _, digest = text.partition(":")
    if not sequence.isdigit() or len(digest) != 64:
        raise argparse.ArgumentTypeError("expected SEQUENCE:HASH (64 hex characters)")
    return int(sequence), digest


def _request(args: argparse.Namespace, page_size: int, page_token: str = "") -> audit_pb2.ListAuditRecordsRequest:
    request = audit_pb2.ListAuditRecordsRequest(
        page_size=page_size,
        page_token=page_token,
        partner=args.partner,
        consent=args.consent,
        payment=args.payment,
        actor=args.actor,
        action_prefix=args.action,
    )
    if args.since:
        request.start_time.FromDatetime(args.since)
    if args.until:
        request.end_time.FromDatetime(args.until)
    return request


def record_json(record: audit_pb2.AuditRecord) -> dict[str, Any]:
    """One record as a SIEM line: every field, the details as an object."""
    line = json_format.MessageToDict(
        record, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    line["details"] = json.loads(line.pop("details_json") or "{}")
    return line


def _services(args: argparse.Namespace) -> tuple[str, ...]:
    return SERVICES if args.service == "all" else (args.service,)


def _print_report(name: str, report: ChainReport, out: TextIO) -> None:
    state = "intact" if report.intact else "BROKEN"
    print(
        f"{name}: {state}, {report.checked} records checked, {report.unsealed} not yet sealed, "
        f"head {report.head_sequence}:{report.head_hash}",
        file=out,
    )
    for problem in report.problems:
        print(f"  {problem}", file=out)


async def verify_database(url: str, anchor: tuple[int, str] | None = None) -> ChainReport:
    """Verify a service's trail straight from its database (read only)."""
    import sqlalchemy as sa

    from meshlib.storage import Database

    database = Database(url)
    try:
        return await AuditStore(database, audit_tables(sa.MetaData()), "offline").verify(anchor=anchor)
    finally:
        await database.dispose()


async def run_audit_command(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run ``audit ...``; 0 on success, 1 when a chain is broken or a call fails."""
    if args.audit_command == "verify" and (args.dir or args.database):
        if args.dir:
            reports = verify_directory(args.dir, anchor=args.anchor)
            if not reports:
                print(f"no audit files in {args.dir}", file=out)
                return 1
        else:
            reports = {"database": await verify_database(args.database, args.anchor)}
        for name, report in sorted(reports.items()):
            _print_report(name, report, out)
        return 0 if all(r.intact for r in reports.values()) else 1
    operator = Operator(args.data_dir, host=args.host, ports=mesh_ports(args.data_dir, args.base_port))
    try:
        metadata = await operator.metadata()
        broken = False
        sink = args.output.open("w", encoding="utf-8") if getattr(args, "output", None) else out
        try:
            for service in _services(args):
                stub = audit_pb2_grpc.AuditServiceStub(operator.channel(service))
                if args.audit_command == "verify":
                    request = audit_pb2.VerifyAuditChainRequest()
                    if args.anchor:
                        request.anchor_sequence, request.anchor_hash = args.anchor
                    answer = await stub.VerifyAuditChain(request, metadata=metadata)
                    report = ChainReport(
                        checked=answer.checked_count,
                        unsealed=answer.unsealed_count,
                        head_sequence=answer.head_sequence,
                        head_hash=answer.head_hash,
                        problems=list(answer.problems),
                    )
                    _print_report(service, report, out)
                    broken |= not answer.intact
                    continue
                page_size = min(args.limit, 500) if args.audit_command == "list" else 500
                token, shown = "", 0
                while True:
                    answer = await stub.ListAuditRecords(_request(args, page_size, token), metadata=metadata)
                    for record in answer.records:
                        if args.audit_command == "list":
                            print(_line(record), file=out)
                        else:
                            print(json.dumps(record_json(record), separators=(",", ":")), file=sink)
                    shown += len(answer.records)
                    token = answer.next_page_token
                    if not token or (args.audit_command == "list" and shown >= args.limit):
                        break
        finally:
            if sink is not out:
                sink.close()
        return 1 if broken else 0
    except grpc.aio.AioRpcError as error:
        print(f"error: {decode_rpc_error(error)}", file=sys.stderr)
        return 1
    except MeshError as error:  # no operator token: identity unreachable
        print(f"error: {error.reason}: {error} (is the mesh running? `openbank-mesh up`)", file=sys.stderr)
        return 1
    finally:
        await operator.close()


def _line(record: audit_pb2.AuditRecord) -> str:
    when = record.occur_time.ToDatetime(dt.UTC).isoformat(timespec="seconds")
    sequence = record.sequence or "-"
    return (
        f"{when} {record.service}#{sequence} {record.action} {record.resource} -> {record.outcome} "
        f"by {record.actor} ({record.actor_kind}) trace={record.trace_id or '-'} {record.details_json}"
    )
