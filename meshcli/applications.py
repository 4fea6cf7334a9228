"""``openbank-mesh application``: the bank's operators' view of accounts opened through wallets.

``list`` (oldest first, all or one state), ``show`` (an application: applicant, decision,
customer, account, consent, who decided), ``approve`` and ``decline`` (a REFERRED application;
the operator's identity is recorded on it and in identity's audit trail), ``resend-code`` (a
new activation code to the applicant's own contact, after a lock or a lost code; audited). Talks to identity's
OnboardingService with the operator's credentials (scope ``identity:admin``).
"""

from __future__ import annotations

import argparse
import uuid

import grpc

from meshcli.operator import Operator, command_failed
from meshcli.tables import print_json_lines, print_table
from meshcli.targets import add_mesh_options, mesh_ports
from meshlib.errors import MeshError
from openbank.identity.v1 import onboarding_pb2, onboarding_pb2_grpc

STATES = ("referred", "declined", "approved", "account_open", "active")


def _application_name(text: str) -> str:
    return text if text.startswith("applications/") else f"applications/{text}"


def add_application_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``application list | show | approve | decline | resend-code``."""
    application = commands.add_parser("application", help="account applications from wallets: list, show, decide")
    sub = application.add_subparsers(dest="application_command", required=True)

    listing = add_mesh_options(sub.add_parser("list", help="applications, oldest first"), json_rows=True)
    listing.add_argument("--state", choices=STATES, help="only those in this state (referred: the queue)")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    show = add_mesh_options(sub.add_parser("show", help="one application"), json_rows=True)
    show.add_argument("application", type=_application_name, help="applications/{id} (or the id)")
    for verb, text in (
        ("approve", "approve a referred application"),
        ("decline", "decline a referred application"),
        ("resend-code", "send the applicant a new activation code (lifts a lock of wrong codes)"),
    ):
        decide = add_mesh_options(sub.add_parser(verb, help=text), json_rows=True)
        decide.add_argument("application", type=_application_name, help="applications/{id} (or the id)")
        decide.add_argument("--request-id", help="idempotency key (default: a new one); reuse it to retry safely")


def _state(application: onboarding_pb2.Application) -> str:
    return onboarding_pb2.ApplicationState.Name(application.state).removeprefix("APPLICATION_STATE_")


def _reason(application: onboarding_pb2.Application) -> str:
    return onboarding_pb2.ApplicationReason.Name(application.reason).removeprefix("APPLICATION_REASON_")


async def run_application_command(args: argparse.Namespace) -> int:
    """Run one ``application`` command; the exit code."""
    operator = Operator(args.data_dir, host=args.host, ports=mesh_ports(args.data_dir, args.base_port))
    try:
        stub = onboarding_pb2_grpc.OnboardingServiceStub(operator.channel("identity"))
        metadata = await operator.metadata()
        if args.application_command == "list":
            state = (
                onboarding_pb2.ApplicationState.Value(f"APPLICATION_STATE_{args.state.upper()}") if args.state else 0
            )
            answer = await stub.ListApplications(
                onboarding_pb2.ListApplicationsRequest(state=state, page_size=args.limit), metadata=metadata
            )
            found = list(answer.applications)
        elif args.application_command == "show":
            request = onboarding_pb2.ReviewApplicationRequest(name=args.application)
            found = [(await stub.ReviewApplication(request, metadata=metadata)).application]
        elif args.application_command == "resend-code":
            resend = onboarding_pb2.ResendActivationCodeRequest(
                request_id=args.request_id or f"cli-{uuid.uuid4().hex}", name=args.application
            )
            found = [(await stub.ResendActivationCode(resend, metadata=metadata)).application]
        else:
            decision = onboarding_pb2.DecideApplicationRequest(
                request_id=args.request_id or f"cli-{uuid.uuid4().hex}",
                name=args.application,
                approve=args.application_command == "approve",
            )
            found = [(await stub.DecideApplication(decision, metadata=metadata)).application]
        if args.json:
            print_json_lines(found)
        elif args.application_command == "list":
            print_table(
                ("APPLICATION", "STATE", "REASON", "APPLICANT", "PARTNER", "SUBMITTED"),
                [
                    (
                        a.name,
                        _state(a),
                        _reason(a),
                        f"{a.applicant.given_name} {a.applicant.family_name}",
                        a.partner,
                        a.create_time.ToDatetime().isoformat(timespec="seconds"),
                    )
                    for a in found
                ],
            )
        else:
            _describe(found[0])
        return 0
    except (grpc.aio.AioRpcError, MeshError) as error:
        return command_failed(error, with_metadata=True)
    finally:
        await operator.close()


def _describe(application: onboarding_pb2.Application) -> None:
    applicant = application.applicant
    print(f"{application.name}  {_state(application)}  {_reason(application)}")
    rows = [
        ("applicant", f"{applicant.given_name} {applicant.family_name}, born {applicant.birth_date}"),
        ("email", applicant.email),
        ("country", applicant.country_code),
        ("partner", application.partner),
        ("customer", application.customer or "-"),
        ("account", application.account or "-"),
        ("consent", application.consent or "-"),
        ("decided by", application.decided_by or "-"),
        ("submitted", application.create_time.ToDatetime().isoformat(timespec="seconds")),
        ("updated", application.update_time.ToDatetime().isoformat(timespec="seconds")),
    ]
    for label, value in rows:
        print(f"  {label:<12} {value}")
