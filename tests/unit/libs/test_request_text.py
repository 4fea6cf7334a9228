"""The request text check: every string field of every request has a rule, the rules fit the
columns the values are stored in, and nothing a store cannot hold passes."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from google.protobuf import descriptor, descriptor_pool
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.errors import InvalidArgument
from meshlib.idempotency import idempotency_table
from meshlib.policy import contract_policies
from meshlib.request_text import (
    DEFAULT_RULE,
    FIELD_RULES,
    MESSAGE_FIELD_RULES,
    PER_ITEM_FIELDS,
    TextKind,
    TextRule,
    check_request_text,
    is_classified,
    rule_of,
    string_problem,
    text_violations,
)
from openbank.account.v1 import account_admin_pb2, ledger_pb2
from openbank.common.v1 import money_pb2
from openbank.identity.v1 import partner_pb2
from openbank.payment.v1 import payment_pb2
from openbank.settlement.v1 import settlement_admin_pb2
from services.account import tables as account_tables
from services.identity import tables as identity_tables
from services.payment import tables as payment_tables
from services.settlement import tables as settlement_tables


def _string_fields(
    message_type: descriptor.Descriptor, seen: tuple[str, ...] = ()
) -> Iterator[descriptor.FieldDescriptor]:
    for field in message_type.fields:
        if field.type == descriptor.FieldDescriptor.TYPE_STRING:
            yield field
        elif field.type == descriptor.FieldDescriptor.TYPE_MESSAGE and message_type.full_name not in seen:
            yield from _string_fields(field.message_type, (*seen, message_type.full_name))


def _request_types() -> list[descriptor.Descriptor]:
    pool = descriptor_pool.Default()
    return [pool.FindMessageTypeByName(policy.input_type) for policy in contract_policies().values()]


def test_every_string_field_of_every_request_has_a_rule() -> None:
    fields = {field.full_name: field for request in _request_types() for field in _string_fields(request)}
    assert len(fields) > 100
    unclassified = sorted(name for name, field in fields.items() if not is_classified(field))
    assert not unclassified, f"give these request fields a rule in meshlib.request_text: {unclassified}"
    # A rule for one message's field names a field that exists (a renamed field keeps no stale rule).
    assert set(MESSAGE_FIELD_RULES) <= set(fields)


def test_the_per_item_fields_are_batches_of_another_rpcs_request() -> None:
    pool = descriptor_pool.Default()
    inputs = {policy.input_type for policy in contract_policies().values()}
    for full_name in PER_ITEM_FIELDS:
        message, field_name = full_name.rsplit(".", 1)
        field = pool.FindMessageTypeByName(message).fields_by_name[field_name]
        assert field.is_repeated, full_name
        if field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            assert field.message_type.full_name in inputs, full_name


# Request field -> the column its value is stored in (the rule must not allow more).
STORED = [
    (payment_pb2.CreatePaymentRequest, "remittance_information", payment_tables.payments.c.remittance_information),
    (payment_pb2.CreatePaymentRequest, "end_to_end_id", payment_tables.payments.c.end_to_end_id),
    (ledger_pb2.CreateTransferRequest, "description", account_tables.transfers.c.description),
    (ledger_pb2.CreateTransferRequest, "reference", account_tables.transfers.c.reference),
    (ledger_pb2.CreateTransferRequest, "request_id", account_tables.transfers.c.id),
    (account_admin_pb2.FundAccountRequest, "description", account_tables.entries.c.description),
    (account_admin_pb2.OpenAccountRequest, "display_name", account_tables.accounts.c.display_name),
    (partner_pb2.RegisterPartnerRequest, "display_name", identity_tables.partners.c.display_name),
    (partner_pb2.UpdatePartnerRequest, "display_name", identity_tables.partners.c.display_name),
    (partner_pb2.RegisterPartnerRequest, "rate_limit_tier", identity_tables.partners.c.rate_limit_tier),
    (
        partner_pb2.RegisterPartnerRequest,
        "tls_client_certificate_sha256",
        identity_tables.partners.c.tls_client_certificate_sha256,
    ),
    (partner_pb2.RegisterPartnerRequest, "request_id", idempotency_table(sa.MetaData()).c.request_id),
    (
        settlement_admin_pb2.SettleSettlementWindowRequest,
        "settlement_reference",
        settlement_tables.settlement_windows.c.settlement_reference,
    ),
    (
        settlement_admin_pb2.RegisterParticipantRequest,
        "settlement_account",
        settlement_tables.participants.c.settlement_account,
    ),
    (money_pb2.Money, "currency_code", payment_tables.payments.c.currency),
]


@pytest.mark.parametrize(("message", "field", "column"), STORED, ids=[f"{m.__name__}.{f}" for m, f, _ in STORED])
def test_no_rule_allows_more_than_the_column_holds(message: type, field: str, column: sa.Column) -> None:
    rule = rule_of(message.DESCRIPTOR.fields_by_name[field])
    assert rule.max_length <= column.type.length


KINDS = [TextRule(kind, 10_000) for kind in TextKind]
anything = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=50)


@settings(max_examples=400)
@given(value=anything, rule=st.sampled_from([*KINDS, DEFAULT_RULE]))
def test_what_passes_can_be_stored_anywhere(value: str, rule: TextRule) -> None:
    if string_problem(value, rule) is not None:
        return
    assert len(value) <= rule.max_length
    value.encode("utf-8")  # no lone surrogate
    assert "\x00" not in value
    allowed_controls = "\t\n\r" if rule.kind is TextKind.LINES else ""
    assert all(unicodedata.category(c) != "Cc" or c in allowed_controls for c in value)
    if rule.kind is TextKind.TOKEN:
        assert all("!" <= c <= "~" for c in value)


printable = st.text(
    alphabet=st.characters(
        categories=("L", "M", "N", "P", "S", "Zs"), exclude_characters="\u2028\u2029\ufeff\ufffe\uffff"
    ),
    max_size=40,
)


@given(value=printable)
def test_printable_text_of_any_script_is_free_text(value: str) -> None:
    assert string_problem(value, FIELD_RULES["remittance_information"]) is None or len(value) > 140


@pytest.mark.parametrize(
    "value",
    ["a\x00b", "\x1b[31mred", "tab\there", "line\nbreak", "\x7f", "\x85", "\u202eevil", "a\u2028b", "\ud800"],
)
def test_control_characters_are_refused_in_free_text(value: str) -> None:
    problem = string_problem(value, FIELD_RULES["remittance_information"])
    assert problem is not None and "U+" in problem


def test_a_pem_keeps_its_line_breaks_but_not_nul() -> None:
    rule = FIELD_RULES["public_key_pem"]
    assert string_problem("-----BEGIN PUBLIC KEY-----\r\nMFkw\n-----END PUBLIC KEY-----\n", rule) is None
    assert string_problem("-----BEGIN\x00", rule) is not None


def test_identifiers_are_visible_ascii() -> None:
    rule = FIELD_RULES["request_id"]
    assert string_problem("abc-123_x.y:z", rule) is None
    for bad in ("a b", "é", "a\x00", "x" * 65):
        assert string_problem(bad, rule) is not None, bad


def test_violations_name_nested_and_repeated_fields_and_every_bad_one() -> None:
    request = settlement_admin_pb2.RegisterParticipantRequest(
        request_id="ok",
        settlement_account="accounts/a\x00",
        net_debit_caps=[
            settlement_admin_pb2.NetDebitCap(currency_code="EUR"),
            settlement_admin_pb2.NetDebitCap(currency_code="EU\x01", cap=money_pb2.Money(currency_code="EURO")),
        ],
    )
    assert [v.field for v in text_violations(request)] == [
        "settlement_account",
        "net_debit_caps[1].currency_code",
        "net_debit_caps[1].cap.currency_code",
    ]
    with pytest.raises(InvalidArgument) as raised:
        check_request_text(request)
    assert raised.value.reason == "FIELD_INVALID" and raised.value.metadata["field"] == "settlement_account"
    scopes = partner_pb2.RegisterPartnerRequest(allowed_scopes=["accounts:read", "bad scope"])
    assert [v.field for v in text_violations(scopes)] == ["allowed_scopes[1]"]


def test_batch_items_are_left_to_the_batch_each_checked_alone() -> None:
    item = ledger_pb2.CreateTransferRequest(request_id="t1", description="a\x00b")
    batch = ledger_pb2.BatchCreateTransfersRequest(request_id="b1", requests=[item])
    assert text_violations(batch) == []
    assert [v.field for v in text_violations(item)] == ["description"]
    assert [v.field for v in text_violations(ledger_pb2.BatchGetLedgerAccountsRequest(names=["\x00"]))] == []


# ---- page tokens: the filter hash is no secret, so a forged cursor must not reach a store ----


def _forged(cursor: object, filters: str) -> str:
    import base64
    import json

    raw = json.dumps({"c": cursor, "f": filters}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        {"t": "2026-01-01T00:00:00+00:00", "id": "p\x00"},
        {"id": "x" * 129},
        {"seq": True},
        {"seq": 2**63},
        {"seq": 1.5},
        {"id": None},
        {"id": ["a"]},
    ],
)
def test_a_forged_page_token_carrying_what_a_store_cannot_hold_is_invalid(cursor: dict) -> None:
    from meshlib.pagination import decode_page_token, filter_fingerprint

    filters = filter_fingerprint(consent="c1")
    with pytest.raises(InvalidArgument) as raised:
        decode_page_token(_forged(cursor, filters), filters)
    assert raised.value.reason == "PAGE_TOKEN_INVALID"


def test_issued_keyset_cursors_read_back_and_forged_ones_are_invalid_not_internal() -> None:
    import datetime as dt

    from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, time_and_id

    filters = filter_fingerprint(status=None)
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    issued = encode_page_token({"t": at.isoformat(), "id": "p1"}, filters)
    assert time_and_id(decode_page_token(issued, filters)) == (at, "p1")
    assert time_and_id(decode_page_token("", filters)) is None
    for cursor in ({"id": "p1"}, {"t": "yesterday", "id": "p1"}, {"t": 5, "id": "p1"}):
        with pytest.raises(InvalidArgument) as raised:
            time_and_id(decode_page_token(_forged(cursor, filters), filters))
        assert raised.value.reason == "PAGE_TOKEN_INVALID"
