"""Domain errors, their gRPC mapping, pagination, money and names: plain unit tests."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from hypothesis import given
from hypothesis import strategies as st

from meshlib import errors as e
from meshlib.grpc_errors import error_info, to_rpc_status
from meshlib.money import Amount, amount_from_fields
from meshlib.names import parse_name
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size


def _details(status, message_type):  # type: ignore[no-untyped-def]
    found = []
    for detail in status.details:
        if detail.Is(message_type.DESCRIPTOR):
            message = message_type()
            detail.Unpack(message)
            found.append(message)
    return found


def test_invalid_argument_maps_to_bad_request_with_every_field() -> None:
    error = e.InvalidArgument([e.FieldViolation("amount.minor_units", "must be > 0"), e.FieldViolation("name", "bad")])
    code, status = to_rpc_status(error, "account.openbank.dev")
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(status)
    assert info is not None
    assert (info.reason, info.domain, info.metadata["field"]) == (
        "FIELD_INVALID",
        "account.openbank.dev",
        "amount.minor_units",
    )
    (bad_request,) = _details(status, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["amount.minor_units", "name"]


def test_resource_exhausted_carries_retry_info_and_quota_failure() -> None:
    error = e.ResourceExhausted(
        "slow down", retry_after_seconds=1.5, violations=[e.QuotaViolation("partners/p1", "reads: 10/s")]
    )
    code, status = to_rpc_status(error, "gateway.openbank.dev")
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    (retry,) = _details(status, error_details_pb2.RetryInfo)
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (1, 500_000_000)
    (quota,) = _details(status, error_details_pb2.QuotaFailure)
    assert quota.violations[0].subject == "partners/p1"


@pytest.mark.parametrize(("requested", "expected"), [(0, 50), (1, 1), (50, 50), (500, 500), (501, 500), (10_000, 500)])
def test_page_size_follows_aip_158(requested: int, expected: int) -> None:
    assert page_size(requested) == expected


def test_negative_page_size_is_invalid_argument() -> None:
    with pytest.raises(e.InvalidArgument) as raised:
        page_size(-1)
    assert raised.value.violations[0].field == "page_size"


# The values a service puts in a cursor: 64-bit integers and short visible-ASCII ids and times.
cursor_values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20),
)


@given(cursor=st.dictionaries(st.text(max_size=5), cursor_values, max_size=4))
def test_page_token_round_trips_and_is_bound_to_its_filters(cursor: dict) -> None:
    filters = filter_fingerprint(account="a1", state="SETTLED")
    token = encode_page_token(cursor, filters)
    assert decode_page_token(token, filters) == cursor
    with pytest.raises(e.InvalidArgument) as raised:
        decode_page_token(token, filter_fingerprint(account="a2"))
    assert raised.value.reason == "PAGE_TOKEN_INVALID"


@given(garbage=st.text(min_size=1, max_size=200))
def test_garbage_page_tokens_are_rejected_not_crashing(garbage: str) -> None:
    try:
        decode_page_token(garbage, "f")
    except e.InvalidArgument as error:
        assert error.reason == "PAGE_TOKEN_INVALID"


def test_amounts_are_exact_and_refuse_mixing_currencies() -> None:
    assert Amount("EUR", 10) + Amount("EUR", 5) == Amount("EUR", 15)
    assert Amount("JPY", 1234).format() == "JPY 1234"
    assert Amount("EUR", -1234).format() == "EUR -12.34"
    with pytest.raises(ValueError):
        Amount("EUR", 1) + Amount("USD", 1)
    with pytest.raises(TypeError):
        Amount("EUR", 1.5)  # type: ignore[arg-type]


def test_money_validation_names_each_bad_field() -> None:
    collector = e.FieldCollector()
    assert amount_from_fields("XXX", -5, "amount", collector) is None
    assert {v.field for v in collector.violations} == {"amount.currency_code", "amount.minor_units"}


def test_resource_names_are_parsed_strictly() -> None:
    assert parse_name("accounts/a-1", "accounts") == "a-1"
    for bad in ("accounts/", "account/a1", "accounts/a/b", "accounts/../x", ""):
        with pytest.raises(e.InvalidArgument):
            parse_name(bad, "accounts")
