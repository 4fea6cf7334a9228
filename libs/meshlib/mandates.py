"""A payment mandate's control parameters as every service sees them (UK Open Banking VRP).

Identity validates and stores a mandate with its consent; resource servers receive it in the
consent (``meshlib.auth.consent.ConsentView.mandate``) and the payment service enforces it.
Amounts are integer minor units of the mandate's one currency.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

MANDATE_TYPES = ("SWEEPING", "OTHER")
PERIOD_TYPES = ("DAY", "WEEK", "FORTNIGHT", "MONTH", "HALF_YEAR", "YEAR")
ALIGNMENTS = ("CALENDAR", "CONSENT")


@dataclass(frozen=True)
class PeriodicLimit:
    """At most ``maximum_minor`` in total per period of ``period_type``, aligned by ``alignment``."""

    period_type: str  # one of PERIOD_TYPES
    alignment: str  # one of ALIGNMENTS
    maximum_minor: int


@dataclass(frozen=True)
class Mandate:
    """The one creditor, the per-payment maximum, the periodic limits and the validity."""

    mandate_type: str  # one of MANDATE_TYPES
    creditor_account_id: str | None
    creditor_wallet_partner_id: str | None
    currency: str
    maximum_individual_minor: int
    periodic_limits: tuple[PeriodicLimit, ...]
    valid_from: dt.datetime
    valid_to: dt.datetime

    @property
    def creditor_account(self) -> str:
        """``accounts/{id}`` of an account creditor, else empty."""
        return f"accounts/{self.creditor_account_id}" if self.creditor_account_id else ""

    @property
    def creditor_name(self) -> str:
        """The creditor as the contract names it: ``accounts/{id}`` or ``partners/{id}``."""
        if self.creditor_account_id:
            return f"accounts/{self.creditor_account_id}"
        return f"partners/{self.creditor_wallet_partner_id}"

    def to_json(self) -> str:
        """Stored form (identity's consents.mandate column)."""
        return json.dumps(
            {
                "type": self.mandate_type,
                "creditor_account": self.creditor_account_id,
                "creditor_wallet": self.creditor_wallet_partner_id,
                "currency": self.currency,
                "maximum_individual": self.maximum_individual_minor,
                "periodic_limits": [[p.period_type, p.alignment, p.maximum_minor] for p in self.periodic_limits],
                "valid_from": self.valid_from.isoformat(),
                "valid_to": self.valid_to.isoformat(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Mandate:
        """Back from the stored form."""
        data = json.loads(text)
        return cls(
            mandate_type=data["type"],
            creditor_account_id=data["creditor_account"],
            creditor_wallet_partner_id=data["creditor_wallet"],
            currency=data["currency"],
            maximum_individual_minor=int(data["maximum_individual"]),
            periodic_limits=tuple(PeriodicLimit(t, a, int(m)) for t, a, m in data["periodic_limits"]),
            valid_from=dt.datetime.fromisoformat(data["valid_from"]),
            valid_to=dt.datetime.fromisoformat(data["valid_to"]),
        )


def _stamp(value: dt.datetime) -> Any:
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp


def mandate_message(mandate: Mandate) -> Any:
    """The contract's ``openbank.identity.v1.Mandate`` message."""
    from openbank.common.v1 import mandate_period_pb2, money_pb2
    from openbank.identity.v1 import consent_pb2

    message = consent_pb2.Mandate(
        type=consent_pb2.MandateType.Value(f"MANDATE_TYPE_{mandate.mandate_type}"),
        maximum_individual_amount=money_pb2.Money(
            currency_code=mandate.currency, minor_units=mandate.maximum_individual_minor
        ),
        periodic_limits=[
            consent_pb2.MandatePeriodicLimit(
                period_type=mandate_period_pb2.MandatePeriodType.Value(f"MANDATE_PERIOD_TYPE_{limit.period_type}"),
                period_alignment=mandate_period_pb2.MandatePeriodAlignment.Value(
                    f"MANDATE_PERIOD_ALIGNMENT_{limit.alignment}"
                ),
                maximum_amount=money_pb2.Money(currency_code=mandate.currency, minor_units=limit.maximum_minor),
            )
            for limit in mandate.periodic_limits
        ],
        valid_from_time=_stamp(mandate.valid_from),
        valid_to_time=_stamp(mandate.valid_to),
    )
    if mandate.creditor_account_id:
        message.creditor_account = mandate.creditor_account
    else:
        message.creditor_wallet = mandate.creditor_name
    return message


def enum_suffix(enum: Any, number: int, prefix: str) -> str:
    """An enum value's name without its prefix; "UNSPECIFIED" for an unknown number."""
    return enum.Name(number).removeprefix(prefix) if number in enum.values() else "UNSPECIFIED"


def mandate_from_message(message: Any) -> Mandate:
    """A consent's Mandate message (as identity answers it) back to the value."""
    from openbank.common.v1 import mandate_period_pb2
    from openbank.identity.v1 import consent_pb2

    creditor = message.WhichOneof("creditor")
    name = getattr(message, creditor) if creditor else ""
    return Mandate(
        mandate_type=enum_suffix(consent_pb2.MandateType, message.type, "MANDATE_TYPE_"),
        creditor_account_id=name.removeprefix("accounts/") if creditor == "creditor_account" else None,
        creditor_wallet_partner_id=name.removeprefix("partners/") if creditor == "creditor_wallet" else None,
        currency=message.maximum_individual_amount.currency_code,
        maximum_individual_minor=message.maximum_individual_amount.minor_units,
        periodic_limits=tuple(
            PeriodicLimit(
                enum_suffix(mandate_period_pb2.MandatePeriodType, limit.period_type, "MANDATE_PERIOD_TYPE_"),
                enum_suffix(
                    mandate_period_pb2.MandatePeriodAlignment, limit.period_alignment, "MANDATE_PERIOD_ALIGNMENT_"
                ),
                limit.maximum_amount.minor_units,
            )
            for limit in message.periodic_limits
        ),
        valid_from=message.valid_from_time.ToDatetime(tzinfo=dt.UTC),
        valid_to=message.valid_to_time.ToDatetime(tzinfo=dt.UTC),
    )
