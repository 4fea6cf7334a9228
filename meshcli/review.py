"""``openbank-mesh review``: the bank's operators' queue of payments the risk rules held.

``list`` (held payments, oldest first), ``show`` (a payment's risk decision: signals, rules,
score, version, how it ended), ``approve`` (its saga runs now) and ``refuse`` (REJECTED
REVIEW_REFUSED). Talks to the payment service's RiskAdminService with the operator's
credentials (scope ``payments:admin``); the operator's identity is recorded with each decision.
"""

from __future__ import annotations

import argparse
import uuid

import grpc

from meshcli.operator import Operator, command_failed
from meshcli.payments import _amount, _payment_name
from meshcli.tables import print_json_lines, print_table
from meshcli.targets import add_mesh_options, mesh_ports
from meshlib.errors import MeshError
from openbank.payment.v1 import payment_pb2, risk_pb2, risk_pb2_grpc


def add_review_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``review list | show | approve | refuse``."""
    review = commands.add_parser("review", help="payments the risk rules held for review: list, show, decide")
    review_commands = review.add_subparsers(dest="review_command", required=True)

    listing = add_mesh_options(review_commands.add_parser("list", help="held payments, oldest first"), json_rows=True)
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    show = add_mesh_options(review_commands.add_parser("show", help="a payment's risk decision: signals, rules, score"))
    show.add_argument("payment", type=_payment_name, help="payments/{id} (or the id)")
    show.add_argument("--json", action="store_true", help="JSON lines")
    for verb, text in (("approve", "approve a held payment: it goes on now"), ("refuse", "refuse a held payment")):
        decide = add_mesh_options(review_commands.add_parser(verb, help=text))
        decide.add_argument("payment", type=_payment_name, help="payments/{id} (or the id)")
        decide.add_argument("--note", default="", help="why (kept in the audit trail, 500 characters)")
        decide.add_argument("--request-id", help="idempotency key (default: a new one); reuse it to retry safely")


async def run_review_command(args: argparse.Namespace) -> int:
    """Run one ``review`` command; the exit code."""
    operator = Operator(args.data_dir, host=args.host, ports=mesh_ports(args.data_dir, args.base_port))
    try:
        stub = risk_pb2_grpc.RiskAdminServiceStub(operator.channel("payment"))
        metadata = await operator.metadata()
        if args.review_command == "list":
            answer = await stub.ListHeldPayments(
                risk_pb2.ListHeldPaymentsRequest(page_size=args.limit), metadata=metadata
            )
            return _list(list(answer.held_payments), args.json)
        if args.review_command == "show":
            held = await stub.GetRiskDecision(risk_pb2.GetRiskDecisionRequest(name=args.payment), metadata=metadata)
            if args.json:
                print_json_lines([held.held_payment])
            else:
                _describe(held.held_payment)
            return 0
        request_id = args.request_id or f"cli-{uuid.uuid4().hex}"
        if args.review_command == "approve":
            request = risk_pb2.ApproveHeldPaymentRequest(request_id=request_id, name=args.payment, note=args.note)
            payment = (await stub.ApproveHeldPayment(request, metadata=metadata)).payment
        else:
            refusal = risk_pb2.RefuseHeldPaymentRequest(request_id=request_id, name=args.payment, note=args.note)
            payment = (await stub.RefuseHeldPayment(refusal, metadata=metadata)).payment
        state = payment_pb2.PaymentState.Name(payment.state).removeprefix("PAYMENT_STATE_")
        reason = f" ({payment.status_reason})" if payment.status_reason else ""
        print(f"{payment.name}: {state}{reason}")
        return 0
    except (grpc.aio.AioRpcError, MeshError) as error:
        return command_failed(error, with_metadata=True)
    finally:
        await operator.close()


def _list(held: list[risk_pb2.HeldPayment], as_json: bool) -> int:
    if as_json:
        print_json_lines(held)
        return 0
    print_table(
        ("PAYMENT", "PARTNER", "AMOUNT", "SCORE", "RULES", "HELD SINCE", "EXPIRES"),
        [
            (
                h.payment.name,
                h.payment.partner,
                _amount(h.payment.amount),
                str(h.decision.score),
                ",".join(h.decision.rules_fired) or "-",
                h.decision.decide_time.ToDatetime().isoformat(timespec="seconds"),
                h.decision.expire_time.ToDatetime().isoformat(timespec="seconds"),
            )
            for h in held
        ],
    )
    return 0


def _describe(held: risk_pb2.HeldPayment) -> None:
    payment, decision = held.payment, held.decision
    state = payment_pb2.PaymentState.Name(payment.state).removeprefix("PAYMENT_STATE_")
    outcome = risk_pb2.RiskOutcome.Name(decision.outcome).removeprefix("RISK_OUTCOME_")
    print(f"{payment.name}  {state}  {outcome} (score {decision.score}, rules {decision.rules_version})")
    rows = [
        ("partner", payment.partner),
        ("amount", _amount(payment.amount)),
        ("debtor", payment.debtor_account),
        ("creditor", payment.creditor_account or payment.creditor_wallet or payment.creditor_external.iban),
        ("rules fired", ", ".join(decision.rules_fired) or "-"),
        ("decided", decision.decide_time.ToDatetime().isoformat(timespec="seconds")),
        ("expires", decision.expire_time.ToDatetime().isoformat(timespec="seconds")),
        ("resolution", f"{decision.resolution} by {decision.resolved_by}" if decision.resolution else "waiting"),
        ("note", decision.note or "-"),
    ]
    for label, value in rows:
        print(f"  {label:<15} {value}")
    print("  signals")
    for name, value in sorted(decision.signals.items()):
        print(f"    {name:<24} {value or '-'}")
