"""The payment plan as data: what ``next_action`` answers for each state and step outcome."""

from __future__ import annotations

import itertools

import pytest

from meshlib.money import Amount
from services.payment.domain.payments import IllegalTransition, Payment, PaymentState
from services.payment.domain.saga import (
    IN_BANK_TRANSFER,
    RESUMING,
    WALLET_TOP_UP,
    Advance,
    Compensate,
    Done,
    History,
    Outcome,
    Plan,
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
    opening,
    path_to,
    plan_for,
    read_hold,
)
from tests.unit.payment.fakes import NOW

S = Step
ACC, SIP, SET = PaymentState.ACCEPTED, PaymentState.SETTLEMENT_IN_PROCESS, PaymentState.SETTLED


def payment(state: PaymentState = ACC, *, top_up: bool = True) -> Payment:
    return Payment(
        payment_id="p1",
        partner_id="w1",
        consent_id="c1",
        debtor_account_id="a1",
        creditor_account_id=None if top_up else "a2",
        creditor_wallet_partner_id="w1" if top_up else None,
        amount=Amount("EUR", 500),
        payment_type="WALLET_TOP_UP" if top_up else "TRANSFER",
        state=state,
        created_at=NOW,
        updated_at=NOW,
        creditor_ledger_account_id="wa" if top_up else "a2",
        payer_participant_id="bank" if top_up else "",
        payee_participant_id="wallet" if top_up else "",
    )


def ok(step: Step) -> StepRecord:
    return StepRecord(step, Outcome.SUCCEEDED)


def started(step: Step) -> StepRecord:
    return StepRecord(step, Outcome.STARTED)


def refused(step: Step, reason: str = "INSUFFICIENT_FUNDS") -> StepRecord:
    return StepRecord.failure(step, reason, "no")


def lost(step: Step) -> StepRecord:
    return StepRecord.failure(step, "SERVICE_UNAVAILABLE", "down")


def history(*records: StepRecord) -> History:
    return History((StepRecord(S.VALIDATE, Outcome.SUCCEEDED), *records))


HOLD, RESERVE, POST, COMMIT = S.HOLD_FUNDS, S.RESERVE_POSITION, S.POST_FUNDS, S.COMMIT_OBLIGATION
VOID, RELEASE = S.VOID_FUNDS, S.RELEASE_OBLIGATION

# (case, top-up?, state, records, resumed, pivot_happened, expected action)
CASES = [
    ("new payment: ask for the money", True, PaymentState.RECEIVED, (), False, None, RunPhase((HOLD, RESERVE), True)),
    (
        "opened: send hold and reserve",
        True,
        ACC,
        (started(HOLD), started(RESERVE)),
        False,
        None,
        RunPhase((HOLD, RESERVE)),
    ),
    ("hold and reserve done: post", True, ACC, (ok(HOLD), ok(RESERVE)), False, None, RunPhase((POST,), reached=SIP)),
    ("in process: post", True, SIP, (ok(HOLD), ok(RESERVE)), False, None, RunPhase((POST,))),
    ("posted: commit", True, SIP, (ok(HOLD), ok(RESERVE), ok(POST)), False, None, RunPhase((COMMIT,))),
    ("committed: settled", True, SIP, (ok(HOLD), ok(RESERVE), ok(POST), ok(COMMIT)), False, None, Advance(SET)),
    ("settled", True, SET, (ok(HOLD), ok(RESERVE), ok(POST), ok(COMMIT)), False, None, Done()),
    ("hold refused: release", True, ACC, (refused(HOLD), ok(RESERVE)), False, None, Compensate(RELEASE, RESERVE)),
    (
        "reserve refused: void",
        True,
        ACC,
        (ok(HOLD), refused(RESERVE, "NET_DEBIT_CAP_EXCEEDED")),
        False,
        None,
        Compensate(VOID, HOLD),
    ),
    (
        "both refused: reject at once",
        True,
        ACC,
        (refused(HOLD), refused(RESERVE, "NET_DEBIT_CAP_EXCEEDED")),
        False,
        None,
        Reject("INSUFFICIENT_FUNDS", "no"),
    ),
    (
        "voided: release next",
        True,
        ACC,
        (ok(HOLD), refused(RESERVE), started(VOID), StepRecord(VOID, Outcome.COMPENSATED)),
        False,
        None,
        Reject("INSUFFICIENT_FUNDS", "no"),
    ),
    (
        "post refused: undo both",
        True,
        SIP,
        (ok(HOLD), ok(RESERVE), refused(POST, "TRANSFER_EXPIRED")),
        False,
        None,
        Compensate(VOID, HOLD),
    ),
    (
        "void found the hold posted: forward",
        True,
        SIP,
        (ok(HOLD), ok(RESERVE), lost(POST), refused(VOID, "TRANSFER_ALREADY_POSTED")),
        False,
        None,
        RunPhase((COMMIT,)),
    ),
    ("hold lost live: wait", True, ACC, (lost(HOLD), ok(RESERVE)), False, None, Wait("SERVICE_UNAVAILABLE")),
    (
        "commit lost live: send again",
        True,
        SIP,
        (ok(HOLD), ok(RESERVE), ok(POST), lost(COMMIT)),
        False,
        None,
        RunPhase((COMMIT,)),
    ),
    ("resumed after opening: probe", True, ACC, (started(HOLD), started(RESERVE)), True, None, ProbePivot(POST)),
    ("resumed, not posted: void", True, ACC, (started(HOLD), started(RESERVE)), True, False, Compensate(VOID, HOLD)),
    (
        "resumed, posted: commit",
        True,
        ACC,
        (started(HOLD), started(RESERVE)),
        True,
        True,
        RunPhase((COMMIT,), reached=SIP),
    ),
    (
        "resumed posted, in process: commit",
        True,
        SIP,
        (started(HOLD), started(RESERVE)),
        True,
        True,
        RunPhase((COMMIT,)),
    ),
    ("resumed after post: commit", True, SIP, (ok(HOLD), ok(RESERVE), ok(POST)), True, None, RunPhase((COMMIT,))),
    (
        "resumed, nothing sent: ask for the money",
        True,
        PaymentState.RECEIVED,
        (),
        True,
        None,
        RunPhase((HOLD, RESERVE), True),
    ),
    (
        "resumed mid-compensation: go on",
        True,
        SIP,
        (ok(HOLD), ok(RESERVE), refused(POST, "TRANSFER_EXPIRED"), started(VOID)),
        True,
        None,
        Compensate(VOID, HOLD),
    ),
    (
        "undone after a lost driver: unavailable",
        True,
        ACC,
        (
            started(HOLD),
            started(RESERVE),
            StepRecord(VOID, Outcome.COMPENSATED),
            StepRecord(RELEASE, Outcome.COMPENSATED),
        ),
        True,
        False,
        Reject("SERVICE_UNAVAILABLE", "the payment could not complete and was rolled back"),
    ),
    ("in bank: opened, send the hold", False, ACC, (started(HOLD),), False, None, RunPhase((HOLD,))),
    ("in bank: held, post", False, ACC, (ok(HOLD),), False, None, RunPhase((POST,), reached=SIP)),
    ("in bank: post", False, SIP, (ok(HOLD),), False, None, RunPhase((POST,))),
    ("in bank: posted, settled", False, SIP, (ok(HOLD), ok(POST)), False, None, Advance(SET)),
    ("in bank: hold refused, reject", False, ACC, (refused(HOLD),), False, None, Reject("INSUFFICIENT_FUNDS", "no")),
    (
        "in bank: creditor missing, beneficiary invalid",
        False,
        ACC,
        (refused(HOLD, "RESOURCE_NOT_FOUND"),),
        False,
        None,
        Reject("BENEFICIARY_INVALID", "no"),
    ),
    ("in bank: resumed posted", False, ACC, (started(HOLD),), True, True, Advance(SET)),
]


@pytest.mark.parametrize(
    ("top_up", "state", "records", "resumed", "pivot", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_next_action(top_up, state, records, resumed, pivot, expected) -> None:  # type: ignore[no-untyped-def]
    action = next_action(payment(state, top_up=top_up), history(*records), resumed=resumed, pivot_happened=pivot)
    assert action == expected


OUTCOMES = [None, "started", "succeeded", "refused", "lost", "compensated"]


def _record(step: Step, outcome: str) -> StepRecord | None:
    return {
        None: None,
        "started": started(step),
        "succeeded": ok(step),
        "refused": refused(step),
        "lost": lost(step),
        "compensated": StepRecord(step, Outcome.COMPENSATED),
    }[outcome]


@pytest.mark.parametrize("plan", [WALLET_TOP_UP, IN_BANK_TRANSFER], ids=lambda plan: plan.name)
@pytest.mark.parametrize("state", list(PaymentState), ids=lambda state: state.name)
@pytest.mark.parametrize("resumed", [False, True])
@pytest.mark.parametrize("resume", [False, True])
def test_every_state_and_step_outcome_gets_a_sound_answer(
    plan: Plan, state: PaymentState, resumed: bool, resume: bool
) -> None:
    """For every (state, step, outcome), with the steps before it done: an answer that never undoes
    a posted payment, never runs a step twice live, and a final payment is left alone."""
    top_up = plan is WALLET_TOP_UP
    steps = [*plan.steps, *(undo for _, undo in plan.compensations)]
    for index, step in enumerate(steps):
        for outcome in OUTCOMES:
            before = [ok(s) for s in plan.steps[: min(index, len(plan.steps))]]
            record = _record(step, outcome)
            records = (*before, *([record] if record else []))
            hist = history(*records)
            for pivot in (None, True, False):
                action = next_action(
                    payment(state, top_up=top_up), hist, resumed=resumed, pivot_happened=pivot, resume=resume
                )
                if state.final:
                    assert action == Done()
                    continue
                if state is PaymentState.SCHEDULED:
                    assert action == Wait("scheduled")  # nothing runs before its time
                    continue
                posted = hist.outcome(plan.pivot) is Outcome.SUCCEEDED or pivot is True
                if posted:
                    assert not isinstance(action, Compensate | Reject | ProbePivot), (step, outcome, action)
                if isinstance(action, RunPhase):
                    assert all(hist.outcome(s) is not Outcome.SUCCEEDED for s in action.steps)
                    if posted:
                        assert plan.pivot not in action.steps
                if isinstance(action, ProbePivot):
                    assert resumed and pivot is None
                carried = resume and resumed and pivot is False and not state.waiting
                if carried and not any(r.refused for r in hist.records):
                    # carried forward: nothing is undone, what is not known done is sent again
                    undoing = any(hist.outcome(undo) is not None for _, undo in plan.compensations)
                    assert undoing or not isinstance(action, Compensate | Reject | Wait), (step, outcome, action)
                if isinstance(action, Advance):
                    assert action.state in (SIP, SET)
                for target in [a for a in (getattr(action, "state", None), getattr(action, "reached", None)) if a]:
                    if not isinstance(action, Reject):
                        # every state on the way is a legal move
                        current = payment(state, top_up=top_up)
                        for step_state in path_to(current.state, target):
                            current = current.moved(step_state, NOW)


# A driver lost before the pivot, the probe found the hold pending or missing, the resume allowed.
RESUMED_CASES = [
    ("opened: hold and reserve again", True, ACC, (started(HOLD), started(RESERVE)), RunPhase((HOLD, RESERVE))),
    ("hold lost: send it again", True, ACC, (lost(HOLD), ok(RESERVE)), RunPhase((HOLD,))),
    ("reserve lost: send it again", True, ACC, (ok(HOLD), lost(RESERVE)), RunPhase((RESERVE,))),
    ("both lost: both again", True, ACC, (lost(HOLD), lost(RESERVE)), RunPhase((HOLD, RESERVE))),
    ("post lost: post", True, SIP, (ok(HOLD), ok(RESERVE), lost(POST)), RunPhase((POST,))),
    (
        "post lost before the move was written: post",
        True,
        ACC,
        (ok(HOLD), ok(RESERVE), started(POST)),
        RunPhase((POST,), reached=SIP),
    ),
    ("a refusal is still undone", True, ACC, (ok(HOLD), refused(RESERVE)), Compensate(VOID, HOLD)),
    (
        "an undo begun is finished",
        True,
        ACC,
        (started(HOLD), started(RESERVE), started(VOID)),
        Compensate(VOID, HOLD),
    ),
    ("in bank: hold again", False, ACC, (started(HOLD),), RunPhase((HOLD,))),
    ("in bank: post lost, post", False, SIP, (ok(HOLD), lost(POST)), RunPhase((POST,))),
]


@pytest.mark.parametrize(
    ("top_up", "state", "records", "expected"),
    [case[1:] for case in RESUMED_CASES],
    ids=[case[0] for case in RESUMED_CASES],
)
def test_a_resumed_payment_before_the_pivot_is_carried_forward(top_up, state, records, expected) -> None:  # type: ignore[no-untyped-def]
    action = next_action(
        payment(state, top_up=top_up), history(*records), resumed=True, pivot_happened=False, resume=True
    )
    assert action == expected
    # Without leave to resume (the bound passed, the hold gone) the same payment is rolled back.
    held = next_action(payment(state, top_up=top_up), history(*records), resumed=True, pivot_happened=False)
    assert isinstance(held, Compensate | Reject)


def test_the_ledger_hold_says_whether_the_steps_before_the_pivot_may_be_sent_again() -> None:
    assert read_hold("POSTED") == ProbeAnswer(happened=True)
    assert read_hold("PENDING") == ProbeAnswer(happened=False, resumable=True)
    assert read_hold(None) == ProbeAnswer(happened=False, resumable=True)  # never made: make it
    assert read_hold("EXPIRED") == ProbeAnswer(happened=False)  # cannot be posted any more
    assert read_hold("VOIDED") == ProbeAnswer(happened=False)


def test_recovery_resumes_a_payment_on_a_bounded_number_of_passes() -> None:
    passes = [StepRecord(S.RECOVER, Outcome.STARTED, RESUMING)]
    pending = read_hold("PENDING")
    for count in range(1, 4):
        assert may_resume(pending, history(*passes * count), 3), count
    assert not may_resume(pending, history(*passes * 4), 3)
    assert not may_resume(pending, history(*passes), 0)
    assert not may_resume(read_hold("EXPIRED"), history(*passes), 3)
    assert not may_resume(read_hold("POSTED"), history(*passes), 3)
    # Other recovery records (the probe's verdicts) are not passes.
    verdict = StepRecord(S.RECOVER, Outcome.STARTED, "ledger hold: rolling back")
    assert may_resume(pending, history(*passes * 3, verdict, verdict), 3)


def test_a_payment_type_is_a_plan_and_the_failpoints_are_its_steps() -> None:
    assert plan_for(payment(top_up=True)) is WALLET_TOP_UP
    assert plan_for(payment(top_up=False)) is IN_BANK_TRANSFER
    assert opening(WALLET_TOP_UP) == (ok(S.VALIDATE), started(HOLD), started(RESERVE))
    names = failpoint_names()
    for step in (HOLD, RESERVE, POST, COMMIT, VOID, RELEASE):
        assert {f"after_{step.value}_started", f"after_{step.value}"} <= names
    assert "after_hold" not in names


def test_the_state_machine_refuses_what_iso_20022_does_not_have() -> None:
    for current, target in itertools.product(PaymentState, PaymentState):
        allowed = (current, target) in {
            (PaymentState.RECEIVED, ACC),
            (PaymentState.RECEIVED, PaymentState.REJECTED),
            (PaymentState.RECEIVED, PaymentState.CANCELLED),
            (ACC, SIP),
            (ACC, PaymentState.REJECTED),
            (ACC, PaymentState.CANCELLED),
            (SIP, SET),
            (SIP, PaymentState.REJECTED),
            # A future-dated payment executes (ACCEPTED), is refused or cancelled before its time.
            (PaymentState.SCHEDULED, ACC),
            (PaymentState.SCHEDULED, PaymentState.REJECTED),
            (PaymentState.SCHEDULED, PaymentState.CANCELLED),
            # The risk decision holds it for the customer's step-up or an operator's review; it
            # then goes on (ACCEPTED), or ends with no money moved.
            (PaymentState.RECEIVED, PaymentState.AWAITING_AUTHORISATION),
            (PaymentState.RECEIVED, PaymentState.PENDING_REVIEW),
            *(
                (waiting, end)
                for waiting in (PaymentState.AWAITING_AUTHORISATION, PaymentState.PENDING_REVIEW)
                for end in (ACC, PaymentState.REJECTED, PaymentState.CANCELLED)
            ),
        }
        if allowed:
            assert payment(current).moved(target, NOW).state is target
        else:
            with pytest.raises(IllegalTransition):
                payment(current).moved(target, NOW)
