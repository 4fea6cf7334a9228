"""Running the saga: follow the payment's plan (``domain.saga.next_action``) through the ports.

One runner for the live run (CreatePayment) and for recovery (``resumed``): the plan says
what comes next, the runner sends the calls, records their outcomes in the journal and moves
the payment. A step written ahead is recorded durably before its call; the other records
and state changes go with the next durable write (a failure, a compensation, a final state),
so a settled payment costs one journal write after the one that created it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from meshlib.errors import MeshError, Unavailable
from meshlib.telemetry import internal_span, tracing_enabled
from services.payment.domain.clearing import never_sent, poll_delay, read_hold_before_submit
from services.payment.domain.payments import Payment, PaymentState
from services.payment.domain.saga import (
    CLEARING_PENDING,
    DEFAULT_RESUME_ATTEMPTS,
    RESUMING,
    Advance,
    Compensate,
    Done,
    History,
    Outcome,
    PivotProbe,
    ProbeAnswer,
    ProbePivot,
    Reject,
    RunPhase,
    Step,
    StepRecord,
    Wait,
    failpoint_names,
    may_resume,
    next_action,
    path_to,
    plan_for,
    read_hold,
    rejection,
)
from services.payment.domain.schedules import SCHEDULER_FAILPOINTS
from services.payment.ports import Clock, JournalEntry, Ledger, Move, PaymentJournal, Positions, utc_now
from services.payment.scheme_steps import SchemeSteps

log = logging.getLogger("services.payment.saga")

_trace_id: ContextVar[str] = ContextVar("payment_saga_trace_id", default="")
Failpoint = Callable[[str], None]


def current_trace_id() -> str:
    """The trace id of the saga run or call in progress (32 hex characters)."""
    return _trace_id.get() or "0" * 32


@contextmanager
def traced(name: str, payment_id: str) -> Iterator[None]:
    """A span around one saga run; its trace id goes into every step it records."""
    if not tracing_enabled():
        # No span without an exporter (no-op spans cost ~3% of the service's CPU under load);
        # a random id (the enclosing run's, if any) still correlates the steps of one run.
        token = _trace_id.set(_trace_id.get() or secrets.token_hex(16))
        try:
            yield
        finally:
            _trace_id.reset(token)
        return
    # A refused payment is no error and leaves no stack trace on the span (a bug does).
    with internal_span("services.payment", name, {"payment.id": payment_id}) as span:
        context = span.get_span_context()
        token = _trace_id.set(f"{context.trace_id:032x}" if context.is_valid else secrets.token_hex(16))
        try:
            yield
        finally:
            _trace_id.reset(token)


def exit_at_failpoint(configured: str | None) -> Failpoint:
    """Crash testing: a hook that kills the process abruptly at the configured point.

    The name must be one of the plans' points (``after_<step>_started``, ``after_<step>``).
    """
    known = failpoint_names() | SCHEDULER_FAILPOINTS
    if configured and configured not in known:
        raise ValueError(f"unknown failpoint {configured!r}; known: {', '.join(sorted(known))}")

    def hook(point: str) -> None:
        if configured == point:
            log.warning("failpoint reached, exiting", extra={"failpoint": point})
            os._exit(137)

    return hook


class SagaRunner:
    """Drives payments along their plans, forward or back."""

    def __init__(
        self,
        journal: PaymentJournal,
        ledger: Ledger,
        positions: Positions,
        *,
        failpoint: Failpoint = lambda point: None,
        clock: Clock = utc_now,
        scheme: SchemeSteps | None = None,
        clearing_poll: dt.timedelta = dt.timedelta(seconds=5),
        resume_attempts: int = DEFAULT_RESUME_ATTEMPTS,
    ) -> None:
        self._journal = journal
        self.resume_attempts = resume_attempts
        self._failpoint = failpoint
        self._clock = clock
        self._ledger = ledger
        self._scheme = scheme
        self.clearing_poll = clearing_poll
        self._calls: dict[Step, Callable[[Payment], Awaitable[object]]] = {
            Step.HOLD_FUNDS: ledger.hold,
            Step.RESERVE_POSITION: positions.reserve,
            Step.POST_FUNDS: ledger.post,
            Step.COMMIT_OBLIGATION: positions.commit,
            Step.VOID_FUNDS: ledger.void,
            Step.RELEASE_OBLIGATION: positions.release,
            Step.SUBMIT_TRANSFER: lambda payment: self.scheme.submit(payment),
            Step.AWAIT_CLEARING: lambda payment: self.scheme.await_clearing(payment),
        }

    def require_scheme(self) -> None:
        """UNAVAILABLE when payments to other banks are not configured."""
        _ = self.scheme

    @property
    def scheme(self) -> SchemeSteps:
        """The clearing scheme's steps; UNAVAILABLE when payments to other banks are not configured."""
        if self._scheme is None:
            raise Unavailable("payments to other banks are not configured")
        return self._scheme

    async def drive(self, payment: Payment, history: History, *, resumed: bool = False) -> Payment:
        """Take the payment as far as it goes now; returns it as stored.

        ``resumed``: its previous driver was lost and ``history`` is what the journal kept.
        The caller runs it in a :func:`traced` span (the steps it records carry its trace id).
        """
        return await _Run(self, payment, history, resumed).go()

    async def probe_pivot(self, payment: Payment, history: History) -> ProbeAnswer:
        """Whether the pivot happened, asked of whoever knows by the plan: the ledger (was the hold
        posted?) or the clearing scheme (the transfer's status)."""
        if plan_for(payment).probe is PivotProbe.SCHEME_STATUS:
            if never_sent(history):  # nothing reached the scheme: the hold says whether to resume
                return read_hold_before_submit(await self._ledger.hold_state(payment))
            return await self.scheme.probe(payment, history)
        return read_hold(await self._ledger.hold_state(payment))

    async def call(self, step: Step, payment: Payment) -> MeshError | None:
        """Send the step's call; None when it succeeded, the peer's error otherwise."""
        try:
            await self._calls[step](payment)
        except MeshError as error:
            return error
        return None

    def failpoint(self, point: str) -> None:
        """Crash testing hook."""
        self._failpoint(point)

    def now(self) -> dt.datetime:
        """The runner's clock."""
        return self._clock()

    @property
    def journal(self) -> PaymentJournal:
        """Where progress is written."""
        return self._journal


class _Run:
    """One drive of one payment: its history so far, and what is not written yet."""

    def __init__(self, runner: SagaRunner, payment: Payment, history: History, resumed: bool) -> None:
        self._runner = runner
        self._payment = payment
        self._history = history
        self._resumed = resumed
        self._pivot_happened: bool | None = None
        self._resume = False  # the steps before the pivot are sent again, not undone
        self._park = False  # waiting for the scheme: ask it again after the poll interval
        self._records: list[StepRecord] = []
        self._moves: list[Move] = []

    async def go(self) -> Payment:
        if self._resumed:
            self._note(StepRecord(Step.RECOVER, Outcome.STARTED, RESUMING))
        while True:
            action = next_action(
                self._payment,
                self._history,
                resumed=self._resumed,
                pivot_happened=self._pivot_happened,
                resume=self._resume,
            )
            if not isinstance(action, ProbePivot):
                self._resumed = False  # from here on the history is this run's own, complete
            match action:
                case RunPhase():
                    if not await self._run_phase(action):
                        return await self._stop()
                case Advance(state=state):
                    self._advance(state)
                    if state.final:
                        return await self._flush()
                case ProbePivot():
                    try:
                        answer = await self._runner.probe_pivot(self._payment, self._history)
                    except MeshError:
                        return await self._flush()
                    if not await self._probed(answer):
                        return await self._flush()
                case Compensate(undo=undo):
                    if not await self._compensate(undo):
                        return await self._flush()
                case Reject(reason=reason, message=message):
                    self._move(PaymentState.REJECTED, reason, message)
                case Wait(reason=reason):
                    self._park = self._park or reason == CLEARING_PENDING
                    return await self._stop()
                case Done():
                    return await self._flush()

    async def _probed(self, answer: ProbeAnswer) -> bool:
        """Take in the probe's answer; False when the payment waits (the scheme has not decided)."""
        self._note(*answer.records)
        if answer.resubmit or answer.happened is None:
            # The history is complete again: a resubmission is the plan's next forward step;
            # a transfer still in settlement moves to the state it reached and waits.
            self._resumed = False
            if answer.resubmit:
                await self._flush()  # the resend is written ahead, like the first send
            else:
                self._park = True
            return True
        self._pivot_happened = answer.happened
        self._resume = may_resume(answer, self._history, self._runner.resume_attempts)
        if answer.happened:
            forward = "rolling forward"
        elif self._resume:
            forward = "sending the steps before the pivot again"
        else:
            forward = "rolling back"
        self._note(StepRecord(Step.RECOVER, Outcome.STARTED, f"{plan_for(self._payment).probe.value}: {forward}"))
        if self._resume:
            await self._flush()  # the attempt counts before anything is sent (a crash may follow)
        return True

    async def _run_phase(self, action: RunPhase) -> bool:
        """Send a phase's steps together; False when the run cannot go on (a failure without a
        business answer, or after the pivot: recovery goes on later)."""
        plan = plan_for(self._payment)
        if action.reached is not None:
            self._advance(action.reached)
        starts = [
            StepRecord(s, Outcome.STARTED) for s in action.steps if self._history.outcome(s) is not Outcome.STARTED
        ]
        if action.requests_funds:
            self._move(PaymentState.ACCEPTED)
            self._note(*starts)
            if not await self._request_funds():
                return False  # cancelled first
        else:
            self._note(*starts)
            if any(record.step in plan.written_ahead for record in starts):
                await self._flush()
        for step in action.steps:
            self._runner.failpoint(f"after_{step.value}_started")
        payment = self._payment
        if len(action.steps) == 1:
            errors: list[MeshError | None] = [await self._runner.call(action.steps[0], payment)]
        else:
            errors = await asyncio.gather(*(self._runner.call(step, payment) for step in action.steps))
        outcomes = [
            StepRecord(step, Outcome.SUCCEEDED)
            if error is None
            else StepRecord.failure(step, error.reason, error.message)
            for step, error in zip(action.steps, errors, strict=True)
        ]
        self._note(*outcomes)
        failed = [record for record in outcomes if record.outcome is Outcome.FAILED]
        # The scheme did not answer, or has not settled yet: the status poller asks it soon.
        self._park = any(record.step in (Step.SUBMIT_TRANSFER, Step.AWAIT_CLEARING) for record in failed)
        if not failed:
            for step in action.steps:
                self._runner.failpoint(f"after_{step.value}")
            return True
        await self._flush()
        if any(record.step not in plan.before_pivot for record in failed):
            # The money moved: never undone. Recovery sends the step again; an operator may look.
            log.error("a step after the post failed", extra={"payment": payment.payment_id})
            return False
        # A business refusal is compensated now; an unanswered call is left to recovery.
        return any(record.refused for record in failed)

    async def _compensate(self, undo: Step) -> bool:
        """Run one compensation; False when it could not be done now."""
        reason, _ = rejection(plan_for(self._payment), self._history)
        self._note(StepRecord(undo, Outcome.STARTED, reason))
        await self._flush()
        error = await self._runner.call(undo, self._payment)
        if error is not None:
            self._note(StepRecord.failure(undo, error.reason, error.message))
            await self._flush()
            # A compensation refused because the pivot happened after all: the plan goes forward.
            return any(error.reason == why for step, why in plan_for(self._payment).pivot_evidence if step is undo)
        self._note(StepRecord(undo, Outcome.COMPENSATED))
        await self._flush()
        self._runner.failpoint(f"after_{undo.value}")
        return True

    async def _stop(self) -> Payment:
        """Write what is not written yet; a payment waiting for the scheme is asked again after
        the poll interval, not the driver's whole lease."""
        stored = await self._flush()
        if self._park and not stored.state.final:
            await self._runner.journal.park(stored.payment_id, poll_delay(self._history, self._runner.clearing_poll))
        return stored

    def _note(self, *records: StepRecord) -> None:
        if not records:
            return
        self._records.extend(records)
        self._history = self._history.plus(records)

    def _advance(self, target: PaymentState) -> None:
        for state in path_to(self._payment.state, target):
            self._move(state)

    def _move(self, state: PaymentState, reason: str = "", message: str = "") -> None:
        self._moves.append(Move(self._payment.state, state, reason, message))
        self._payment = self._payment.moved(state, self._runner.now(), reason, message)

    def _entry(self) -> JournalEntry:
        entry = JournalEntry(self._payment.payment_id, tuple(self._records), tuple(self._moves), current_trace_id())
        self._records, self._moves = [], []
        return entry

    async def _flush(self) -> Payment:
        """Write what is not written yet; the payment as stored."""
        if self._records or self._moves:
            self._payment = await self._runner.journal.record(self._entry())
        return self._payment

    async def _request_funds(self) -> bool:
        """Write the first money's start, guarded against a cancel; False when the cancel won."""
        stored = await self._runner.journal.request_funds(self._entry())
        if stored is None:
            self._payment, self._history = await self._runner.journal.load(self._payment.payment_id)
            return False
        self._payment = stored
        return True
