"""``openbank-mesh payment``: refunds on the bank's authority, and a payment's saga trail.

Talks to the payment service directly with the local mesh's ``operator`` credentials (scope
``payments:admin``); the operator's identity is recorded in the audit trail of each refund.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import grpc

from meshcli.commands import minor_units
from meshcli.operator import Operator
from meshcli.targets import mesh_ports
from meshlib.errors import MeshError
from meshlib.grpc_errors import decode_rpc_error
from meshlib.money import Amount
from openbank.common.v1 import money_pb2
from openbank.payment.v1 import payment_admin_pb2, payment_admin_pb2_grpc, payment_pb2

RETURN_REASONS = ("CUST", "DUPL", "FRAD", "TECH", "UPAY", "AM05", "MD06", "FOCR")


def _payment_name(text: str) -> str:
    name = text if text.startswith("payments/") else f"payments/{text}"
    if len(name) <= len("payments/") or "/" in name.removeprefix("payments/"):
        raise argparse.ArgumentTypeError(f"not a payment: {text!r} (payments/{{id}} or the id)")
    return name


def add_payment_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``payment refund | trail``."""
    payment = commands.add_parser("payment", help="refund a payment on the bank's authority; show a payment's trail")
    payment_commands = payment.add_subparsers(dest="payment_command", required=True)

    def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--data-dir", type=Path, default=Path("data"), help="the local mesh's data folder")
        parser.add_argument("--host", default="127.0.0.1", help="where the services listen")
        parser.add_argument(
            "--base-port", type=int, help="the gateway's port of an `up --base-port` mesh (default: what up recorded)"
        )
        parser.add_argument("payment", type=_payment_name, help="payments/{id} (or the id)")
        return parser

    refund = common(
        payment_commands.add_parser("refund", help="refund a settled payment (any type), in full or in part")
    )
    refund.add_argument("--amount", help="in major units, e.g. 12.50 (default: all that is left to refund)")
    refund.add_argument("--currency", default="EUR", help="the payment's currency (with --amount)")
    refund.add_argument("--reason", choices=RETURN_REASONS, required=True, help="ISO 20022 return reason code")
    refund.add_argument("--remittance", default="", help="text for the customer's statement (140 characters)")
    refund.add_argument("--request-id", help="idempotency key (default: a new one); reuse it to retry safely")
    common(payment_commands.add_parser("trail", help="every saga step recorded for a payment, oldest first"))


async def run_payment_command(args: argparse.Namespace) -> int:
    """Run ``payment refund`` or ``payment trail``; the exit code."""
    operator = Operator(args.data_dir, host=args.host, ports=mesh_ports(args.data_dir, args.base_port))
    try:
        stub = payment_admin_pb2_grpc.PaymentAdminServiceStub(operator.channel("payment"))
        metadata = await operator.metadata()
        if args.payment_command == "refund":
            return await _refund(stub, metadata, args)
        trail = await stub.GetPaymentAuditTrail(
            payment_admin_pb2.GetPaymentAuditTrailRequest(name=args.payment), metadata=metadata
        )
        for entry in trail.entries:
            moment = entry.time.ToDatetime().isoformat(timespec="milliseconds")
            print(f"{moment}  {entry.step:<20} {entry.outcome:<12} {entry.detail}")
        return 0
    except grpc.aio.AioRpcError as error:
        failure = decode_rpc_error(error)
        print(f"failed: {error.code().name} {failure.reason}: {failure.message}", file=sys.stderr)
        for key, value in sorted(failure.metadata.items()):
            print(f"  {key}: {value}", file=sys.stderr)
        return 1
    except MeshError as error:  # no operator token: identity unreachable
        print(f"failed: {error.reason}: {error} (is the mesh running? `openbank-mesh up`)", file=sys.stderr)
        return 1
    finally:
        await operator.close()


async def _refund(
    stub: payment_admin_pb2_grpc.PaymentAdminServiceStub,
    metadata: tuple[tuple[str, str], ...],
    args: argparse.Namespace,
) -> int:
    request = payment_admin_pb2.OperatorRefundPaymentRequest(
        request_id=args.request_id or f"cli-{uuid.uuid4().hex}",
        name=args.payment,
        reason=args.reason,
        remittance_information=args.remittance,
    )
    if args.amount is not None:
        request.amount.CopyFrom(
            money_pb2.Money(currency_code=args.currency, minor_units=minor_units(args.amount, args.currency))
        )
    refund = (await stub.OperatorRefundPayment(request, metadata=metadata)).refund
    state = payment_pb2.PaymentState.Name(refund.state).removeprefix("PAYMENT_STATE_")
    amount = Amount(refund.amount.currency_code, refund.amount.minor_units).format()
    print(f"refund {refund.name} of {refund.refund_of}: {amount} {state} ({refund.return_reason})")
    if refund.status_reason:
        print(f"  {refund.status_reason}: {refund.status_reason_message}")
    print(f"  {refund.debtor_account} -> {refund.creditor_account}")
    return 0 if refund.state != payment_pb2.PAYMENT_STATE_REJECTED else 1
