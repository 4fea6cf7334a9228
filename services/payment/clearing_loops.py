"""The two loops that follow payments to other banks after CreatePayment has answered.

- :class:`ClearingStatusPoller`: payments waiting for the scheme (the lease of their last look
  ran out, ``OBM_CLEARING_POLL_SECONDS`` after it) are claimed one by one (the lease decides
  between replicas) and driven on: the saga probes the scheme's status (settled: posted and
  committed; rejected: voided and released; not received: sent again or given up; pending:
  parked until the next poll). The same resumed drive as recovery, so a crash anywhere is
  covered by the same rule.
- :class:`SchemeReturns`: reads the scheme's returns feed (pacs.004) after the cursor kept in
  the database, while holding the feed's lease, and credits each return back to the debtor as
  a refund of the original (reason: the scheme's return reason; idempotent by the return's
  id), then keeps the cursor. A return of a payment not yet SETTLED here waits: the original is
  driven first, and the cursor stays before the return until it is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
from typing import Protocol

from meshlib.errors import MeshError
from meshlib.periodic import Periodic
from meshlib.storage import IdempotencyKey
from services.payment.adapters.clearing import ClearingConnector, ClearingReturn
from services.payment.commands import Recovery
from services.payment.domain.payments import PaymentState
from services.payment.domain.refunds import RefundRequest
from services.payment.domain.saga import TRANSIENT_REASONS
from services.payment.ports import PaymentJournal
from services.payment.refund_payment import RefundPayment

log = logging.getLogger("services.payment.clearing")

RETURNS_FEED = "returns"
# The idempotency keys of the refunds that credit returns back: scoped to the scheme.
SCHEME_SCOPE = "scheme"
SCHEME_RETURN_METHOD = "SchemeReturn"


class ClearingFeeds(Protocol):
    """The cursors of the scheme's feeds, and the lease of the replica reading each."""

    async def claim(self, feed: str, holder: str, lease: dt.timedelta) -> bool: ...
    async def cursor(self, feed: str) -> str: ...
    async def save(self, feed: str, holder: str, cursor: str) -> bool: ...
    async def release(self, feed: str, holder: str) -> None: ...


class ClearingStatusPoller:
    """Drives payments waiting for the scheme whose lease ran out."""

    def __init__(self, journal: PaymentJournal, recovery: Recovery, batch: int = 100) -> None:
        self._journal = journal
        self._recovery = recovery
        self._batch = batch

    async def run_pass(self) -> int:
        """One look at every payment due; how many reached a final state."""
        finished = 0
        for payment_id in await self._journal.awaiting_clearing(self._batch):
            payment = await self._recovery.recover_one(payment_id)
            finished += payment is not None and payment.state.final
        return finished


@dataclasses.dataclass
class ReturnsPass:
    """What one pass over the returns feed did."""

    credited: int = 0
    skipped: int = 0
    waiting: bool = False  # stopped before a return whose original is not settled yet


class SchemeReturns:
    """The returns feed's consumer: each return credited back once, the cursor kept after it."""

    def __init__(
        self,
        connector: ClearingConnector,
        feeds: ClearingFeeds,
        refund: RefundPayment,
        recovery: Recovery,
        journal: PaymentJournal,
        *,
        lease: dt.timedelta = dt.timedelta(seconds=30),
        page_size: int = 100,
    ) -> None:
        self._connector = connector
        self._feeds = feeds
        self._refund = refund
        self._recovery = recovery
        self._journal = journal
        self._lease = lease
        self._page_size = page_size
        self._holder = secrets.token_hex(8)

    async def run_pass(self) -> ReturnsPass:
        """Read the feed after the kept cursor while holding its lease; nothing if another replica does."""
        result = ReturnsPass()
        if not await self._feeds.claim(RETURNS_FEED, self._holder, self._lease):
            return result
        try:
            cursor = await self._feeds.cursor(RETURNS_FEED)
            while True:
                page = await self._connector.returns(cursor, self._page_size)
                for item in page.returns:
                    if not await self._credit_back(item, result):
                        result.waiting = True
                        return result
                    cursor = item.cursor
                    if not await self._feeds.save(RETURNS_FEED, self._holder, cursor):
                        return result  # the lease was lost: the new holder goes on from the kept cursor
                if not page.more:
                    return result
        finally:
            await self._feeds.release(RETURNS_FEED, self._holder)

    async def _credit_back(self, item: ClearingReturn, result: ReturnsPass) -> bool:
        """Refund the returned amount to the debtor; False when the original must settle first."""
        try:
            original, _ = await self._journal.load(item.message_id)
        except LookupError:
            log.error("a return of a transfer this bank did not send", extra={"return_id": item.return_id})
            result.skipped += 1
            return True
        if not original.state.final:
            original = await self._recovery.recover_one(original.payment_id) or original
        if original.state is not PaymentState.SETTLED:
            if original.state.final:  # rejected or cancelled here: nothing was paid, nothing comes back
                log.error("a return of a transfer that did not settle", extra={"payment": original.payment_id})
                result.skipped += 1
                return True
            return False
        request = RefundRequest(
            original_payment_id=original.payment_id,
            amount=item.amount,
            reason=item.reason_code,
            remittance_information=f"returned by the other bank: {item.reason_message}"[:140],
        )
        key = IdempotencyKey(SCHEME_SCOPE, SCHEME_RETURN_METHOD, item.return_id[:64], item.return_id)
        try:
            refund = await self._refund(request, key, from_scheme=True)
        except MeshError as error:
            if error.reason in TRANSIENT_REASONS:
                raise
            # E.g. the bank refunded it by hand already: the money is back once, not twice.
            log.error(
                "a return could not be credited back",
                extra={"payment": original.payment_id, "return_id": item.return_id, "reason": error.reason},
            )
            result.skipped += 1
            return True
        log.info(
            "payment returned by the other bank",
            extra={"payment": original.payment_id, "refund": refund.payment_id, "reason": item.reason_code},
        )
        result.credited += 1
        return True


class ClearingLoops:
    """The status poller and the returns consumer, each every ``interval`` (0: not run)."""

    def __init__(
        self, poller: ClearingStatusPoller, returns: SchemeReturns, poll_seconds: float, returns_seconds: float
    ) -> None:
        self._periodics = []
        if poll_seconds > 0:
            self._periodics.append(Periodic("clearing-status", poll_seconds, poller.run_pass))
        if returns_seconds > 0:
            self._periodics.append(Periodic("clearing-returns", returns_seconds, returns.run_pass))

    async def start(self) -> None:
        """Start both loops."""
        for periodic in self._periodics:
            await periodic.start()

    async def stop(self) -> None:
        """Stop both; an interrupted pass is taken up by the next (every step is idempotent)."""
        for periodic in self._periodics:
            await periodic.stop()
