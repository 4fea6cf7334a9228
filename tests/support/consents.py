"""A consent as a resource server sees it, for tests that need one without identity."""

from __future__ import annotations

from typing import Any

from meshlib.auth.consent import ConsentView


def consent_view(**overrides: Any) -> ConsentView:
    """An authorised, unpaused, unexpiring consent c1 of partner p1 and customer cust1 over
    account a1 that may initiate payments, with ``overrides`` applied."""
    values: dict[str, Any] = dict(
        consent_id="c1",
        partner_id="p1",
        customer_id="cust1",
        state="AUTHORISED",
        paused=False,
        permissions=frozenset({"INITIATE_PAYMENTS"}),
        account_ids=frozenset({"a1"}),
        expires_at=None,
    )
    values.update(overrides)
    return ConsentView(**values)
