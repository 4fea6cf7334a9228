"""Credit transfers as the scheme keeps them, and what they look like at a given time.

The scheme decides a transfer's fate once, when it first receives it (see
:mod:`schemesim.domain.rules`), and stores the decision as times: when it settles, when it
comes back. Its status at any later moment follows from those times and the clock, so a
restart of the simulator changes nothing: a return due in three days is still due in three
days.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import re
from dataclasses import dataclass

from meshlib.money import Amount
from schemesim.domain.codes import RETURN_REASONS, STATUS_REASONS

# pacs.008 GrpHdr/MsgId as this scheme takes it: also the rpc's request_id (AIP-155 characters).
MESSAGE_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,35}$")


class AccountKind(enum.Enum):
    """How an account is identified in the scheme."""

    IBAN = "IBAN"
    SCHEME = "SCHEME"  # an identifier of the scheme's own (ISO 20022 Othr/Id)


@dataclass(frozen=True, slots=True)
class AccountId:
    """An account in the scheme: an IBAN or a scheme account id."""

    kind: AccountKind
    value: str


@dataclass(frozen=True, slots=True)
class CreditTransfer:
    """A customer credit transfer between banks (pacs.008), as received."""

    end_to_end_id: str
    amount: Amount
    debtor_name: str
    debtor_account: AccountId
    debtor_agent: str
    creditor_name: str
    creditor_account: AccountId
    creditor_agent: str
    remittance_information: str = ""


class Outcome(enum.Enum):
    """What the scheme decided for a transfer when it received it."""

    SETTLE = "SETTLE"  # accepted; settles at settle_at
    REJECT = "REJECT"  # rejected with reason_code
    RETURN = "RETURN"  # accepted, settles at settle_at, comes back at return_at with reason_code
    # The first delivery was lost on its way in (rule answer "never_received"): the scheme
    # behaves as if it never had it; a later delivery of the message id is a first one.
    DROPPED = "DROPPED"


class Status(enum.Enum):
    """pacs.002 transaction status."""

    ACCEPTED = "ACCP"
    SETTLED = "ACSC"
    REJECTED = "RJCT"


@dataclass(frozen=True, slots=True)
class PaymentReturn:
    """A settled transfer sent back (pacs.004); ``sequence`` is its place in the returns feed,
    None until it is in the feed."""

    return_id: str
    message_id: str
    end_to_end_id: str
    amount: Amount
    reason_code: str
    returned_at: dt.datetime
    sequence: int | None = None

    @property
    def reason_message(self) -> str:
        """The meaning of the reason code."""
        return RETURN_REASONS.get(self.reason_code, "")


@dataclass(frozen=True, slots=True)
class StatusReport:
    """A transfer's status at one moment (pacs.002)."""

    message_id: str
    end_to_end_id: str
    status: Status
    reason_code: str
    clearing_reference: str
    accepted_at: dt.datetime
    settled_at: dt.datetime | None
    payment_return: PaymentReturn | None

    @property
    def reason_message(self) -> str:
        """The meaning of the reason code; empty without one."""
        return STATUS_REASONS.get(self.reason_code, "")


def return_id_of(message_id: str) -> str:
    """The return's id, derived from the transfer's message id (one return per transfer)."""
    return "R" + hashlib.sha256(message_id.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class ClearingRecord:
    """A received transfer with the scheme's decision, as stored."""

    message_id: str
    transfer: CreditTransfer
    fingerprint: str  # of the submitted transfer: a resubmission must match it
    outcome: Outcome
    reason_code: str  # the rejection's or the return's ISO code; empty for SETTLE
    rule: str  # the name of the rule that decided
    clearing_reference: str  # empty for a rejected or dropped transfer
    accepted_at: dt.datetime
    settle_at: dt.datetime | None = None
    return_at: dt.datetime | None = None
    submitted_by: str = ""

    @property
    def received(self) -> bool:
        """False when the scheme behaves as if it never got the transfer."""
        return self.outcome is not Outcome.DROPPED

    def payment_return(self, now: dt.datetime, sequence: int | None = None) -> PaymentReturn | None:
        """The transfer's return, once due at ``now``."""
        if self.outcome is not Outcome.RETURN or self.return_at is None or now < self.return_at:
            return None
        return PaymentReturn(
            return_id=return_id_of(self.message_id),
            message_id=self.message_id,
            end_to_end_id=self.transfer.end_to_end_id,
            amount=self.transfer.amount,
            reason_code=self.reason_code,
            returned_at=self.return_at,
            sequence=sequence,
        )

    def report(self, now: dt.datetime) -> StatusReport:
        """The status report at ``now``: REJECTED; ACCEPTED until settle_at; SETTLED after."""
        if not self.received:
            raise ValueError("a dropped transfer has no status")
        if self.outcome is Outcome.REJECT:
            status, settled_at = Status.REJECTED, None
        elif self.settle_at is not None and now >= self.settle_at:
            status, settled_at = Status.SETTLED, self.settle_at
        else:
            status, settled_at = Status.ACCEPTED, None
        return StatusReport(
            message_id=self.message_id,
            end_to_end_id=self.transfer.end_to_end_id,
            status=status,
            reason_code=self.reason_code if self.outcome is Outcome.REJECT else "",
            clearing_reference=self.clearing_reference,
            accepted_at=self.accepted_at,
            settled_at=settled_at,
            payment_return=self.payment_return(now),
        )
