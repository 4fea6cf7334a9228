"""Account movements for the partners' event logs: which postings an outbox row is written for.

A posting (a booked statement line: a single-phase transfer, or a hold when it is posted) on a
customer's account is a movement; holds, voids and expiries are not, and neither are the bank's
own accounts (equity, settlement, wallets' accounts), which no consent covers. Which partners are
told is identity's to decide (it keeps the consents): the row names the account's customer.
Only the masked number leaves the service. Plain Python, no I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from services.account.domain.ledger import Account, Direction, Entry, EntryStatus, mask_account_number


class Movement(NamedTuple):
    """One outbox row to write: money booked on a customer's account (a named tuple: a batch
    of 500 postings builds up to 1,000 of them)."""

    account_id: str
    customer_id: str
    direction: Direction
    amount: int
    currency: str
    masked_number: str
    reference: str
    transfer_id: str
    booking_time: dt.datetime


def movements(new_entries: Iterable[Entry], accounts: Mapping[str, Account]) -> list[Movement]:
    """The movements among a transaction's new statement lines, in their order."""
    found: list[Movement] = []
    booked = EntryStatus.BOOKED
    for entry in new_entries:
        if entry.status is not booked:
            continue
        account = accounts.get(entry.account_id)
        if account is None or not account.customer_id:
            continue
        found.append(
            Movement(
                entry.account_id,
                account.customer_id,
                entry.direction,
                entry.amount,
                entry.currency,
                mask_account_number(account.number),
                entry.reference,
                entry.transfer_id,
                entry.booking_time,
            )
        )
    return found
