"""``openbank-mesh payment``: refunds on the bank's authority, and a payment's saga trail.

Talks to the payment service directly with the local mesh's ``operator`` credentials (scope
``payments:admin``); the operator's identity is recorded in the audit trail of each refund.
"""

from __future__ import annotations

import argparse
import sys
import uuid

import grpc

from meshcli.commands import minor_units
from meshcli.operator import Operator, command_failed
from meshcli.tables import print_json_lines, print_table
from meshcli.targets import add_mesh_options, mesh_ports
from meshlib.errors import MeshError
from meshlib.money import Amount
from openbank.common.v1 import money_pb2
from openbank.payment.v1 import payment_admin_pb2, payment_admin_pb2_grpc, payment_pb2

RETURN_REASONS = ("CUST", "DUPL", "FRAD", "TECH", "UPAY", "AM05", "MD06", "FOCR")
STATES = tuple(
    name.removeprefix("PAYMENT_STATE_") for name in payment_pb2.PaymentState.keys() if not name.endswith("UNSPECIFIED")
)


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
        add_mesh_options(parser)
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
    show = payment_commands.add_parser("show", help="one payment by its id, or the payments of an end-to-end id")
    add_mesh_options(show, json_rows=True)
    show.add_argument("payment", help="payments/{id}, the id, or a partner's end-to-end id")
    listing = payment_commands.add_parser("list", help="payments newest first, e.g. the rejected ones with reasons")
    add_mesh_options(listing, json_rows=True)
    listing.add_argument("--state", choices=STATES, help="only payments in this state")
    listing.add_argument("--partner", default="", help="only this partner's, partners/{id}")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")


async def run_payment_command(args: argparse.Namespace) -> int:
    """Run ``payment refund`` or ``payment trail``; the exit code."""
    operator = Operator(args.data_dir, host=args.host, ports=mesh_ports(args.data_dir, args.base_port))
    try:
        stub = payment_admin_pb2_grpc.PaymentAdminServiceStub(operator.channel("payment"))
        metadata = await operator.metadata()
        if args.payment_command == "refund":
            return await _refund(stub, metadata, args)
        if args.payment_command in ("show", "list"):
            return await _search(stub, metadata, args)
        trail = await stub.GetPaymentAuditTrail(
            payment_admin_pb2.GetPaymentAuditTrailRequest(name=args.payment), metadata=metadata
        )
        for entry in trail.entries:
            moment = entry.time.ToDatetime().isoformat(timespec="milliseconds")
            print(f"{moment}  {entry.step:<20} {entry.outcome:<12} {entry.detail}")
        return 0
    except (grpc.aio.AioRpcError, MeshError) as error:
        return command_failed(error, with_metadata=True)
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


async def _search(
    stub: payment_admin_pb2_grpc.PaymentAdminServiceStub,
    metadata: tuple[tuple[str, str], ...],
    args: argparse.Namespace,
) -> int:
    """``payment show`` (by id, else by end-to-end id) and ``payment list``."""
    if args.payment_command == "show":
        text = args.payment
        looks_like_id = text.startswith("payments/") or (len(text) == 32 and all(c in "0123456789abcdef" for c in text))
        if looks_like_id:
            request = payment_admin_pb2.SearchPaymentsRequest(name=_payment_name(text), page_size=10)
        else:
            request = payment_admin_pb2.SearchPaymentsRequest(end_to_end_id=text, page_size=50)
    else:
        state = payment_pb2.PaymentState.Value(f"PAYMENT_STATE_{args.state}") if args.state else 0
        request = payment_admin_pb2.SearchPaymentsRequest(partner=args.partner, state=state, page_size=args.limit)
    found = list((await stub.SearchPayments(request, metadata=metadata)).payments)
    if args.json:
        print_json_lines(found)
        return 0
    if args.payment_command == "show":
        if not found:
            print(f"no payment {args.payment}", file=sys.stderr)
            return 1
        for payment in found:
            _describe(payment)
        return 0
    print_table(
        ("PAYMENT", "PARTNER", "TYPE", "AMOUNT", "STATE", "REASON", "CREATED"),
        [
            (
                p.name,
                p.partner,
                payment_pb2.PaymentType.Name(p.type).removeprefix("PAYMENT_TYPE_"),
                _amount(p.amount),
                payment_pb2.PaymentState.Name(p.state).removeprefix("PAYMENT_STATE_"),
                p.status_reason or "-",
                p.create_time.ToDatetime().isoformat(timespec="seconds"),
            )
            for p in found
        ],
    )
    return 0


def _amount(money: money_pb2.Money) -> str:
    return Amount(money.currency_code, money.minor_units).format() if money.currency_code else "-"


def _describe(payment: payment_pb2.Payment) -> None:
    state = payment_pb2.PaymentState.Name(payment.state).removeprefix("PAYMENT_STATE_")
    print(f"{payment.name}  {state} ({payment.iso20022_status})")

    def _external(shown: payment_pb2.Payment) -> str:
        """A creditor at another bank: its account, name and bank."""
        creditor = shown.creditor_external
        account = creditor.iban or creditor.scheme_account_id
        return f"{account} {creditor.name} ({creditor.agent_bic})" if account else "-"

    rows = [
        ("partner", payment.partner),
        ("consent", payment.consent),
        ("type", payment_pb2.PaymentType.Name(payment.type).removeprefix("PAYMENT_TYPE_")),
        ("amount", _amount(payment.amount)),
        ("fee", _amount(payment.fee) if payment.HasField("fee") else "-"),
        ("debtor", payment.debtor_account),
        ("creditor", payment.creditor_account or payment.creditor_wallet or _external(payment)),
        ("reason", f"{payment.status_reason}: {payment.status_reason_message}" if payment.status_reason else "-"),
        ("end-to-end id", payment.end_to_end_id or "-"),
        ("refund of", payment.refund_of or "-"),
        ("refunds", ", ".join(payment.refunds) or "-"),
        ("refunded", _amount(payment.refunded_amount) if payment.HasField("refunded_amount") else "-"),
        ("standing order", f"{payment.standing_order} #{payment.execution_number}" if payment.standing_order else "-"),
        ("created", payment.create_time.ToDatetime().isoformat(timespec="seconds")),
        ("updated", payment.update_time.ToDatetime().isoformat(timespec="seconds")),
    ]
    for label, value in rows:
        print(f"  {label:<15} {value}")
