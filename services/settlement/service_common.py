"""What every settlement use case shares: the transactions runner on settlement's unit of
work, who is looking (the viewer), and JSON snapshots of saved answers."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from meshlib.errors import PermissionDenied
from meshlib.storage import Codec, Transactions
from services.settlement.domain.batches import ItemResult
from services.settlement.domain.obligations import Obligation, ObligationState
from services.settlement.domain.participants import (
    NetDebitCap,
    Participant,
    ParticipantStatus,
    ParticipantType,
)
from services.settlement.domain.windows import SettlementWindow, WindowState
from services.settlement.unit_of_work import SettlementUnitOfWork

# Every settlement transaction runs through it: retried, idempotent when keyed.
SettlementTransactions = Transactions[SettlementUnitOfWork]


def new_id() -> str:
    """A fresh opaque resource id."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Viewer:
    """Who reads settlement data: an operator sees everything, a partner only its own."""

    operator: bool = False
    partner_id: str | None = None

    def require_reader(self) -> None:
        """Only operators and partners read settlement figures."""
        if not self.operator and not self.partner_id:
            raise PermissionDenied("settlement figures are for partners and operators", reason="INSUFFICIENT_SCOPE")

    def may_see(self, participant: Participant) -> bool:
        """True when the participant's figures are visible to this viewer."""
        return self.operator or (self.partner_id is not None and participant.partner_id == self.partner_id)


# JSON snapshots of answers, for idempotent replays (no protobuf in the service layer).


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _dump(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def obligation_to_dict(obligation: Obligation) -> dict[str, Any]:
    """A JSON-ready obligation."""
    return {
        "id": obligation.id,
        "payer_id": obligation.payer_id,
        "payee_id": obligation.payee_id,
        "currency": obligation.currency,
        "amount_minor": obligation.amount_minor,
        "state": obligation.state.value,
        "created_at": _time(obligation.created_at),
        "updated_at": _time(obligation.updated_at),
        "window_id": obligation.window_id,
        "kind": obligation.kind,
    }


def obligation_from_dict(data: dict[str, Any]) -> Obligation:
    """The obligation a snapshot holds."""
    return Obligation(
        id=data["id"],
        payer_id=data["payer_id"],
        payee_id=data["payee_id"],
        currency=data["currency"],
        amount_minor=data["amount_minor"],
        state=ObligationState(data["state"]),
        created_at=_parse_time(data["created_at"]),  # type: ignore[arg-type]
        updated_at=_parse_time(data["updated_at"]),  # type: ignore[arg-type]
        window_id=data["window_id"],
        kind=data.get("kind", "PAYMENT"),  # answers saved before obligations had kinds
    )


def participant_to_dict(participant: Participant) -> dict[str, Any]:
    """A JSON-ready participant."""
    return {
        "id": participant.id,
        "type": participant.type.value,
        "partner_id": participant.partner_id,
        "settlement_account": participant.settlement_account,
        "status": participant.status.value,
        "created_at": _time(participant.created_at),
        "updated_at": _time(participant.updated_at),
        "caps": [[c.currency, c.cap_minor, c.alarm_threshold_percent] for c in participant.caps.values()],
    }


def participant_from_dict(data: dict[str, Any]) -> Participant:
    """The participant a snapshot holds."""
    return Participant(
        id=data["id"],
        type=ParticipantType(data["type"]),
        partner_id=data["partner_id"],
        settlement_account=data["settlement_account"],
        status=ParticipantStatus(data["status"]),
        created_at=_parse_time(data["created_at"]),  # type: ignore[arg-type]
        updated_at=_parse_time(data["updated_at"]),  # type: ignore[arg-type]
        caps={c[0]: NetDebitCap(c[0], c[1], c[2]) for c in data["caps"]},
    )


def window_to_dict(window: SettlementWindow) -> dict[str, Any]:
    """A JSON-ready window."""
    return {
        "id": window.id,
        "currency": window.currency,
        "state": window.state.value,
        "opened_at": _time(window.opened_at),
        "closed_at": _time(window.closed_at),
        "settled_at": _time(window.settled_at),
        "settlement_reference": window.settlement_reference,
        "obligation_count": window.obligation_count,
        "gross_minor": window.gross_minor,
    }


def window_from_dict(data: dict[str, Any]) -> SettlementWindow:
    """The window a snapshot holds."""
    return SettlementWindow(
        id=data["id"],
        currency=data["currency"],
        state=WindowState(data["state"]),
        opened_at=_parse_time(data["opened_at"]),  # type: ignore[arg-type]
        closed_at=_parse_time(data["closed_at"]),
        settled_at=_parse_time(data["settled_at"]),
        settlement_reference=data["settlement_reference"],
        obligation_count=data["obligation_count"],
        gross_minor=data["gross_minor"],
    )


OBLIGATION_CODEC: Codec[Obligation] = Codec.json(obligation_to_dict, obligation_from_dict)
PARTICIPANT_CODEC: Codec[Participant] = Codec.json(participant_to_dict, participant_from_dict)
WINDOW_CODEC: Codec[SettlementWindow] = Codec.json(window_to_dict, window_from_dict)
WINDOW_PAIR_CODEC: Codec[tuple[SettlementWindow, SettlementWindow]] = Codec.json(
    lambda pair: {"closed": window_to_dict(pair[0]), "next": window_to_dict(pair[1])},
    lambda data: (window_from_dict(data["closed"]), window_from_dict(data["next"])),
)


@dataclass(frozen=True)
class BatchAnswer:
    """A batch's item results, with the JSON snapshot of each item's obligation where one is
    at hand (an item's saved answer): the batch's own saved answer embeds those bytes instead
    of encoding every obligation a second time."""

    results: list[ItemResult]
    snapshots: dict[int, bytes] = field(default_factory=dict)


def _batch_to_json(answer: BatchAnswer) -> bytes:
    # {"results": [[index, obligation] or [index, reason, message], ...]}
    entries = []
    for result in answer.results:
        if result.obligation is None:
            entries.append(_dump([result.index, result.error_reason, result.error_message]))
            continue
        snapshot = answer.snapshots.get(result.index)
        if snapshot is None:
            snapshot = OBLIGATION_CODEC.encode(result.obligation)
        entries.append(b"[%d,%s]" % (result.index, snapshot))
    return b'{"results":[' + b",".join(entries) + b"]}"


def _batch_from_json(raw: bytes) -> BatchAnswer:
    results = []
    for entry in json.loads(raw)["results"]:
        if len(entry) == 2:
            results.append(ItemResult(entry[0], obligation_from_dict(entry[1])))
        else:
            results.append(ItemResult(entry[0], None, entry[1], entry[2]))
    return BatchAnswer(results)


BATCH_CODEC: Codec[BatchAnswer] = Codec(_batch_to_json, _batch_from_json)
