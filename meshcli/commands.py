"""Operator commands: partners, funding, settlement windows, reports, reconciliation, keys.

Each command talks to the services directly (never through the gateway) with the local
mesh's ``operator`` credentials, and prints what it did. Amounts are decimal strings in the
currency's major unit ("12.50"), converted exactly to minor units.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import uuid
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshcli.operator import Operator, command_failed
from meshcli.tables import print_json_lines, print_table
from meshcli.targets import add_mesh_options, mesh_ports
from meshlib.errors import MeshError
from meshlib.money import CURRENCY_EXPONENTS, Amount
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, ledger_pb2, ledger_pb2_grpc
from openbank.common.v1 import money_pb2
from openbank.identity.v1 import partner_pb2, partner_pb2_grpc, signing_key_pb2, signing_key_pb2_grpc
from openbank.settlement.v1 import settlement_admin_pb2, settlement_admin_pb2_grpc, settlement_pb2, settlement_pb2_grpc

PARTNER_SCOPES = (
    "accounts:read",
    "funds:confirm",
    "payments:write",
    "payments:read",
    "consents:read",
    "consents:write",
    "settlement:read",
    "events:read",
)


def minor_units(text: str, currency: str) -> int:
    """``"12.50"`` EUR -> 1250, exactly; too many decimals or garbage is an error."""
    exponent = CURRENCY_EXPONENTS.get(currency)
    if exponent is None:
        raise SystemExit(f"unknown currency {currency!r}")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SystemExit(f"not an amount: {text!r}") from None
    scaled = value.scaleb(exponent)
    if scaled != scaled.to_integral_value() or not value.is_finite():
        raise SystemExit(f"{text} has more than {exponent} decimals for {currency}")
    return int(scaled)


def _money(text: str, currency: str) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, minor_units=minor_units(text, currency))


def _show(money: money_pb2.Money) -> str:
    return Amount(money.currency_code, money.minor_units).format() if money.currency_code else "-"


def _utc(stamp: Any) -> str:
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")


def _request_id(given: str | None) -> str:
    return given or f"cli-{uuid.uuid4().hex}"


def certificate_sha256(path: Path) -> str:
    """Lower-case hex SHA-256 of a PEM certificate's DER: what the partner registers."""
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as error:
        raise SystemExit(f"cannot read a PEM certificate from {path}: {error}") from None
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def _certificate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--certificate", type=Path, help="the partner's TLS client certificate (PEM file)")
    parser.add_argument(
        "--bind-tokens",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="certificate-bound access tokens (default at registration: yes with a certificate)",
    )


async def list_partners(
    partners: partner_pb2_grpc.PartnerServiceStub, admin: tuple[tuple[str, str], ...]
) -> list[partner_pb2.Partner]:
    """Every partner, page by page."""
    found: list[partner_pb2.Partner] = []
    token = ""
    while True:
        page = await partners.ListPartners(
            partner_pb2.ListPartnersRequest(page_size=100, page_token=token), metadata=admin
        )
        found.extend(page.partners)
        token = page.next_page_token
        if not token:
            return found


def _partner_line(partner: partner_pb2.Partner) -> str:
    bound = "certificate-bound tokens" if partner.tls_client_certificate_bound_access_tokens else "bearer tokens"
    certificate = partner.tls_client_certificate_sha256 or "no client certificate"
    return f"  certificate   {certificate} ({bound})"


def _register_arguments(register: argparse.ArgumentParser) -> None:
    register.add_argument("display_name", help="the wallet's name")
    register.add_argument("--tier", default="bronze", help="rate-limit tier (bronze, silver, gold)")
    register.add_argument("--scopes", default=",".join(PARTNER_SCOPES), help="comma-separated OAuth scopes")
    register.add_argument("--currency", default="EUR", help="currency of the limits")
    register.add_argument("--per-payment-limit", default="1000", help="largest single payment, e.g. 1000.00")
    register.add_argument("--daily-limit", default="10000", help="most per day, e.g. 10000.00")
    register.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        dest="redirect_uris",
        help="a redirect URI for the redirect flow, compared exactly (repeat for more)",
    )
    for category in ("fraud", "not-received", "wrong-amount"):
        register.add_argument(
            f"--{category}-share-bps",
            type=int,
            default=0,
            help=f"risk sharing: the partner's share of an accepted {category} dispute's loss, basis points 0..10000",
        )
    register.add_argument(
        "--risk-tier",
        choices=("LOW", "MEDIUM", "HIGH"),
        default="LOW",
        help="the bank's assessment of the partner: what the payment risk rules read (default LOW)",
    )
    _certificate_arguments(register)


def register_request(args: argparse.Namespace, request_id: str) -> partner_pb2.RegisterPartnerRequest:
    """The RegisterPartner request of ``partner register`` / ``partner onboard``."""
    return partner_pb2.RegisterPartnerRequest(
        request_id=request_id,
        display_name=args.display_name,
        allowed_scopes=[s.strip() for s in args.scopes.split(",") if s.strip()],
        rate_limit_tier=args.tier,
        per_payment_limit=_money(args.per_payment_limit, args.currency),
        daily_limit=_money(args.daily_limit, args.currency),
        token_endpoint_auth_method=partner_pb2.TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST,
        tls_client_certificate_sha256=certificate_sha256(args.certificate) if args.certificate else "",
        tls_client_certificate_bound_access_tokens=args.bind_tokens,
        redirect_uris=args.redirect_uris,
        risk_sharing=partner_pb2.RiskSharingAgreement(
            fraud_share_bps=args.fraud_share_bps,
            not_received_share_bps=args.not_received_share_bps,
            wrong_amount_share_bps=args.wrong_amount_share_bps,
        ),
        risk_tier=partner_pb2.PartnerRiskTier.Value(f"PARTNER_RISK_TIER_{args.risk_tier}"),
    )


def print_registered(answer: partner_pb2.RegisterPartnerResponse) -> None:
    """What registering a partner gave: its name, redirect URIs, credentials (the secret once)."""
    print(f"registered {answer.partner.name} ({answer.partner.display_name})")
    for uri in answer.partner.redirect_uris:
        print(f"  redirect_uri  {uri}")
    print(f"  client_id     {answer.partner.client_id}")
    print(f"  client_secret {answer.client_secret or '(shown only on the first registration)'}")
    print(_partner_line(answer.partner))


def add_operator_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add every operator command to the top-level parser."""

    def common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        add_mesh_options(parser, json_rows=True)
        parser.add_argument("--request-id", help="idempotency key (default: a new one); reuse it to retry safely")
        return parser

    partner = commands.add_parser("partner", help="register, list, suspend and reactivate partner wallets")
    partner_commands = partner.add_subparsers(dest="partner_command", required=True)
    register = common(partner_commands.add_parser("register", help="register a partner (prints its secret once)"))
    _register_arguments(register)
    onboard = common(
        partner_commands.add_parser(
            "onboard",
            help="register a partner with everything it needs to be paid: its settlement account and "
            "its settlement participant with a net debit cap (prints its secret once)",
        )
    )
    _register_arguments(onboard)
    onboard.add_argument("--net-debit-cap", default="10000", help="the participant's net debit cap, e.g. 10000.00")
    certificate = common(
        partner_commands.add_parser(
            "certificate", help="set or remove a partner's TLS client certificate and token binding (RFC 8705)"
        )
    )
    certificate.add_argument("partner", help="partners/{id}")
    _certificate_arguments(certificate)
    certificate.add_argument(
        "--remove", action="store_true", help="remove the certificate (with --no-bind-tokens if tokens are bound)"
    )
    common(partner_commands.add_parser("list", help="list partners"))
    suspend = common(partner_commands.add_parser("suspend", help="suspend a partner: its tokens stop working"))
    suspend.add_argument("partner", help="partners/{id}")
    suspend.add_argument("--reason", default="suspended by the operator", help="why (kept in the audit trail)")
    reactivate = common(partner_commands.add_parser("reactivate", help="let a suspended partner get tokens again"))
    reactivate.add_argument("partner", help="partners/{id}")

    account = commands.add_parser("account", help="operator actions on ledger accounts")
    account_commands = account.add_subparsers(dest="account_command", required=True)
    fund = common(account_commands.add_parser("fund", help="fund an account from the bank's equity account"))
    fund.add_argument("account", help="accounts/{id}")
    fund.add_argument("amount", help="amount in major units, e.g. 250.00")
    fund.add_argument("--currency", default="EUR", help="ISO 4217 currency")
    common(account_commands.add_parser("totals", help="per-currency ledger totals (must all be zero)"))
    from meshcli.customers import add_account_commands, add_customer_parser  # they use this module's helpers

    add_account_commands(account_commands, common)
    add_customer_parser(commands, common)

    window = commands.add_parser("window", help="settlement windows: list, close, settle, report")
    window_commands = window.add_subparsers(dest="window_command", required=True)
    listing = common(window_commands.add_parser("list", help="list windows, newest first"))
    listing.add_argument("--currency", default="", help="only this currency")
    close = common(window_commands.add_parser("close", help="close the open window (the next one opens at once)"))
    close.add_argument("--currency", default="EUR", help="which currency's open window")
    settle = common(
        window_commands.add_parser("settle", help="settle a closed window: post each net in the ledger, then record it")
    )
    settle.add_argument("window", help="settlementWindows/{id}")
    settle.add_argument("--reference", default="", help="the payment system's settlement reference")
    report = common(window_commands.add_parser("report", help="export a window's net settlement report"))
    report.add_argument("window", help="settlementWindows/{id}")
    report.add_argument("--format", choices=("csv", "json"), default="csv", help="file format")
    report.add_argument("--output", type=Path, help="write to this file instead of standard output")

    reconcile = common(
        commands.add_parser("reconcile", help="compare a window with the ledger; non-zero exit on differences")
    )
    reconcile.add_argument("window", help="settlementWindows/{id}")

    keys = commands.add_parser("keys", help="token signing keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    common(
        keys_commands.add_parser(
            "rotate",
            help="publish a new key that signs after the publish lead; the old one verifies until its tokens expire",
        )
    )
    common(keys_commands.add_parser("list", help="list signing keys"))


async def run_operator_command(args: argparse.Namespace) -> int:
    """Run one operator command; returns the exit code."""
    operator = Operator(args.data_dir, host=args.host, ports=mesh_ports(args.data_dir, args.base_port))
    try:
        return await _dispatch(operator, args)
    except (grpc.aio.AioRpcError, MeshError) as error:
        return command_failed(error)
    finally:
        await operator.close()


async def _dispatch(operator: Operator, args: argparse.Namespace) -> int:
    admin = await operator.metadata()
    partners = partner_pb2_grpc.PartnerServiceStub(operator.channel("identity"))
    accounts = account_admin_pb2_grpc.AccountAdminServiceStub(operator.channel("account"))
    windows_admin = settlement_admin_pb2_grpc.SettlementAdminServiceStub(operator.channel("settlement"))
    windows = settlement_pb2_grpc.SettlementServiceStub(operator.channel("settlement"))
    command = args.command
    from meshcli.customers import ACCOUNT_COMMANDS, run_customer_command

    if command == "customer" or (command == "account" and args.account_command in ACCOUNT_COMMANDS):
        return await run_customer_command(operator, admin, args)
    if command == "partner":
        sub = args.partner_command
        if sub == "register":
            answer = await partners.RegisterPartner(
                register_request(args, _request_id(args.request_id)), metadata=admin
            )
            print_registered(answer)
            return 0
        if sub == "onboard":
            from meshcli.onboarding import onboard_partner

            return await onboard_partner(operator, admin, args, _request_id(args.request_id))
        if sub == "certificate":
            if args.remove and args.certificate:
                raise SystemExit("give --certificate FILE or --remove, not both")
            if not (args.remove or args.certificate or args.bind_tokens is not None):
                raise SystemExit("give --certificate FILE or --remove, and/or --bind-tokens / --no-bind-tokens")
            update = partner_pb2.UpdatePartnerRequest(request_id=_request_id(args.request_id), name=args.partner)
            if args.remove:
                update.tls_client_certificate_sha256 = ""
            elif args.certificate:
                update.tls_client_certificate_sha256 = certificate_sha256(args.certificate)
            if args.bind_tokens is not None:
                update.tls_client_certificate_bound_access_tokens = args.bind_tokens
            updated = await partners.UpdatePartner(update, metadata=admin)
            print(f"updated {updated.partner.name}")
            print(_partner_line(updated.partner))
            return 0
        if sub == "list":
            listed = await list_partners(partners, admin)
            if args.json:
                print_json_lines(listed)
                return 0
            print_table(
                ("PARTNER", "NAME", "STATUS", "TIER", "CLIENT ID"),
                [
                    (
                        p.name,
                        p.display_name,
                        partner_pb2.PartnerStatus.Name(p.status).removeprefix("PARTNER_STATUS_"),
                        p.rate_limit_tier,
                        p.client_id,
                    )
                    for p in listed
                ],
            )
            return 0
        if sub == "suspend":
            answer = await partners.SuspendPartner(
                partner_pb2.SuspendPartnerRequest(
                    request_id=_request_id(args.request_id), name=args.partner, reason=args.reason
                ),
                metadata=admin,
            )
            print(f"suspended {answer.partner.name}: its tokens are refused from the next call")
            return 0
        answer = await partners.ReactivatePartner(
            partner_pb2.ReactivatePartnerRequest(request_id=_request_id(args.request_id), name=args.partner),
            metadata=admin,
        )
        print(f"reactivated {answer.partner.name}")
        return 0
    if command == "account":
        if args.account_command == "fund":
            funded = await accounts.FundAccount(
                account_admin_pb2.FundAccountRequest(
                    request_id=_request_id(args.request_id),
                    account=args.account,
                    amount=_money(args.amount, args.currency),
                    description="funded by the operator",
                ),
                metadata=admin,
            )
            print(f"funded {args.account} with {_show(funded.transfer.amount)} ({funded.transfer.name})")
            return 0
        totals = await accounts.GetLedgerTotals(account_admin_pb2.GetLedgerTotalsRequest(), metadata=admin)
        if args.json:
            print_json_lines(list(totals.totals))
        else:
            print_table(
                (
                    "CURRENCY",
                    "ACCOUNTS",
                    "POSTED DEBITS",
                    "POSTED CREDITS",
                    "PENDING DEBITS",
                    "PENDING CREDITS",
                    "NET",
                    "BALANCED",
                ),
                [
                    (
                        t.currency_code,
                        t.account_count,
                        _show(t.posted_debits),
                        _show(t.posted_credits),
                        _show(t.pending_debits),
                        _show(t.pending_credits),
                        _show(t.net),
                        "yes" if t.balanced else "NO",
                    )
                    for t in totals.totals
                ],
            )
        return 0 if all(t.balanced for t in totals.totals) else 1
    if command == "window":
        sub = args.window_command
        if sub == "list":
            page = await windows.ListSettlementWindows(
                settlement_pb2.ListSettlementWindowsRequest(currency_code=args.currency, page_size=50), metadata=admin
            )
            if args.json:
                print_json_lines(list(page.settlement_windows))
                return 0
            print_table(
                ("WINDOW", "CURRENCY", "STATE", "OBLIGATIONS", "GROSS"),
                [
                    (
                        w.name,
                        w.currency_code,
                        settlement_pb2.SettlementWindowState.Name(w.state).removeprefix("SETTLEMENT_WINDOW_STATE_"),
                        w.obligation_count,
                        _show(w.gross_amount),
                    )
                    for w in page.settlement_windows
                ],
            )
            return 0
        if sub == "close":
            closed = await windows_admin.CloseSettlementWindow(
                settlement_admin_pb2.CloseSettlementWindowRequest(
                    request_id=_request_id(args.request_id), currency_code=args.currency
                ),
                metadata=admin,
            )
            print(
                f"closed {closed.closed_window.name} ({closed.closed_window.obligation_count} obligations, "
                f"gross {_show(closed.closed_window.gross_amount)})"
            )
            print(f"opened {closed.next_window.name}")
            return 0
        if sub == "settle":
            settled = await windows_admin.SettleSettlementWindow(
                settlement_admin_pb2.SettleSettlementWindowRequest(
                    request_id=_request_id(args.request_id), name=args.window, settlement_reference=args.reference
                ),
                metadata=admin,
            )
            print(f"settled {settled.window.name}")
            # What settling moved in the ledger: each participant's net, as one linked chain.
            ledger = ledger_pb2_grpc.LedgerServiceStub(operator.channel("account"))
            moved = await ledger.ListTransfers(
                ledger_pb2.ListTransfersRequest(reference=settled.window.name, page_size=500), metadata=admin
            )
            for transfer in reversed(moved.transfers):  # newest first: the chain's order back
                print(f"  {transfer.debit_account} -> {transfer.credit_account}  {_show(transfer.amount)}")
            print(f"  {len(moved.transfers)} ledger transfer(s) referencing {settled.window.name}")
            return 0
        print(f"exporting {args.window} as {args.format}...", file=sys.stderr)
        export = await windows_admin.ExportSettlementReport(
            settlement_admin_pb2.ExportSettlementReportRequest(
                name=args.window,
                format=settlement_admin_pb2.REPORT_FORMAT_CSV
                if args.format == "csv"
                else settlement_admin_pb2.REPORT_FORMAT_JSON,
            ),
            metadata=admin,
        )
        if args.output:
            args.output.write_bytes(export.content)
            print(f"wrote {args.output} ({len(export.content)} bytes)", file=sys.stderr)
        else:
            sys.stdout.write(export.content.decode())
        return 0
    if command == "reconcile":
        print(f"reconciling {args.window} against the ledger...", file=sys.stderr)
        answer = await windows_admin.ReconcileSettlementWindow(
            settlement_admin_pb2.ReconcileSettlementWindowRequest(name=args.window), metadata=admin
        )
        report = answer.report
        for difference in report.differences:
            kind = settlement_admin_pb2.DifferenceKind.Name(difference.kind).removeprefix("DIFFERENCE_KIND_")
            subject = difference.payment or difference.obligation or difference.participant
            print(
                f"{kind:<24} {subject:<40} expected {_show(difference.expected)} "
                f"actual {_show(difference.actual)}  {difference.detail}"
            )
        print(
            f"{report.window}: {'clean, 0 differences' if report.clean else f'{len(report.differences)} differences'}"
        )
        return 0 if report.clean else 1
    if command == "keys":
        keys = signing_key_pb2_grpc.SigningKeyServiceStub(operator.channel("identity"))
        if args.keys_command == "rotate":
            rotated = await keys.RotateSigningKey(
                signing_key_pb2.RotateSigningKeyRequest(request_id=_request_id(args.request_id)), metadata=admin
            )
            print(
                f"published {rotated.active_key.kid}, signing with it after the publish lead; "
                f"{rotated.retiring_key.kid or 'no key'} retires once its tokens have expired"
            )
            return 0
        listed = await keys.ListSigningKeys(signing_key_pb2.ListSigningKeysRequest(page_size=100), metadata=admin)
        if args.json:
            print_json_lines(list(listed.signing_keys))
            return 0
        print_table(
            ("KID", "STATE", "CREATED (UTC)", "RETIRES (UTC)"),
            [
                (
                    key.kid,
                    signing_key_pb2.SigningKeyState.Name(key.state).removeprefix("SIGNING_KEY_STATE_"),
                    _utc(key.create_time) if key.HasField("create_time") else "-",
                    _utc(key.retire_time) if key.HasField("retire_time") else "-",
                )
                for key in listed.signing_keys
            ],
        )
        return 0
    raise SystemExit(f"unknown command {command}")
