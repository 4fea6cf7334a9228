"""``openbank-mesh partner onboard``: a partner with everything it needs to be paid.

Registering a partner alone gives it credentials; a wallet top-up to it also needs its
settlement account in the ledger and its settlement participant (with a net debit cap), else
every top-up is refused BENEFICIARY_INVALID. This command does the three in order, each with a
request id derived from one key, so running it again with the same ``--request-id`` finishes
what an interrupted run started and creates nothing twice.
"""

from __future__ import annotations

import argparse

from meshcli.commands import _money, print_registered, register_request
from meshcli.operator import Operator
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, account_pb2
from openbank.identity.v1 import partner_pb2_grpc
from openbank.settlement.v1 import settlement_admin_pb2, settlement_admin_pb2_grpc


async def onboard_partner(
    operator: Operator, admin: tuple[tuple[str, str], ...], args: argparse.Namespace, key: str
) -> int:
    """Register the partner, open its settlement account, register its participant; print all."""
    partners = partner_pb2_grpc.PartnerServiceStub(operator.channel("identity"))
    accounts = account_admin_pb2_grpc.AccountAdminServiceStub(operator.channel("account"))
    participants = settlement_admin_pb2_grpc.SettlementAdminServiceStub(operator.channel("settlement"))
    registered = await partners.RegisterPartner(register_request(args, f"{key}-partner"), metadata=admin)
    print_registered(registered)
    opened = await accounts.OpenAccount(
        account_admin_pb2.OpenAccountRequest(
            request_id=f"{key}-account",
            currency_code=args.currency,
            type=account_pb2.ACCOUNT_TYPE_SETTLEMENT,
            display_name=f"{args.display_name} settlement",
        ),
        metadata=admin,
    )
    print(f"  settlement    {opened.account.name} ({args.currency})")
    participant = await participants.RegisterParticipant(
        settlement_admin_pb2.RegisterParticipantRequest(
            request_id=f"{key}-participant",
            type=settlement_admin_pb2.PARTICIPANT_TYPE_WALLET,
            partner=registered.partner.name,
            settlement_account=opened.account.name,
            net_debit_caps=[
                settlement_admin_pb2.NetDebitCap(
                    currency_code=args.currency, cap=_money(args.net_debit_cap, args.currency)
                )
            ],
        ),
        metadata=admin,
    )
    print(f"  participant   {participant.participant.name} (net debit cap {args.currency} {args.net_debit_cap})")
    print(f"  ready: wallet top-ups to {registered.partner.name} settle into {opened.account.name}")
    return 0
