"""Payment mandates (variable recurring payments, sweeping): building a mandate for
:meth:`openbank_sdk.OpenBankClient.create_consent` and reading what it used so far.

A mandate names the one creditor and its control parameters; once the customer authorised
it, the wallet pays with :meth:`openbank_sdk.ConsentSession.create_payment` to that creditor
(each payment checked against every parameter), confirms funds with
:meth:`~openbank_sdk.ConsentSession.confirm_funds` (CONFIRM_FUNDS in the consent) and reads
the usage with :meth:`~openbank_sdk.ConsentSession.mandate_usage`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from google.protobuf import timestamp_pb2

from openbank.common.v1 import mandate_period_pb2, money_pb2
from openbank.identity.v1 import consent_pb2
from openbank.payment.v1 import mandate_pb2

SWEEPING = consent_pb2.MANDATE_TYPE_SWEEPING
OTHER = consent_pb2.MANDATE_TYPE_OTHER
DAY = mandate_period_pb2.MANDATE_PERIOD_TYPE_DAY
WEEK = mandate_period_pb2.MANDATE_PERIOD_TYPE_WEEK
FORTNIGHT = mandate_period_pb2.MANDATE_PERIOD_TYPE_FORTNIGHT
MONTH = mandate_period_pb2.MANDATE_PERIOD_TYPE_MONTH
HALF_YEAR = mandate_period_pb2.MANDATE_PERIOD_TYPE_HALF_YEAR
YEAR = mandate_period_pb2.MANDATE_PERIOD_TYPE_YEAR
CALENDAR = mandate_period_pb2.MANDATE_PERIOD_ALIGNMENT_CALENDAR
CONSENT_ALIGNED = mandate_period_pb2.MANDATE_PERIOD_ALIGNMENT_CONSENT


def periodic_limit(
    period_type: int, maximum: money_pb2.Money, alignment: int = CALENDAR
) -> consent_pb2.MandatePeriodicLimit:
    """At most ``maximum`` per period of ``period_type`` (calendar periods unless told)."""
    return consent_pb2.MandatePeriodicLimit(period_type=period_type, period_alignment=alignment, maximum_amount=maximum)


def _stamp(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.astimezone(dt.UTC))
    return stamp


def mandate(
    maximum_individual: money_pb2.Money,
    *,
    creditor_account: str = "",
    creditor_wallet: str = "",
    periodic_limits: Iterable[consent_pb2.MandatePeriodicLimit] = (),
    valid_from: dt.datetime | None = None,
    valid_to: dt.datetime | None = None,
    mandate_type: int = 0,
) -> consent_pb2.Mandate:
    """A mandate to ``creditor_account`` (``accounts/{id}``) or to the partner's own wallet
    (``creditor_wallet``, ``partners/{id}``: sweeping, the default type then)."""
    if bool(creditor_account) == bool(creditor_wallet):
        raise ValueError("name exactly one creditor: creditor_account or creditor_wallet")
    message = consent_pb2.Mandate(
        type=mandate_type or (SWEEPING if creditor_wallet else OTHER),
        maximum_individual_amount=maximum_individual,
        periodic_limits=list(periodic_limits),
    )
    if creditor_account:
        message.creditor_account = creditor_account
    else:
        message.creditor_wallet = creditor_wallet
    if valid_from is not None:
        message.valid_from_time.CopyFrom(_stamp(valid_from))
    if valid_to is not None:
        message.valid_to_time.CopyFrom(_stamp(valid_to))
    return message


class MandateCalls:
    """Mixed into :class:`openbank_sdk.ConsentSession` (its ``_call`` and ``_mandates``)."""

    _mandates: Any

    async def _call(self, method: Any, request: Any, *, mutating: bool = False) -> Any:
        raise NotImplementedError

    async def mandate_usage(self) -> list[mandate_pb2.MandatePeriodUsage]:
        """Each periodic limit of this session's mandate in its current period: start, end,
        maximum, used and remaining."""
        answer = await self._call(self._mandates.GetMandateUsage, mandate_pb2.GetMandateUsageRequest())
        return list(answer.periods)
