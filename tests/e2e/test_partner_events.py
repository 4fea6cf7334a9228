"""Partner events end to end (issue 23): two replicas of every service and of the gateway on
PostgreSQL and Redis, as processes. One mesh for the module.

- A wallet's open StreamEvents (through one gateway) gets its payments' state changes (relayed
  from payment's outbox) and the customer's revocation of its consent, each once, in order;
  PollEvents through the other gateway answers the same log.
- A stream resumed from its cursor, after the gateway, identity and payment replicas serving
  it were killed mid-stream, misses nothing and repeats nothing.
- Postings on alice's account (a top-up, its refund) reach the consent that reads its
  transactions, relayed from account's outbox.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
import pytest_asyncio

from meshcli.demo import _authorise, _pkce, client_credentials_token, create_payment_consent, exchange_code
from meshcli.mesh import PROCESSES, LocalMesh
from meshcli.operator import Operator
from meshcli.seed import seed_demo_data
from openbank.common.v1 import consent_permission_pb2, money_pb2
from openbank.events.v1 import events_pb2, events_pb2_grpc
from openbank.identity.v1 import consent_pb2, consent_pb2_grpc, token_pb2, token_pb2_grpc
from openbank.payment.v1 import payment_pb2, payment_pb2_grpc
from tests.support.servers import PostgresServer, RedisServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

T = TypeVar("T")
SETTLED = "PAYMENT_STATE_SETTLED"


@dataclass
class EventsMesh:
    """The running mesh, its operator and the wallet acme with alice's consent."""

    mesh: LocalMesh
    operator: Operator
    partner: dict[str, Any]
    customer: dict[str, Any]

    def gateway(self, replica: int) -> grpc.aio.Channel:
        """A channel to one gateway replica."""
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.mesh.replica('gateway', replica).port}")

    async def events_token(self, channel: grpc.aio.Channel) -> tuple[tuple[str, str], ...]:
        """The wallet's client-credentials token for its event log (no consent)."""
        answer = await _retrying(
            lambda: token_pb2_grpc.TokenServiceStub(channel).IssueToken(
                token_pb2.IssueTokenRequest(
                    grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                    client_id=self.partner["client_id"],
                    client_secret=self.partner["client_secret"],
                    scopes=["events:read"],
                ),
                timeout=10,
            )
        )
        return (("authorization", f"Bearer {answer.access_token}"),)

    async def payment_consent(self, channel: grpc.aio.Channel) -> tuple[str, str]:
        """An authorised payment consent over alice's account: (consent name, bound token)."""
        tokens = token_pb2_grpc.TokenServiceStub(channel)
        client_token = await client_credentials_token(tokens, self.partner)
        consent, verifier = await create_payment_consent(
            consent_pb2_grpc.ConsentServiceStub(channel),
            client_token.access_token,
            per_payment_minor=10_000,
            reads_per_day=4,
            valid_for=dt.timedelta(days=1),
        )
        authorised = await _authorise(self.operator, consent.name, self.customer)
        bound = await exchange_code(tokens, self.partner, authorised.authorization_code, verifier)
        return consent.name, bound.access_token

    async def top_up(self, channel: grpc.aio.Channel, token: str) -> str:
        """One wallet top-up of 1 cent; its name."""
        request = payment_pb2.CreatePaymentRequest(
            request_id=uuid.uuid4().hex,
            debtor_account=self.customer["account"],
            creditor_wallet=self.partner["partner"],
            amount=money_pb2.Money(currency_code="EUR", minor_units=1),
            type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
        )
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        created = await _retrying(
            lambda: stub.CreatePayment(request, metadata=(("authorization", f"Bearer {token}"),), timeout=20)
        )
        return created.payment.name


async def _retrying(call: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """``call`` again while it fails UNAVAILABLE (a replica was just killed)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def events_mesh(
    tmp_path_factory: pytest.TempPathFactory, postgres_srv: PostgresServer, redis_srv: RedisServer
) -> AsyncIterator[EventsMesh]:
    data_dir = tmp_path_factory.mktemp("events") / "data"
    prefix = f"ev{free_port()}:"
    mesh = LocalMesh(
        data_dir,
        ports={name: free_port() for name, _ in PROCESSES},
        quiet=os.environ.get("OBM_TEST_MESH_OUTPUT") != "1",
        extra_env={
            "DATABASE_URL": postgres_srv.url_for(f"ev{free_port()}"),
            "REDIS_URL": redis_srv.url,
            "OBM_INVALIDATION_CHANNEL": f"{prefix}inv",
            "OBM_EVENT_CHANNEL": f"{prefix}events",
            "OBM_RATELIMIT_KEY_PREFIX": f"{prefix}rl:",
            "OBM_LOG_LEVEL": "WARNING",
            "OBM_SAGA_LEASE_SECONDS": "3",
            "OBM_RECOVERY_INTERVAL_SECONDS": "1",
            # A killed relay's lease lapses quickly.
            "OBM_EVENT_RELAY_LEASE_SECONDS": "2",
        },
        replicas=2,
        ready_timeout=180,  # ten processes starting at once on a busy 2-core machine
    )
    try:  # a mesh that failed to start is stopped too (no process left behind)
        await mesh.start()
        operator = Operator(data_dir, ports=mesh.ports)
        try:
            demo = await seed_demo_data(operator, say=lambda _: None)
            yield EventsMesh(mesh, operator, demo["partners"]["acme"], demo["customers"]["alice"])
        finally:
            await operator.close()
    finally:
        await mesh.stop(grace=10)


async def _read_until(
    stream: Any, seen: list[events_pb2.Event], done: Callable[[list[events_pb2.Event]], bool], timeout: float = 90
) -> None:
    async def read() -> None:
        async for message in stream:
            seen.append(message.event)
            if done(seen):
                return

    await asyncio.wait_for(read(), timeout)


def _settled(payments: list[str]) -> Callable[[list[events_pb2.Event]], bool]:
    def done(seen: list[events_pb2.Event]) -> bool:
        settled = {e.resource for e in seen if e.payment.state == SETTLED}
        return set(payments) <= settled

    return done


def _exactly_once_in_order(events: list[events_pb2.Event], after: int) -> None:
    assert [int(e.cursor) for e in events] == list(range(after + 1, after + 1 + len(events)))
    assert len({e.event_id for e in events}) == len(events)


async def test_payments_and_a_revocation_reach_an_open_stream_and_polling(events_mesh: EventsMesh) -> None:
    mesh = events_mesh
    first, second = mesh.gateway(1), mesh.gateway(2)
    try:
        token = await mesh.events_token(first)
        stream = events_pb2_grpc.EventServiceStub(first).StreamEvents(events_pb2.StreamEventsRequest(), metadata=token)
        await stream.wait_for_connection()
        consent, bound = await mesh.payment_consent(second)
        payments = [await mesh.top_up(second, bound) for _ in range(3)]
        seen: list[events_pb2.Event] = []
        await _read_until(stream, seen, _settled(payments))
        # The customer revokes the consent at the bank: the open stream is told.
        await consent_pb2_grpc.ConsentServiceStub(mesh.operator.channel("identity")).CustomerRevokeConsent(
            consent_pb2.CustomerRevokeConsentRequest(
                request_id=uuid.uuid4().hex, name=consent, customer=mesh.customer["customer"]
            ),
            metadata=await mesh.operator.bank_app_metadata(),
            timeout=10,
        )
        await _read_until(stream, seen, lambda s: s[-1].type == events_pb2.EVENT_TYPE_CONSENT_REVOKED)
        stream.cancel()
        assert seen[0].type == events_pb2.EVENT_TYPE_CONSENT_AUTHORISED and seen[0].consent == consent
        assert seen[-1].consent == consent and seen[-1].resource == consent
        for payment in payments:
            states = [e.payment.state for e in seen if e.resource == payment]
            assert states[-1] == SETTLED and len(states) == len(set(states)), states
            assert all(e.consent == consent for e in seen if e.resource == payment)
        start = int(seen[0].cursor) - 1
        _exactly_once_in_order(seen, start)
        # Aggregated polling through the other gateway: the same log.
        polled = await events_pb2_grpc.EventServiceStub(second).PollEvents(
            events_pb2.PollEventsRequest(request_id=uuid.uuid4().hex, after_cursor=str(start), max_events=1000),
            metadata=await mesh.events_token(second),
            timeout=10,
        )
        assert [e.event_id for e in polled.events] == [e.event_id for e in seen]
    finally:
        await first.close()
        await second.close()


async def test_a_stream_resumed_after_its_replicas_died_misses_and_repeats_nothing(events_mesh: EventsMesh) -> None:
    mesh = events_mesh
    first, second = mesh.gateway(1), mesh.gateway(2)
    try:
        _, bound = await mesh.payment_consent(second)
        head = await events_pb2_grpc.EventServiceStub(second).PollEvents(
            events_pb2.PollEventsRequest(request_id=uuid.uuid4().hex, max_events=1000),
            metadata=await mesh.events_token(second),
            timeout=10,
        )
        start = int(head.events[-1].cursor) if head.events else 0
        stream = events_pb2_grpc.EventServiceStub(first).StreamEvents(
            events_pb2.StreamEventsRequest(after_cursor=str(start)), metadata=await mesh.events_token(first)
        )
        payments = [await mesh.top_up(second, bound) for _ in range(2)]
        seen: list[events_pb2.Event] = []
        await _read_until(stream, seen, lambda s: len(s) >= 2)
        # The gateway serving the stream, and a replica of identity and of payment, die.
        killed = [mesh.mesh.replica(name, 1) for name in ("gateway", "identity", "payment")]
        for child in killed:
            mesh.mesh.kill(child)
        with pytest.raises(grpc.aio.AioRpcError):
            await _read_until(stream, seen, lambda _: False, timeout=30)
        payments += [await mesh.top_up(second, bound) for _ in range(3)]  # while they are down
        # Resume from the last cursor received, through the other gateway, as often as a dead
        # replica behind it ends the stream (as a wallet's SDK does).
        token = await mesh.events_token(second)
        resumptions = 0
        deadline = time.monotonic() + 90
        while not _settled(payments)(seen):
            resumptions += 1
            resumed = events_pb2_grpc.EventServiceStub(second).StreamEvents(
                events_pb2.StreamEventsRequest(after_cursor=seen[-1].cursor), metadata=token
            )
            try:
                await _read_until(resumed, seen, _settled(payments), timeout=max(1.0, deadline - time.monotonic()))
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline, error
                await asyncio.sleep(0.2)
            finally:
                resumed.cancel()
        assert resumptions >= 1
        _exactly_once_in_order(seen, start)
        for child in killed:
            await mesh.mesh.restart(child)
    finally:
        await first.close()
        await second.close()


async def _transactions_consent(mesh: EventsMesh, channel: grpc.aio.Channel) -> tuple[str, str]:
    """An authorised consent over alice's account that may read its transactions and pay
    from it: (consent name, bound token)."""
    tokens = token_pb2_grpc.TokenServiceStub(channel)
    client_token = await client_credentials_token(tokens, mesh.partner)
    verifier, challenge = _pkce()
    request = consent_pb2.CreateConsentRequest(
        request_id=uuid.uuid4().hex,
        permissions=[
            consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS,
            consent_permission_pb2.CONSENT_PERMISSION_READ_TRANSACTIONS,
            consent_permission_pb2.CONSENT_PERMISSION_INITIATE_PAYMENTS,
        ],
        per_payment_limit=money_pb2.Money(currency_code="EUR", minor_units=10_000),
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    request.expire_time.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    consent = (
        await consent_pb2_grpc.ConsentServiceStub(channel).CreateConsent(
            request, metadata=(("authorization", f"Bearer {client_token.access_token}"),), timeout=10
        )
    ).consent
    authorised = await _authorise(mesh.operator, consent.name, mesh.customer)
    bound = await exchange_code(tokens, mesh.partner, authorised.authorization_code, verifier)
    return consent.name, bound.access_token


async def test_postings_on_a_consented_account_reach_the_consents_that_read_its_transactions(
    events_mesh: EventsMesh,
) -> None:
    """A wallet top-up debits alice's account and its refund credits it back: each posting is an
    event (masked number, amount, the payment as reference) for the consent with
    READ_TRANSACTIONS, relayed from account's outbox; the earlier payment-only consents get none."""
    mesh = events_mesh
    channel = mesh.gateway(2)
    try:
        consent, bound = await _transactions_consent(mesh, channel)
        payment = await mesh.top_up(channel, bound)
        refunds_token = await token_pb2_grpc.TokenServiceStub(channel).IssueToken(
            token_pb2.IssueTokenRequest(
                grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                client_id=mesh.partner["client_id"],
                client_secret=mesh.partner["client_secret"],
                scopes=["payments:write"],
            ),
            timeout=10,
        )
        refund = await payment_pb2_grpc.PaymentServiceStub(channel).RefundPayment(
            payment_pb2.RefundPaymentRequest(
                request_id=uuid.uuid4().hex,
                name=payment,
                amount=money_pb2.Money(currency_code="EUR", minor_units=1),
                reason="CUST",
            ),
            metadata=(("authorization", f"Bearer {refunds_token.access_token}"),),
            timeout=20,
        )
        assert refund.refund.state == payment_pb2.PAYMENT_STATE_SETTLED, refund.refund
        moved = (events_pb2.EVENT_TYPE_ACCOUNT_DEBITED, events_pb2.EVENT_TYPE_ACCOUNT_CREDITED)
        token = await mesh.events_token(channel)
        found: list[events_pb2.Event] = []
        deadline = time.monotonic() + 60
        while len(found) < 2 and time.monotonic() < deadline:
            page = await events_pb2_grpc.EventServiceStub(channel).PollEvents(
                events_pb2.PollEventsRequest(
                    request_id=uuid.uuid4().hex, after_cursor="0", max_events=1000, types=moved
                ),
                metadata=token,
                timeout=10,
            )
            found = list(page.events)
            await asyncio.sleep(0.3)
        # Only this consent reads alice's transactions: every movement told is its own.
        assert [(e.type, e.consent, e.account.reference) for e in found] == [
            (events_pb2.EVENT_TYPE_ACCOUNT_DEBITED, consent, payment),
            (events_pb2.EVENT_TYPE_ACCOUNT_CREDITED, consent, refund.refund.name),
        ]
        for event in found:
            assert event.resource == mesh.customer["account"]
            assert (event.account.amount.currency_code, event.account.amount.minor_units) == ("EUR", 1)
            masked = event.account.masked_account_number
            assert masked.startswith("••••") and len(masked) == 8 and masked[4:].isdigit(), masked
        # The refund is a payment of its own: its changes are in the log too, under the consent.
        refund_states: list[str] = []
        while SETTLED not in refund_states and time.monotonic() < deadline + 30:
            page = await events_pb2_grpc.EventServiceStub(channel).PollEvents(
                events_pb2.PollEventsRequest(
                    request_id=uuid.uuid4().hex,
                    after_cursor="0",
                    max_events=1000,
                    types=[events_pb2.EVENT_TYPE_PAYMENT_STATE_CHANGED],
                    consents=[consent],
                ),
                metadata=token,
                timeout=10,
            )
            refund_states = [e.payment.state for e in page.events if e.resource == refund.refund.name]
            await asyncio.sleep(0.3)
        assert refund_states[-1] == SETTLED and len(refund_states) == len(set(refund_states)) >= 2, refund_states
    finally:
        await channel.close()
