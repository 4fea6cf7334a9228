"""Scheduled payments in a consent session: standing orders (future-dated payments are
``ConsentSession.create_payment(..., requested_execution_time=...)``). The consent must grant
SCHEDULE_PAYMENTS besides INITIATE_PAYMENTS."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import timestamp_pb2

from openbank.common.v1 import money_pb2
from openbank.payment.v1 import payment_pb2
from openbank_sdk.pagination import paginate

DAILY = payment_pb2.STANDING_ORDER_FREQUENCY_DAILY
WEEKLY = payment_pb2.STANDING_ORDER_FREQUENCY_WEEKLY
MONTHLY = payment_pb2.STANDING_ORDER_FREQUENCY_MONTHLY


def _timestamp(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.astimezone(dt.UTC))
    return stamp


class StandingOrderCalls:
    """Mixed into :class:`openbank_sdk.ConsentSession` (its ``_call`` and ``_payments``)."""

    _payments: Any

    async def _call(self, method: Any, request: Any, *, mutating: bool = False) -> Any:
        raise NotImplementedError

    async def create_standing_order(
        self,
        debtor_account: str,
        amount: money_pb2.Money,
        *,
        frequency: int,
        first_execution_time: dt.datetime,
        execution_count: int = 0,
        final_execution_time: dt.datetime | None = None,
        creditor_wallet: str = "",
        creditor_account: str = "",
        payment_type: int | None = None,
        remittance_information: str = "",
        request_id: str = "",
    ) -> payment_pb2.StandingOrder:
        """A payment the bank executes on a schedule (``frequency``: DAILY, WEEKLY or MONTHLY),
        ``execution_count`` times or until ``final_execution_time``; each execution is a payment
        (``standing_order`` names the order) checked against the consent when it runs."""
        if bool(creditor_wallet) == bool(creditor_account):
            raise ValueError("give exactly one of creditor_wallet and creditor_account")
        if payment_type is None:
            payment_type = (
                payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP if creditor_wallet else payment_pb2.PAYMENT_TYPE_TRANSFER
            )
        request = payment_pb2.CreateStandingOrderRequest(
            request_id=request_id,
            debtor_account=debtor_account,
            amount=amount,
            type=payment_type,
            frequency=frequency,
            first_execution_time=_timestamp(first_execution_time),
            execution_count=execution_count,
            remittance_information=remittance_information,
        )
        if final_execution_time is not None:
            request.final_execution_time.CopyFrom(_timestamp(final_execution_time))
        if creditor_wallet:
            request.creditor_wallet = creditor_wallet
        else:
            request.creditor_account = creditor_account
        return (await self._call(self._payments.CreateStandingOrder, request, mutating=True)).standing_order

    async def get_standing_order(self, name: str) -> payment_pb2.StandingOrder:
        """One standing order of this consent."""
        request = payment_pb2.GetStandingOrderRequest(name=name)
        return (await self._call(self._payments.GetStandingOrder, request)).standing_order

    def list_standing_orders(self, *, page_size: int = 0) -> AsyncIterator[payment_pb2.StandingOrder]:
        """Every standing order of this consent, newest first."""
        request = payment_pb2.ListStandingOrdersRequest(page_size=page_size)
        return paginate(lambda r: self._call(self._payments.ListStandingOrders, r), request, "standing_orders")

    async def cancel_standing_order(self, name: str, *, request_id: str = "") -> payment_pb2.StandingOrder:
        """No execution starts after this (one already running finishes)."""
        request = payment_pb2.CancelStandingOrderRequest(request_id=request_id, name=name)
        return (await self._call(self._payments.CancelStandingOrder, request, mutating=True)).standing_order
