"""What identity knows of the customer, for the risk decision, within a bounded deadline.

Fail policy: open. When identity does not answer within the deadline, or answers with an
error, the payment is decided without these signals (``IdentitySignals()``: unknown, which no
rule fires on) and the miss is logged. The consent and the limits are checked whatever happens;
a slow identity must not stop payments or make them wait for it.
"""

from __future__ import annotations

import asyncio
import logging

from meshlib.errors import MeshError
from services.payment.domain.risk import IdentitySignals
from services.payment.ports import IdentityRiskSignals

log = logging.getLogger("services.payment.identity_signals")


class BoundedIdentitySignals:
    """``inner`` within ``deadline_seconds``, or unknown signals."""

    def __init__(self, inner: IdentityRiskSignals, deadline_seconds: float = 0.2) -> None:
        self._inner = inner
        self._deadline = deadline_seconds
        self.misses = 0

    async def recent(self, customer_id: str, consent_id: str) -> IdentitySignals:
        """Identity's signals, or IdentitySignals() when it is late or failing."""
        try:
            return await asyncio.wait_for(self._inner.recent(customer_id, consent_id), self._deadline)
        except (TimeoutError, MeshError) as error:
            self.misses += 1
            log.warning(
                "identity's risk signals missing: deciding without them",
                extra={"reason": getattr(error, "reason", "") or type(error).__name__},
            )
            return IdentitySignals()
