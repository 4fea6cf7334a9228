"""A ledger account for the account service's unit tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

from services.account.domain.ledger import Account, AccountStatus, AccountType


def sample_account(account_id: str, *, at: dt.datetime, balance: int = 0, **changes: Any) -> Account:
    """An active EUR current account of customer c1, opened ``at``, with ``balance`` posted
    to its credit and ``changes`` applied."""
    fields: dict[str, Any] = dict(
        id=account_id,
        number="12345678901234",
        currency="EUR",
        type=AccountType.CURRENT,
        status=AccountStatus.ACTIVE,
        overdraft_limit=0,
        customer_id="c1",
        display_name="",
        opened_at=at,
        updated_at=at,
        credits_posted=balance,
    )
    fields.update(changes)
    return Account(**fields)
