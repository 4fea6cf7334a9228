"""The account service's CustomerCreditService for the credit pages, with the web app's own
token (consents:authorise)."""

from __future__ import annotations

import datetime as dt
import uuid

import grpc

from bankweb.credit import OfferView
from bankweb.grpc_bank import CALL_DEADLINE_SECONDS, money_words
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.clients import PeerCaller
from openbank.common.v1 import money_pb2
from openbank.credit.v1 import credit_pb2, credit_pb2_grpc


def rate_words(apr_bps: int) -> str:
    """``11.90 % a year``."""
    return f"{apr_bps // 100}.{apr_bps % 100:02d} % a year"


def offer_view(offer: credit_pb2.CreditOffer) -> OfferView:
    """An offer as the page shows it."""
    month = offer.limit.minor_units * offer.apr_bps * 30 // (10_000 * 365)
    return OfferView(
        offer_id=offer.name.removeprefix("creditOffers/"),
        account=offer.account,
        state=credit_pb2.CreditOfferState.Name(offer.state).removeprefix("CREDIT_OFFER_STATE_"),
        limit=money_words(offer.limit),
        rate=rate_words(offer.apr_bps),
        month_cost=money_words(money_pb2.Money(currency_code=offer.limit.currency_code, minor_units=month)),
        expire_time=offer.expire_time.ToDatetime(tzinfo=dt.UTC) if offer.HasField("expire_time") else None,
        credit_line=offer.credit_line,
    )


class GrpcCredit:
    """The customer's credit rpcs of the account service."""

    def __init__(self, account: grpc.aio.Channel, tokens: ServiceTokenSource) -> None:
        self._stub = credit_pb2_grpc.CustomerCreditServiceStub(account)
        self._call = PeerCaller(tokens.token, deadline_seconds=CALL_DEADLINE_SECONDS)

    async def credit_offer(self, offer_id: str, customer: str) -> OfferView:
        """GetCustomerCreditOffer."""
        request = credit_pb2.GetCustomerCreditOfferRequest(name=f"creditOffers/{offer_id}", customer=customer)
        answer = await self._call(self._stub.GetCustomerCreditOffer, request, "account.GetCustomerCreditOffer")
        return offer_view(answer.credit_offer)

    async def accept_credit_offer(self, offer_id: str, customer: str) -> OfferView:
        """AcceptCreditOffer (its request_id per click: a retry of this call replays it)."""
        request = credit_pb2.AcceptCreditOfferRequest(
            request_id=uuid.uuid4().hex, name=f"creditOffers/{offer_id}", customer=customer
        )
        answer = await self._call(self._stub.AcceptCreditOffer, request, "account.AcceptCreditOffer")
        return offer_view(answer.credit_offer)

    async def close_credit_line(self, line_id: str, customer: str) -> None:
        """CloseCreditLine."""
        request = credit_pb2.CloseCreditLineRequest(
            request_id=uuid.uuid4().hex, name=f"creditLines/{line_id}", customer=customer
        )
        await self._call(self._stub.CloseCreditLine, request, "account.CloseCreditLine")
