"""``openbank-mesh customer create|list|show`` and ``account open|list|show``: the bank's
customers (identity's CustomerService) and their ledger accounts with balances (account's
AccountAdminService.SearchAccounts), for operators. Listings print a table with headers or
JSON lines (``--json``); a refusal prints its reason, never a traceback."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from meshcli.commands import _money, _request_id, _show
from meshcli.operator import Operator
from meshcli.tables import print_json_lines, print_table
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, account_pb2
from openbank.identity.v1 import customer_pb2, customer_pb2_grpc

ACCOUNT_COMMANDS = ("open", "list", "show")
ACCOUNT_TYPES = {
    "current": account_pb2.ACCOUNT_TYPE_CURRENT,
    "savings": account_pb2.ACCOUNT_TYPE_SAVINGS,
    "settlement": account_pb2.ACCOUNT_TYPE_SETTLEMENT,
}
Metadata = tuple[tuple[str, str], ...]


def add_customer_parser(commands: argparse._SubParsersAction, common: Callable[..., Any]) -> None:  # type: ignore[type-arg]
    """``customer create | list | show``."""
    customer = commands.add_parser("customer", help="the bank's customers: create, list, show")
    sub = customer.add_subparsers(dest="customer_command", required=True)
    create = common(sub.add_parser("create", help="create a customer (prints its TOTP secret once)"))
    create.add_argument("username", help="3..64 characters of a-z 0-9 . _ -")
    create.add_argument("--display-name", required=True, help="the customer's name as the bank shows it")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input (else it is asked)"
    )
    listing = common(sub.add_parser("list", help="customers, oldest first"))
    listing.add_argument("--prefix", default="", help="only usernames starting with this")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    show = common(sub.add_parser("show", help="one customer by customers/{id} or username, with its accounts"))
    show.add_argument("customer", help="customers/{id} or a username")


def add_account_commands(account_commands: argparse._SubParsersAction, common: Callable[..., Any]) -> None:  # type: ignore[type-arg]
    """``account open | list | show`` beside ``account fund | totals``."""
    opening = common(account_commands.add_parser("open", help="open an account for a customer"))
    opening.add_argument("--customer", required=True, help="customers/{id} or a username")
    opening.add_argument("--currency", default="EUR", help="ISO 4217 currency (default EUR)")
    opening.add_argument("--type", choices=sorted(ACCOUNT_TYPES), default="current", help="the kind of account")
    opening.add_argument("--display-name", default="", help="the account's name as the customer sees it")
    opening.add_argument("--overdraft", default="0", help="how far below zero it may go, e.g. 500.00")
    listing = common(account_commands.add_parser("list", help="accounts with their balances, oldest first"))
    listing.add_argument("--customer", help="only this customer's (customers/{id} or a username)")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    show = common(account_commands.add_parser("show", help="one account with its balance"))
    show.add_argument("account", help="accounts/{id}")


def _customer_row(customer: customer_pb2.Customer) -> tuple[str, ...]:
    status = customer_pb2.CustomerStatus.Name(customer.status).removeprefix("CUSTOMER_STATUS_")
    created = customer.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M") if customer.HasField("create_time") else ""
    return (customer.name, customer.username, customer.display_name, status, created)


def _account_row(summary: account_admin_pb2.AccountSummary) -> tuple[str, ...]:
    account, balance = summary.account, summary.balance
    return (
        account.name,
        account.customer or "-",
        account_pb2.AccountType.Name(account.type).removeprefix("ACCOUNT_TYPE_"),
        account_pb2.AccountStatus.Name(account.status).removeprefix("ACCOUNT_STATUS_"),
        account.currency_code,
        account.display_name,
        _show(balance.current),
        _show(balance.available),
    )


ACCOUNT_HEADERS = ("ACCOUNT", "CUSTOMER", "TYPE", "STATUS", "CUR", "NAME", "CURRENT", "AVAILABLE")
CUSTOMER_HEADERS = ("CUSTOMER", "USERNAME", "DISPLAY NAME", "STATUS", "CREATED (UTC)")


async def _customer_named(stub: customer_pb2_grpc.CustomerServiceStub, text: str, admin: Metadata) -> Any:
    """A customer by ``customers/{id}`` or by exact username (None when no such username)."""
    if text.startswith("customers/"):
        return (await stub.GetCustomer(customer_pb2.GetCustomerRequest(name=text), metadata=admin)).customer
    page = await stub.ListCustomers(
        customer_pb2.ListCustomersRequest(username_prefix=text, page_size=500), metadata=admin
    )
    return next((c for c in page.customers if c.username == text), None)


async def _accounts(
    stub: account_admin_pb2_grpc.AccountAdminServiceStub, admin: Metadata, limit: int, **filters: str
) -> list[account_admin_pb2.AccountSummary]:
    found: list[account_admin_pb2.AccountSummary] = []
    token = ""
    while len(found) < limit:
        page = await stub.SearchAccounts(
            account_admin_pb2.SearchAccountsRequest(page_size=min(500, limit), page_token=token, **filters),
            metadata=admin,
        )
        found += page.accounts
        token = page.next_page_token
        if not token:
            break
    return found[:limit]


def _print_accounts(args: argparse.Namespace, found: list[account_admin_pb2.AccountSummary]) -> None:
    if args.json:
        print_json_lines(list(found))
    else:
        print_table(ACCOUNT_HEADERS, [_account_row(s) for s in found])


async def run_customer_command(operator: Operator, admin: Metadata, args: argparse.Namespace) -> int:
    """``customer ...`` and ``account open|list|show``; the exit code."""
    customers = customer_pb2_grpc.CustomerServiceStub(operator.channel("identity"))
    accounts = account_admin_pb2_grpc.AccountAdminServiceStub(operator.channel("account"))
    if args.command == "customer":
        sub = args.customer_command
        if sub == "create":
            password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")
            created = await customers.CreateCustomer(
                customer_pb2.CreateCustomerRequest(
                    request_id=_request_id(args.request_id),
                    username=args.username,
                    password=password,
                    display_name=args.display_name,
                ),
                metadata=admin,
            )
            print(f"created {created.customer.name} ({created.customer.username}, {created.customer.display_name})")
            print(f"  totp_secret  {created.totp_secret or '(shown only on the first creation)'}")
            if created.otpauth_uri:
                print(f"  otpauth_uri  {created.otpauth_uri}")
            return 0
        if sub == "list":
            found: list[customer_pb2.Customer] = []
            token = ""
            while len(found) < args.limit:
                page = await customers.ListCustomers(
                    customer_pb2.ListCustomersRequest(
                        username_prefix=args.prefix, page_size=min(500, args.limit), page_token=token
                    ),
                    metadata=admin,
                )
                found += page.customers
                token = page.next_page_token
                if not token:
                    break
            if args.json:
                print_json_lines(found[: args.limit])
            else:
                print_table(CUSTOMER_HEADERS, [_customer_row(c) for c in found[: args.limit]])
            return 0
        customer = await _customer_named(customers, args.customer, admin)
        if customer is None:
            print(f"failed: no customer {args.customer!r}", file=sys.stderr)
            return 1
        owned = await _accounts(accounts, admin, 500, customer=customer.name)
        if args.json:
            print_json_lines([customer, *owned])
            return 0
        print_table(CUSTOMER_HEADERS, [_customer_row(customer)])
        print()
        print_table(ACCOUNT_HEADERS, [_account_row(s) for s in owned])
        return 0
    sub = args.account_command
    if sub == "open":
        owner = await _customer_named(customers, args.customer, admin)
        if owner is None:
            print(f"failed: no customer {args.customer!r}", file=sys.stderr)
            return 1
        opened = await accounts.OpenAccount(
            account_admin_pb2.OpenAccountRequest(
                request_id=_request_id(args.request_id),
                customer=owner.name,
                currency_code=args.currency,
                type=ACCOUNT_TYPES[args.type],
                overdraft_limit=_money(args.overdraft, args.currency),
                display_name=args.display_name,
            ),
            metadata=admin,
        )
        account = opened.account
        print(f"opened {account.name} for {owner.name} ({owner.username}): {args.type} {account.currency_code}")
        return 0
    if sub == "list":
        filters = {}
        if args.customer:
            owner = await _customer_named(customers, args.customer, admin)
            if owner is None:
                print(f"failed: no customer {args.customer!r}", file=sys.stderr)
                return 1
            filters["customer"] = owner.name
        _print_accounts(args, await _accounts(accounts, admin, args.limit, **filters))
        return 0
    found_accounts = await _accounts(accounts, admin, 1, name=args.account)
    if not found_accounts:
        print(f"failed: no account {args.account!r}", file=sys.stderr)
        return 1
    _print_accounts(args, found_accounts)
    return 0
