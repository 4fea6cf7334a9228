"""Settling a window moves money (Mojaloop's settlement): the ledger legs of a window's nets.

Each participant's net in the window moves between its settlement account and the bank's
settlement account (the bank participant's own), all legs posted by the ledger as one linked
chain. A participant that is owed money (positive net) is paid out: its settlement account
is debited by its net, the bank's credited. One that owes money (negative net) pays in: the
bank's account is debited, its account credited. So every settlement account moves by
exactly minus its participants' net, the bank's too (its legs are the others' counterparts),
and the ledger still sums to zero.

Every id is derived from the window (and the participant), never drawn at random: a settle
retried after a crash between the ledger post and the window update posts the same chain,
which the ledger answers without moving money twice.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meshlib.money import Amount
from services.settlement.domain.participants import Participant

WINDOW_PREFIX = "settlementWindows/"


def window_reference(window_id: str) -> str:
    """The reference every settlement leg of a window carries (its resource name)."""
    return f"{WINDOW_PREFIX}{window_id}"


def _derived(kind: str, *parts: str) -> str:
    # A request id of 1..64 characters of [A-Za-z0-9._:-], whatever the ids it is made of.
    return f"settle-{kind}-{hashlib.sha256('/'.join(parts).encode()).hexdigest()[:40]}"


def chain_request_id(window_id: str) -> str:
    """The ledger request_id of a window's settlement chain."""
    return _derived("window", window_id)


def leg_transfer_id(window_id: str, participant_id: str) -> str:
    """The ledger transfer id of a participant's settlement leg in a window."""
    return _derived("leg", window_id, participant_id)


@dataclass(frozen=True)
class SettlementLeg:
    """One ledger transfer of a window's settlement: a participant's net, between its
    settlement account and the bank's."""

    transfer_id: str
    participant_id: str
    debit_account: str
    credit_account: str
    amount: Amount
    reference: str

    @property
    def description(self) -> str:
        """What the statement line says."""
        return f"settlement of participants/{self.participant_id}"


def settlement_legs(
    window_id: str,
    currency: str,
    nets: Mapping[str, int],
    participants: Mapping[str, Participant],
    bank_account: str,
) -> list[SettlementLeg]:
    """The legs that settle a window's ``nets`` (participant id -> net, positive = owed).

    A zero net has no leg, nor has a participant whose settlement account is the bank's (the
    bank itself: what the other legs leave on its account is its net). Payouts come first,
    then pay-ins, each in participant id order: the chain credits the bank's account before
    it debits it.
    """
    payouts: list[SettlementLeg] = []
    payins: list[SettlementLeg] = []
    for participant_id in sorted(nets):
        net = nets[participant_id]
        account = participants[participant_id].settlement_account
        if not net or account == bank_account:
            continue
        debit, credit = (account, bank_account) if net > 0 else (bank_account, account)
        leg = SettlementLeg(
            transfer_id=leg_transfer_id(window_id, participant_id),
            participant_id=participant_id,
            debit_account=debit,
            credit_account=credit,
            amount=Amount(currency, abs(net)),
            reference=window_reference(window_id),
        )
        (payouts if net > 0 else payins).append(leg)
    return payouts + payins


def moved_out(transfers: Iterable[tuple[str, str, int]]) -> dict[str, int]:
    """What left each account on balance: (debit account, credit account, amount) triples in,
    debits minus credits per account out (negative when money came in)."""
    out: dict[str, int] = defaultdict(int)
    for debit, credit, amount in transfers:
        out[debit] += amount
        out[credit] -= amount
    return dict(out)


def expected_out(nets: Mapping[str, int], participants: Mapping[str, Participant]) -> dict[str, int]:
    """What settling ``nets`` must take out of each settlement account: its participants' net."""
    out: dict[str, int] = defaultdict(int)
    for participant_id, net in nets.items():
        out[participants[participant_id].settlement_account] += net
    return dict(out)
