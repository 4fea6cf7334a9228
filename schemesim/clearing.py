"""The simulator's use cases: receive a credit transfer, report its status, feed its returns.

Plain Python over the unit of work; the servicer only converts. Every transfer is stored
before it is answered, so whatever happens to the answer (late, never), its status can be
asked; the decision is taken once, on first receipt, and kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from meshlib.errors import NotFound, Unavailable
from meshlib.idempotency import request_id_reused
from meshlib.ids import time_ordered_id
from meshlib.storage import Transactions
from schemesim.domain.rules import Answer, Decision, RuleSet
from schemesim.domain.transfers import (
    ClearingRecord,
    CreditTransfer,
    Outcome,
    PaymentReturn,
    StatusReport,
)
from schemesim.unit_of_work import SchemeUnitOfWork

log = logging.getLogger("schemesim")

Clock = Callable[[], dt.datetime]
Sleep = Callable[[float], Awaitable[None]]

# Returns moved into the feed per transaction.
RETURNS_BATCH = 500


def utc_now() -> dt.datetime:
    """The wall clock, in UTC."""
    return dt.datetime.now(dt.UTC)


def new_clearing_reference() -> str:
    """The scheme's reference of an accepted transaction (ClrSysRef, at most 35 characters)."""
    return f"S{time_ordered_id()}"


def record_of(
    message_id: str,
    transfer: CreditTransfer,
    fingerprint: str,
    decision: Decision,
    now: dt.datetime,
    *,
    reference: str,
    submitted_by: str,
) -> ClearingRecord:
    """A received transfer with its decision turned into times: settles at, comes back at."""
    settle_at = return_at = None
    if decision.outcome in (Outcome.SETTLE, Outcome.RETURN):
        settle_at = now + decision.settle_after
        if decision.outcome is Outcome.RETURN and decision.return_after is not None:
            return_at = settle_at + decision.return_after
    return ClearingRecord(
        message_id=message_id,
        transfer=transfer,
        fingerprint=fingerprint,
        outcome=decision.outcome,
        reason_code=decision.reason_code,
        rule=decision.rule,
        clearing_reference=reference if settle_at is not None else "",
        accepted_at=now,
        settle_at=settle_at,
        return_at=return_at,
        submitted_by=submitted_by,
    )


class ClearingService:
    """The other bank's side of the scheme, by the rules."""

    def __init__(
        self,
        transactions: Transactions[SchemeUnitOfWork],
        rules: RuleSet,
        *,
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        silence_seconds: float = 3600.0,
        references: Callable[[], str] = new_clearing_reference,
    ) -> None:
        self._transactions = transactions
        self._rules = rules
        self._clock = clock
        self._sleep = sleep
        self._silence_seconds = silence_seconds
        self._references = references

    async def submit(
        self, message_id: str, transfer: CreditTransfer, fingerprint: str, *, submitted_by: str = ""
    ) -> StatusReport:
        """Receive a transfer (pacs.008) and answer its status report, as the rules say.

        The same message id with the same transfer answers its current status at once; with
        another transfer it fails REQUEST_ID_REUSED. A first receipt is stored, then answered
        at once, late, or never (the caller's deadline ends the call); a delivery the rules
        "lose on its way in" is stored as dropped and never answered, and the next delivery of
        the message id is processed as the first one (answered at once).
        """
        decision = self._rules.decide(transfer)

        async def receive(uow: SchemeUnitOfWork) -> tuple[ClearingRecord, Answer | None]:
            now = self._clock()
            existing = await uow.clearing.get(message_id, for_update=True)
            if existing is not None and existing.received:
                if existing.fingerprint != fingerprint:
                    raise request_id_reused(message_id)
                return existing, None  # a resubmission: its current status, at once
            # A delivery after a dropped one is the first the scheme gets: processed, answered.
            answer = decision.answer if existing is None else Answer.NORMAL
            outcome = Outcome.DROPPED if answer is Answer.NEVER_RECEIVED else decision.outcome
            record = record_of(
                message_id,
                transfer,
                fingerprint,
                dataclasses.replace(decision, outcome=outcome, answer=answer),
                now,
                reference=self._references(),
                submitted_by=submitted_by,
            )
            if existing is None:
                await uow.clearing.add(record)
            else:
                await uow.clearing.replace(record)
            return record, answer

        record, answer = await self._transactions.run(receive)
        log.info(
            "credit transfer received",
            extra={"message_id": message_id, "rule": record.rule, "outcome": record.outcome.value},
        )
        if answer in (Answer.NEVER, Answer.NEVER_RECEIVED):
            await self._stay_silent()
        if answer is Answer.NORMAL and decision.answer_delay_seconds:
            await self._sleep(decision.answer_delay_seconds)
        return record.report(self._clock())

    async def _stay_silent(self) -> None:
        """Never answer: wait until the caller gives up (its deadline cancels this call)."""
        await self._sleep(self._silence_seconds)
        raise Unavailable("the scheme did not answer")

    async def status(self, message_id: str) -> StatusReport:
        """The transfer's current status report; NOT_FOUND if the scheme never received it."""
        record = await self._transactions.read(lambda uow: uow.clearing.get(message_id))
        if record is None or not record.received:
            raise NotFound(
                "the scheme has no credit transfer with this message id",
                reason="RESOURCE_NOT_FOUND",
                metadata={"message_id": message_id},
            )
        return record.report(self._clock())

    async def collect_returns(self) -> int:
        """Move the returns that are due into the feed (oldest due first); how many moved."""
        moved = 0
        while True:

            async def collect(uow: SchemeUnitOfWork) -> int:
                now = self._clock()
                await uow.clearing.lock_feed()
                due = await uow.clearing.due_returns(now, RETURNS_BATCH)
                returns = [item for record in due if (item := record.payment_return(now)) is not None]
                await uow.clearing.append_returns(returns, now)
                return len(returns)

            count = await self._transactions.run(collect)
            moved += count
            if count < RETURNS_BATCH:
                if moved:
                    log.info("payment returns entered the feed", extra={"count": moved})
                return moved

    async def list_returns(self, after: int, limit: int) -> list[PaymentReturn]:
        """The feed's returns after position ``after``, oldest first (what is due is collected first)."""
        await self.collect_returns()
        return await self._transactions.read(lambda uow: uow.clearing.returns_after(after, limit))
