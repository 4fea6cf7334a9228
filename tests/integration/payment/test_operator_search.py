"""Operators find payments (SearchPayments): by id, by the partner's end-to-end id, by partner
and state (the rejected ones with their reasons), newest first, a page at a time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from meshlib.grpc_errors import decode_rpc_error
from openbank.payment.v1 import payment_admin_pb2, payment_pb2
from tests.integration.payment.mesh import Mesh, money, running_mesh, standard_mesh


@pytest.fixture
async def mesh(tmp_path) -> AsyncIterator[Mesh]:  # type: ignore[no-untyped-def]
    urls = {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in ("account", "settlement", "payment")}
    async with running_mesh(urls) as running:
        yield await standard_mesh(running)


async def _pay(mesh: Mesh, amount: int, end_to_end_id: str) -> payment_pb2.Payment:
    answer = await mesh.payments.CreatePayment(
        payment_pb2.CreatePaymentRequest(
            request_id=uuid.uuid4().hex,
            debtor_account=f"accounts/{mesh.accounts['alice']}",
            creditor_wallet="partners/partner-1",
            amount=money(amount),
            type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
            end_to_end_id=end_to_end_id,
        ),
        metadata=mesh.partner(),
    )
    return answer.payment


async def _search(mesh: Mesh, **fields: object) -> payment_admin_pb2.SearchPaymentsResponse:
    return await mesh.payment_admin.SearchPayments(
        payment_admin_pb2.SearchPaymentsRequest(**fields), metadata=mesh.operator()
    )


async def test_by_id_by_end_to_end_id_and_the_rejected_ones_with_their_reasons(mesh: Mesh) -> None:
    rejected = await _pay(mesh, 200_000, "order-big")  # more than alice has (the first: no history yet)
    assert rejected.status_reason == "INSUFFICIENT_FUNDS"
    settled = [await _pay(mesh, 100 + index, f"order-{index}") for index in range(3)]
    (one,) = (await _search(mesh, name=settled[1].name)).payments
    assert one.name == settled[1].name and one.end_to_end_id == "order-1"
    (by_e2e,) = (await _search(mesh, end_to_end_id="order-2")).payments
    assert by_e2e.name == settled[2].name
    failed = (await _search(mesh, state=payment_pb2.PAYMENT_STATE_REJECTED)).payments
    assert [(p.name, p.status_reason) for p in failed] == [(rejected.name, "INSUFFICIENT_FUNDS")]
    everything = (await _search(mesh, partner="partners/partner-1")).payments
    assert [p.name for p in everything] == [*reversed([p.name for p in settled]), rejected.name]  # newest first
    assert (await _search(mesh, partner="partners/nobody")).payments == []


async def test_pages_walk_every_payment_once(mesh: Mesh) -> None:
    made = {(await _pay(mesh, 50 + index, f"p-{index}")).name for index in range(5)}
    seen: list[str] = []
    token = ""
    while True:
        page = await _search(mesh, page_size=2, page_token=token)
        seen += [p.name for p in page.payments]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
    with pytest.raises(grpc.aio.AioRpcError) as changed:
        await _search(
            mesh,
            page_size=2,
            page_token=(await _search(mesh, page_size=2)).next_page_token,
            partner="partners/partner-1",
        )
    assert decode_rpc_error(changed.value).reason == "PAGE_TOKEN_INVALID"


async def test_bad_filters_are_refused_naming_the_field(mesh: Mesh) -> None:
    for fields, field in (
        ({"name": "transfers/x"}, "name"),
        ({"partner": "x"}, "partner"),
        ({"end_to_end_id": "e" * 36}, "end_to_end_id"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _search(mesh, **fields)
        error = decode_rpc_error(refused.value)
        assert error.reason == "FIELD_INVALID" and [v.field for v in error.violations] == [field]
