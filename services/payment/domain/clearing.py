"""Payments to other banks: what the scheme's answers mean for the saga.

The scheme answers in ISO 20022 codes; the partner sees a stable error reason (the code itself
stays in the status message). Its status of a transfer, asked when the driver was lost or while
the payment waits for settlement, is turned into step records and a verdict on the pivot (the
scheme's final answer) by :func:`read_status`, the one place that says when a transfer that
never reached the scheme is sent again and when the bank gives up. A transfer never sent (its
submit never started) is not the scheme's to judge: its hold is (:func:`read_hold_before_submit`).

Plain Python: no gRPC, no SQL.
"""

from __future__ import annotations

import datetime as dt
import re

from meshlib.errors import FieldCollector
from meshlib.iban import iban_problem, is_bic
from services.payment.domain.payments import ExternalCreditor
from services.payment.domain.saga import CLEARING_PENDING, History, Outcome, ProbeAnswer, Step, StepRecord

# ISO 20022 status reasons (pacs.002 StsRsnInf/Rsn/Cd) -> the partner's stable error reason.
_REASONS = {
    "AC01": "CREDITOR_ACCOUNT_INVALID",
    "RC01": "CREDITOR_ACCOUNT_INVALID",
    "BE04": "CREDITOR_ACCOUNT_INVALID",
    "AC04": "CREDITOR_ACCOUNT_CLOSED",
    "AC06": "CREDITOR_ACCOUNT_BLOCKED",
    "AM02": "SCHEME_AMOUNT_NOT_ALLOWED",
    "AM03": "SCHEME_AMOUNT_NOT_ALLOWED",
}
OTHER_REJECTION = "CREDITOR_BANK_REJECTED"
NOT_RECEIVED = "CLEARING_NOT_RECEIVED"
# A transfer the scheme says it never received is sent again (same message id, so never twice)
# until it has been sent this many times; then the bank gives up: voided, REJECTED NOT_RECEIVED.
MAX_SUBMISSIONS = 3

_SCHEME_ACCOUNT = re.compile(r"^[A-Za-z0-9/\-?:().,'+ ]{1,34}$")


# A transfer long in settlement is asked less and less often: the poll interval doubles with
# each answer "not settled yet", up to this many times the interval.
MAX_POLL_BACKOFF = 32


def poll_delay(history: History, interval: dt.timedelta) -> dt.timedelta:
    """How long until a payment waiting for the scheme is asked again: ``interval`` after the
    first "not yet", doubling with each further one, at most MAX_POLL_BACKOFF intervals."""
    pending = sum(1 for record in history.records if record.reason == CLEARING_PENDING)
    return interval * min(2 ** max(pending - 1, 0), MAX_POLL_BACKOFF)


def rejection_reason(iso_code: str) -> str:
    """The stable error reason of an ISO 20022 rejection code."""
    return _REASONS.get(iso_code, OTHER_REJECTION)


def rejection_message(iso_code: str, scheme_message: str) -> str:
    """The status message of a rejected transfer: the ISO code first, then the scheme's words."""
    words = scheme_message or "rejected by the creditor's bank"
    return f"{iso_code}: {words}" if iso_code else words


def rejected(step: Step, iso_code: str, scheme_message: str) -> StepRecord:
    """The record of a transfer the scheme rejected (a business refusal: the money goes back)."""
    return StepRecord.failure(step, rejection_reason(iso_code), rejection_message(iso_code, scheme_message))


def submissions(history: History) -> int:
    """How many times the transfer was (possibly) sent: its recorded starts."""
    return sum(
        1 for record in history.records if record.step is Step.SUBMIT_TRANSFER and record.outcome is Outcome.STARTED
    )


def never_sent(history: History) -> bool:
    """The transfer was never handed to the scheme: its submit step (written ahead) never started."""
    return history.outcome(Step.SUBMIT_TRANSFER) is None


def read_hold_before_submit(hold_state: str | None) -> ProbeAnswer:
    """The pivot's probe of a transfer never sent, answered by the ledger's state of its hold: the
    pivot did not happen, and, as for a payment inside the bank, the steps before the submit
    may be sent again while the hold is pending or was never made (an expired or voided hold is
    never made again: that would ask for the money a second time)."""
    return ProbeAnswer(happened=False, resumable=hold_state in (None, "PENDING"))


def read_status(status: str, iso_code: str, scheme_message: str, history: History) -> ProbeAnswer:
    """The pivot's probe answered by the scheme's status of a transfer whose submit started (one
    never sent is read by its hold, :func:`read_hold_before_submit`).

    ``status``: "ACSC" settled, "RJCT" rejected, "ACCP" accepted (settlement in process) or
    "UNKNOWN" (the scheme never received it).
    """
    submitted = history.outcome(Step.SUBMIT_TRANSFER) is Outcome.SUCCEEDED
    acknowledged = () if submitted else (StepRecord(Step.SUBMIT_TRANSFER, Outcome.SUCCEEDED, "by its status"),)
    if status == "ACSC":
        return ProbeAnswer((*acknowledged, StepRecord(Step.AWAIT_CLEARING, Outcome.SUCCEEDED)), happened=True)
    if status == "RJCT":
        return ProbeAnswer((rejected(Step.AWAIT_CLEARING, iso_code, scheme_message),), happened=False)
    if status == "ACCP":
        pending = StepRecord.failure(Step.AWAIT_CLEARING, CLEARING_PENDING, "accepted by the scheme, not settled yet")
        return ProbeAnswer((*acknowledged, pending), happened=None)
    # UNKNOWN: the scheme never received what was sent.
    if submissions(history) >= MAX_SUBMISSIONS:
        gave_up = StepRecord.failure(
            Step.SUBMIT_TRANSFER,
            NOT_RECEIVED,
            f"the scheme did not receive the transfer, sent {MAX_SUBMISSIONS} times; nothing moved",
        )
        return ProbeAnswer((gave_up,), happened=False)
    again = StepRecord(Step.SUBMIT_TRANSFER, Outcome.STARTED, "not received by the scheme: sent again")
    return ProbeAnswer((again,), resubmit=True)


def check_external_creditor(creditor: ExternalCreditor, errors: FieldCollector, prefix: str) -> None:
    """Every bad field of an external creditor, named under ``prefix`` (e.g. creditor_external)."""
    if creditor.account_kind == "IBAN":
        problem = iban_problem(creditor.account)
        errors.check(problem is None, f"{prefix}.iban", f"not a valid IBAN: {problem}")
    else:
        errors.check(
            bool(_SCHEME_ACCOUNT.match(creditor.account)),
            f"{prefix}.scheme_account_id",
            "1..34 characters of letters, digits, spaces and -/?:().,'+",
        )
    errors.check(0 < len(creditor.name.strip()) <= 140, f"{prefix}.name", "required, at most 140 characters")
    errors.check(is_bic(creditor.agent_bic), f"{prefix}.agent_bic", "required: a BIC of 8 or 11 characters")
