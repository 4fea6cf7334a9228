"""gRPC servicer of MandateService: protobuf in, protobuf out."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf import timestamp_pb2

from meshlib.auth.context import require_caller
from meshlib.names import parse_name
from openbank.common.v1 import mandate_period_pb2, money_pb2
from openbank.payment.v1 import mandate_pb2, mandate_pb2_grpc
from services.payment.domain.mandates import PeriodUsage
from services.payment.mandate_usage import MandateUsage


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def period_usage_message(usage: PeriodUsage, currency: str) -> mandate_pb2.MandatePeriodUsage:
    """One periodic limit in its current period."""
    return mandate_pb2.MandatePeriodUsage(
        period_type=mandate_period_pb2.MandatePeriodType.Value(f"MANDATE_PERIOD_TYPE_{usage.limit.period_type}"),
        period_alignment=mandate_period_pb2.MandatePeriodAlignment.Value(
            f"MANDATE_PERIOD_ALIGNMENT_{usage.limit.alignment}"
        ),
        start_time=timestamp(usage.start),
        end_time=timestamp(usage.end),
        maximum_amount=money_pb2.Money(currency_code=currency, minor_units=usage.limit.maximum_minor),
        used_amount=money_pb2.Money(currency_code=currency, minor_units=usage.used_minor),
        remaining_amount=money_pb2.Money(currency_code=currency, minor_units=usage.remaining_minor),
    )


class MandateServicer(mandate_pb2_grpc.MandateServiceServicer):
    """What a mandate used of its periodic limits, for its partner and for the customer's bank pages."""

    def __init__(self, usage: MandateUsage) -> None:
        self._usage = usage

    async def GetMandateUsage(
        self, request: mandate_pb2.GetMandateUsageRequest, context: grpc.aio.ServicerContext
    ) -> mandate_pb2.GetMandateUsageResponse:
        """The token's consent's mandate."""
        caller = require_caller()
        partner_id, consent_id = caller.require_partner(), caller.require_consent()
        currency, periods = await self._usage.for_partner(partner_id, consent_id)
        return mandate_pb2.GetMandateUsageResponse(
            consent=f"consents/{consent_id}", periods=[period_usage_message(p, currency) for p in periods]
        )

    async def GetCustomerMandateUsage(
        self, request: mandate_pb2.GetCustomerMandateUsageRequest, context: grpc.aio.ServicerContext
    ) -> mandate_pb2.GetCustomerMandateUsageResponse:
        """One of the customer's mandates (the bank's pages checked who is signed in)."""
        require_caller()
        consent_id = parse_name(request.consent, "consents", field="consent")
        customer_id = parse_name(request.customer, "customers", field="customer")
        currency, periods = await self._usage.for_customer(customer_id, consent_id)
        return mandate_pb2.GetCustomerMandateUsageResponse(periods=[period_usage_message(p, currency) for p in periods])
