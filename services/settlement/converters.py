"""Protobuf <-> domain conversions for settlement (parsing and shaping only, no rules)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from meshlib.errors import FieldCollector, InvalidArgument, MeshError
from meshlib.grpc_errors import encode_item_reason
from meshlib.idempotency import fingerprint
from meshlib.money import Amount, amount_from_fields, validate_currency
from meshlib.names import parse_name
from meshlib.request_text import check_request_text
from meshlib.storage import IdempotencyKey
from openbank.common.v1 import money_pb2
from openbank.settlement.v1 import position_pb2, settlement_admin_pb2, settlement_pb2
from services.settlement.domain.batches import ItemResult
from services.settlement.domain.obligations import OBLIGATION_KINDS, Obligation, ObligationState
from services.settlement.domain.participants import NetDebitCap, Participant, ParticipantStatus, ParticipantType
from services.settlement.domain.reconciliation import Difference, DifferenceKind, ReconciliationReport
from services.settlement.domain.reports import SettlementReport, report_csv
from services.settlement.domain.windows import SettlementWindow, WindowState
from services.settlement.obligation_batches import COMMIT_METHOD, RESERVE_METHOD, CommitItem, ReserveItem
from services.settlement.window_service import PositionView

OBLIGATIONS = "obligations"
PARTICIPANTS = "participants"
PAYMENTS = "payments"
WINDOWS = "settlementWindows"
PARTNERS = "partners"
ACCOUNTS = "accounts"

_OBLIGATION_STATES = {
    ObligationState.RESERVED: position_pb2.OBLIGATION_STATE_RESERVED,
    ObligationState.COMMITTED: position_pb2.OBLIGATION_STATE_COMMITTED,
    ObligationState.RELEASED: position_pb2.OBLIGATION_STATE_RELEASED,
}
_WINDOW_STATES = {
    WindowState.OPEN: settlement_pb2.SETTLEMENT_WINDOW_STATE_OPEN,
    WindowState.CLOSED: settlement_pb2.SETTLEMENT_WINDOW_STATE_CLOSED,
    WindowState.SETTLED: settlement_pb2.SETTLEMENT_WINDOW_STATE_SETTLED,
}
_PARTICIPANT_TYPES = {
    ParticipantType.BANK: settlement_admin_pb2.PARTICIPANT_TYPE_BANK,
    ParticipantType.WALLET: settlement_admin_pb2.PARTICIPANT_TYPE_WALLET,
    ParticipantType.SCHEME: settlement_admin_pb2.PARTICIPANT_TYPE_SCHEME,
}
_PARTICIPANT_STATUSES = {
    ParticipantStatus.ACTIVE: settlement_admin_pb2.PARTICIPANT_STATUS_ACTIVE,
    ParticipantStatus.INACTIVE: settlement_admin_pb2.PARTICIPANT_STATUS_INACTIVE,
}
_DIFFERENCE_KINDS = {
    DifferenceKind.MISSING_LEDGER_TRANSFER: settlement_admin_pb2.DIFFERENCE_KIND_MISSING_LEDGER_TRANSFER,
    DifferenceKind.MISSING_OBLIGATION: settlement_admin_pb2.DIFFERENCE_KIND_MISSING_OBLIGATION,
    DifferenceKind.AMOUNT_MISMATCH: settlement_admin_pb2.DIFFERENCE_KIND_AMOUNT_MISMATCH,
    DifferenceKind.WRONG_ACCOUNTS: settlement_admin_pb2.DIFFERENCE_KIND_ACCOUNT_MISMATCH,
    DifferenceKind.NET_NOT_ZERO: settlement_admin_pb2.DIFFERENCE_KIND_NET_NOT_ZERO,
    DifferenceKind.STALE_RESERVATION: settlement_admin_pb2.DIFFERENCE_KIND_STALE_RESERVATION,
    DifferenceKind.SETTLEMENT_MISMATCH: settlement_admin_pb2.DIFFERENCE_KIND_SETTLEMENT_MISMATCH,
    DifferenceKind.SETTLEMENT_NOT_RECORDED: settlement_admin_pb2.DIFFERENCE_KIND_SETTLEMENT_NOT_RECORDED,
}


# --- requests -> domain -------------------------------------------------------------------


def request_key(request: Message, scope: str, method: str) -> IdempotencyKey:
    """The idempotency key of a mutating request (validates request_id)."""
    request_id = request.request_id  # type: ignore[attr-defined]
    return IdempotencyKey(scope, method, request_id, fingerprint(request))


def _money(money: money_pb2.Money, field: str, errors: FieldCollector, present: bool) -> Amount | None:
    if not present:
        errors.add(field, "is required")
        return None
    return amount_from_fields(money.currency_code, money.minor_units, field, errors)


def reserve_args(request: position_pb2.ReserveObligationRequest) -> tuple[str, str, str, Amount, str]:
    """(payment id, payer id, payee id, amount, kind) of a reservation."""
    errors = FieldCollector()
    payment_id = parse_name(request.payment, PAYMENTS, "payment", errors)
    payer_id = parse_name(request.payer, PARTICIPANTS, "payer", errors)
    payee_id = parse_name(request.payee, PARTICIPANTS, "payee", errors)
    amount = _money(request.amount, "amount", errors, request.HasField("amount"))
    kind = obligation_kind_name(request.kind) or "PAYMENT"
    errors.check(kind in OBLIGATION_KINDS, "kind", "must be an ObligationKind")
    errors.raise_if_any()
    assert amount is not None
    return payment_id, payer_id, payee_id, amount, kind


def obligation_kind_name(value: int) -> str:
    """OBLIGATION_KIND_LOSS_SHARE -> "LOSS_SHARE"; unset -> ""; an unknown number -> "#<n>"."""
    if value == position_pb2.OBLIGATION_KIND_UNSPECIFIED:
        return ""
    names = {v.number: v.name for v in position_pb2.ObligationKind.DESCRIPTOR.values}
    return names[value].removeprefix("OBLIGATION_KIND_") if value in names else f"#{value}"


def reserve_items(
    requests: Iterable[position_pb2.ReserveObligationRequest], scope: str
) -> list[ReserveItem | MeshError]:
    """A batch's reservations, each parsed as ReserveObligation parses it; a malformed item
    becomes its error (it fails alone)."""
    items: list[ReserveItem | MeshError] = []
    for request in requests:
        try:
            check_request_text(request)  # each item alone, as ReserveObligation checks its request
            key = request_key(request, scope, RESERVE_METHOD)
            items.append(ReserveItem(key, *reserve_args(request)))
        except MeshError as error:
            items.append(error)
    return items


def commit_items(requests: Iterable[position_pb2.CommitObligationRequest], scope: str) -> list[CommitItem | MeshError]:
    """A batch's commits, each parsed as CommitObligation parses it; a malformed item becomes
    its error (it fails alone)."""
    items: list[CommitItem | MeshError] = []
    for request in requests:
        try:
            check_request_text(request)  # each item alone, as CommitObligation checks its request
            key = request_key(request, scope, COMMIT_METHOD)
            items.append(CommitItem(key, obligation_id(request.name)))
        except MeshError as error:
            items.append(error)
    return items


def obligation_id(name: str, field: str = "name") -> str:
    """The id in ``obligations/{id}``."""
    return parse_name(name, OBLIGATIONS, field)


def participant_id(name: str, field: str = "name") -> str:
    """The id in ``participants/{id}``."""
    return parse_name(name, PARTICIPANTS, field)


def window_id(name: str, field: str = "name") -> str:
    """The id in ``settlementWindows/{id}``."""
    return parse_name(name, WINDOWS, field)


def currency(code: str, field: str = "currency_code") -> str:
    """A supported ISO 4217 code."""
    validate_currency(code, field)
    return code


def optional_currency(code: str, field: str = "currency_code") -> str | None:
    """A currency filter: empty means all."""
    return currency(code, field) if code else None


def window_state_filter(state: int) -> WindowState | None:
    """The state filter of ListSettlementWindows (UNSPECIFIED = all)."""
    if state == settlement_pb2.SETTLEMENT_WINDOW_STATE_UNSPECIFIED:
        return None
    for domain_state, proto_state in _WINDOW_STATES.items():
        if proto_state == state:
            return domain_state
    raise InvalidArgument.field("state", "is not a known settlement window state")


def net_debit_cap(cap: settlement_admin_pb2.NetDebitCap, field: str, errors: FieldCollector) -> NetDebitCap | None:
    """A cap from the request (positivity and thresholds are the service's rules)."""
    if not validate_currency(cap.currency_code, f"{field}.currency_code", errors):
        return None
    if not cap.HasField("cap"):
        errors.add(f"{field}.cap", "is required")
        return None
    if cap.cap.currency_code != cap.currency_code:
        errors.add(f"{field}.cap.currency_code", "must equal the cap's currency_code")
        return None
    return NetDebitCap(cap.currency_code, cap.cap.minor_units, cap.alarm_threshold_percent)


def register_args(
    request: settlement_admin_pb2.RegisterParticipantRequest,
) -> tuple[ParticipantType, str | None, str, list[NetDebitCap]]:
    """(type, partner id, settlement account name, caps) of a registration."""
    errors = FieldCollector()
    participant_type = next((d for d, p in _PARTICIPANT_TYPES.items() if p == request.type), None)
    if participant_type is None:
        errors.add("type", "must be PARTICIPANT_TYPE_BANK, PARTICIPANT_TYPE_WALLET or PARTICIPANT_TYPE_SCHEME")
    partner_id = parse_name(request.partner, PARTNERS, "partner", errors) if request.partner else None
    parse_name(request.settlement_account, ACCOUNTS, "settlement_account", errors)
    caps = [net_debit_cap(c, f"net_debit_caps[{i}]", errors) for i, c in enumerate(request.net_debit_caps)]
    errors.raise_if_any()
    assert participant_type is not None
    return participant_type, partner_id, request.settlement_account, [c for c in caps if c is not None]


def update_cap_args(request: settlement_admin_pb2.UpdateNetDebitCapRequest) -> tuple[str, NetDebitCap]:
    """(participant id, cap) of a cap update."""
    errors = FieldCollector()
    target = parse_name(request.participant, PARTICIPANTS, "participant", errors)
    if not request.HasField("cap"):
        errors.add("cap", "is required")
    else:
        validate_currency(request.cap.currency_code, "cap.currency_code", errors)
    errors.raise_if_any()
    return target, NetDebitCap(request.cap.currency_code, request.cap.minor_units, request.alarm_threshold_percent)


def close_target(request: settlement_admin_pb2.CloseSettlementWindowRequest) -> tuple[str | None, str | None]:
    """(window id, currency): exactly one is set."""
    which = request.WhichOneof("target")
    if which == "name":
        return window_id(request.name), None
    if which == "currency_code":
        return None, currency(request.currency_code)
    raise InvalidArgument.field("target", "set name or currency_code")


def settlement_reference(reference: str) -> str:
    """The optional external reference of a settlement (at most 128 characters)."""
    if len(reference) > 128:
        raise InvalidArgument.field("settlement_reference", "must be at most 128 characters")
    return reference


# --- domain -> responses ------------------------------------------------------------------


def _ts(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp


def money(currency_code: str, minor_units: int) -> money_pb2.Money:
    """A Money message."""
    return money_pb2.Money(currency_code=currency_code, minor_units=minor_units)


def obligation(item: Obligation) -> position_pb2.Obligation:
    """The Obligation message."""
    return position_pb2.Obligation(
        name=f"{OBLIGATIONS}/{item.id}",
        payment=f"{PAYMENTS}/{item.id}",
        payer=f"{PARTICIPANTS}/{item.payer_id}",
        payee=f"{PARTICIPANTS}/{item.payee_id}",
        amount=money(item.currency, item.amount_minor),
        state=_OBLIGATION_STATES[item.state],
        window=f"{WINDOWS}/{item.window_id}" if item.window_id else "",
        create_time=_ts(item.created_at),
        update_time=_ts(item.updated_at),
        kind=position_pb2.ObligationKind.Value(f"OBLIGATION_KIND_{item.kind}"),
    )


def batch_result(result: ItemResult) -> position_pb2.BatchObligationResult:
    """The BatchObligationResult message: the obligation, or why the item was refused."""
    if result.obligation is not None:
        return position_pb2.BatchObligationResult(index=result.index, obligation=obligation(result.obligation))
    return position_pb2.BatchObligationResult(
        index=result.index, error_reason=encode_item_reason(result.error_reason), error_message=result.error_message
    )


def window(item: SettlementWindow) -> settlement_pb2.SettlementWindow:
    """The SettlementWindow message."""
    return settlement_pb2.SettlementWindow(
        name=f"{WINDOWS}/{item.id}",
        currency_code=item.currency,
        state=_WINDOW_STATES[item.state],
        open_time=_ts(item.opened_at),
        close_time=_ts(item.closed_at),
        settle_time=_ts(item.settled_at),
        obligation_count=item.obligation_count,
        gross_amount=money(item.currency, item.gross_minor),
    )


def position(view: PositionView) -> settlement_pb2.Position:
    """The Position message."""
    current = view.position
    return settlement_pb2.Position(
        participant=f"{PARTICIPANTS}/{current.participant_id}",
        currency_code=current.currency,
        net_position=money(current.currency, current.net_minor),
        reserved=money(current.currency, current.reserved_minor),
        net_debit_cap=money(current.currency, view.cap.cap_minor),
        headroom=money(current.currency, view.headroom_minor),
        window=f"{WINDOWS}/{view.open_window_id}" if view.open_window_id else "",
        update_time=_ts(current.updated_at),
    )


def report(item: SettlementReport) -> settlement_pb2.SettlementReport:
    """The SettlementReport message."""
    code = item.window.currency
    return settlement_pb2.SettlementReport(
        window=f"{WINDOWS}/{item.window.id}",
        currency_code=code,
        window_state=_WINDOW_STATES[item.window.state],
        net_positions=[
            settlement_pb2.ParticipantNetPosition(
                participant=f"{PARTICIPANTS}/{p.participant_id}",
                sent=money(code, p.sent_minor),
                received=money(code, p.received_minor),
                net=money(code, p.net_minor),
            )
            for p in item.net_positions
        ],
        bilateral_positions=[
            settlement_pb2.BilateralPosition(
                payer=f"{PARTICIPANTS}/{b.payer_id}",
                payee=f"{PARTICIPANTS}/{b.payee_id}",
                amount=money(code, b.amount_minor),
            )
            for b in item.bilateral_positions
        ],
        generate_time=_ts(item.generated_at),
        kind_totals=[
            settlement_pb2.ObligationKindTotal(
                kind=position_pb2.ObligationKind.Value(f"OBLIGATION_KIND_{k.kind}"),
                payer=f"{PARTICIPANTS}/{k.payer_id}",
                payee=f"{PARTICIPANTS}/{k.payee_id}",
                amount=money(code, k.amount_minor),
                obligation_count=k.count,
            )
            for k in item.kind_totals
        ],
    )


def participant(item: Participant) -> settlement_admin_pb2.Participant:
    """The Participant message."""
    return settlement_admin_pb2.Participant(
        name=f"{PARTICIPANTS}/{item.id}",
        partner=f"{PARTNERS}/{item.partner_id}" if item.partner_id else "",
        type=_PARTICIPANT_TYPES[item.type],
        settlement_account=item.settlement_account,
        net_debit_caps=[
            settlement_admin_pb2.NetDebitCap(
                currency_code=c.currency,
                cap=money(c.currency, c.cap_minor),
                alarm_threshold_percent=c.alarm_threshold_percent,
            )
            for c in sorted(item.caps.values(), key=lambda c: c.currency)
        ],
        status=_PARTICIPANT_STATUSES[item.status],
        create_time=_ts(item.created_at),
        update_time=_ts(item.updated_at),
    )


def _difference(item: Difference) -> settlement_admin_pb2.Difference:
    message = settlement_admin_pb2.Difference(
        kind=_DIFFERENCE_KINDS[item.kind],
        obligation=f"{OBLIGATIONS}/{item.obligation_id}" if item.obligation_id else "",
        payment=f"{PAYMENTS}/{item.payment_id}" if item.payment_id else "",
        detail=item.detail,
        participant=f"{PARTICIPANTS}/{item.participant_id}" if item.participant_id else "",
    )
    if item.obligation_kind:
        message.obligation_kind = position_pb2.ObligationKind.Value(f"OBLIGATION_KIND_{item.obligation_kind}")
    if item.expected is not None:
        message.expected.CopyFrom(money(item.expected.currency, item.expected.minor_units))
    if item.actual is not None:
        message.actual.CopyFrom(money(item.actual.currency, item.actual.minor_units))
    return message


def reconciliation(item: ReconciliationReport) -> settlement_admin_pb2.ReconciliationReport:
    """The ReconciliationReport message."""
    return settlement_admin_pb2.ReconciliationReport(
        window=f"{WINDOWS}/{item.window_id}",
        clean=item.clean,
        differences=[_difference(d) for d in item.differences],
        check_time=_ts(item.checked_at),
        kinds=[
            settlement_admin_pb2.ObligationKindReconciliation(
                kind=position_pb2.ObligationKind.Value(f"OBLIGATION_KIND_{k.kind}"),
                obligation_count=k.count,
                obligations_total=money(k.currency, k.obligations_minor),
                ledger_total=money(k.currency, k.ledger_minor),
            )
            for k in item.kinds
        ],
    )


def export(item: SettlementReport, report_format: int) -> settlement_admin_pb2.ExportSettlementReportResponse:
    """The report as a CSV or JSON file."""
    if report_format == settlement_admin_pb2.REPORT_FORMAT_CSV:
        return settlement_admin_pb2.ExportSettlementReportResponse(
            content=report_csv(item).encode(),
            file_name=f"settlement-report-{item.window.id}.csv",
            content_type="text/csv",
        )
    document = json_format.MessageToDict(report(item), preserving_proto_field_name=False)
    return settlement_admin_pb2.ExportSettlementReportResponse(
        content=json.dumps(document, indent=2, sort_keys=True).encode(),
        file_name=f"settlement-report-{item.window.id}.json",
        content_type="application/json",
    )


def report_format(value: int) -> int:
    """CSV or JSON; anything else is INVALID_ARGUMENT."""
    if value not in (settlement_admin_pb2.REPORT_FORMAT_CSV, settlement_admin_pb2.REPORT_FORMAT_JSON):
        raise InvalidArgument.field("format", "must be REPORT_FORMAT_CSV or REPORT_FORMAT_JSON")
    return value
