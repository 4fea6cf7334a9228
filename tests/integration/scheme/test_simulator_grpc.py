"""The simulator over real gRPC: the contract's errors (FIELD_INVALID naming each field, scopes,
NOT_FOUND, page tokens), late answers, returns days later on a moved clock, and the store on
SQLite and PostgreSQL (replays, concurrent twins, the returns feed)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import grpc
import pytest
from google.rpc import error_details_pb2

from meshlib.grpc_errors import decode_status, error_info
from openbank.common.v1 import money_pb2
from openbank.scheme.v1 import scheme_pb2
from services.payment.adapters.clearing import submit_request
from tests.integration.scheme import samples
from tests.integration.scheme.samples import outbound
from tests.support.scheme import RunningScheme, start_scheme

pytestmark = pytest.mark.integration


def _error(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, list[str]]:
    status = decode_status(error.trailing_metadata())
    info = error_info(status)
    fields: list[str] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return error.code(), info.reason if info else "", fields


async def _fails(call, code: grpc.StatusCode, reason: str) -> list[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    found = _error(failed.value)
    assert found[:2] == (code, reason), failed.value.details()
    return found[2]


@pytest.fixture
async def scheme(tmp_path) -> RunningScheme:  # type: ignore[no-untyped-def]
    async with start_scheme(tmp_path, rules=samples.RULES) as running:
        yield running


async def test_a_malformed_message_names_every_bad_field(scheme: RunningScheme) -> None:
    fields = await _fails(
        scheme.stub.SubmitCreditTransfer(scheme_pb2.SubmitCreditTransferRequest(), metadata=scheme.metadata()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
    assert fields == ["request_id", "credit_transfer"]
    request = submit_request(outbound())
    request.request_id = "x" * 36
    transfer = request.credit_transfer
    transfer.end_to_end_id = " "
    transfer.instructed_amount.CopyFrom(money_pb2.Money(currency_code="XXX", minor_units=0))
    transfer.debtor_name = ""
    transfer.debtor_account.iban = "DE00370400440532013000"
    transfer.debtor_agent = "OBNK"
    transfer.creditor_account.Clear()
    transfer.creditor_agent = ""
    fields = await _fails(
        scheme.stub.SubmitCreditTransfer(request, metadata=scheme.metadata()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
    prefix = "credit_transfer."
    assert fields == [
        "request_id",
        f"{prefix}end_to_end_id",
        f"{prefix}instructed_amount.currency_code",
        f"{prefix}instructed_amount.minor_units",
        f"{prefix}debtor_name",
        f"{prefix}debtor_account.iban",
        f"{prefix}debtor_agent",
        f"{prefix}creditor_account",
        f"{prefix}creditor_agent",
    ]
    # Text the store cannot hold is refused before anything else looks at it.
    request = submit_request(outbound())
    request.credit_transfer.creditor_name = "Bob\x00"
    fields = await _fails(
        scheme.stub.SubmitCreditTransfer(request, metadata=scheme.metadata()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
    assert fields == [f"{prefix}creditor_name"]


async def test_tokens_and_scopes(scheme: RunningScheme) -> None:
    request = submit_request(outbound())
    await _fails(scheme.stub.SubmitCreditTransfer(request), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    reader = scheme.metadata(("scheme:read",))
    writer = scheme.metadata(("scheme:write",))
    await _fails(
        scheme.stub.SubmitCreditTransfer(request, metadata=reader),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )
    await scheme.stub.SubmitCreditTransfer(request, metadata=writer)
    status = scheme_pb2.GetCreditTransferStatusRequest(message_id=request.request_id)
    await _fails(
        scheme.stub.GetCreditTransferStatus(status, metadata=writer),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )
    await _fails(
        scheme.stub.ListReturns(scheme_pb2.ListReturnsRequest(), metadata=writer),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )
    assert (await scheme.stub.GetCreditTransferStatus(status, metadata=reader)).status_report.iso20022_status == "ACSC"


async def test_status_of_an_unknown_or_malformed_message_id(scheme: RunningScheme) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await scheme.stub.GetCreditTransferStatus(
            scheme_pb2.GetCreditTransferStatusRequest(message_id="nobody-sent-this"), metadata=scheme.metadata()
        )
    assert _error(unknown.value)[:2] == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")
    assert error_info(decode_status(unknown.value.trailing_metadata())).metadata["message_id"] == "nobody-sent-this"
    fields = await _fails(
        scheme.stub.GetCreditTransferStatus(
            scheme_pb2.GetCreditTransferStatusRequest(message_id="a/b"), metadata=scheme.metadata()
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
    assert fields == ["message_id"]


async def test_a_late_answer_is_late_and_the_status_already_known(scheme: RunningScheme) -> None:
    request = submit_request(outbound(samples.LATE))
    metadata = scheme.metadata()
    await _fails(
        scheme.stub.SubmitCreditTransfer(request, metadata=metadata, timeout=0.4), grpc.StatusCode.DEADLINE_EXCEEDED, ""
    )
    status = scheme_pb2.GetCreditTransferStatusRequest(message_id=request.request_id)
    report = (await scheme.stub.GetCreditTransferStatus(status, metadata=metadata)).status_report
    assert report.status == scheme_pb2.TRANSACTION_STATUS_SETTLED
    # A first submission that waits long enough gets its answer late.
    late = submit_request(outbound(samples.LATE))
    began = time.monotonic()
    answer = await scheme.stub.SubmitCreditTransfer(late, metadata=metadata, timeout=10)
    assert time.monotonic() - began >= 1.4
    assert answer.status_report.status == scheme_pb2.TRANSACTION_STATUS_SETTLED


async def test_list_returns_arguments_and_page_tokens(scheme: RunningScheme) -> None:
    metadata = scheme.metadata()
    for minor in (100, 200, 300):
        await scheme.stub.SubmitCreditTransfer(
            submit_request(outbound(samples.RETURNED_AC04, minor)), metadata=metadata
        )
    first = await scheme.stub.ListReturns(scheme_pb2.ListReturnsRequest(page_size=2), metadata=metadata)
    assert [r.returned_amount.minor_units for r in first.returns] == [100, 200] and first.next_page_token
    assert [r.cursor for r in first.returns] == ["1", "2"]
    second = await scheme.stub.ListReturns(
        scheme_pb2.ListReturnsRequest(page_size=2, page_token=first.next_page_token), metadata=metadata
    )
    assert [r.returned_amount.minor_units for r in second.returns] == [300] and not second.next_page_token
    after = await scheme.stub.ListReturns(scheme_pb2.ListReturnsRequest(after_cursor="2"), metadata=metadata)
    assert [r.cursor for r in after.returns] == ["3"]
    assert after.returns[0].return_time.ToDatetime() > dt.datetime(2020, 1, 1)
    await _fails(
        scheme.stub.ListReturns(scheme_pb2.ListReturnsRequest(page_size=-1), metadata=metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
    await _fails(
        scheme.stub.ListReturns(scheme_pb2.ListReturnsRequest(after_cursor="x1"), metadata=metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
    await _fails(
        scheme.stub.ListReturns(
            scheme_pb2.ListReturnsRequest(page_token=first.next_page_token, after_cursor="1"), metadata=metadata
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "PAGE_TOKEN_INVALID",
    )


class MovableClock:
    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


async def test_a_return_three_days_later(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = {
        "rules": [
            {
                "name": "deceased",
                "match": {"creditor_account": samples.RETURNED_AC04},
                "action": "return",
                "reason": "MD07",
                "return_after_seconds": 259200,
            }
        ]
    }
    clock = MovableClock()
    async with start_scheme(tmp_path, rules=rules, clock=clock) as scheme:
        connector = scheme.connector()
        transfer = outbound(samples.RETURNED_AC04)
        ack = await connector.submit(transfer)
        assert ack.settled_at is not None
        clock.offset = dt.timedelta(days=2, hours=23)
        assert (await connector.returns()).returns == ()
        clock.offset = dt.timedelta(days=3, seconds=1)
        [item] = (await connector.returns()).returns
        assert (item.message_id, item.reason_code) == (transfer.message_id, "MD07")
        assert item.returned_at - ack.settled_at == dt.timedelta(days=3)


async def test_the_store_on_sqlite_and_postgresql(tmp_path, database_url: str) -> None:  # type: ignore[no-untyped-def]
    async with start_scheme(tmp_path, rules=samples.RULES, database_url=database_url) as scheme:
        metadata = scheme.metadata()
        # Ten twins of one first submission at once: one transfer, one answer.
        request = submit_request(outbound())
        answers = await asyncio.gather(
            *(scheme.stub.SubmitCreditTransfer(request, metadata=metadata, timeout=10) for _ in range(10))
        )
        assert len({a.status_report.clearing_reference for a in answers}) == 1
        changed = submit_request(outbound(minor=1, message=request.request_id))
        await _fails(
            scheme.stub.SubmitCreditTransfer(changed, metadata=metadata),
            grpc.StatusCode.ALREADY_EXISTS,
            "REQUEST_ID_REUSED",
        )
        # The returns feed: many collectors at once, every return once, in due order.
        returned = [submit_request(outbound(samples.RETURNED_AC04, minor)) for minor in range(1, 21)]
        for item in returned:
            await scheme.stub.SubmitCreditTransfer(item, metadata=metadata)
        clearing = scheme.server.components.clearing  # type: ignore[union-attr]
        await asyncio.gather(*(clearing.collect_returns() for _ in range(5)))
        feed = await scheme.stub.ListReturns(scheme_pb2.ListReturnsRequest(page_size=100), metadata=metadata)
        assert [r.original_message_id for r in feed.returns] == [r.request_id for r in returned]
        assert [r.cursor for r in feed.returns] == [str(n) for n in range(1, 21)]
        # Dropped, then delivered: one transfer.
        lost = submit_request(outbound(samples.LOST_REQUEST))
        await _fails(
            scheme.stub.SubmitCreditTransfer(lost, metadata=metadata, timeout=0.3),
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "",
        )
        status = scheme_pb2.GetCreditTransferStatusRequest(message_id=lost.request_id)
        await _fails(
            scheme.stub.GetCreditTransferStatus(status, metadata=metadata),
            grpc.StatusCode.NOT_FOUND,
            "RESOURCE_NOT_FOUND",
        )
        answer = await scheme.stub.SubmitCreditTransfer(lost, metadata=metadata, timeout=5)
        assert answer.status_report.iso20022_status == "ACSC"
