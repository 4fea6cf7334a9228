"""Payments under a mandate (VRP, sweeping) over gRPC, on SQLite and PostgreSQL: every refusal
reason, payments racing for a period's last allowance, and what the mandate used so far.

Identity is not run: the consent lookup is the fake, holding the mandate as identity gives it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid

import grpc
import pytest

from meshlib.grpc_errors import decode_rpc_error
from meshlib.mandates import Mandate, PeriodicLimit
from openbank.common.v1 import mandate_period_pb2
from openbank.payment.v1 import mandate_pb2, mandate_pb2_grpc, payment_pb2
from tests.integration.payment.mesh import CUSTOMER, Mesh, running_mesh, standard_mesh
from tests.support.servers import create_database

NOW = dt.datetime.now(dt.UTC)


def _mandate(mesh: Mesh, *limits: PeriodicLimit, **fields: object) -> Mandate:
    values: dict[str, object] = dict(
        mandate_type="OTHER",
        creditor_account_id=mesh.accounts["bob"],
        creditor_wallet_partner_id=None,
        currency="EUR",
        maximum_individual_minor=1_000,
        periodic_limits=limits,
        valid_from=NOW - dt.timedelta(days=1),
        valid_to=NOW + dt.timedelta(days=30),
    )
    values.update(fields)
    return Mandate(**values)  # type: ignore[arg-type]


def _grant(mesh: Mesh, consent_id: str, mandate: Mandate, **fields: object) -> None:
    """A mandate's consent over alice, as identity would answer it."""
    mesh.grant(consent_id, "partner-1", ["alice"], mandate=mandate, **fields)
    view = mesh.consents.views[consent_id]
    mesh.consents.views[consent_id] = dataclasses.replace(view, permissions=frozenset({"INITIATE_PAYMENTS"}))


async def _refusal(call) -> tuple[grpc.StatusCode, str, dict[str, str]]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = decode_rpc_error(raised.value)
    return raised.value.code(), error.reason, dict(error.metadata)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_payments_under_a_mandate(request, tmp_path, store) -> None:  # type: ignore[no-untyped-def]
    names = ("account", "settlement", "payment")
    if store == "sqlite":
        urls = {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in names}
    else:
        server = request.getfixturevalue("postgres_srv")
        urls = {n: await create_database(server, f"t_{n}_{uuid.uuid4().hex[:12]}") for n in names}
    async with running_mesh(urls) as running:
        mesh = await standard_mesh(running, funds=100_000)
        await mesh.open_account("carol")
        failed = grpc.StatusCode.FAILED_PRECONDITION

        # Paid without asking again, to the creditor, up to the exact maximum per payment.
        day_limit = PeriodicLimit("DAY", "CALENDAR", 5_000)
        _grant(mesh, "m1", _mandate(mesh, day_limit, PeriodicLimit("YEAR", "CONSENT", 90_000)))
        first = await mesh.transfer(1_000, consent="m1")
        assert first.state == payment_pb2.PAYMENT_STATE_SETTLED
        # The partner is told the mandate payment's changes like any payment's (issue 23).
        states = (await mesh.told_states([first.name]))[first.name]
        assert states[0] == payment_pb2.PAYMENT_STATE_RECEIVED and states[-1] == payment_pb2.PAYMENT_STATE_SETTLED
        assert len(states) == len(set(states)), states
        assert await _refusal(mesh.transfer(1_001, consent="m1")) == (
            failed,
            "MANDATE_AMOUNT_EXCEEDED",
            {"maximum_minor": "1000"},
        )
        # Another creditor, an account or the partner's wallet, is refused.
        creditor = {"creditor": f"accounts/{mesh.accounts['bob']}"}
        assert await _refusal(mesh.transfer(10, creditor="carol", consent="m1")) == (
            failed,
            "MANDATE_CREDITOR_MISMATCH",
            creditor,
        )
        assert await _refusal(mesh.top_up(10, consent="m1")) == (failed, "MANDATE_CREDITOR_MISMATCH", creditor)

        # Payments racing for the day's last 4 000: exactly four of eight get it.
        racing = await asyncio.gather(*(mesh.transfer(1_000, consent="m1") for _ in range(8)), return_exceptions=True)
        settled = [p for p in racing if isinstance(p, payment_pb2.Payment)]
        assert len(settled) == 4 and all(p.state == payment_pb2.PAYMENT_STATE_SETTLED for p in settled)
        refused = [decode_rpc_error(e) for e in racing if isinstance(e, grpc.aio.AioRpcError)]
        assert [e.reason for e in refused] == ["MANDATE_PERIOD_LIMIT_EXCEEDED"] * 4
        assert {e.metadata["period_type"] for e in refused} == {"DAY"}
        assert {e.metadata["remaining_minor"] for e in refused} == {"0"}
        assert await mesh.balance("bob") == (5_000, 5_000)

        # What the mandate used, for the partner and for the customer's bank pages.
        stub = mandate_pb2_grpc.MandateServiceStub(mesh.channels["payment"])
        usage = await stub.GetMandateUsage(mandate_pb2.GetMandateUsageRequest(), metadata=mesh.partner(consent_id="m1"))
        assert usage.consent == "consents/m1"
        assert [(p.period_type, p.used_amount.minor_units, p.remaining_amount.minor_units) for p in usage.periods] == [
            (mandate_period_pb2.MANDATE_PERIOD_TYPE_DAY, 5_000, 0),
            (mandate_period_pb2.MANDATE_PERIOD_TYPE_YEAR, 5_000, 85_000),
        ]
        day = usage.periods[0]
        assert day.start_time.ToDatetime(tzinfo=dt.UTC) == NOW.replace(hour=0, minute=0, second=0, microsecond=0)
        bank_pages = (
            ("authorization", f"Bearer {mesh.issuer.token('service:bankweb', scopes=['consents:authorise'])}"),
        )
        customer = await stub.GetCustomerMandateUsage(
            mandate_pb2.GetCustomerMandateUsageRequest(consent="consents/m1", customer=f"customers/{CUSTOMER}"),
            metadata=bank_pages,
        )
        assert list(customer.periods) == list(usage.periods)
        code, reason, _ = await _refusal(
            stub.GetCustomerMandateUsage(
                mandate_pb2.GetCustomerMandateUsageRequest(consent="consents/m1", customer="customers/someone-else"),
                metadata=bank_pages,
            )
        )
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")
        assert (await _refusal(stub.GetMandateUsage(mandate_pb2.GetMandateUsageRequest(), metadata=mesh.partner())))[
            1
        ] == "CONSENT_NOT_A_MANDATE"

        # Each period type refuses on its own (all its payments today, in its current period).
        for index, kind in enumerate(("WEEK", "FORTNIGHT", "MONTH", "HALF_YEAR", "YEAR")):
            consent = f"p{index}"
            _grant(mesh, consent, _mandate(mesh, PeriodicLimit(kind, "CONSENT", 1_500)))
            await mesh.transfer(1_000, consent=consent)
            code, reason, metadata = await _refusal(mesh.transfer(501, consent=consent))
            assert (code, reason, metadata["period_type"], metadata["remaining_minor"]) == (
                failed,
                "MANDATE_PERIOD_LIMIT_EXCEEDED",
                kind,
                "500",
            )
            assert (await mesh.transfer(500, consent=consent)).state == payment_pb2.PAYMENT_STATE_SETTLED

        # Outside its validity, revoked, or never authorised.
        _grant(mesh, "later", _mandate(mesh, valid_from=NOW + dt.timedelta(hours=1)))
        _grant(mesh, "over", _mandate(mesh, valid_to=NOW - dt.timedelta(seconds=1)))
        for consent in ("later", "over"):
            assert (await _refusal(mesh.transfer(10, consent=consent)))[:2] == (failed, "MANDATE_NOT_VALID_NOW")
        _grant(mesh, "revoked", _mandate(mesh), state="REVOKED")
        _grant(mesh, "awaiting", _mandate(mesh), state="AWAITING_AUTHORISATION")
        denied = grpc.StatusCode.PERMISSION_DENIED
        assert (await _refusal(mesh.transfer(10, consent="revoked")))[:2] == (denied, "CONSENT_REVOKED")
        assert (await _refusal(mesh.transfer(10, consent="awaiting")))[:2] == (denied, "CONSENT_NOT_AUTHORISED")

        # Sweeping into the partner's own wallet.
        _grant(mesh, "sweep", _mandate(mesh, creditor_account_id=None, creditor_wallet_partner_id="partner-1"))
        assert (await mesh.top_up(700, consent="sweep")).state == payment_pb2.PAYMENT_STATE_SETTLED
        assert (await _refusal(mesh.transfer(10, consent="sweep")))[1] == "MANDATE_CREDITOR_MISMATCH"
        assert await mesh.ledger_balanced()
