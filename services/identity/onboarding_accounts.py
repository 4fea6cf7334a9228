"""Opens a new customer's current account: the account service's operator OpenAccount, called
with identity's own service token (``ledger:admin``) through a PeerCaller."""

from __future__ import annotations

import grpc

from meshlib.clients import Bearer, PeerCaller
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, account_pb2

CALL_DEADLINE_SECONDS = 5.0


class LedgerAccountOpener:
    """AccountAdminService.OpenAccount; the same request_id answers the same account."""

    def __init__(self, channel: grpc.aio.Channel, bearer: Bearer) -> None:
        self._stub = account_admin_pb2_grpc.AccountAdminServiceStub(channel)
        self._call = PeerCaller(bearer, deadline_seconds=CALL_DEADLINE_SECONDS)

    async def open(self, request_id: str, customer_id: str, currency: str, display_name: str) -> str:
        request = account_admin_pb2.OpenAccountRequest(
            request_id=request_id,
            customer=f"customers/{customer_id}",
            currency_code=currency,
            type=account_pb2.ACCOUNT_TYPE_CURRENT,
            display_name=display_name,
        )
        answer = await self._call(self._stub.OpenAccount, request, "account.OpenAccount")
        return answer.account.name.removeprefix("accounts/")
