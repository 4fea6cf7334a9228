"""The SDK's mandate builder: one creditor, sweeping by default for the partner's own wallet,
the limits and validity as given."""

from __future__ import annotations

import datetime as dt

import pytest
from openbank_sdk import money
from openbank_sdk.mandates import CONSENT_ALIGNED, OTHER, SWEEPING, WEEK, mandate, periodic_limit

from openbank.common.v1 import mandate_period_pb2


def test_a_wallet_creditor_is_sweeping_and_an_account_creditor_other_unless_told() -> None:
    start = dt.datetime(2027, 1, 31, tzinfo=dt.UTC)
    sweeping = mandate(
        money(500, "EUR"),
        creditor_wallet="partners/p1",
        periodic_limits=[periodic_limit(WEEK, money(2_000, "EUR"), CONSENT_ALIGNED)],
        valid_from=start,
    )
    assert (sweeping.type, sweeping.creditor_wallet, sweeping.WhichOneof("creditor")) == (
        SWEEPING,
        "partners/p1",
        "creditor_wallet",
    )
    (limit,) = sweeping.periodic_limits
    assert (limit.period_type, limit.period_alignment, limit.maximum_amount.minor_units) == (
        mandate_period_pb2.MANDATE_PERIOD_TYPE_WEEK,
        mandate_period_pb2.MANDATE_PERIOD_ALIGNMENT_CONSENT,
        2_000,
    )
    assert sweeping.valid_from_time.ToDatetime(tzinfo=dt.UTC) == start and not sweeping.HasField("valid_to_time")
    assert mandate(money(1, "EUR"), creditor_account="accounts/a").type == OTHER


def test_exactly_one_creditor() -> None:
    with pytest.raises(ValueError):
        mandate(money(1, "EUR"))
    with pytest.raises(ValueError):
        mandate(money(1, "EUR"), creditor_account="accounts/a", creditor_wallet="partners/p")
