"""The gRPC clearing connector against a running simulator: what only the real wire shows
(deadlines, a scheme that is down, refusals passed through, times and IBANs as sent)."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from meshlib.clients import PeerCaller
from meshlib.errors import InvalidArgument, PermissionDenied, Unavailable
from services.payment.adapters.clearing import (
    ClearingOutcomeUnknown,
    ClearingStatus,
    GrpcClearingConnector,
    SchemeAccount,
)
from tests.integration.scheme import samples
from tests.integration.scheme.samples import outbound
from tests.support.scheme import RunningScheme, start_scheme
from tests.support.servers import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
async def scheme(tmp_path) -> RunningScheme:  # type: ignore[no-untyped-def]
    async with start_scheme(tmp_path, rules=samples.RULES) as running:
        yield running


async def test_an_acknowledgement_later_than_the_deadline_is_recovered(scheme: RunningScheme) -> None:
    transfer = outbound(samples.LATE)
    with pytest.raises(ClearingOutcomeUnknown) as lost:
        await scheme.connector(deadline_seconds=0.4).submit(transfer)
    assert lost.value.metadata == {"message_id": transfer.message_id, "cause": "DEADLINE_EXCEEDED"}
    patient = scheme.connector(deadline_seconds=5)
    assert (await patient.status(transfer.message_id)).status is ClearingStatus.SETTLED
    # A first submission given time enough is answered, late.
    assert (await patient.submit(outbound(samples.LATE))).status is ClearingStatus.SETTLED


async def test_a_scheme_that_is_down() -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")

    async def bearer() -> str:
        return "unused"

    connector = GrpcClearingConnector(channel, PeerCaller(bearer, deadline_seconds=0.5, attempts=2))
    try:
        with pytest.raises(ClearingOutcomeUnknown):
            await connector.submit(outbound())
        with pytest.raises(Unavailable) as down:
            await connector.status("m-1")
        assert not isinstance(down.value, ClearingOutcomeUnknown)
        with pytest.raises(Unavailable):
            await connector.returns()
    finally:
        await channel.close()


async def test_refusals_of_the_message_pass_through_as_they_are(scheme: RunningScheme) -> None:
    connector = scheme.connector()
    bad_debtor = outbound(debtor_account=SchemeAccount.iban("DE00370400440532013000"))
    with pytest.raises(InvalidArgument) as invalid:
        await connector.submit(bad_debtor)
    assert [v.field for v in invalid.value.violations] == ["credit_transfer.debtor_account.iban"]
    with pytest.raises(InvalidArgument):
        await connector.submit(outbound(message="x" * 36))
    assert (await connector.status(bad_debtor.message_id)).status is ClearingStatus.UNKNOWN

    async def reader_only() -> str:
        return scheme.token(("scheme:read",))

    unauthorised = GrpcClearingConnector(scheme.channel, PeerCaller(reader_only, deadline_seconds=2))
    with pytest.raises(PermissionDenied) as denied:
        await unauthorised.submit(outbound())
    assert denied.value.reason == "INSUFFICIENT_SCOPE"


async def test_what_is_sent_and_read_back(scheme: RunningScheme) -> None:
    connector = scheme.connector()
    before = dt.datetime.now(dt.UTC)
    # An IBAN as people write it is sent in electronic format.
    spaced = " ".join(samples.PENDING[i : i + 4] for i in range(0, len(samples.PENDING), 4)).lower()
    transfer = outbound(creditor_account=SchemeAccount.iban(spaced), minor=123_456)
    ack = await connector.submit(transfer)
    assert ack.status is ClearingStatus.ACCEPTED  # the rule for PENDING matched the normalised IBAN
    assert ack.accepted_at is not None and before <= ack.accepted_at <= dt.datetime.now(dt.UTC)
    assert ack.accepted_at.tzinfo is not None and ack.settled_at is None
    stored = await scheme.server.components.clearing.status(transfer.message_id)  # type: ignore[union-attr]
    assert stored.end_to_end_id == "E2E-42"
    record = await scheme.server.components.clearing._transactions.read(  # type: ignore[union-attr]
        lambda uow: uow.clearing.get(transfer.message_id)
    )
    assert record.transfer.creditor_account.value == samples.PENDING
    assert record.transfer.amount.minor_units == 123_456 and record.transfer.amount.currency == "EUR"
    assert record.transfer.remittance_information == "invoice 7" and record.submitted_by == "service:payment"
