"""Obligations, windows and participants over real gRPC: the happy path, idempotency and
every error reason of the contract."""

from __future__ import annotations

import grpc

from openbank.settlement.v1 import position_pb2, settlement_admin_pb2, settlement_pb2
from tests.integration.settlement.grpc_support import Mesh, eur, expect_error, rid

INVALID = grpc.StatusCode.INVALID_ARGUMENT
FAILED = grpc.StatusCode.FAILED_PRECONDITION
EXISTS = grpc.StatusCode.ALREADY_EXISTS
NOT_FOUND = grpc.StatusCode.NOT_FOUND


async def _position(mesh: Mesh, participant: str) -> settlement_pb2.Position:
    request = settlement_pb2.GetPositionRequest(participant=participant, currency_code="EUR")
    return (await mesh.public.GetPosition(request, metadata=mesh.operator, timeout=10)).position


async def test_reserve_commit_close_settle_moves_positions_exactly_once(mesh: Mesh) -> None:
    bank = await mesh.register(None, cap=10_000)
    wallet = await mesh.register("w1", cap=500)

    reserved = await mesh.reserve("p1", wallet.name, bank.name, 300)
    assert reserved.state == position_pb2.OBLIGATION_STATE_RESERVED and not reserved.window
    position = await _position(mesh, wallet.name)
    assert (position.reserved.minor_units, position.net_position.minor_units, position.headroom.minor_units) == (
        300,
        0,
        200,
    )

    committed = await mesh.commit("p1")
    assert committed.state == position_pb2.OBLIGATION_STATE_COMMITTED and committed.window
    position = await _position(mesh, wallet.name)
    assert (position.reserved.minor_units, position.net_position.minor_units) == (0, -300)
    assert position.window == committed.window
    assert (await _position(mesh, bank.name)).net_position.minor_units == 300

    closed = await mesh.close()
    assert closed.closed_window.name == committed.window
    assert closed.closed_window.state == settlement_pb2.SETTLEMENT_WINDOW_STATE_CLOSED
    assert (closed.closed_window.obligation_count, closed.closed_window.gross_amount.minor_units) == (1, 300)
    assert closed.next_window.state == settlement_pb2.SETTLEMENT_WINDOW_STATE_OPEN
    assert (await _position(mesh, wallet.name)).window == closed.next_window.name

    settled = await mesh.settle(closed.closed_window.name)
    assert settled.state == settlement_pb2.SETTLEMENT_WINDOW_STATE_SETTLED
    assert (await _position(mesh, wallet.name)).net_position.minor_units == 0
    assert (await _position(mesh, bank.name)).net_position.minor_units == 0
    # The money moved in the ledger: the wallet owed 300 and paid it in, from the bank's
    # settlement account to its own (the bank's net is what that leaves on its account).
    assert mesh.ledger is not None
    assert mesh.ledger.legs(settled.name) == [(bank.settlement_account, wallet.settlement_account, 300)]
    # Settling again is refused: positions are never reduced twice, nothing moves twice.
    await expect_error(mesh.settle(closed.closed_window.name), FAILED, "WINDOW_ALREADY_SETTLED")
    assert (await _position(mesh, bank.name)).net_position.minor_units == 0
    assert len(mesh.ledger.legs(settled.name)) == 1


async def test_an_empty_window_closes_and_settles_cleanly(mesh: Mesh) -> None:
    closed = await mesh.close("GBP")
    assert closed.closed_window.obligation_count == 0
    assert closed.closed_window.gross_amount.minor_units == 0
    settled = await mesh.settle(closed.closed_window.name)
    assert settled.state == settlement_pb2.SETTLEMENT_WINDOW_STATE_SETTLED
    assert mesh.ledger is not None and not mesh.ledger.chains  # nothing to move, no ledger call
    await expect_error(mesh.settle(closed.next_window.name), FAILED, "WINDOW_NOT_CLOSED")
    close_named = settlement_admin_pb2.CloseSettlementWindowRequest(request_id=rid(), name=closed.closed_window.name)
    await expect_error(mesh.admin.CloseSettlementWindow(close_named, metadata=mesh.operator), FAILED, "WINDOW_NOT_OPEN")
    close_named.name = closed.next_window.name
    close_named.request_id = rid()
    by_name = await mesh.admin.CloseSettlementWindow(close_named, metadata=mesh.operator)
    assert by_name.closed_window.name == closed.next_window.name


async def test_obligations_are_idempotent_by_payment_and_by_request_id(mesh: Mesh) -> None:
    bank = await mesh.register(None)
    wallet = await mesh.register("w1", cap=500)
    first = await mesh.reserve("p1", wallet.name, bank.name, 100, request_id="reserve-1")
    # Same payment, same fields, another request_id: the existing obligation.
    assert await mesh.reserve("p1", wallet.name, bank.name, 100) == first
    await expect_error(
        mesh.reserve("p1", wallet.name, bank.name, 101), EXISTS, "OBLIGATION_EXISTS_WITH_DIFFERENT_FIELDS"
    )
    committed = await mesh.commit("p1", request_id="commit-1")
    assert await mesh.commit("p1") == committed  # committing twice: the same answer
    assert await mesh.commit("p1", request_id="commit-1") == committed
    # A replay of the first reservation returns the first answer (RESERVED) ...
    assert (await mesh.reserve("p1", wallet.name, bank.name, 100, request_id="reserve-1")) == first
    # ... a new reservation for the payment its current state.
    assert (await mesh.reserve("p1", wallet.name, bank.name, 100)).state == position_pb2.OBLIGATION_STATE_COMMITTED
    await expect_error(
        mesh.reserve("p9", wallet.name, bank.name, 5, request_id="reserve-1"), EXISTS, "REQUEST_ID_REUSED"
    )
    await expect_error(mesh.release("p1"), FAILED, "OBLIGATION_ALREADY_COMMITTED")
    # Only one reservation was counted.
    position = await _position(mesh, wallet.name)
    assert (position.reserved.minor_units, position.net_position.minor_units) == (0, -100)

    await mesh.reserve("p2", wallet.name, bank.name, 50)
    released = await mesh.release("p2")
    assert released.state == position_pb2.OBLIGATION_STATE_RELEASED
    assert await mesh.release("p2") == released
    await expect_error(mesh.commit("p2"), FAILED, "OBLIGATION_ALREADY_RELEASED")
    assert (await _position(mesh, wallet.name)).reserved.minor_units == 0
    got = await mesh.positions.GetObligation(
        position_pb2.GetObligationRequest(name="obligations/p2"), metadata=mesh.saga
    )
    assert got.obligation == released


async def test_net_debit_cap_and_participant_rules(mesh: Mesh) -> None:
    bank = await mesh.register(None)
    wallet = await mesh.register("w1", cap=500)
    await mesh.reserve("p1", wallet.name, bank.name, 400)
    # 400 reserved + 101 > 500.
    await expect_error(mesh.reserve("p2", wallet.name, bank.name, 101), FAILED, "NET_DEBIT_CAP_EXCEEDED")
    await mesh.reserve("p2", wallet.name, bank.name, 100)
    # Money owed to the wallet raises its headroom (positive net = owed).
    await mesh.reserve("p3", bank.name, wallet.name, 250)
    await mesh.commit("p3")
    await mesh.reserve("p4", wallet.name, bank.name, 250)
    await expect_error(mesh.reserve("p5", wallet.name, bank.name, 1), FAILED, "NET_DEBIT_CAP_EXCEEDED")
    # Lowering the cap below the exposure is allowed; reservations then fail.
    update = settlement_admin_pb2.UpdateNetDebitCapRequest(
        request_id=rid(), participant=wallet.name, cap=eur(100), alarm_threshold_percent=50
    )
    updated = (await mesh.admin.UpdateNetDebitCap(update, metadata=mesh.operator)).participant
    assert [(c.cap.minor_units, c.alarm_threshold_percent) for c in updated.net_debit_caps] == [(100, 50)]
    assert (await _position(mesh, wallet.name)).headroom.minor_units == 100 + 250 - 750

    deactivate = settlement_admin_pb2.DeactivateParticipantRequest(request_id=rid(), name=bank.name)
    inactive = (await mesh.admin.DeactivateParticipant(deactivate, metadata=mesh.operator)).participant
    assert inactive.status == settlement_admin_pb2.PARTICIPANT_STATUS_INACTIVE
    await expect_error(mesh.reserve("p6", bank.name, wallet.name, 1), FAILED, "PARTICIPANT_NOT_ACTIVE")
    await mesh.commit("p1")  # reserved obligations may still complete
    deactivate.request_id = rid()
    await expect_error(
        mesh.admin.DeactivateParticipant(deactivate, metadata=mesh.operator), FAILED, "INVALID_STATE_TRANSITION"
    )
    activate = settlement_admin_pb2.ActivateParticipantRequest(request_id=rid(), name=bank.name)
    assert (await mesh.admin.ActivateParticipant(activate, metadata=mesh.operator)).participant.status == (
        settlement_admin_pb2.PARTICIPANT_STATUS_ACTIVE
    )
    activate.request_id = rid()
    await expect_error(
        mesh.admin.ActivateParticipant(activate, metadata=mesh.operator), FAILED, "INVALID_STATE_TRANSITION"
    )


async def test_invalid_requests_name_their_field(mesh: Mesh) -> None:
    bank = await mesh.register(None)
    wallet = await mesh.register("w1")
    await expect_error(mesh.reserve("p1", wallet.name, bank.name, 0), INVALID, "FIELD_INVALID")
    await expect_error(mesh.reserve("p1", wallet.name, wallet.name, 5), INVALID, "FIELD_INVALID")
    await expect_error(mesh.reserve("p1", "wallets/x", bank.name, 5), INVALID, "FIELD_INVALID")
    await expect_error(mesh.reserve("p1", "participants/nobody", bank.name, 5), NOT_FOUND, "RESOURCE_NOT_FOUND")
    await expect_error(mesh.commit("unknown"), NOT_FOUND, "RESOURCE_NOT_FOUND")
    await expect_error(mesh.reserve("p1", wallet.name, bank.name, 5, request_id="bad id!"), INVALID, "FIELD_INVALID")
    await expect_error(mesh.close("XXX"), INVALID, "FIELD_INVALID")
    await expect_error(mesh.settle("settlementWindows/nope"), NOT_FOUND, "RESOURCE_NOT_FOUND")
    await expect_error(mesh.register(None), EXISTS, "RESOURCE_ALREADY_EXISTS")  # a second bank
    await expect_error(mesh.register("w1"), EXISTS, "RESOURCE_ALREADY_EXISTS")
    bad_caps = settlement_admin_pb2.RegisterParticipantRequest(
        request_id=rid(),
        type=settlement_admin_pb2.PARTICIPANT_TYPE_WALLET,
        partner="partners/w2",
        settlement_account="accounts/s2",
        net_debit_caps=[
            settlement_admin_pb2.NetDebitCap(currency_code="EUR", cap=eur(0)),
            settlement_admin_pb2.NetDebitCap(currency_code="GBP", cap=eur(5, "GBP"), alarm_threshold_percent=101),
        ],
    )
    await expect_error(mesh.admin.RegisterParticipant(bad_caps, metadata=mesh.operator), INVALID, "FIELD_INVALID")
    bank_with_partner = settlement_admin_pb2.RegisterParticipantRequest(
        request_id=rid(),
        type=settlement_admin_pb2.PARTICIPANT_TYPE_BANK,
        partner="partners/w3",
        settlement_account="accounts/s3",
    )
    await expect_error(
        mesh.admin.RegisterParticipant(bank_with_partner, metadata=mesh.operator), INVALID, "FIELD_INVALID"
    )
    # The saga's token may not administer.
    await expect_error(
        mesh.admin.GetParticipant(settlement_admin_pb2.GetParticipantRequest(name=bank.name), metadata=mesh.saga),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )


async def test_participants_list_oldest_first_in_pages(mesh: Mesh) -> None:
    names = [(await mesh.register(f"w{i}")).name for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = await mesh.admin.ListParticipants(
            settlement_admin_pb2.ListParticipantsRequest(page_size=2, page_token=token), metadata=mesh.operator
        )
        seen += [p.name for p in page.participants]
        token = page.next_page_token
        if not token:
            break
    assert seen == names
    got = await mesh.admin.GetParticipant(
        settlement_admin_pb2.GetParticipantRequest(name=names[0]), metadata=mesh.operator
    )
    assert got.participant.partner == "partners/w0"
    await expect_error(
        mesh.admin.ListParticipants(
            settlement_admin_pb2.ListParticipantsRequest(page_token="garbage"), metadata=mesh.operator
        ),
        INVALID,
        "PAGE_TOKEN_INVALID",
    )


async def test_replayed_close_and_settle_return_the_first_answer_and_act_once(mesh: Mesh) -> None:
    close = settlement_admin_pb2.CloseSettlementWindowRequest(request_id="close-once", currency_code="EUR")
    first = await mesh.admin.CloseSettlementWindow(close, metadata=mesh.operator)
    again = await mesh.admin.CloseSettlementWindow(close, metadata=mesh.operator)
    assert again == first  # the retry did not close the next window too
    windows = (
        await mesh.public.ListSettlementWindows(settlement_pb2.ListSettlementWindowsRequest(), metadata=mesh.operator)
    ).settlement_windows
    assert [w.state for w in windows] == [
        settlement_pb2.SETTLEMENT_WINDOW_STATE_OPEN,
        settlement_pb2.SETTLEMENT_WINDOW_STATE_CLOSED,
    ]
    settle = settlement_admin_pb2.SettleSettlementWindowRequest(
        request_id="settle-once", name=first.closed_window.name, settlement_reference="rtgs-42"
    )
    settled = await mesh.admin.SettleSettlementWindow(settle, metadata=mesh.operator)
    assert await mesh.admin.SettleSettlementWindow(settle, metadata=mesh.operator) == settled
    close.currency_code = "GBP"
    await expect_error(mesh.admin.CloseSettlementWindow(close, metadata=mesh.operator), EXISTS, "REQUEST_ID_REUSED")
