"""``openbank-mesh dispute``: the bank's operators' disputes of settled payments.

``open`` (a payment disputed for its customer: fraud, not-received, wrong-amount), ``list``
(newest first, all or one partner's), ``investigate``, ``accept`` (the customer is refunded,
the loss split by the partner's risk-sharing agreement) and ``reject``. Talks to the payment
service's DisputeAdminService with the operator's credentials (scope ``payments:admin``).
"""

from __future__ import annotations

import argparse
import uuid

import grpc

from meshcli.commands import _money
from meshcli.operator import Operator, command_failed
from meshcli.payments import _amount, _payment_name
from meshcli.tables import print_json_lines, print_table
from meshcli.targets import add_mesh_options, mesh_ports
from meshlib.errors import MeshError
from openbank.payment.v1 import dispute_pb2, dispute_pb2_grpc

CATEGORIES = {
    "fraud": dispute_pb2.DISPUTE_CATEGORY_FRAUD,
    "not-received": dispute_pb2.DISPUTE_CATEGORY_NOT_RECEIVED,
    "wrong-amount": dispute_pb2.DISPUTE_CATEGORY_WRONG_AMOUNT,
}
DECISIONS = {
    "investigate": dispute_pb2.DISPUTE_STATE_INVESTIGATING,
    "accept": dispute_pb2.DISPUTE_STATE_ACCEPTED,
    "reject": dispute_pb2.DISPUTE_STATE_REJECTED,
}


def _dispute_name(value: str) -> str:
    return value if value.startswith("disputes/") else f"disputes/{value}"


def add_dispute_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``dispute open | list | investigate | accept | reject``."""
    dispute = commands.add_parser("dispute", help="disputes of settled payments: open, list, decide")
    dispute_commands = dispute.add_subparsers(dest="dispute_command", required=True)

    opening = add_mesh_options(
        dispute_commands.add_parser("open", help="dispute a settled payment for its customer"), json_rows=True
    )
    opening.add_argument("payment", type=_payment_name, help="payments/{id} (or the id)")
    opening.add_argument("category", choices=sorted(CATEGORIES), help="why")
    opening.add_argument("--amount", help="wrong-amount: the excess in major units, e.g. 12.50 (default: all)")
    opening.add_argument("--currency", default="EUR", help="the amount's currency")
    opening.add_argument("--description", default="", help="what happened (500 characters)")
    opening.add_argument("--request-id", help="idempotency key (default: a new one); reuse it to retry safely")
    listing = add_mesh_options(dispute_commands.add_parser("list", help="disputes, newest first"), json_rows=True)
    listing.add_argument("--partner", default="", help="only this partner's (partners/{id})")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    for verb, text in (
        ("investigate", "mark a dispute as being investigated"),
        ("accept", "accept: the customer is refunded, the loss split by the partner's agreement"),
        ("reject", "reject: nothing moves"),
    ):
        decide = add_mesh_options(dispute_commands.add_parser(verb, help=text), json_rows=True)
        decide.add_argument("dispute", type=_dispute_name, help="disputes/{id} (or the id)")
        decide.add_argument("--note", default="", help="why (kept with the dispute and in the audit trail)")
        decide.add_argument("--request-id", help="idempotency key (default: a new one)")


async def run_dispute_command(args: argparse.Namespace) -> int:
    """Run one ``dispute`` command; the exit code."""
    operator = Operator(args.data_dir, host=args.host, ports=mesh_ports(args.data_dir, args.base_port))
    try:
        stub = dispute_pb2_grpc.DisputeAdminServiceStub(operator.channel("payment"))
        metadata = await operator.metadata()
        request_id = getattr(args, "request_id", None) or f"cli-{uuid.uuid4().hex}"
        if args.dispute_command == "list":
            answer = await stub.SearchDisputes(
                dispute_pb2.SearchDisputesRequest(partner=args.partner, page_size=args.limit), metadata=metadata
            )
            return _list(list(answer.disputes), args.json)
        if args.dispute_command == "open":
            request = dispute_pb2.OpenDisputeRequest(
                request_id=request_id,
                payment=args.payment,
                category=CATEGORIES[args.category],
                description=args.description,
            )
            if args.amount:
                request.amount.CopyFrom(_money(args.amount, args.currency))
            dispute = (await stub.OpenDispute(request, metadata=metadata)).dispute
        else:
            decision = dispute_pb2.DecideDisputeRequest(
                request_id=request_id, name=args.dispute, state=DECISIONS[args.dispute_command], note=args.note
            )
            dispute = (await stub.DecideDispute(decision, metadata=metadata)).dispute
        if args.json:
            print_json_lines([dispute])
        else:
            _describe(dispute)
        return 0
    except (grpc.aio.AioRpcError, MeshError) as error:
        return command_failed(error, with_metadata=True)
    finally:
        await operator.close()


def _state(dispute: dispute_pb2.Dispute) -> str:
    return dispute_pb2.DisputeState.Name(dispute.state).removeprefix("DISPUTE_STATE_")


def _category(dispute: dispute_pb2.Dispute) -> str:
    return dispute_pb2.DisputeCategory.Name(dispute.category).removeprefix("DISPUTE_CATEGORY_")


def _list(disputes: list[dispute_pb2.Dispute], as_json: bool) -> int:
    if as_json:
        print_json_lines(disputes)
        return 0
    print_table(
        ("DISPUTE", "PAYMENT", "CATEGORY", "STATE", "AMOUNT", "PARTNER SHARE", "DECIDE BY"),
        [
            (
                d.name,
                d.payment,
                _category(d),
                _state(d),
                _amount(d.amount),
                _amount(d.partner_share) if d.HasField("partner_share") else "-",
                d.decide_by_time.ToDatetime().isoformat(timespec="seconds"),
            )
            for d in disputes
        ],
    )
    return 0


def _describe(dispute: dispute_pb2.Dispute) -> None:
    print(f"{dispute.name}  {_state(dispute)}  {_category(dispute)}  {_amount(dispute.amount)}  of {dispute.payment}")
    if dispute.HasField("partner_share"):
        print(f"  partner share   {_amount(dispute.partner_share)}")
        print(f"  bank share      {_amount(dispute.bank_share)}")
        for refund in dispute.refund_payments:
            print(f"  refund          {refund}")
    print(f"  decide by       {dispute.decide_by_time.ToDatetime().isoformat(timespec='seconds')}")
    if dispute.decision_note:
        print(f"  note            {dispute.decision_note}")
