"""The payment saga as data: steps, outcomes, plans, and the one rule that says what comes next.

A payment type is a :class:`Plan`: phases of steps (the steps of a phase are sent together),
each step's compensation, the pivot (once it may have happened the payment only goes
forward) and the steps written ahead (recorded durably before their call is sent, because
recovery cannot ask anyone whether they were sent). :func:`next_action` reads a payment and
its recorded steps and answers what happens next; the live run and the recovery loop both
follow it, so what to do after a crash at any step is written here once.

Plain Python: no gRPC, no SQL, no asyncio.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from meshlib.errors import FAULT_REASONS
from services.payment.domain.payments import Payment, PaymentState


class Step(enum.Enum):
    """A step of a payment's saga, as written in its audit trail."""

    VALIDATE = "validate"
    HOLD_FUNDS = "hold_funds"
    RESERVE_POSITION = "reserve_position"
    POST_FUNDS = "post_funds"
    COMMIT_OBLIGATION = "commit_obligation"
    VOID_FUNDS = "void_funds"
    RELEASE_OBLIGATION = "release_obligation"
    # A payment to another bank: the credit transfer sent to the scheme (written ahead: its
    # message id, the payment id, is durable before the call), then the scheme's final answer.
    SUBMIT_TRANSFER = "submit_transfer"
    AWAIT_CLEARING = "await_clearing"
    CANCEL = "cancel"
    RECOVER = "recover"


class Outcome(enum.Enum):
    """What a recorded step says happened."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATED = "compensated"


# Failures that say nothing about the outcome of the call (down, deadline, conflict).
# CLEARING_PENDING: the scheme has the transfer and has not settled it yet (ask again later).
# A peer's UNAVAILABLE reasons (a lost store, a peer of its own away) are transient too.
TRANSIENT_REASONS = (
    frozenset({"DEADLINE_EXCEEDED", "INTERNAL_ERROR", "CONCURRENT_MODIFICATION", "CLEARING_PENDING"}) | FAULT_REASONS
)
CLEARING_PENDING = "CLEARING_PENDING"
ROLLED_BACK_MESSAGE = "the payment could not complete and was rolled back"
# The record each recovery pass starts with (the attempts before the pivot are counted by it).
RESUMING = "resuming after its driver was lost"
# Recovery passes that may send a payment's unanswered steps before the pivot again (each step
# is idempotent by its key); the next one rolls the payment back. 0: roll back at once.
DEFAULT_RESUME_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step outcome; a failure's detail is ``"REASON: message"``."""

    step: Step
    outcome: Outcome
    detail: str = ""

    @classmethod
    def failure(cls, step: Step, reason: str, message: str) -> StepRecord:
        """A failed call, with the reason the peer gave."""
        return cls(step, Outcome.FAILED, f"{reason}: {message}")

    @property
    def reason(self) -> str:
        """The failure's reason ("" unless FAILED)."""
        return self.detail.split(":", 1)[0] if self.outcome is Outcome.FAILED else ""

    @property
    def message(self) -> str:
        """The failure's message."""
        return self.detail.split(": ", 1)[1] if ": " in self.detail else self.detail

    @property
    def refused(self) -> bool:
        """A business refusal: the call was answered, and it did not happen."""
        return self.outcome is Outcome.FAILED and self.reason not in TRANSIENT_REASONS


@dataclass(frozen=True, slots=True)
class RecordedStep:
    """A step record as the audit trail keeps it."""

    payment_id: str
    record: StepRecord
    trace_id: str
    recorded_at: dt.datetime

    @property
    def step(self) -> Step:
        """The step."""
        return self.record.step

    @property
    def outcome(self) -> Outcome:
        """Its outcome."""
        return self.record.outcome

    @property
    def detail(self) -> str:
        """Its detail."""
        return self.record.detail


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """One outbox row: a state change of a payment."""

    seq: int
    payment_id: str
    partner_id: str
    previous_state: PaymentState | None
    state: PaymentState
    status_reason: str
    event_time: dt.datetime


@dataclass(frozen=True)
class Phase:
    """Steps sent together; once all succeed the payment is in ``reaches`` (if set)."""

    steps: tuple[Step, ...]
    reaches: PaymentState | None = None


class PivotProbe(enum.Enum):
    """Who is asked whether the pivot happened when its driver was lost."""

    LEDGER_HOLD = "ledger hold"  # the ledger: was the hold posted?
    SCHEME_STATUS = "scheme status"  # the clearing scheme: the transfer's status (pacs.002)


@dataclass(frozen=True)
class Plan:
    """A payment type's saga: its phases in order, the pivot, compensations, written-ahead steps.

    ``compensations`` are run in their order; ``pivot_evidence`` maps a compensation to the
    refusal reason that proves the pivot happened after all (then the payment goes forward).
    """

    name: str
    phases: tuple[Phase, ...]
    pivot: Step
    compensations: tuple[tuple[Step, Step], ...]
    written_ahead: frozenset[Step]
    pivot_evidence: tuple[tuple[Step, str], ...] = ()
    probe: PivotProbe = PivotProbe.LEDGER_HOLD
    # Derived once (next_action runs several times per payment).
    steps: tuple[Step, ...] = field(init=False)
    before_pivot: tuple[Step, ...] = field(init=False)
    pivot_phase: int = field(init=False)

    def __post_init__(self) -> None:
        steps = tuple(step for phase in self.phases for step in phase.steps)
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "before_pivot", steps[: steps.index(self.pivot) + 1])
        object.__setattr__(
            self, "pivot_phase", next(i for i, phase in enumerate(self.phases) if self.pivot in phase.steps)
        )

    def all_steps(self) -> tuple[Step, ...]:
        """Forward steps and compensations (for failpoint names and the audit trail)."""
        return (*self.steps, *(undo for _, undo in self.compensations))


WALLET_TOP_UP = Plan(
    name="wallet top-up",
    phases=(
        Phase((Step.HOLD_FUNDS, Step.RESERVE_POSITION), reaches=PaymentState.SETTLEMENT_IN_PROCESS),
        Phase((Step.POST_FUNDS,)),
        Phase((Step.COMMIT_OBLIGATION,), reaches=PaymentState.SETTLED),
    ),
    pivot=Step.POST_FUNDS,
    compensations=((Step.HOLD_FUNDS, Step.VOID_FUNDS), (Step.RESERVE_POSITION, Step.RELEASE_OBLIGATION)),
    written_ahead=frozenset({Step.HOLD_FUNDS, Step.RESERVE_POSITION}),
    pivot_evidence=((Step.VOID_FUNDS, "TRANSFER_ALREADY_POSTED"),),
)

IN_BANK_TRANSFER = Plan(
    name="transfer inside the bank",
    phases=(
        Phase((Step.HOLD_FUNDS,), reaches=PaymentState.SETTLEMENT_IN_PROCESS),
        Phase((Step.POST_FUNDS,), reaches=PaymentState.SETTLED),
    ),
    pivot=Step.POST_FUNDS,
    compensations=((Step.HOLD_FUNDS, Step.VOID_FUNDS),),
    written_ahead=frozenset({Step.HOLD_FUNDS}),
    pivot_evidence=((Step.VOID_FUNDS, "TRANSFER_ALREADY_POSTED"),),
)

# A payment to another bank: the money is held and the bank's position against the scheme
# reserved, the transfer goes to the scheme, and the scheme's final answer is the pivot: until
# the scheme settles it the payment can still be undone (the other bank may reject it); once
# settled the hold is posted to the bank's clearing account and the obligation committed.
EXTERNAL_TRANSFER = Plan(
    name="transfer to another bank",
    phases=(
        Phase((Step.HOLD_FUNDS, Step.RESERVE_POSITION)),
        Phase((Step.SUBMIT_TRANSFER,), reaches=PaymentState.SETTLEMENT_IN_PROCESS),
        Phase((Step.AWAIT_CLEARING,)),
        Phase((Step.POST_FUNDS, Step.COMMIT_OBLIGATION), reaches=PaymentState.SETTLED),
    ),
    pivot=Step.AWAIT_CLEARING,
    compensations=((Step.HOLD_FUNDS, Step.VOID_FUNDS), (Step.RESERVE_POSITION, Step.RELEASE_OBLIGATION)),
    written_ahead=frozenset({Step.HOLD_FUNDS, Step.RESERVE_POSITION, Step.SUBMIT_TRANSFER}),
    probe=PivotProbe.SCHEME_STATUS,
)

PLANS = (WALLET_TOP_UP, IN_BANK_TRANSFER, EXTERNAL_TRANSFER)


def plan_for(payment: Payment) -> Plan:
    """A payment to another bank goes through the scheme; a payment crossing to a settlement
    participant settles its obligation, and so does one with a fee (the wallet owes the bank the
    fee); one inside the bank without a fee settles nothing."""
    if payment.is_external:
        return EXTERNAL_TRANSFER
    return WALLET_TOP_UP if payment.needs_settlement or payment.has_fee else IN_BANK_TRANSFER


def failpoint_names() -> frozenset[str]:
    """Every crash-test point: ``after_<step>_started`` (recorded, not sent) and ``after_<step>``."""
    steps = {step for plan in PLANS for step in plan.all_steps()}
    return frozenset(name for step in steps for name in (f"after_{step.value}_started", f"after_{step.value}"))


@dataclass(frozen=True)
class History:
    """A payment's step records, oldest first (each step's last record is what counts)."""

    records: tuple[StepRecord, ...] = ()
    _last: dict[Step, StepRecord] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for record in self.records:
            self._last[record.step] = record

    def plus(self, records: Iterable[StepRecord]) -> History:
        """This history with more records."""
        added = tuple(records)
        longer = History.__new__(History)
        object.__setattr__(longer, "records", (*self.records, *added))
        last = dict(self._last)
        for record in added:
            last[record.step] = record
        object.__setattr__(longer, "_last", last)
        return longer

    def last(self, step: Step) -> StepRecord | None:
        """The step's latest record."""
        return self._last.get(step)

    def outcome(self, step: Step) -> Outcome | None:
        """The step's latest outcome."""
        record = self._last.get(step)
        return record.outcome if record else None


# -- what happens next ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunPhase:
    """Send these steps of a phase together (the ones not done yet)."""

    steps: tuple[Step, ...]
    # The first money of the payment is asked for: the payment goes to ACCEPTED, guarded
    # against a cancel (which is possible only until then).
    requests_funds: bool = False
    # The state the steps done so far reached, if the payment is not in it yet: it moves
    # there before the phase is sent.
    reached: PaymentState | None = None


@dataclass(frozen=True)
class Advance:
    """The recorded steps put the payment in ``state``; move it there."""

    state: PaymentState


@dataclass(frozen=True)
class ProbePivot:
    """Whether the pivot happened is unknown (a driver was lost after money was asked for): ask."""

    step: Step


@dataclass(frozen=True)
class ProbeAnswer:
    """What the probe of a pivot found: the records it adds to the history, and whether the pivot
    happened (True: forward; False: undo; None: not yet known, ask again later).
    ``resubmit``: the scheme never received the transfer, send it again (same message id).
    ``resumable``: the pivot did not happen and nothing it needs is gone (the hold is pending or
    was never made), so the steps before it may be sent again instead of undone."""

    records: tuple[StepRecord, ...] = ()
    happened: bool | None = None
    resubmit: bool = False
    resumable: bool = False


def read_hold(state: str | None) -> ProbeAnswer:
    """The pivot's probe answered by the ledger's state of the payment's hold: posted, forward;
    pending or never made, not happened and resumable; voided or expired, not happened (a hold
    that expired cannot be posted, and making it again would ask for the money a second time)."""
    if state == "POSTED":
        return ProbeAnswer(happened=True)
    return ProbeAnswer(happened=False, resumable=state in (None, "PENDING"))


def resumptions(history: History) -> int:
    """How many recovery passes took the payment up (each records :data:`RESUMING` first)."""
    return sum(1 for record in history.records if record.step is Step.RECOVER and record.detail == RESUMING)


def may_resume(answer: ProbeAnswer, history: History, attempts: int) -> bool:
    """Whether recovery sends the steps before the pivot again rather than rolling the payment
    back: the probe found them resumable, and this pass is within ``attempts`` passes."""
    return answer.happened is False and answer.resumable and resumptions(history) <= attempts


@dataclass(frozen=True)
class Compensate:
    """Undo ``of`` with the step ``undo``."""

    undo: Step
    of: Step


@dataclass(frozen=True)
class Reject:
    """Everything is undone: the payment ends REJECTED."""

    reason: str
    message: str


@dataclass(frozen=True)
class Wait:
    """A call failed without an answer; only the recovery loop goes on from here."""

    reason: str


@dataclass(frozen=True)
class Done:
    """The payment is final."""


Action = RunPhase | Advance | ProbePivot | Compensate | Reject | Wait | Done

ORDER = (
    PaymentState.RECEIVED,
    PaymentState.ACCEPTED,
    PaymentState.SETTLEMENT_IN_PROCESS,
    PaymentState.SETTLED,
)


def path_to(current: PaymentState, target: PaymentState) -> tuple[PaymentState, ...]:
    """The states a payment in flight passes through to reach ``target`` (each a legal move)."""
    return ORDER[ORDER.index(current) + 1 : ORDER.index(target) + 1]


def next_action(
    payment: Payment,
    history: History,
    *,
    resumed: bool = False,
    pivot_happened: bool | None = None,
    resume: bool = False,
) -> Action:
    """What happens next to ``payment`` given its ``history``.

    ``resumed``: the history is what the journal kept after its driver was lost, so a step
    that is not written ahead may have been sent without a record, and a step recorded as
    started may or may not have happened. ``pivot_happened``: the answer of a
    :class:`ProbePivot`, once asked. ``resume`` (with ``pivot_happened`` False): the steps up
    to the pivot that are not known done are sent again (:func:`may_resume`), not undone.
    """
    if payment.state.final:
        return Done()
    if payment.state is PaymentState.SCHEDULED:
        return Wait("scheduled")  # the scheduler, not the saga, takes it on at its time
    if payment.state.waiting:
        return Wait("awaiting the customer or an operator")  # their decision starts the saga
    plan = plan_for(payment)
    if pivot_happened is True or _pivot_evidence(plan, history):
        return _forward(plan, payment, history, after_pivot=True)
    if _compensating(plan, history):
        return _compensate(plan, history)
    if resumed and any(history.outcome(step) is not None for step in plan.steps):
        if pivot_happened is None:
            return ProbePivot(plan.pivot)
        if resume:  # every step is idempotent by its key: what may have happened happens once
            return _forward(plan, payment, history, after_pivot=False, resend=True)
        return _compensate(plan, history)  # the pivot did not happen: undo what may have
    return _forward(plan, payment, history, after_pivot=False)


def _pivot_evidence(plan: Plan, history: History) -> bool:
    if history.outcome(plan.pivot) is Outcome.SUCCEEDED:
        return True
    return any(
        (record := history.last(step)) is not None and record.reason == reason for step, reason in plan.pivot_evidence
    )


def _compensating(plan: Plan, history: History) -> bool:
    """A step up to the pivot was refused, or an undo has begun."""
    refused = any((record := history.last(step)) is not None and record.refused for step in plan.before_pivot)
    return refused or any(history.outcome(undo) is not None for _, undo in plan.compensations)


def _forward(plan: Plan, payment: Payment, history: History, *, after_pivot: bool, resend: bool = False) -> Action:
    """The next forward move: the first phase with steps not done, or the state they reached.

    Past the pivot, everything before it is known done (the pivot needs it) and a failed
    step is sent again; before it, a failure without an answer waits for recovery, which
    sends it again (``resend``) or rolls the payment back.
    """
    at = ORDER.index(payment.state)
    reached: PaymentState | None = None
    for index, phase in enumerate(plan.phases):
        done_by_pivot = after_pivot and index <= plan.pivot_phase
        pending = () if done_by_pivot else tuple(s for s in phase.steps if history.outcome(s) is not Outcome.SUCCEEDED)
        if pending:
            unanswered = [s for s in pending if history.outcome(s) is Outcome.FAILED]
            if unanswered and not after_pivot and not resend:
                if reached is not None:
                    return Advance(reached)  # e.g. the scheme has the transfer, not settled yet
                return Wait(_last_reason(history, tuple(unanswered)))
            first = not any(history.outcome(step) is not None for step in plan.steps)
            return RunPhase(pending, requests_funds=first, reached=reached)
        if phase.reaches is not None and at < ORDER.index(phase.reaches):
            reached = phase.reaches
    return Advance(reached) if reached is not None else Done()


def _last_reason(history: History, steps: tuple[Step, ...]) -> str:
    for step in steps:
        record = history.last(step)
        if record is not None and record.outcome is Outcome.FAILED:
            return record.reason
    return "SERVICE_UNAVAILABLE"


def _compensate(plan: Plan, history: History) -> Action:
    for step, undo in plan.compensations:
        record = history.last(step)
        if record is None or record.refused:
            continue  # never sent, or answered "no": nothing to undo
        if history.outcome(undo) is not Outcome.COMPENSATED:
            return Compensate(undo, step)
    reason, message = rejection(plan, history)
    return Reject(reason, message)


def rejection(plan: Plan, history: History) -> tuple[str, str]:
    """Why a rolled-back payment is REJECTED: the first refusal up to the pivot, else unavailable."""
    for step in plan.before_pivot:
        record = history.last(step)
        if record is not None and record.refused:
            reason = "BENEFICIARY_INVALID" if record.reason == "RESOURCE_NOT_FOUND" else record.reason
            return reason, record.message
    return "SERVICE_UNAVAILABLE", ROLLED_BACK_MESSAGE


def opening(plan: Plan) -> tuple[StepRecord, ...]:
    """The records a new payment is stored with: validated, its first phase started."""
    return (
        StepRecord(Step.VALIDATE, Outcome.SUCCEEDED),
        *(StepRecord(s, Outcome.STARTED) for s in plan.phases[0].steps),
    )
