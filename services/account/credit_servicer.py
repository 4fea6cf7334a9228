"""gRPC servicers of openbank.credit.v1 (issue 28 item 2): protobuf in, protobuf out, nothing else.

CreditService is the partners' (under the consent its token carries), CustomerCreditService
the bank's customer app's (for the customer it authenticated)."""

from __future__ import annotations

import datetime as dt

import grpc

from meshlib.auth.context import require_caller
from meshlib.names import parse_name
from openbank.common.v1 import money_pb2
from openbank.credit.v1 import credit_pb2, credit_pb2_grpc
from services.account.credit_service import CreditService, LineView
from services.account.domain.credit_lines import CreditOffer, OfferState, StatementLine
from services.account.read_service import ConsentCaller

Context = grpc.aio.ServicerContext
MAX_MOVEMENTS = 100


def _money(currency: str, minor: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, minor_units=minor)


def _time(message: object, field: str, value: dt.datetime | None) -> None:
    if value is not None:
        getattr(message, field).FromDatetime(value)


def offer_to_proto(offer: CreditOffer, web_url: str) -> credit_pb2.CreditOffer:
    """An offer as the contract shows it; the acceptance page only while it may be accepted."""
    message = credit_pb2.CreditOffer(
        name=f"creditOffers/{offer.offer_id}",
        account=f"accounts/{offer.account_id}",
        state=credit_pb2.CreditOfferState.Value(f"CREDIT_OFFER_STATE_{offer.state.value}"),
        apr_bps=offer.apr_bps,
        credit_line=f"creditLines/{offer.line_id}" if offer.line_id else "",
    )
    if offer.refusal is not None:
        message.refusal_reason = credit_pb2.CreditRefusalReason.Value(f"CREDIT_REFUSAL_REASON_{offer.refusal.value}")
    if offer.limit:
        message.limit.CopyFrom(_money(offer.currency, offer.limit))
    _time(message, "expire_time", offer.expires_at)
    _time(message, "create_time", offer.created_at)
    if offer.state is OfferState.OFFERED:
        message.acceptance_uri = f"{web_url}/credit/offers/{offer.offer_id}"
    return message


def line_to_proto(view: LineView) -> credit_pb2.CreditLine:
    """A line with its figures."""
    line = view.line
    message = credit_pb2.CreditLine(
        name=f"creditLines/{line.line_id}",
        account=f"accounts/{line.account_id}",
        credit_offer=f"creditOffers/{line.offer_id}",
        state=credit_pb2.CreditLineState.Value(f"CREDIT_LINE_STATE_{line.state.value}"),
        limit=_money(line.currency, line.limit),
        apr_bps=line.apr_bps,
        owed=_money(line.currency, view.owed),
        interest_charged=_money(line.currency, line.interest_charged),
        repaid=_money(line.currency, view.repaid),
        accrued_through=line.accrued_through.isoformat() if line.accrued_through >= line.opened_at.date() else "",
    )
    _time(message, "open_time", line.opened_at)
    _time(message, "close_time", line.closed_at)
    return message


def _movement(currency: str, item: StatementLine) -> credit_pb2.CreditMovement:
    message = credit_pb2.CreditMovement(
        kind=credit_pb2.CreditMovementKind.Value(f"CREDIT_MOVEMENT_KIND_{item.kind}"),
        amount=_money(currency, item.movement.amount),
        balance_after=_money(currency, item.balance_after),
        description=item.movement.description,
    )
    message.booking_time.FromDatetime(item.movement.booking_time)
    return message


def movements_to_proto(view: LineView) -> list[credit_pb2.CreditMovement]:
    """The statement's latest movements, newest first."""
    return [_movement(view.line.currency, item) for item in view.statement.lines[:MAX_MOVEMENTS]]


def _consent_caller() -> ConsentCaller:
    caller = require_caller()
    return ConsentCaller(partner_id=caller.require_partner(), consent_id=caller.require_consent())


class CreditServicer(credit_pb2_grpc.CreditServiceServicer):
    """Partners' credit rpcs (scope and consent permission checked by the auth interceptor)."""

    def __init__(self, credit: CreditService, web_url: str) -> None:
        self._credit = credit
        self._web = web_url.rstrip("/")

    async def RequestCreditOffer(
        self, request: credit_pb2.RequestCreditOfferRequest, context: Context
    ) -> credit_pb2.RequestCreditOfferResponse:
        """The bank's decision on one of the consent's accounts."""
        account_id = parse_name(request.account, "accounts", "account")
        offer = await self._credit.request_offer(_consent_caller(), request.request_id, account_id)
        return credit_pb2.RequestCreditOfferResponse(credit_offer=offer_to_proto(offer, self._web))

    async def GetCreditOffer(
        self, request: credit_pb2.GetCreditOfferRequest, context: Context
    ) -> credit_pb2.GetCreditOfferResponse:
        """One offer."""
        offer = await self._credit.get_offer(_consent_caller(), parse_name(request.name, "creditOffers"))
        return credit_pb2.GetCreditOfferResponse(credit_offer=offer_to_proto(offer, self._web))

    async def GetCreditLine(
        self, request: credit_pb2.GetCreditLineRequest, context: Context
    ) -> credit_pb2.GetCreditLineResponse:
        """One line with its figures."""
        view = await self._credit.get_line(_consent_caller(), parse_name(request.name, "creditLines"))
        return credit_pb2.GetCreditLineResponse(credit_line=line_to_proto(view))

    async def GetCreditStatement(
        self, request: credit_pb2.GetCreditStatementRequest, context: Context
    ) -> credit_pb2.GetCreditStatementResponse:
        """A line's statement."""
        line_id = parse_name(request.credit_line, "creditLines", "credit_line")
        view = await self._credit.get_line(_consent_caller(), line_id)
        return credit_pb2.GetCreditStatementResponse(
            credit_line=line_to_proto(view), movements=movements_to_proto(view)
        )


class CustomerCreditServicer(credit_pb2_grpc.CustomerCreditServiceServicer):
    """The bank's customer app's credit rpcs."""

    def __init__(self, credit: CreditService, web_url: str) -> None:
        self._credit = credit
        self._web = web_url.rstrip("/")

    async def GetCustomerCreditOffer(
        self, request: credit_pb2.GetCustomerCreditOfferRequest, context: Context
    ) -> credit_pb2.GetCustomerCreditOfferResponse:
        """One of the customer's offers."""
        offer_id = parse_name(request.name, "creditOffers")
        customer_id = parse_name(request.customer, "customers", "customer")
        offer = await self._credit.customer_offer(customer_id, offer_id)
        return credit_pb2.GetCustomerCreditOfferResponse(credit_offer=offer_to_proto(offer, self._web))

    async def AcceptCreditOffer(
        self, request: credit_pb2.AcceptCreditOfferRequest, context: Context
    ) -> credit_pb2.AcceptCreditOfferResponse:
        """The customer accepts an offer."""
        offer_id = parse_name(request.name, "creditOffers")
        customer_id = parse_name(request.customer, "customers", "customer")
        offer, view = await self._credit.accept(customer_id, request.request_id, offer_id)
        return credit_pb2.AcceptCreditOfferResponse(
            credit_offer=offer_to_proto(offer, self._web), credit_line=line_to_proto(view)
        )

    async def ListCustomerCreditLines(
        self, request: credit_pb2.ListCustomerCreditLinesRequest, context: Context
    ) -> credit_pb2.ListCustomerCreditLinesResponse:
        """The customer's lines."""
        customer_id = parse_name(request.customer, "customers", "customer")
        views, token = await self._credit.customer_lines(customer_id, request.page_size, request.page_token)
        return credit_pb2.ListCustomerCreditLinesResponse(
            credit_lines=[line_to_proto(view) for view in views], next_page_token=token
        )

    async def GetCustomerCreditStatement(
        self, request: credit_pb2.GetCustomerCreditStatementRequest, context: Context
    ) -> credit_pb2.GetCustomerCreditStatementResponse:
        """One of the customer's lines with its statement."""
        line_id = parse_name(request.credit_line, "creditLines", "credit_line")
        customer_id = parse_name(request.customer, "customers", "customer")
        view = await self._credit.customer_line(customer_id, line_id)
        return credit_pb2.GetCustomerCreditStatementResponse(
            credit_line=line_to_proto(view), movements=movements_to_proto(view)
        )

    async def CloseCreditLine(
        self, request: credit_pb2.CloseCreditLineRequest, context: Context
    ) -> credit_pb2.CloseCreditLineResponse:
        """The customer closes a line when nothing is owed."""
        line_id = parse_name(request.name, "creditLines")
        customer_id = parse_name(request.customer, "customers", "customer")
        view = await self._credit.close(customer_id, request.request_id, line_id)
        return credit_pb2.CloseCreditLineResponse(credit_line=line_to_proto(view))
