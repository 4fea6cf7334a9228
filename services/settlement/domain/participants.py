"""Participants: the bank and each partner wallet, with their net debit caps.

A participant may owe money in a currency only if it has a net debit cap there (Mojaloop's
NDC); it may always receive.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from meshlib.errors import FailedPrecondition, NotFound

DEFAULT_ALARM_THRESHOLD_PERCENT = 80


class ParticipantType(enum.Enum):
    """The bank itself (one only), a partner's wallet (one per partner), or the interbank
    clearing scheme the bank pays other banks through (one only)."""

    BANK = "BANK"
    WALLET = "WALLET"
    SCHEME = "SCHEME"


class ParticipantStatus(enum.Enum):
    """ACTIVE participants take part in new obligations; INACTIVE ones do not."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


@dataclass(frozen=True)
class NetDebitCap:
    """How much a participant may owe at most in one currency, in minor units."""

    currency: str
    cap_minor: int
    alarm_threshold_percent: int = DEFAULT_ALARM_THRESHOLD_PERCENT

    def alarm_level(self) -> int:
        """The exposure (minor units) at which an alarm is raised."""
        return self.cap_minor * self.alarm_threshold_percent // 100


@dataclass(frozen=True)
class Participant:
    """A settlement participant and its caps (keyed by currency)."""

    id: str
    type: ParticipantType
    partner_id: str | None
    settlement_account: str
    status: ParticipantStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    caps: dict[str, NetDebitCap] = field(default_factory=dict)

    @property
    def registration_key(self) -> str:
        """What makes a registration unique: one bank, one scheme, one wallet per partner."""
        if self.type is ParticipantType.WALLET:
            return f"partner:{self.partner_id}"
        return self.type.value.lower()

    @property
    def is_active(self) -> bool:
        """True when new obligations may involve it."""
        return self.status is ParticipantStatus.ACTIVE

    def cap_for(self, currency: str) -> NetDebitCap | None:
        """Its cap in ``currency``, None when it may not owe in that currency."""
        return self.caps.get(currency)

    def with_cap(self, cap: NetDebitCap, now: dt.datetime) -> Participant:
        """A copy with ``cap`` set (added or replaced) for its currency."""
        return replace(self, caps={**self.caps, cap.currency: cap}, updated_at=now)

    def deactivate(self, now: dt.datetime) -> Participant:
        """INACTIVE; fails INVALID_STATE_TRANSITION if it already is."""
        if not self.is_active:
            raise FailedPrecondition("the participant is already inactive", reason="INVALID_STATE_TRANSITION")
        return replace(self, status=ParticipantStatus.INACTIVE, updated_at=now)

    def activate(self, now: dt.datetime) -> Participant:
        """ACTIVE again; fails INVALID_STATE_TRANSITION if it already is."""
        if self.is_active:
            raise FailedPrecondition("the participant is already active", reason="INVALID_STATE_TRANSITION")
        return replace(self, status=ParticipantStatus.ACTIVE, updated_at=now)

    def require_active(self) -> None:
        """PARTICIPANT_NOT_ACTIVE unless it may take part in new obligations."""
        if not self.is_active:
            raise FailedPrecondition(
                "a participant of the obligation is not active",
                reason="PARTICIPANT_NOT_ACTIVE",
                metadata={"participant": f"participants/{self.id}"},
            )


def parties(found: Mapping[str, Participant], payer_id: str, payee_id: str) -> tuple[Participant, Participant]:
    """The payer and payee of a new obligation among ``found``: NOT_FOUND naming the first
    unknown one, then PARTICIPANT_NOT_ACTIVE for the first inactive one."""
    for participant_id in (payer_id, payee_id):
        if participant_id not in found:
            raise NotFound("participant not found", metadata={"participant": f"participants/{participant_id}"})
    payer, payee = found[payer_id], found[payee_id]
    payer.require_active()
    payee.require_active()
    return payer, payee
