"""Payment reads over real gRPC on both stores: own data only, rich errors, operator view."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf import duration_pb2

from meshlib.app import start_service
from meshlib.auth.testing import TestIssuer
from meshlib.auth.verifier import static_jwks
from meshlib.grpc_errors import decode_rpc_error
from meshlib.money import Amount
from openbank.payment.v1 import payment_admin_pb2, payment_admin_pb2_grpc, payment_pb2, payment_pb2_grpc
from services.payment.bootstrap import IdentitySide, payment_spec
from services.payment.domain.payments import Payment, PaymentState
from services.payment.settings import PaymentSettings
from services.payment.unit_of_work import PaymentUnitOfWork
from tests.integration.payment.mesh import FakeConsents
from tests.support.consents import consent_view


def _payment(payment_id: str, partner: str, state: PaymentState, age: dt.timedelta) -> Payment:
    when = dt.datetime.now(dt.UTC) - age
    return Payment(
        payment_id=payment_id,
        partner_id=partner,
        consent_id=f"c1-{partner}",
        debtor_account_id="a1",
        creditor_account_id=None,
        creditor_wallet_partner_id=partner,
        amount=Amount("EUR", 1250),
        payment_type="WALLET_TOP_UP",
        state=state,
        created_at=when,
        updated_at=when,
    )


@pytest.fixture
async def payment_service(database_url: str):  # type: ignore[no-untyped-def]
    issuer = TestIssuer(issuer="https://identity.openbank.local", audience="openbank-mesh")
    consents = FakeConsents()
    for partner in ("wallet-a", "wallet-b"):
        consents.views[f"c1-{partner}"] = consent_view(
            consent_id=f"c1-{partner}", partner_id=partner, customer_id="cu1"
        )

    async def no_token() -> str:
        return ""

    spec = payment_spec(identity=lambda runtime: IdentitySide(no_token, consents))
    server = await start_service(
        spec,
        PaymentSettings(port=0, database_url=database_url, recovery_interval_seconds=0, allow_dev_secrets=True),
        jwks_fetcher=static_jwks(issuer.jwks),
    )
    async with PaymentUnitOfWork(server.runtime.database) as uow:
        await uow.payments.add(_payment("p-1", "wallet-a", PaymentState.SETTLED, dt.timedelta(minutes=5)))
        await uow.payments.add(_payment("p-2", "wallet-a", PaymentState.ACCEPTED, dt.timedelta(minutes=5)))
        await uow.payments.add(_payment("p-3", "wallet-b", PaymentState.RECEIVED, dt.timedelta(seconds=1)))
        await uow.commit()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield channel, issuer
    finally:
        await channel.close()
        await server.stop(0)


def _as(issuer: TestIssuer, partner: str, scopes: list[str]) -> tuple[tuple[str, str], ...]:
    token = issuer.token(partner, scopes=scopes, partner_id=partner, consent_id=f"c1-{partner}")
    return (("authorization", f"Bearer {token}"),)


async def test_a_partner_reads_its_own_payment_and_nobody_elses(payment_service) -> None:  # type: ignore[no-untyped-def]
    channel, issuer = payment_service
    stub = payment_pb2_grpc.PaymentServiceStub(channel)
    answer = await stub.GetPayment(
        payment_pb2.GetPaymentRequest(name="payments/p-1"), metadata=_as(issuer, "wallet-a", ["payments:read"])
    )
    assert answer.payment.iso20022_status == "ACSC"
    assert answer.payment.creditor_wallet == "partners/wallet-a"
    assert (answer.payment.amount.currency_code, answer.payment.amount.minor_units) == ("EUR", 1250)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetPayment(
            payment_pb2.GetPaymentRequest(name="payments/p-1"), metadata=_as(issuer, "wallet-b", ["payments:read"])
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetPayment(
            payment_pb2.GetPaymentRequest(name="payment/p-1"), metadata=_as(issuer, "wallet-a", ["payments:read"])
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert decode_rpc_error(raised.value).violations[0].field == "name"


async def test_operators_list_stuck_payments_with_the_admin_scope_only(payment_service) -> None:  # type: ignore[no-untyped-def]
    channel, issuer = payment_service
    admin = payment_admin_pb2_grpc.PaymentAdminServiceStub(channel)
    request = payment_admin_pb2.ListStuckPaymentsRequest(older_than=duration_pb2.Duration(seconds=60), page_size=1)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await admin.ListStuckPayments(request, metadata=_as(issuer, "wallet-a", ["payments:read"]))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    operator = (("authorization", f"Bearer {issuer.token('service:ops', scopes=['payments:admin'])}"),)
    answer = await admin.ListStuckPayments(request, metadata=operator)
    # Only p-2 is mid-saga and older than a minute; p-1 is final, p-3 is fresh.
    assert [p.name for p in answer.payments] == ["payments/p-2"]
    assert answer.next_page_token == ""
