"""An in-memory :class:`~services.payment.adapters.clearing.ClearingConnector` for saga tests.

It keeps the scheme's promises (checked against the real connector and simulator by
``tests/integration/scheme/test_connector_contract.py``): idempotent by message id (the same
transfer answers its current status, another transfer under the same id fails
REQUEST_ID_REUSED), a creditor IBAN that is not valid is REJECTED AC01 and a creditor agent
that is not a BIC RC01, an unknown message id is UNKNOWN, returns come in a feed after a
cursor. What happens to each transfer is scripted by the test::

    scheme = FakeClearingConnector()                       # everything settles at once
    scheme.script("DE89370400440532013000", Behaviour.reject("AC04"))
    scheme.script(lambda t: t.amount.minor_units > 500, Behaviour.accept())   # ACCEPTED for now
    scheme.script(creditor, Behaviour.settle(answer=Answer.LOST_ACKNOWLEDGEMENT))
    ...
    scheme.settle(message_id)                               # a pending one settles
    scheme.return_payment(message_id, "MD07")               # a settled one comes back
    scheme.down = True                                      # the scheme is unreachable
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from meshlib.errors import AlreadyExists, InvalidArgument, Unavailable
from meshlib.iban import is_bic, is_iban
from meshlib.idempotency import request_id_reused
from schemesim.domain.codes import RETURN_REASONS, STATUS_REASONS
from services.payment.adapters.clearing import (
    AccountKind,
    ClearingOutcomeUnknown,
    ClearingReport,
    ClearingReturn,
    ClearingStatus,
    OutboundCreditTransfer,
    ReturnsPage,
)

EPOCH = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class Answer(enum.Enum):
    """How a first submission is answered."""

    NORMAL = "normal"
    LOST_ACKNOWLEDGEMENT = "lost_acknowledgement"  # processed, then ClearingOutcomeUnknown
    LOST_REQUEST = "lost_request"  # not processed (once), ClearingOutcomeUnknown


@dataclass(frozen=True)
class Behaviour:
    """What the other bank does with a transfer."""

    status: ClearingStatus = ClearingStatus.SETTLED  # SETTLED, ACCEPTED (pending) or REJECTED
    reason_code: str = ""
    answer: Answer = Answer.NORMAL
    return_reason: str = ""  # settled, then returned at once with this reason

    @classmethod
    def settle(cls, *, answer: Answer = Answer.NORMAL) -> Behaviour:
        """Settled at once."""
        return cls(ClearingStatus.SETTLED, answer=answer)

    @classmethod
    def accept(cls, *, answer: Answer = Answer.NORMAL) -> Behaviour:
        """ACCEPTED until the test calls settle() or reject()."""
        return cls(ClearingStatus.ACCEPTED, answer=answer)

    @classmethod
    def reject(cls, reason_code: str, *, answer: Answer = Answer.NORMAL) -> Behaviour:
        """REJECTED with an ISO status reason."""
        assert reason_code in STATUS_REASONS, reason_code
        return cls(ClearingStatus.REJECTED, reason_code, answer)

    @classmethod
    def settle_then_return(cls, reason_code: str) -> Behaviour:
        """Settled, and its return is in the feed at once."""
        assert reason_code in RETURN_REASONS, reason_code
        return cls(ClearingStatus.SETTLED, return_reason=reason_code)


Match = str | Callable[[OutboundCreditTransfer], bool]


@dataclass
class _Held:
    transfer: OutboundCreditTransfer
    report: ClearingReport


@dataclass
class FakeClearingConnector:
    """The scheme in memory; see the module for how to script it."""

    default: Behaviour = field(default_factory=Behaviour.settle)
    down: bool = False  # every call fails as if the scheme were unreachable
    clock: Callable[[], dt.datetime] = lambda: EPOCH
    submissions: list[str] = field(default_factory=list)  # message id of every submit call
    _scripts: list[tuple[Match, Behaviour]] = field(default_factory=list)
    _held: dict[str, _Held] = field(default_factory=dict)
    _dropped: set[str] = field(default_factory=set)
    _feed: list[ClearingReturn] = field(default_factory=list)

    def script(self, match: Match, behaviour: Behaviour) -> None:
        """Transfers to this creditor account (identifier) or fitting this predicate behave so;
        the first script that fits wins."""
        self._scripts.append((match, behaviour))

    def _behaviour(self, transfer: OutboundCreditTransfer) -> Behaviour:
        for match, behaviour in self._scripts:
            fits = match(transfer) if callable(match) else match == transfer.creditor_account.identifier
            if fits:
                return behaviour
        return self.default

    # ---- the port ------------------------------------------------------------------------

    async def submit(self, transfer: OutboundCreditTransfer) -> ClearingReport:
        """As the real connector: the acknowledgement, or ClearingOutcomeUnknown without one."""
        self.submissions.append(transfer.message_id)
        if self.down:
            raise ClearingOutcomeUnknown("the scheme is down", metadata={"message_id": transfer.message_id})
        _check_message(transfer)
        held = self._held.get(transfer.message_id)
        if held is not None:
            if held.transfer != transfer:
                raise request_id_reused(transfer.message_id)
            return held.report
        behaviour = self._behaviour(transfer)
        first_delivery = transfer.message_id not in self._dropped
        if behaviour.answer is Answer.LOST_REQUEST and first_delivery:
            self._dropped.add(transfer.message_id)
            raise ClearingOutcomeUnknown("no answer", metadata={"message_id": transfer.message_id})
        report = self._first_report(transfer, behaviour)
        self._held[transfer.message_id] = _Held(transfer, report)
        if behaviour.return_reason:
            self.return_payment(transfer.message_id, behaviour.return_reason)
        if behaviour.answer is Answer.LOST_ACKNOWLEDGEMENT and first_delivery:
            raise ClearingOutcomeUnknown("no answer", metadata={"message_id": transfer.message_id})
        return self._held[transfer.message_id].report

    def _first_report(self, transfer: OutboundCreditTransfer, behaviour: Behaviour) -> ClearingReport:
        now = self.clock()
        creditor = transfer.creditor_account
        if creditor.kind is AccountKind.IBAN and not is_iban(creditor.identifier):
            status, reason = ClearingStatus.REJECTED, "AC01"
        elif not is_bic(transfer.creditor_agent):
            status, reason = ClearingStatus.REJECTED, "RC01"
        else:
            status, reason = behaviour.status, behaviour.reason_code
        accepted = status is not ClearingStatus.REJECTED
        return ClearingReport(
            message_id=transfer.message_id,
            status=status,
            reason_code=reason,
            reason_message=STATUS_REASONS.get(reason, ""),
            clearing_reference=f"FAKE-{transfer.message_id}" if accepted else "",
            accepted_at=now,
            settled_at=now if status is ClearingStatus.SETTLED else None,
        )

    async def status(self, message_id: str) -> ClearingReport:
        """The current report; UNKNOWN for a message id the scheme never received."""
        if self.down:
            raise Unavailable("the scheme is down")
        held = self._held.get(message_id)
        return held.report if held is not None else ClearingReport.unknown(message_id)

    async def returns(self, after_cursor: str = "", limit: int = 100) -> ReturnsPage:
        """The feed after a cursor (cursors are positions: "1", "2", ...)."""
        if self.down:
            raise Unavailable("the scheme is down")
        if after_cursor and not after_cursor.isdigit():
            raise InvalidArgument.field("after_cursor", "not a cursor of this feed")
        start = int(after_cursor or 0)
        page = tuple(self._feed[start : start + limit])
        return ReturnsPage(page, page[-1].cursor if page else after_cursor, more=start + limit < len(self._feed))

    # ---- what the other bank does later ----------------------------------------------------

    def report(self, message_id: str) -> ClearingReport:
        """The current report of a held transfer (KeyError if none)."""
        return self._held[message_id].report

    def _update(self, message_id: str, **changes: object) -> None:
        held = self._held[message_id]
        held.report = dataclasses.replace(held.report, **changes)  # type: ignore[arg-type]

    def settle(self, message_id: str) -> None:
        """An ACCEPTED transfer settles."""
        assert self.report(message_id).status is ClearingStatus.ACCEPTED
        self._update(message_id, status=ClearingStatus.SETTLED, settled_at=self.clock())

    def reject(self, message_id: str, reason_code: str) -> None:
        """An ACCEPTED transfer is rejected after all (e.g. AB05, a timeout at the creditor agent)."""
        assert self.report(message_id).status is ClearingStatus.ACCEPTED and reason_code in STATUS_REASONS
        self._update(
            message_id,
            status=ClearingStatus.REJECTED,
            reason_code=reason_code,
            reason_message=STATUS_REASONS[reason_code],
            clearing_reference="",
        )

    def return_payment(self, message_id: str, reason_code: str) -> ClearingReturn:
        """A SETTLED transfer comes back (once): its return enters the feed."""
        held = self._held[message_id]
        if held.report.status is not ClearingStatus.SETTLED or held.report.payment_return is not None:
            raise AlreadyExists("only a settled transfer comes back, once")
        assert reason_code in RETURN_REASONS, reason_code
        item = ClearingReturn(
            return_id=f"R-{message_id}",
            message_id=message_id,
            end_to_end_id=held.transfer.end_to_end_id,
            amount=held.transfer.amount,
            reason_code=reason_code,
            reason_message=RETURN_REASONS[reason_code],
            returned_at=self.clock(),
            cursor=str(len(self._feed) + 1),
        )
        self._feed.append(item)
        self._update(message_id, payment_return=dataclasses.replace(item, cursor=""))
        return item


def _check_message(transfer: OutboundCreditTransfer) -> None:
    """The scheme's FIELD_INVALID checks that a saga can trip (the rest is the connector's shape)."""
    if not transfer.message_id or len(transfer.message_id) > 35:
        raise InvalidArgument.field("request_id", "must be 1-35 characters of A-Z a-z 0-9 . _ : -")
    if transfer.amount.minor_units <= 0:
        raise InvalidArgument.field("credit_transfer.instructed_amount.minor_units", "must be greater than zero")
