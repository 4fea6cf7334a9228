"""The bank's own read of a customer's accounts (CustomerAccountService, internal): what a
signed-in customer may pick when authorising a consent at the bank's web app, and what a
wallet read with a consent (read_activity.py) for the customer's dashboard; and the operators'
account search (AccountAdminService.SearchAccounts), on the same keyset-paginated query.

Read-only and additive: its own query on the accounts table, its own use case and servicer;
nothing in the ledger changes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import sqlalchemy as sa

from meshlib.errors import InvalidArgument
from meshlib.names import parse_name
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size, time_and_id
from openbank.account.v1 import customer_account_pb2, customer_account_pb2_grpc
from openbank.common.v1 import consent_permission_pb2
from services.account.converters import account_to_proto
from services.account.domain.ledger import Account, AccountStatus
from services.account.ledger_service import UowFactory
from services.account.read_activity import DEFAULT_DAYS, MAX_DAYS, ReadActivity, ReadCount
from services.account.repository import _account
from services.account.tables import accounts


async def accounts_page(
    uow: UowFactory, conditions: list[Any], filters: str, requested_size: int, page_token: str
) -> tuple[list[Account], str]:
    """One page of the accounts matching ``conditions``, oldest first (keyset on opened_at, id),
    and the next page token ('' at the end)."""
    size = page_size(requested_size)
    after = time_and_id(decode_page_token(page_token, filters))
    query = sa.select(accounts).where(*conditions)
    if after is not None:
        opened, account_id = after
        query = query.where(
            sa.or_(
                accounts.c.opened_at > opened,
                sa.and_(accounts.c.opened_at == opened, accounts.c.id > account_id),
            )
        )
    query = query.order_by(accounts.c.opened_at, accounts.c.id).limit(size + 1)
    async with uow(read_only=True) as unit:
        rows = (await unit.connection.execute(query)).all()
    found = [_account(row) for row in rows]
    page, more = found[:size], len(found) > size
    token = ""
    if more:
        last = page[-1]
        opened_at = last.opened_at or dt.datetime.min.replace(tzinfo=dt.UTC)
        token = encode_page_token({"t": opened_at.isoformat(), "id": last.id}, filters)
    return page, token


class CustomerAccounts:
    """A customer's open accounts, oldest first, keyset-paginated."""

    def __init__(self, uow: UowFactory) -> None:
        self._uow = uow

    async def list(self, customer_id: str, requested_size: int, page_token: str) -> tuple[list[Account], str]:
        """One page and the next page token ('' at the end)."""
        conditions = [accounts.c.customer_id == customer_id, accounts.c.status != AccountStatus.CLOSED.value]
        return await accounts_page(
            self._uow, conditions, filter_fingerprint(customer=customer_id), requested_size, page_token
        )


class AccountSearch:
    """Operators' search (AccountAdminService.SearchAccounts): one account, a customer's (closed
    ones too) or every account, oldest first."""

    def __init__(self, uow: UowFactory) -> None:
        self._uow = uow

    async def search(
        self, account_id: str | None, customer_id: str | None, requested_size: int, page_token: str
    ) -> tuple[list[Account], str]:
        """One page and the next page token ('' at the end)."""
        conditions = []
        if account_id:
            conditions.append(accounts.c.id == account_id)
        if customer_id:
            conditions.append(accounts.c.customer_id == customer_id)
        filters = filter_fingerprint(account=account_id or "", customer=customer_id or "")
        return await accounts_page(self._uow, conditions, filters, requested_size, page_token)


def _read_count(item: ReadCount) -> customer_account_pb2.ConsentReadCount:
    answer = customer_account_pb2.ConsentReadCount(
        day=item.day.isoformat(),
        permission=consent_permission_pb2.ConsentPermission.Value(f"CONSENT_PERMISSION_{item.permission}"),
        read_count=item.count,
    )
    answer.last_read_time.FromDatetime(item.last_read_at)
    return answer


class CustomerAccountServicer(customer_account_pb2_grpc.CustomerAccountServiceServicer):
    """Protobuf in, protobuf out."""

    def __init__(self, customer_accounts: CustomerAccounts, activity: ReadActivity) -> None:
        self._accounts = customer_accounts
        self._activity = activity

    async def ListCustomerAccounts(
        self, request: customer_account_pb2.ListCustomerAccountsRequest, context: grpc.aio.ServicerContext
    ) -> customer_account_pb2.ListCustomerAccountsResponse:
        """A customer's open accounts."""
        customer_id = parse_name(request.customer, "customers", "customer")
        page, token = await self._accounts.list(customer_id, request.page_size, request.page_token)
        return customer_account_pb2.ListCustomerAccountsResponse(
            accounts=[account_to_proto(account) for account in page], next_page_token=token
        )

    async def GetConsentReadActivity(
        self, request: customer_account_pb2.GetConsentReadActivityRequest, context: grpc.aio.ServicerContext
    ) -> customer_account_pb2.GetConsentReadActivityResponse:
        """What a wallet read with a consent, per UTC day and permission."""
        consent_id = parse_name(request.consent, "consents", "consent")
        if not 0 <= request.days <= MAX_DAYS:
            raise InvalidArgument.field("days", f"must be 0..{MAX_DAYS}")
        counts = await self._activity.recent(consent_id, request.days or DEFAULT_DAYS)
        return customer_account_pb2.GetConsentReadActivityResponse(reads=[_read_count(c) for c in counts])
