"""Demo data for the local mesh, seeded on first start: the bank, two customers with funded
accounts, two partner wallets with client credentials and redirect URIs, settlement
participants and open windows. The credentials a demo needs are written once to
``<data>/demo-credentials.json``.

The customers are the sandbox's published test customers: their usernames, password and
TOTP secrets are fixed here and listed in the partner guide ("Testing alone"), so a partner's
automated tests can sign them in on the bank's pages (the mesh runs identity with
OBM_SANDBOX_CUSTOMER_SECRETS; nowhere else is a chosen secret accepted).

Every call carries a fixed request id, so a re-run after a crash half-way is safe: the
services answer the first result again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from meshcli.operator import Operator
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, account_pb2
from openbank.common.v1 import money_pb2
from openbank.identity.v1 import customer_pb2, customer_pb2_grpc, partner_pb2, partner_pb2_grpc
from openbank.settlement.v1 import settlement_admin_pb2, settlement_admin_pb2_grpc

CURRENCY = "EUR"
PARTNER_SCOPES = [
    "accounts:read",
    "funds:confirm",
    "payments:write",
    "payments:read",
    "consents:read",
    "consents:write",
    "settlement:read",
    "events:read",
    "customers:onboard",
    "credit:offer",
]
DEMO_PARTNERS = (("acme", "Acme Wallet", "gold"), ("zeta", "Zeta Pay", "silver"))
# Each demo partner's redirect URIs (exact match): a loopback callback for a wallet under test
# on the developer's machine, and an https one for scripts that only read the redirect.
DEMO_REDIRECT_URIS = {
    "acme": ("http://127.0.0.1:8765/callback", "https://acme.example/callback"),
    "zeta": ("http://127.0.0.1:8766/callback", "https://zeta.example/callback"),
}
# The sandbox's test customers: username, display name, funds, TOTP secret (base32, published).
DEMO_CUSTOMERS = (
    ("alice", "Alice Example", 250_000, "ALICESANDBOXTOTPSECRETAAAAAAAAAA"),
    ("bob", "Bob Example", 120_000, "BOBSANDBOXTOTPSECRETBBBBBBBBBBBB"),
)
BANK_SETTLEMENT_LINE = 50_000_000  # minor units, as the bank's net debit cap
SCHEME_LINE = 10_000_000  # what returns from the scheme may come to, in minor units
DEMO_PASSWORD = "demo-password-1"  # the local demo only; printed in the banner on purpose


def _money(minor_units: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code=CURRENCY, minor_units=minor_units)


def credentials_path(data_dir: Path) -> Path:
    """Where the demo's credentials live."""
    return data_dir / "demo-credentials.json"


def load_demo_credentials(data_dir: Path) -> dict[str, Any] | None:
    """The seeded demo credentials, or None before the first seed."""
    path = credentials_path(data_dir)
    return json.loads(path.read_text()) if path.exists() else None


async def seed_scheme(open_account: Any, settlement: Any, admin: Any) -> dict[str, str]:
    """The bank's clearing account at the interbank scheme and the scheme's settlement participant:
    payments to other banks are credited to that account and owed to the scheme; returns come back
    from it (the scheme's cap in settlement bounds what it may owe the bank, its account's
    overdraft lets a return come back after a settled window moved the account's money)."""
    clearing = await open_account(
        "scheme-clearing", "", account_pb2.ACCOUNT_TYPE_SETTLEMENT, "Clearing scheme", overdraft=SCHEME_LINE
    )
    registered = await settlement.RegisterParticipant(
        settlement_admin_pb2.RegisterParticipantRequest(
            request_id="seed-participant-scheme",
            type=settlement_admin_pb2.PARTICIPANT_TYPE_SCHEME,
            settlement_account=clearing,
            net_debit_caps=[
                settlement_admin_pb2.NetDebitCap(
                    currency_code=CURRENCY, cap=_money(SCHEME_LINE), alarm_threshold_percent=80
                )
            ],
        ),
        metadata=admin,
    )
    return {"clearing_account": clearing, "participant": registered.participant.name}


async def seed_demo_data(operator: Operator, say: Any = print) -> dict[str, Any]:
    """Seed once; later starts find the credentials file and do nothing."""
    existing = load_demo_credentials(operator.data_dir)
    if existing is not None:
        return existing
    admin = await operator.metadata()
    partners = partner_pb2_grpc.PartnerServiceStub(operator.channel("identity"))
    customers = customer_pb2_grpc.CustomerServiceStub(operator.channel("identity"))
    accounts = account_admin_pb2_grpc.AccountAdminServiceStub(operator.channel("account"))
    settlement = settlement_admin_pb2_grpc.SettlementAdminServiceStub(operator.channel("settlement"))

    async def open_account(key: str, customer: str, kind: int, display: str, overdraft: int = 0) -> str:
        answer = await accounts.OpenAccount(
            account_admin_pb2.OpenAccountRequest(
                request_id=f"seed-account-{key}",
                customer=customer,
                currency_code=CURRENCY,
                type=kind,
                overdraft_limit=_money(overdraft),
                display_name=display,
            ),
            metadata=admin,
        )
        return answer.account.name

    result: dict[str, Any] = {"currency": CURRENCY, "partners": {}, "customers": {}}
    say("  seeding demo data: the bank")
    # Settling a window moves each wallet's net between its settlement account and this one; a
    # wallet paying in draws on it, so it has the bank's settlement line as its overdraft.
    bank_settlement = await open_account(
        "bank-settlement", "", account_pb2.ACCOUNT_TYPE_SETTLEMENT, "Bank settlement", overdraft=BANK_SETTLEMENT_LINE
    )
    await settlement.RegisterParticipant(
        settlement_admin_pb2.RegisterParticipantRequest(
            request_id="seed-participant-bank",
            type=settlement_admin_pb2.PARTICIPANT_TYPE_BANK,
            settlement_account=bank_settlement,
            net_debit_caps=[
                settlement_admin_pb2.NetDebitCap(
                    currency_code=CURRENCY, cap=_money(50_000_000), alarm_threshold_percent=80
                )
            ],
        ),
        metadata=admin,
    )
    say("  seeding demo data: the clearing scheme (payments to other banks)")
    result["scheme"] = await seed_scheme(open_account, settlement, admin)
    for key, display, tier in DEMO_PARTNERS:
        say(f"  seeding demo data: partner {display}")
        registered = await partners.RegisterPartner(
            partner_pb2.RegisterPartnerRequest(
                request_id=f"seed-partner-{key}",
                display_name=display,
                allowed_scopes=PARTNER_SCOPES,
                rate_limit_tier=tier,
                per_payment_limit=_money(100_000),
                daily_limit=_money(1_000_000),
                token_endpoint_auth_method=partner_pb2.TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST,
                redirect_uris=list(DEMO_REDIRECT_URIS[key]),
            ),
            metadata=admin,
        )
        wallet_account = await open_account(
            f"wallet-{key}", "", account_pb2.ACCOUNT_TYPE_SETTLEMENT, f"{display} settlement"
        )
        participant = await settlement.RegisterParticipant(
            settlement_admin_pb2.RegisterParticipantRequest(
                request_id=f"seed-participant-{key}",
                type=settlement_admin_pb2.PARTICIPANT_TYPE_WALLET,
                partner=registered.partner.name,
                settlement_account=wallet_account,
                net_debit_caps=[
                    settlement_admin_pb2.NetDebitCap(
                        currency_code=CURRENCY, cap=_money(5_000_000), alarm_threshold_percent=80
                    )
                ],
            ),
            metadata=admin,
        )
        result["partners"][key] = {
            "partner": registered.partner.name,
            "display_name": display,
            "client_id": registered.partner.client_id,
            "client_secret": registered.client_secret,
            "settlement_account": wallet_account,
            "participant": participant.participant.name,
            "redirect_uris": list(DEMO_REDIRECT_URIS[key]),
        }
    for username, display, funds, totp_secret in DEMO_CUSTOMERS:
        say(f"  seeding demo data: customer {username}")
        created = await customers.CreateCustomer(
            customer_pb2.CreateCustomerRequest(
                request_id=f"seed-customer-{username}",
                username=username,
                password=DEMO_PASSWORD,
                display_name=display,
                totp_secret=totp_secret,
            ),
            metadata=admin,
        )
        account = await open_account(
            f"customer-{username}",
            created.customer.name,
            account_pb2.ACCOUNT_TYPE_CURRENT,
            f"{display} current",
            overdraft=10_000,
        )
        await accounts.FundAccount(
            account_admin_pb2.FundAccountRequest(
                request_id=f"seed-fund-{username}", account=account, amount=_money(funds), description="demo funds"
            ),
            metadata=admin,
        )
        result["customers"][username] = {
            "customer": created.customer.name,
            "username": username,
            "password": DEMO_PASSWORD,
            "totp_secret": created.totp_secret,
            "account": account,
        }
    path = credentials_path(operator.data_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(result, handle, indent=2)
    return result
