"""The payment saga and its recovery: (hold | reserve) -> post -> commit, or void + release.

The hold on the debtor's funds and the reservation of the settlement position do not depend
on each other, so they are sent together; the post follows both, and the obligation is
committed only after the money moved. Each call is recorded as "started" before it is sent
(the commit that immediately follows a post excepted: a crash there leaves a POSTED hold,
from which recovery knows to commit) and its outcome afterwards, sharing transactions where
one outcome and the next start meet. Every downstream call is idempotent by a key derived
from the payment id, so replaying any step after a crash is safe. One driver at a time owns
a payment (a lease on its row); the recovery loop only takes payments whose lease expired.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from meshlib.coalesce import Coalescer, together_or_alone
from meshlib.errors import ErrorKind, FailedPrecondition, MeshError
from meshlib.metrics import record_payment_state, record_saga_recovery
from meshlib.telemetry import tracer, tracing_enabled
from services.payment.domain.payments import Payment, PaymentState
from services.payment.repository import SagaStep
from services.payment.unit_of_work import PaymentUnitOfWork

log = logging.getLogger("services.payment.saga")

UnitOfWorkFactory = Callable[..., PaymentUnitOfWork]
_trace_id: ContextVar[str] = ContextVar("payment_saga_trace_id", default="")

IN_FLIGHT = [PaymentState.RECEIVED, PaymentState.ACCEPTED, PaymentState.SETTLEMENT_IN_PROCESS]
HOLD, RESERVE, POST, COMMIT = "hold_funds", "reserve_position", "post_funds", "commit_obligation"
NOT_APPLICABLE = "not applicable: no partner involved"


class Ledger(Protocol):
    """The account service's ledger, as the saga uses it."""

    async def hold(self, payment: Payment) -> str: ...
    async def post(self, payment: Payment) -> None: ...
    async def void(self, payment: Payment) -> None: ...
    async def hold_state(self, payment: Payment) -> str | None: ...


class Positions(Protocol):
    """Settlement obligations, as the saga uses them."""

    async def reserve(self, payment: Payment) -> None: ...
    async def commit(self, payment: Payment) -> None: ...
    async def release(self, payment: Payment) -> None: ...


def transient(error: MeshError) -> bool:
    """A failure that says nothing about the outcome (down, deadline): retry later, never conclude."""
    return error.kind in (ErrorKind.UNAVAILABLE, ErrorKind.DEADLINE_EXCEEDED, ErrorKind.INTERNAL, ErrorKind.ABORTED)


def current_trace_id() -> str:
    """The trace id of the step being run (32 hex characters)."""
    return _trace_id.get() or "0" * 32


@contextmanager
def _saga_span(name: str, payment_id: str) -> Iterator[None]:
    """A span around one saga run; its trace id goes into every step row it records."""
    if not tracing_enabled():
        # No span without an exporter (opening no-op spans cost ~3% of the payment service's
        # CPU under load); a random id still correlates the steps of one run.
        with _steps_traced_as(secrets.token_hex(16)):
            yield
        return
    with tracer("services.payment").start_as_current_span(name, attributes={"payment.id": payment_id}) as span:
        context = span.get_span_context()
        with _steps_traced_as(f"{context.trace_id:032x}" if context.is_valid else secrets.token_hex(16)):
            yield


@contextmanager
def _steps_traced_as(trace_id: str) -> Iterator[None]:
    token = _trace_id.set(trace_id)
    try:
        yield
    finally:
        _trace_id.reset(token)


def exit_at_failpoint(configured: str | None) -> Callable[[str], None]:
    """Crash testing: a hook that kills the process abruptly at the configured saga point."""

    def hook(point: str) -> None:
        if configured and configured == point:
            log.warning("failpoint reached, exiting", extra={"failpoint": point})
            os._exit(137)

    return hook


@dataclass
class RecoveryResult:
    """What one recovery pass did."""

    examined: int = 0
    completed: int = 0
    compensated: int = 0
    pending: int = 0


# A guarded state change: from any of these states to that one.
Move = tuple[list[PaymentState], PaymentState]
# Where a payment goes when a call after its hold fails (the outcome is then recorded).
TO_IN_PROCESS: Move = ([PaymentState.ACCEPTED], PaymentState.SETTLEMENT_IN_PROCESS)
# Where a payment goes once its obligation is committed (or none was needed): through
# SETTLEMENT_IN_PROCESS, unless it is there already, to SETTLED; both events are written.
TO_SETTLED: tuple[Move, Move] = (TO_IN_PROCESS, ([PaymentState.SETTLEMENT_IN_PROCESS], PaymentState.SETTLED))


@dataclass(frozen=True, slots=True)
class SagaWrite:
    """The success-path writes of one saga step: step rows, maybe a state change, the lease renewed."""

    payment_id: str
    records: tuple[tuple[str, str, str], ...]
    move: Move | None
    trace_id: str
    then: Move | None = None  # a second guarded move after the first, in the same transaction


class Stop(Exception):
    """The saga cannot go on now (a dependency is down): the recovery loop resumes it later."""


class PaymentSaga:
    """Drives payments through the saga, forward or back."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        ledger: Ledger,
        positions: Positions,
        *,
        lease: dt.timedelta,
        failpoint: Callable[[str], None] = lambda point: None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._uow = uow
        self._ledger = ledger
        self._positions = positions
        self._lease = lease
        self._failpoint = failpoint
        self._clock = clock
        # Group commit: the success-path writes of the payments in flight share one transaction.
        self._journal: Coalescer[SagaWrite, Payment] = Coalescer(
            self._write_many, max_in_flight=1, name="payment.saga.group_commit"
        )

    # -- persistence helpers -------------------------------------------------------------

    async def _record(self, payment: Payment, step: str, outcome: str, detail: str = "") -> None:
        """Persist one step outcome (and renew the lease) in its own transaction."""
        async with self._uow() as uow:
            now = self._clock()
            await uow.steps.add(SagaStep(payment.payment_id, step, outcome, detail, current_trace_id(), now))
            await uow.payments.renew(payment.payment_id, now, self._lease)
            await uow.commit()

    async def _move(
        self, payment: Payment, from_states: list[PaymentState], to: PaymentState, reason: str = "", message: str = ""
    ) -> Payment:
        """Change state with its outbox event in one transaction; returns the payment as stored."""
        async with self._uow() as uow:
            now = self._clock()
            current = await uow.payments.get(payment.payment_id)
            assert current is not None
            moved = await uow.payments.move(payment.payment_id, from_states, to, now, reason=reason, message=message)
            if moved:
                await uow.events.add(current, current.state, to, reason, now)
            stored = await uow.payments.get(payment.payment_id)
            await uow.commit()
        assert stored is not None
        if moved:
            record_payment_state(to.name)
        return stored

    async def _get(self, payment_id: str) -> Payment:
        async with self._uow(read_only=True) as uow:
            payment = await uow.payments.get(payment_id)
        assert payment is not None
        return payment

    async def _apply(
        self,
        payment: Payment,
        *,
        records: tuple[tuple[str, str, str], ...] = (),
        move: Move | None = None,
        then: Move | None = None,
        request_hold: bool = False,
    ) -> Payment | None:
        """One transaction on the success path: step rows (the outcome of the call just made and
        the "started" row of the next one), a state change (or two: ``then``) with its event,
        the lease renewed.

        Returns the payment as stored, or None when ``request_hold`` lost to a cancel. Without
        ``request_hold`` the writes join those of the other payments in flight (group commit).
        """
        write = SagaWrite(payment.payment_id, records, move, current_trace_id(), then)
        if not request_hold:
            return await self._journal.submit(write)
        async with self._uow() as uow:
            now = self._clock()
            if not await uow.payments.request_hold(payment.payment_id, now):
                return None
            stored, moved = await self._write_in(uow, [write], now)
            await uow.commit()
        _record_states(moved)
        return stored[payment.payment_id]

    async def _write_many(self, writes: list[SagaWrite]) -> list[Payment | BaseException]:
        """Commit a batch of saga writes in one transaction; each payment gets its row as stored.

        If the shared transaction fails, each write is tried alone, so one bad write fails only
        its own payment (two writes of one payment, never in a live saga, go one by one).
        """
        unique = len({write.payment_id for write in writes}) == len(writes)
        return await together_or_alone(
            writes,
            self._commit_writes if unique else None,
            self._commit_write,
            what="payment.saga.group_commit",
        )

    async def _commit_write(self, write: SagaWrite) -> Payment:
        (outcome,) = await self._commit_writes([write])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _commit_writes(self, writes: list[SagaWrite]) -> list[Payment | BaseException]:
        async with self._uow() as uow:
            stored, moved = await self._write_in(uow, writes, self._clock())
            await uow.commit()
        _record_states(moved)
        return [
            stored[write.payment_id]
            if write.payment_id in stored
            else LookupError(f"payment {write.payment_id} not found")
            for write in writes
        ]

    async def _write_in(
        self, uow: PaymentUnitOfWork, writes: list[SagaWrite], now: dt.datetime
    ) -> tuple[dict[str, Payment], list[tuple[Payment, PaymentState | None, PaymentState]]]:
        """Write saga progress into an open unit of work: the step rows, each state change with its
        event, the leases renewed, a statement per kind (and per kind of move).

        Returns the payments as stored afterwards (a payment that is not there, never in a live
        saga, is left out and written nothing) and the state changes made.
        """
        before = await uow.payments.get_many([write.payment_id for write in writes])
        present = [write for write in writes if write.payment_id in before]
        await uow.steps.add_many(
            [
                SagaStep(write.payment_id, step, outcome, detail, write.trace_id, now)
                for write in present
                for step, outcome, detail in write.records
            ]
        )
        changes: list[tuple[Payment, PaymentState | None, PaymentState]] = []
        # The rows as stored afterwards, without reading them again: a move changes only the
        # state, the (empty) status reason and the update time; the lease is not on Payment.
        stored = dict(before)
        moved: set[str] = set()
        lease_until = now + self._lease
        for stage in (lambda write: write.move, lambda write: write.then):
            # One guarded update per kind of move (a wave's payments all make the same one).
            by_move: dict[tuple[tuple[PaymentState, ...], PaymentState], list[str]] = {}
            for write in present:
                if (move := stage(write)) is not None:
                    by_move.setdefault((tuple(move[0]), move[1]), []).append(write.payment_id)
            moved_now: set[str] = set()
            for (from_states, to_state), payment_ids in by_move.items():
                moved_now |= await uow.payments.move_many(
                    payment_ids, list(from_states), to_state, now, lease_until=lease_until
                )
            for write in present:
                if write.payment_id in moved_now:
                    current, to_state = stored[write.payment_id], stage(write)[1]  # type: ignore[index]
                    changes.append((current, current.state, to_state))
                    stored[write.payment_id] = dataclasses.replace(
                        current, state=to_state, status_reason="", status_reason_message="", updated_at=now
                    )
            moved |= moved_now
        await uow.events.add_many(changes, now)
        # A move renewed its payment's lease already (the usual case: one statement fewer).
        unrenewed = [write.payment_id for write in present if write.payment_id not in moved]
        if unrenewed:
            await uow.payments.renew_many(unrenewed, now, self._lease)
        return stored, changes

    async def start_in(self, uow: PaymentUnitOfWork, new: list[tuple[Payment, str]], now: dt.datetime) -> list[Payment]:
        """In CreatePayment's transaction: store new (RECEIVED) payments already accepted, their
        holds requested and leased, with their validation and first calls recorded as started
        (``new``: each payment with the trace id of the call that created it).

        Written as the rows they end up as, not inserted and then moved: one statement per table
        (both events, RECEIVED then ACCEPTED, still go to the outbox). Returns them as stored.
        """
        accepted = [dataclasses.replace(payment, state=PaymentState.ACCEPTED) for payment, _ in new]
        await uow.payments.add_many(accepted, lease_until=now + self._lease, hold_requested=True)
        validated = ("validate", "succeeded", "")
        await uow.steps.add_many(
            [
                SagaStep(payment.payment_id, step, outcome, detail, trace_id, now)
                for payment, trace_id in new
                for step, outcome, detail in (validated, *_first_calls(payment))
            ]
        )
        await uow.events.add_many(
            [
                change
                for payment, _ in new
                for change in (
                    (payment, None, PaymentState.RECEIVED),
                    (payment, PaymentState.RECEIVED, PaymentState.ACCEPTED),
                )
            ],
            now,
        )
        return accepted

    async def _attempt(self, payment: Payment, step: str, action: Callable[[], Awaitable[object]]) -> MeshError | None:
        """Send one downstream call; None on success, its error (recorded as failed) otherwise."""
        try:
            await action()
        except MeshError as error:
            await self._record(payment, step, "failed", _detail(error))
            return error
        return None

    async def _call(self, payment: Payment, step: str, action: Callable[[], Awaitable[object]]) -> None:
        """Send one downstream call whose "started" row is committed; a failure is recorded at once.

        Transient failures raise Stop (the outcome is unknown: recovery decides later);
        business refusals propagate to the caller, which compensates.
        """
        error = await self._attempt(payment, step, action)
        if error is None:
            return
        if transient(error):
            raise Stop(error.reason) from error
        raise error

    def _points(self, *points: str) -> None:
        for point in points:
            self._failpoint(point)

    # -- forward ---------------------------------------------------------------------------

    async def run(self, payment_id: str, *, hold_started: bool = False, payment: Payment | None = None) -> Payment:
        """Drive a payment this driver owns as far as it goes now; returns it as stored.

        ``hold_started``: the caller already committed ACCEPTED and "hold_funds started"
        (CreatePayment does, in the payment's first transaction), and may pass the ``payment``
        it just wrote instead of having it read again.
        """
        with _saga_span("payment.saga", payment_id):
            try:
                current = payment if payment is not None and hold_started else await self._get(payment_id)
                return await self._forward(current, hold_started=hold_started)
            except Stop:
                return await self._get(payment_id)

    async def _forward(self, payment: Payment, *, hold_started: bool = False) -> Payment:
        if payment.state in (PaymentState.RECEIVED, PaymentState.ACCEPTED):
            if not hold_started:
                started = await self._apply(
                    payment,
                    records=_first_calls(payment),
                    move=([PaymentState.RECEIVED], PaymentState.ACCEPTED),
                    request_hold=True,
                )
                if started is None:  # cancelled meanwhile
                    return await self._get(payment.payment_id)
            if payment.needs_settlement:
                self._points("after_hold_funds_started", "after_reserve_position_started")
                # Independent calls, sent together: each refusal is recorded; any refusal undoes both.
                held, reserved = await asyncio.gather(
                    self._attempt(payment, HOLD, lambda: self._ledger.hold(payment)),
                    self._attempt(payment, RESERVE, lambda: self._positions.reserve(payment)),
                )
                for error in (held, reserved):
                    if error is not None and transient(error):
                        raise Stop(error.reason) from error
                refused = held or reserved
                if refused is not None:
                    return await self._compensate(payment, _reason(refused), refused.message)
                self._points("after_hold_funds", "after_reserve_position")
                done: tuple[tuple[str, str, str], ...] = ((HOLD, "succeeded", ""), (RESERVE, "succeeded", ""))
            else:
                self._points("after_hold_funds_started")
                try:
                    await self._call(payment, HOLD, lambda: self._ledger.hold(payment))
                except MeshError as error:
                    # The ledger refused the hold, so nothing is held.
                    return await self._move(
                        payment, [PaymentState.ACCEPTED], PaymentState.REJECTED, _reason(error), error.message
                    )
                done = ((HOLD, "succeeded", ""), (RESERVE, "succeeded", NOT_APPLICABLE))
            # Nothing is written between the hold and the settlement: the progress rows (and
            # SETTLEMENT_IN_PROCESS with its event) go with the final write, or with a failure.
            # Recovery does not need them: with a hold requested and no post outcome recorded,
            # it asks the ledger whether the hold was posted (recover_one), so a crash anywhere
            # in between rolls forward or back correctly. One transaction fewer per payment.
            progress = (*done, (POST, "started", ""))
            self._points("after_post_funds_started")
            try:
                await self._ledger.post(payment)
            except MeshError as refused:
                await self._apply(
                    payment,
                    records=(*progress, (POST, "failed", _detail(refused))),
                    move=TO_IN_PROCESS,
                )
                if transient(refused):
                    raise Stop(refused.reason) from refused
                return await self._compensate(payment, _reason(refused), refused.message)
            return await self._finish(payment, progress=(*progress, (POST, "succeeded", "")))
        return payment

    async def _finish(self, payment: Payment, *, progress: tuple[tuple[str, str, str], ...] = ()) -> Payment:
        """After the post: commit the obligation and settle (only forward from here).

        ``progress``: the rows of a post just made (from the hold on), not yet written; empty
        when recovery resumes a payment whose hold it found posted.
        """
        just_posted = bool(progress)
        if not payment.needs_settlement:
            stored = await self._apply(
                payment,
                records=(*progress, (COMMIT, "succeeded", NOT_APPLICABLE)),
                move=TO_SETTLED[0],
                then=TO_SETTLED[1],
            )
            assert stored is not None
            self._points("after_post_funds")
            return stored
        if not just_posted:
            await self._apply(payment, records=((COMMIT, "started", ""),))
        # Right after a post the commit is not recorded as started first: a crash here leaves a
        # POSTED hold, and recovery commits on seeing one (one transaction fewer per payment).
        self._points("after_post_funds", "after_commit_obligation_started")
        started: tuple[tuple[str, str, str], ...] = ((COMMIT, "started", ""),) if just_posted else ()
        try:
            await self._positions.commit(payment)
        except MeshError as error:
            # The money moved: never undo. An operator must look; recovery retries the commit.
            log.error("obligation commit refused after post", extra={"payment": payment.payment_id})
            failed = (COMMIT, "failed", _detail(error))
            await self._apply(payment, records=(*progress, *started, failed), move=TO_IN_PROCESS)
            raise Stop(error.reason) from error
        stored = await self._apply(
            payment, records=(*progress, *started, (COMMIT, "succeeded", "")), move=TO_SETTLED[0], then=TO_SETTLED[1]
        )
        assert stored is not None
        return stored

    # -- backward --------------------------------------------------------------------------

    async def _compensate(self, payment: Payment, reason: str, message: str) -> Payment:
        """Void the hold and release the obligation, then REJECTED; a hold found posted rolls forward."""
        await self._record(payment, "void_funds", "started", reason)
        try:
            await self._ledger.void(payment)
        except FailedPrecondition as error:
            if error.reason == "TRANSFER_ALREADY_POSTED":
                await self._record(payment, "void_funds", "failed", "hold already posted: rolling forward")
                return await self._finish(payment)
            await self._record(payment, "void_funds", "failed", _detail(error))
            raise Stop(error.reason) from error
        except MeshError as error:
            await self._record(payment, "void_funds", "failed", _detail(error))
            raise Stop(error.reason) from error
        await self._record(payment, "void_funds", "compensated")
        self._failpoint("after_void_funds")
        if payment.needs_settlement:
            await self._record(payment, "release_obligation", "started")
            try:
                await self._positions.release(payment)
            except MeshError as error:
                await self._record(payment, "release_obligation", "failed", _detail(error))
                raise Stop(error.reason) from error
            await self._record(payment, "release_obligation", "compensated")
        return await self._move(payment, IN_FLIGHT, PaymentState.REJECTED, reason, message)

    # -- recovery --------------------------------------------------------------------------

    async def recover_one(self, payment_id: str) -> Payment | None:
        """Finish or undo one stuck payment, if no live driver owns it; None when skipped."""
        async with self._uow() as uow:
            claimed = await uow.payments.claim(payment_id, self._clock(), self._lease)
            hold_requested = await uow.payments.hold_requested(payment_id)
            await uow.commit()
        if not claimed:
            return None
        with _saga_span("payment.recover", payment_id):
            payment = await self._get(payment_id)
            try:
                if not hold_requested:
                    # No money was ever asked for: simply run the saga from where it is.
                    await self._record(payment, "recover", "started", "no hold sent: running forward")
                    return await self._forward(payment)
                async with self._uow(read_only=True) as uow:
                    steps = await uow.steps.for_payment(payment_id)
                posted = any(s.step == "post_funds" and s.outcome == "succeeded" for s in steps)
                if not posted:
                    posted = await self._ledger.hold_state(payment) == "POSTED"
                if posted:
                    await self._record(payment, "recover", "started", "hold posted: rolling forward")
                    return await self._finish(payment)
                await self._record(payment, "recover", "started", "hold not posted: rolling back")
                reason = _recorded_refusal(steps)
                message = "the payment could not complete and was rolled back"
                return await self._compensate(payment, reason or "SERVICE_UNAVAILABLE", message)
            except Stop:
                return await self._get(payment_id)
            except MeshError as error:
                log.warning("recovery step failed", extra={"payment": payment_id, "reason": error.reason})
                return await self._get(payment_id)

    async def recover(self, *, older_than: dt.timedelta | None = None, batch: int = 200) -> RecoveryResult:
        """One recovery pass over payments whose driver's lease expired (optionally idle ``older_than``)."""
        now = self._clock()
        async with self._uow(read_only=True) as uow:
            ids = await uow.payments.unfinished_with_expired_lease(now, batch)
            if older_than is not None:
                stale = {p.payment_id for p in await uow.payments.stuck(now - older_than, None, batch)}
                ids = [i for i in ids if i in stale]
        result = RecoveryResult()
        for payment_id in ids:
            result.examined += 1
            payment = await self.recover_one(payment_id)
            if payment is None or not payment.state.final:
                result.pending += 1
                record_saga_recovery("pending")
            elif payment.state is PaymentState.SETTLED:
                result.completed += 1
                record_saga_recovery("completed")
            else:
                result.compensated += 1
                record_saga_recovery("compensated")
        return result


TRANSIENT_REASONS = {"SERVICE_UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL_ERROR", "CONCURRENT_MODIFICATION"}


def _record_states(changes: list[tuple[Payment, PaymentState | None, PaymentState]]) -> None:
    """Count the committed state changes in the payments-by-state metric."""
    for _, _, state in changes:
        record_payment_state(state.name)


def _first_calls(payment: Payment) -> tuple[tuple[str, str, str], ...]:
    """The "started" rows of the calls a payment's saga sends first (together)."""
    if payment.needs_settlement:
        return ((HOLD, "started", ""), (RESERVE, "started", ""))
    return ((HOLD, "started", ""),)


def _recorded_refusal(steps: list[SagaStep]) -> str:
    """The reason of the last business refusal recorded before a crash ("" if there was none)."""
    for step in reversed(steps):
        if step.outcome == "failed" and step.step in ("hold_funds", "reserve_position", "post_funds"):
            reason = step.detail.split(":", 1)[0]
            if reason and reason not in TRANSIENT_REASONS:
                return "BENEFICIARY_INVALID" if reason == "RESOURCE_NOT_FOUND" else reason
    return ""


def _detail(error: MeshError) -> str:
    """How a failed downstream call is written in its step row."""
    return f"{error.reason}: {error.message}"


def _reason(error: MeshError) -> str:
    """The payment's status_reason for a downstream refusal."""
    if error.reason == "RESOURCE_NOT_FOUND":
        return "BENEFICIARY_INVALID"
    return error.reason
