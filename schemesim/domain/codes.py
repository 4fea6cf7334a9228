"""ISO 20022 reason codes the simulator gives, with their meaning (the external code sets)."""

from __future__ import annotations

# Why a credit transfer is rejected (pacs.002 RJCT, ExternalStatusReason1Code).
STATUS_REASONS: dict[str, str] = {
    "AB05": "timeout at the creditor agent",
    "AB06": "timeout at the instructed agent",
    "AC01": "incorrect account number",
    "AC04": "closed account number",
    "AC06": "blocked account",
    "AG01": "transaction forbidden on this type of account",
    "AG03": "transaction type not supported",
    "AM02": "amount above the maximum allowed",
    "AM03": "currency not allowed",
    "AM04": "insufficient funds",
    "AM05": "duplication",
    "BE04": "missing creditor address",
    "CNOR": "creditor bank is not registered",
    "FF01": "invalid file format",
    "MS02": "reason not specified, customer generated",
    "MS03": "reason not specified, agent generated",
    "RC01": "bank identifier incorrect",
    "RR04": "regulatory reason",
}

# Why a settled credit transfer comes back (pacs.004, ExternalReturnReason1Code).
RETURN_REASONS: dict[str, str] = {
    "AC01": "incorrect account number",
    "AC04": "closed account number",
    "AC06": "blocked account",
    "AG01": "transaction forbidden on this type of account",
    "AM05": "duplication",
    "BE04": "missing creditor address",
    "CUST": "requested by the customer",
    "FOCR": "following a cancellation request",
    "FRAD": "fraudulent origin",
    "MD07": "end customer deceased",
    "MS02": "reason not specified, customer generated",
    "MS03": "reason not specified, agent generated",
    "RC01": "bank identifier incorrect",
    "RR04": "regulatory reason",
}
