"""The clearing connector's promises, checked the same way on the real connector against a
running simulator (over gRPC) and on the in-memory fake the saga tests use: if the fake drifts
from the real thing, this fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from meshlib.errors import AlreadyExists
from services.payment.adapters.clearing import (
    ClearingConnector,
    ClearingOutcomeUnknown,
    ClearingStatus,
    SchemeAccount,
)
from tests.integration.scheme import samples
from tests.integration.scheme.samples import outbound
from tests.support.scheme import start_scheme
from tests.unit.payment.clearing_fake import Answer, Behaviour, FakeClearingConnector

pytestmark = pytest.mark.integration


def _fake() -> FakeClearingConnector:
    fake = FakeClearingConnector()
    fake.script(samples.REJECTS_AC04, Behaviour.reject("AC04"))
    fake.script(samples.PENDING, Behaviour.accept())
    fake.script(samples.LOST_ACKNOWLEDGEMENT, Behaviour.settle(answer=Answer.LOST_ACKNOWLEDGEMENT))
    fake.script(samples.LOST_REQUEST, Behaviour.settle(answer=Answer.LOST_REQUEST))
    fake.script(samples.RETURNED_AC04, Behaviour.settle_then_return("AC04"))
    return fake


@pytest.fixture(params=["grpc", "fake"])
async def connector(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[ClearingConnector]:  # type: ignore[no-untyped-def]
    if request.param == "fake":
        yield _fake()
        return
    async with start_scheme(tmp_path, rules=samples.RULES) as scheme:
        # Long enough for an answer on a busy machine; the lost-answer cases wait it out.
        yield scheme.connector(deadline_seconds=2.0)


async def test_settles_and_a_resubmission_answers_the_same(connector: ClearingConnector) -> None:
    transfer = outbound()
    ack = await connector.submit(transfer)
    assert (ack.message_id, ack.status, ack.reason_code) == (transfer.message_id, ClearingStatus.SETTLED, "")
    assert ack.clearing_reference and ack.settled_at is not None and ack.payment_return is None
    assert await connector.submit(transfer) == ack
    assert await connector.status(transfer.message_id) == ack


async def test_a_rejection_is_an_answer_with_its_iso_reason(connector: ClearingConnector) -> None:
    transfer = outbound(samples.REJECTS_AC04)
    ack = await connector.submit(transfer)
    assert (ack.status, ack.reason_code, ack.reason_message) == (
        ClearingStatus.REJECTED,
        "AC04",
        "closed account number",
    )
    assert ack.clearing_reference == "" and ack.settled_at is None
    assert (await connector.status(transfer.message_id)).status is ClearingStatus.REJECTED


async def test_accepted_is_not_final(connector: ClearingConnector) -> None:
    ack = await connector.submit(outbound(samples.PENDING))
    assert ack.status is ClearingStatus.ACCEPTED and not ack.status.final and ack.settled_at is None


@pytest.mark.parametrize(
    ("creditor", "agent", "reason"),
    [
        ("DE00370400440000000001", "COBADEFF", "AC01"),  # check digits
        ("DE8937040044053201300", "COBADEFF", "AC01"),  # length
        (samples.SETTLES, "COBA", "RC01"),  # not a BIC
    ],
)
async def test_the_schemes_own_checks_reject(
    connector: ClearingConnector, creditor: str, agent: str, reason: str
) -> None:
    ack = await connector.submit(outbound(creditor, creditor_agent=agent))
    assert (ack.status, ack.reason_code) == (ClearingStatus.REJECTED, reason)


async def test_a_scheme_account_id_is_not_iban_checked(connector: ClearingConnector) -> None:
    ack = await connector.submit(outbound(creditor_account=SchemeAccount.scheme_id("+447700900123")))
    assert ack.status is ClearingStatus.SETTLED


async def test_the_same_message_id_for_another_transfer_is_refused(connector: ClearingConnector) -> None:
    first = outbound(minor=100)
    await connector.submit(first)
    with pytest.raises(AlreadyExists) as refused:
        await connector.submit(outbound(minor=200, message=first.message_id))
    assert refused.value.reason == "REQUEST_ID_REUSED"
    assert (await connector.status(first.message_id)).status is ClearingStatus.SETTLED


async def test_a_message_id_never_sent_is_unknown(connector: ClearingConnector) -> None:
    report = await connector.status(samples.message_id())
    assert report.status is ClearingStatus.UNKNOWN and not report.status.final


async def test_a_lost_acknowledgement_is_recovered_by_asking_the_status(connector: ClearingConnector) -> None:
    transfer = outbound(samples.LOST_ACKNOWLEDGEMENT)
    with pytest.raises(ClearingOutcomeUnknown) as lost:
        await connector.submit(transfer)
    assert lost.value.metadata["message_id"] == transfer.message_id
    assert (await connector.status(transfer.message_id)).status is ClearingStatus.SETTLED
    # Sending it again is safe too: the scheme has it once, and now answers.
    assert (await connector.submit(transfer)).status is ClearingStatus.SETTLED


async def test_a_request_lost_on_its_way_in_is_unknown_and_sent_again(connector: ClearingConnector) -> None:
    transfer = outbound(samples.LOST_REQUEST)
    with pytest.raises(ClearingOutcomeUnknown):
        await connector.submit(transfer)
    assert (await connector.status(transfer.message_id)).status is ClearingStatus.UNKNOWN
    assert (await connector.submit(transfer)).status is ClearingStatus.SETTLED
    assert (await connector.status(transfer.message_id)).status is ClearingStatus.SETTLED


async def test_returns_come_in_a_feed_after_a_cursor(connector: ClearingConnector) -> None:
    start = await connector.returns()
    assert start.returns == () and start.cursor == "" and not start.more
    returned = [outbound(samples.RETURNED_AC04, minor=minor) for minor in (700, 800, 900)]
    await connector.submit(outbound())  # settles, never returns
    for transfer in returned:
        assert (await connector.submit(transfer)).status is ClearingStatus.SETTLED
    first = await _wait_for_returns(connector, "", 2)
    assert [r.message_id for r in first.returns] == [t.message_id for t in returned[:2]]
    assert first.more and first.cursor == first.returns[-1].cursor
    rest = await connector.returns(first.cursor, limit=2)
    assert [r.message_id for r in rest.returns] == [returned[2].message_id] and not rest.more
    item = rest.returns[0]
    assert (item.reason_code, item.reason_message, item.amount.minor_units, item.end_to_end_id) == (
        "AC04",
        "closed account number",
        900,
        "E2E-42",
    )
    assert (await connector.returns(rest.cursor)).returns == ()
    assert (await connector.returns(rest.cursor)).cursor == rest.cursor
    report = await connector.status(returned[2].message_id)
    assert report.status is ClearingStatus.SETTLED and report.payment_return is not None
    assert report.payment_return.return_id == item.return_id and report.payment_return.cursor == ""


async def _wait_for_returns(connector: ClearingConnector, cursor: str, count: int):  # type: ignore[no-untyped-def]
    for _ in range(50):
        page = await connector.returns(cursor, limit=count)
        if len(page.returns) >= count:
            return page
        await asyncio.sleep(0.1)
    raise AssertionError("the returns did not come")
