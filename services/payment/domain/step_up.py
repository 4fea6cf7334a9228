"""Step-up with dynamic linking (PSD2 RTS art. 5): the one-time code that confirms a payment
is computed over its amount, currency and payee, so a code shown for one payment is worth
nothing for another amount or another payee.

The code is an HOTP-style truncation (RFC 4226) of an HMAC-SHA256 whose key is the customer's
device key (derived from the bank's step-up secret and the customer id, as the bank's app
holds it after enrolment) and whose message is the payment id, amount, currency and payee.

Plain Python: no gRPC, no SQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

from services.payment.domain.payments import Payment

CODE_DIGITS = 6
MAX_ATTEMPTS = 5


def device_key(bank_secret: bytes, customer_id: str) -> bytes:
    """The key the customer's device holds (one per customer)."""
    return hmac.new(bank_secret, f"step-up-device:{customer_id}".encode(), hashlib.sha256).digest()


def linked_message(payment: Payment) -> bytes:
    """What the code is bound to: the payment, its amount and currency, its payee."""
    amount = payment.amount
    return f"{payment.payment_id}|{amount.minor_units}|{amount.currency}|{payment.beneficiary}".encode()


def code_for(bank_secret: bytes, payment: Payment) -> str:
    """The one-time code for ``payment`` (what the customer's device shows)."""
    digest = hmac.new(device_key(bank_secret, payment.customer_id), linked_message(payment), hashlib.sha256).digest()
    offset = digest[-1] & 0x0F
    number = int.from_bytes(digest[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(number % 10**CODE_DIGITS).zfill(CODE_DIGITS)


def code_matches(bank_secret: bytes, payment: Payment, code: str) -> bool:
    """Constant-time comparison with the code for the payment as it is stored."""
    return hmac.compare_digest(code_for(bank_secret, payment).encode(), code.strip().encode())


@dataclass(frozen=True)
class Waiting:
    """How long a payment waits for the customer (step-up) or an operator (review)."""

    step_up: dt.timedelta = dt.timedelta(minutes=10)
    review: dt.timedelta = dt.timedelta(hours=24)
