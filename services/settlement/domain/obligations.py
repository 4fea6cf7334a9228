"""Obligations (Mojaloop's prepare/fulfil) and the positions they move.

An obligation is what a payer participant owes a payee participant for one payment; its id
is the payment id. It is RESERVED against the payer's net debit cap, then COMMITTED (it
joins both net positions and the currency's open window) or RELEASED (the reservation is
given back). Both end states are final.

Sign convention: a position's ``net_minor`` is positive when the participant is owed money
and negative when it owes money; ``reserved_minor`` (never negative) is what it has
reserved to pay and not yet committed. Its exposure is ``reserved - net`` and may not go
above its net debit cap when it reserves.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, replace

from meshlib.errors import AlreadyExists, FailedPrecondition
from services.settlement.domain.participants import NetDebitCap

# What an obligation is for (the contract's ObligationKind without its prefix).
OBLIGATION_KINDS = ("PAYMENT", "LOSS_SHARE")


class ObligationState(enum.Enum):
    """RESERVED, then COMMITTED or RELEASED (both final)."""

    RESERVED = "RESERVED"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"


@dataclass(frozen=True)
class Obligation:
    """What ``payer_id`` owes ``payee_id`` for payment ``id``, in minor units of ``currency``."""

    id: str
    payer_id: str
    payee_id: str
    currency: str
    amount_minor: int
    state: ObligationState
    created_at: dt.datetime
    updated_at: dt.datetime
    window_id: str | None = None
    # What it is for (OBLIGATION_KINDS): a payment's (refund's, fee's), or a partner's share of
    # a dispute's loss; the report totals each kind.
    kind: str = "PAYMENT"

    def same_fields(
        self, payer_id: str, payee_id: str, currency: str, amount_minor: int, kind: str = "PAYMENT"
    ) -> bool:
        """True when a reservation for the same payment asks for exactly this obligation."""
        return (self.payer_id, self.payee_id, self.currency, self.amount_minor, self.kind) == (
            payer_id,
            payee_id,
            currency,
            amount_minor,
            kind,
        )

    @classmethod
    def reserved(
        cls,
        payment_id: str,
        payer_id: str,
        payee_id: str,
        currency: str,
        amount_minor: int,
        now: dt.datetime,
        kind: str = "PAYMENT",
    ) -> Obligation:
        """A new RESERVED obligation for a payment (its id is the payment id)."""
        return cls(
            id=payment_id,
            payer_id=payer_id,
            payee_id=payee_id,
            currency=currency,
            amount_minor=amount_minor,
            state=ObligationState.RESERVED,
            created_at=now,
            updated_at=now,
            kind=kind,
        )

    def reserved_again(
        self, payer_id: str, payee_id: str, currency: str, amount_minor: int, kind: str = "PAYMENT"
    ) -> Obligation:
        """A reservation for this obligation's payment: itself (whatever its state) when the
        fields are the same, OBLIGATION_EXISTS_WITH_DIFFERENT_FIELDS otherwise."""
        if self.same_fields(payer_id, payee_id, currency, amount_minor, kind):
            return self
        raise AlreadyExists(
            "an obligation exists for this payment with different fields",
            reason="OBLIGATION_EXISTS_WITH_DIFFERENT_FIELDS",
            metadata={"obligation": f"obligations/{self.id}"},
        )

    def commit(self, window_id: str, now: dt.datetime) -> Obligation:
        """COMMITTED into ``window_id``; committing twice is the caller's no-op, releasing first fails."""
        if self.state is ObligationState.RELEASED:
            raise FailedPrecondition("the obligation was released", reason="OBLIGATION_ALREADY_RELEASED")
        if self.state is ObligationState.COMMITTED:
            return self
        return replace(self, state=ObligationState.COMMITTED, window_id=window_id, updated_at=now)

    def commit_moving(
        self, payer: Position, payee: Position, window_id: str, now: dt.datetime
    ) -> tuple[Obligation, Position, Position]:
        """A RESERVED obligation COMMITTED into ``window_id``, with its amount moved from the
        payer's reservation into its net (outflow) and into the payee's net (inflow)."""
        amount = self.amount_minor
        return self.commit(window_id, now), payer.commit_outflow(amount, now), payee.commit_inflow(amount, now)

    def release(self, now: dt.datetime) -> Obligation:
        """RELEASED; releasing twice is the caller's no-op, a committed one cannot be released."""
        if self.state is ObligationState.COMMITTED:
            raise FailedPrecondition("the obligation was committed", reason="OBLIGATION_ALREADY_COMMITTED")
        if self.state is ObligationState.RELEASED:
            return self
        return replace(self, state=ObligationState.RELEASED, updated_at=now)


@dataclass(frozen=True)
class Position:
    """A participant's position in one currency: committed net plus reserved outflows."""

    participant_id: str
    currency: str
    net_minor: int = 0
    reserved_minor: int = 0
    updated_at: dt.datetime | None = None

    @property
    def exposure_minor(self) -> int:
        """How much the participant owes or has promised to pay, net of what it is owed."""
        return self.reserved_minor - self.net_minor

    def headroom_minor(self, cap: NetDebitCap | None) -> int:
        """How much more it may reserve: cap + net - reserved (no cap counts as a cap of zero)."""
        return (cap.cap_minor if cap else 0) - self.exposure_minor

    def reserve(self, amount_minor: int, cap: NetDebitCap | None, now: dt.datetime) -> Position:
        """Reserve an outflow; NET_DEBIT_CAP_EXCEEDED when exposure would exceed the cap."""
        if amount_minor > self.headroom_minor(cap):
            raise FailedPrecondition(
                "the payer's net debit cap would be exceeded",
                reason="NET_DEBIT_CAP_EXCEEDED",
                metadata={"currency_code": self.currency},
            )
        return replace(self, reserved_minor=self.reserved_minor + amount_minor, updated_at=now)

    def release(self, amount_minor: int, now: dt.datetime) -> Position:
        """Give a reservation back."""
        return replace(self, reserved_minor=self.reserved_minor - amount_minor, updated_at=now)

    def commit_outflow(self, amount_minor: int, now: dt.datetime) -> Position:
        """As payer: the reservation becomes a committed debt (exposure unchanged)."""
        return replace(
            self,
            reserved_minor=self.reserved_minor - amount_minor,
            net_minor=self.net_minor - amount_minor,
            updated_at=now,
        )

    def commit_inflow(self, amount_minor: int, now: dt.datetime) -> Position:
        """As payee: the participant is owed the amount."""
        return replace(self, net_minor=self.net_minor + amount_minor, updated_at=now)

    def settle(self, window_net_minor: int, now: dt.datetime) -> Position:
        """A settled window's net was paid out (or in): it leaves the position, exactly once."""
        return replace(self, net_minor=self.net_minor - window_net_minor, updated_at=now)
