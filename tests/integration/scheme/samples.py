"""Transfers and rules shared by the scheme's integration tests."""

from __future__ import annotations

import itertools
import uuid

from meshlib.iban import make_iban
from meshlib.money import Amount
from services.payment.adapters.clearing import OutboundCreditTransfer, SchemeAccount

_ids = itertools.count()


def iban(account_number: str) -> str:
    """A valid German IBAN whose account number (last ten digits) is ``account_number``."""
    return make_iban("DE", "37040044" + account_number.zfill(10))


SETTLES = iban("1")
REJECTS_AC04 = iban("404")
PENDING = iban("910")
LOST_ACKNOWLEDGEMENT = iban("901")
LOST_REQUEST = iban("902")
RETURNED_AC04 = iban("704")
LATE = iban("900")

# The simulator's rules for these creditors (the fake is scripted the same way).
RULES = {
    "default": {"action": "settle"},
    "rules": [
        {"name": "closed", "match": {"creditor_account": REJECTS_AC04}, "action": "reject", "reason": "AC04"},
        {"name": "pending", "match": {"creditor_account": PENDING}, "action": "settle", "settle_after_seconds": 3600},
        {
            "name": "lost-ack",
            "match": {"creditor_account": LOST_ACKNOWLEDGEMENT},
            "action": "settle",
            "answer": "never",
        },
        {
            "name": "lost-request",
            "match": {"creditor_account": LOST_REQUEST},
            "action": "settle",
            "answer": "never_received",
        },
        {
            "name": "returned",
            "match": {"creditor_account": RETURNED_AC04},
            "action": "return",
            "reason": "AC04",
            "return_after_seconds": 0,
        },
        {"name": "late", "match": {"creditor_account": LATE}, "action": "settle", "answer_delay_seconds": 1.5},
    ],
}


def message_id() -> str:
    """A fresh message id (at most 35 characters)."""
    return f"m-{uuid.uuid4().hex[:16]}-{next(_ids)}"


def outbound(creditor: str = SETTLES, minor: int = 2_500, *, message: str | None = None, **changes: object):  # type: ignore[no-untyped-def]
    """A payment to another bank, as the saga would hand it to the connector."""
    values: dict[str, object] = {
        "message_id": message or message_id(),
        "end_to_end_id": "E2E-42",
        "amount": Amount("EUR", minor),
        "debtor_name": "Alice Debtor",
        "debtor_account": SchemeAccount.scheme_id("obm:acc-1"),
        "debtor_agent": "OBNKGB2L",
        "creditor_name": "Bob Creditor",
        "creditor_account": SchemeAccount.iban(creditor),
        "creditor_agent": "COBADEFF",
        "remittance_information": "invoice 7",
    }
    values.update(changes)
    return OutboundCreditTransfer(**values)  # type: ignore[arg-type]
