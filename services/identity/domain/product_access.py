"""Fair data use of an embedded product: what a partner may read of what it applied for.

The onboarding scope lets a wallet follow its application (state, reason, the consent to send
the customer to, the activation page). What the application holds about the customer (the
applicant's personal data, the customer and the account the bank opened) is the customer's,
so the wallet reads it under the customer's consent like any other account data: the consent
made on approval, authorised by the customer, live (not paused, not expired or revoked),
granting READ_ACCOUNTS and covering the opened account. Nothing else opens it, and it closes
again when the consent ends.
"""

from __future__ import annotations

import datetime as dt

from services.identity.domain.consents import Consent, ConsentState
from services.identity.domain.onboarding import Application

PRODUCT_PERMISSION = "READ_ACCOUNTS"


def partner_reads_holdings(application: Application, consent: Consent | None, now: dt.datetime) -> bool:
    """Whether the applying partner may see the application's customer data and account."""
    if consent is None or application.account_id is None or consent.consent_id != application.consent_id:
        return False
    live = consent.current(now)
    return (
        live.partner_id == application.partner_id
        and live.customer_id == application.customer_id
        and live.state is ConsentState.AUTHORISED
        and not live.paused
        and PRODUCT_PERMISSION in live.permissions
        and application.account_id in live.account_ids
    )
