"""Credit transfers for the simulator's unit tests."""

from __future__ import annotations

import dataclasses

from meshlib.iban import make_iban
from meshlib.money import Amount
from schemesim.domain.transfers import AccountId, AccountKind, CreditTransfer


def iban(account_number: str, bank_code: str = "37040044") -> str:
    """A valid German IBAN whose last ten digits are ``account_number`` (zero-padded)."""
    return make_iban("DE", bank_code + account_number.zfill(10))


def transfer(
    creditor: str | None = None, minor: int = 1_000, currency: str = "EUR", **changes: object
) -> CreditTransfer:
    """A well-formed transfer to ``creditor`` (an IBAN; default: one no default rule picks)."""
    base = CreditTransfer(
        end_to_end_id="e2e-1",
        amount=Amount(currency, minor),
        debtor_name="Alice Debtor",
        debtor_account=AccountId(AccountKind.SCHEME, "obm-acc-1"),
        debtor_agent="OBNKGB2L",
        creditor_name="Bob Creditor",
        creditor_account=AccountId(AccountKind.IBAN, creditor or iban("1")),
        creditor_agent="COBADEFF",
        remittance_information="invoice 7",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
