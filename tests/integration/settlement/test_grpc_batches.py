"""BatchReserveObligations and BatchCommitObligations over real gRPC (SQLite and PostgreSQL):
a mixed batch gives what its items give one by one through the single rpcs, whole-call
errors, idempotent replays of a batch, and item request_ids shared with the single rpcs."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc

from meshlib.grpc_errors import decode_status, error_info
from openbank.common.v1 import error_reason_pb2
from openbank.settlement.v1 import position_pb2, settlement_admin_pb2, settlement_pb2
from tests.integration.settlement.grpc_support import (
    Mesh,
    commit_request,
    eur,
    expect_error,
    reserve_request,
    rid,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXISTS = grpc.StatusCode.ALREADY_EXISTS
RESERVED = position_pb2.OBLIGATION_STATE_RESERVED
COMMITTED = position_pb2.OBLIGATION_STATE_COMMITTED
Outcome = tuple[Any, ...]


async def _expect_field(call: Awaitable[Any], field: str) -> None:
    """The call fails INVALID_ARGUMENT FIELD_INVALID naming ``field``."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        info = error_info(decode_status(error.trailing_metadata()))
        assert info is not None, error.details()
        assert (error.code(), info.reason, info.metadata["field"]) == (INVALID, "FIELD_INVALID", field)
    else:
        raise AssertionError(f"expected INVALID_ARGUMENT naming {field}")


def _reason(result: position_pb2.BatchObligationResult) -> str:
    return error_reason_pb2.ErrorReason.Name(result.error_reason).removeprefix("ERROR_REASON_")


def _shape(obligation: position_pb2.Obligation, tag: str, names: dict[str, str]) -> Outcome:
    """An obligation without what differs between two equal runs: its tag, its participants'
    ids (their wallet letter instead), times and window id."""
    letters = {name: letter for letter, name in names.items()}
    return (
        "ok",
        obligation.name.replace(tag, "*"),
        letters[obligation.payer],
        letters[obligation.payee],
        obligation.amount.currency_code,
        obligation.amount.minor_units,
        obligation.state,
        bool(obligation.window),
    )


def _batch_outcomes(
    results: list[position_pb2.BatchObligationResult], tag: str, names: dict[str, str]
) -> list[Outcome]:
    assert [r.index for r in results] == list(range(len(results)))
    outcomes: list[Outcome] = []
    for result in results:
        if result.HasField("obligation"):
            assert result.error_reason == error_reason_pb2.ERROR_REASON_UNSPECIFIED and not result.error_message
            outcomes.append(_shape(result.obligation, tag, names))
        else:
            assert result.error_reason != error_reason_pb2.ERROR_REASON_UNSPECIFIED and result.error_message
            outcomes.append(("error", _reason(result)))
    return outcomes


async def _single(call: Awaitable[Any], tag: str, names: dict[str, str]) -> Outcome:
    """What a single rpc answered, shaped as a batch result."""
    try:
        answer = await call
    except grpc.aio.AioRpcError as error:
        info = error_info(decode_status(error.trailing_metadata()))
        assert info is not None
        return ("error", info.reason)
    return _shape(answer.obligation, tag, names)


async def _position(mesh: Mesh, participant: str, currency: str = "EUR") -> tuple[int, int, int]:
    request = settlement_pb2.GetPositionRequest(participant=participant, currency_code=currency)
    position = (await mesh.public.GetPosition(request, metadata=mesh.operator, timeout=10)).position
    return position.net_position.minor_units, position.reserved.minor_units, position.headroom.minor_units


async def _scenario(mesh: Mesh, tag: str) -> tuple[dict[str, str], list[Any], list[Any]]:
    """Three wallets named after ``tag`` (c inactive, a with a GBP cap too), obligations in every
    state, and the items of one mixed reserve batch and one mixed commit batch."""
    names = {w: (await mesh.register(f"{tag}{w}", cap=500)).name for w in "abc"}
    a, b, c = names["a"], names["b"], names["c"]
    gbp = settlement_admin_pb2.UpdateNetDebitCapRequest(request_id=rid(), participant=a, cap=eur(1_000, "GBP"))
    await mesh.admin.UpdateNetDebitCap(gbp, metadata=mesh.operator)
    await mesh.admin.DeactivateParticipant(
        settlement_admin_pb2.DeactivateParticipantRequest(request_id=rid(), name=c), metadata=mesh.operator
    )
    await mesh.reserve(f"{tag}-old", a, b, 50)
    await mesh.reserve(f"{tag}-rel", a, b, 20)
    await mesh.release(f"{tag}-rel")
    await mesh.reserve(f"{tag}-done", b, a, 10)
    await mesh.commit(f"{tag}-done")
    # a: reserved 50, net +10, so 460 of headroom.
    reserves = [
        reserve_request(f"{tag}-1", a, b, 300),
        reserve_request(f"{tag}-2", a, b, 300),  # over the cap after item 0
        reserve_request(f"{tag}-3", a, b, 150),  # fits: item 1 took nothing
        reserve_request(f"{tag}-4", b, a, 100),
        reserve_request(f"{tag}-5", a, "participants/nobody", 1),
        reserve_request(f"{tag}-6", a, c, 1),  # c is inactive
        reserve_request(f"{tag}-old", a, b, 60),  # exists with other fields
        reserve_request(f"{tag}-done", b, a, 10),  # exists with the same fields: as it is now
        reserve_request(f"{tag}-7", a, b, 0),  # malformed
        reserve_request(f"{tag}-8", a, a, 5),  # payer is payee
        reserve_request(f"{tag}-9", a, b, 100, currency="GBP"),
        reserve_request(f"{tag}-10", a, b, 10),  # exactly the last of a's EUR headroom
        reserve_request(f"{tag}-11", a, b, 1),  # one too many
    ]
    commits = [
        commit_request(f"{tag}-1"),
        commit_request(f"{tag}-2"),  # its reservation was refused
        commit_request(f"{tag}-rel"),  # released
        commit_request(f"{tag}-done"),  # committed already
        commit_request(f"{tag}-9"),  # GBP: the GBP window
        position_pb2.CommitObligationRequest(request_id=rid(), name="wallets/x"),  # malformed
        commit_request(f"{tag}-4"),
        commit_request(f"{tag}-3"),
        commit_request("nothing-here"),
    ]
    return names, reserves, commits


async def test_a_mixed_batch_gives_what_its_items_give_one_by_one(mesh: Mesh) -> None:
    batch_names, batch_reserves, batch_commits = await _scenario(mesh, "bt")
    single_names, single_reserves, single_commits = await _scenario(mesh, "sg")

    reserved = _batch_outcomes(await mesh.batch_reserve(batch_reserves), "bt", batch_names)
    one_by_one = [
        await _single(mesh.positions.ReserveObligation(r, metadata=mesh.saga), "sg", single_names)
        for r in single_reserves
    ]
    assert reserved == one_by_one
    assert [o[0] if o[0] == "ok" else o[1] for o in reserved] == [
        "ok",
        "NET_DEBIT_CAP_EXCEEDED",
        "ok",
        "ok",
        "RESOURCE_NOT_FOUND",
        "PARTICIPANT_NOT_ACTIVE",
        "OBLIGATION_EXISTS_WITH_DIFFERENT_FIELDS",
        "ok",
        "FIELD_INVALID",
        "FIELD_INVALID",
        "ok",
        "ok",
        "NET_DEBIT_CAP_EXCEEDED",
    ]
    for wallet, currency in (("a", "EUR"), ("a", "GBP"), ("b", "EUR"), ("c", "EUR")):
        batch_position = await _position(mesh, batch_names[wallet], currency)
        assert batch_position == await _position(mesh, single_names[wallet], currency), (wallet, currency)
    assert await _position(mesh, batch_names["a"]) == (10, 510, 0)

    committed = _batch_outcomes(await mesh.batch_commit(batch_commits), "bt", batch_names)
    one_by_one = [
        await _single(mesh.positions.CommitObligation(c, metadata=mesh.saga), "sg", single_names)
        for c in single_commits
    ]
    assert committed == one_by_one
    assert [o[0] if o[0] == "ok" else o[1] for o in committed] == [
        "ok",
        "RESOURCE_NOT_FOUND",
        "OBLIGATION_ALREADY_RELEASED",
        "ok",
        "ok",
        "FIELD_INVALID",
        "ok",
        "ok",
        "RESOURCE_NOT_FOUND",
    ]
    assert all(o[6] == COMMITTED and o[7] for o in committed if o[0] == "ok")
    for wallet, currency in (("a", "EUR"), ("a", "GBP"), ("b", "EUR"), ("c", "EUR")):
        batch_position = await _position(mesh, batch_names[wallet], currency)
        assert batch_position == await _position(mesh, single_names[wallet], currency), (wallet, currency)
    # a: 300 + 150 paid, 10 + 100 received; the old 50 and the last 10 are still reserved.
    assert await _position(mesh, batch_names["a"]) == (10 + 100 - 450, 50 + 10, 500 + 10 + 100 - 450 - 60)
    assert await _position(mesh, batch_names["a"], "GBP") == (-100, 0, 900)
    # Each currency's commits went into that currency's open window.
    windows = (
        await mesh.public.ListSettlementWindows(settlement_pb2.ListSettlementWindowsRequest(), metadata=mesh.operator)
    ).settlement_windows
    by_currency = {w.currency_code: w for w in windows if w.state == settlement_pb2.SETTLEMENT_WINDOW_STATE_OPEN}
    gbp = await mesh.positions.GetObligation(
        position_pb2.GetObligationRequest(name="obligations/bt-9"), metadata=mesh.saga
    )
    assert gbp.obligation.window == by_currency["GBP"].name
    assert (by_currency["GBP"].obligation_count, by_currency["GBP"].gross_amount.minor_units) == (2, 200)


async def test_whole_call_errors_name_their_field_and_change_nothing(mesh: Mesh) -> None:
    bank = (await mesh.register(None)).name
    wallet = (await mesh.register("w1")).name
    await _expect_field(mesh.batch_reserve([]), "requests")
    await _expect_field(mesh.batch_commit([]), "requests")
    too_many = [reserve_request(f"p{i}", wallet, bank, 1) for i in range(501)]
    await _expect_field(mesh.batch_reserve(too_many), "requests")
    same_payment = [reserve_request("p1", wallet, bank, 1), reserve_request("p2", wallet, bank, 1)]
    same_payment.append(reserve_request("p1", wallet, bank, 2))
    await _expect_field(mesh.batch_reserve(same_payment), "requests[2].payment")
    same_request_id = [reserve_request("p1", wallet, bank, 1, "r-1"), reserve_request("p2", wallet, bank, 1, "r-1")]
    await _expect_field(mesh.batch_reserve(same_request_id), "requests[1].request_id")
    await _expect_field(
        mesh.batch_reserve([reserve_request("p1", wallet, bank, 1)], request_id="bad id!"), "request_id"
    )
    await expect_error(
        mesh.positions.GetObligation(position_pb2.GetObligationRequest(name="obligations/p1"), metadata=mesh.saga),
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )
    assert await _position(mesh, wallet) == (0, 0, 1_000)

    await mesh.reserve("p1", wallet, bank, 1)
    await _expect_field(mesh.batch_commit([commit_request("p1"), commit_request("p1")]), "requests[1].name")
    await _expect_field(
        mesh.batch_commit([commit_request("p1", "c-1"), commit_request("p2", "c-1")]), "requests[1].request_id"
    )
    assert await _position(mesh, wallet) == (0, 1, 999)
    # The rpcs carry the policy of the single ones: a partner's token may not call them.
    request = position_pb2.BatchCommitObligationsRequest(request_id=rid(), requests=[commit_request("p1")])
    await expect_error(
        mesh.positions.BatchCommitObligations(request, metadata=mesh.partner("w1")),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )


async def test_a_replayed_batch_returns_its_first_answer_and_acts_once(mesh: Mesh) -> None:
    bank = (await mesh.register(None)).name
    wallet = (await mesh.register("w1", cap=500)).name
    items = [reserve_request("p1", wallet, bank, 300), reserve_request("p2", wallet, bank, 300)]
    first = await mesh.batch_reserve(items, request_id="batch-1")
    assert [r.obligation.state for r in first] == [RESERVED, 0]
    assert _reason(first[1]) == "NET_DEBIT_CAP_EXCEEDED"
    commits = [commit_request("p1"), commit_request("p2")]
    first_commit = await mesh.batch_commit(commits, request_id="batch-2")
    assert first_commit[0].obligation.state == COMMITTED and _reason(first_commit[1]) == "RESOURCE_NOT_FOUND"

    # Replays answer as the first call did (p1 RESERVED, p2 refused), whatever changed since.
    update = settlement_admin_pb2.UpdateNetDebitCapRequest(request_id=rid(), participant=wallet, cap=eur(5_000))
    await mesh.admin.UpdateNetDebitCap(update, metadata=mesh.operator)
    assert await mesh.batch_reserve(items, request_id="batch-1") == first
    assert await mesh.batch_commit(commits, request_id="batch-2") == first_commit
    assert await _position(mesh, wallet) == (-300, 0, 4_700)
    await expect_error(
        mesh.positions.GetObligation(position_pb2.GetObligationRequest(name="obligations/p2"), metadata=mesh.saga),
        grpc.StatusCode.NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )
    # The same batch request_id with another payload, even one item's request_id, is refused.
    await expect_error(mesh.batch_reserve(items[:1], request_id="batch-1"), EXISTS, "REQUEST_ID_REUSED")
    changed = [items[0], reserve_request("p2", wallet, bank, 300)]
    await expect_error(mesh.batch_reserve(changed, request_id="batch-1"), EXISTS, "REQUEST_ID_REUSED")
    await expect_error(mesh.batch_commit(commits[:1], request_id="batch-2"), EXISTS, "REQUEST_ID_REUSED")


async def test_an_item_request_id_is_shared_with_the_single_rpc(mesh: Mesh) -> None:
    bank = (await mesh.register(None)).name
    wallet = (await mesh.register("w1", cap=500)).name

    # Batch first, then the single rpc: the item's first answer (RESERVED, before the commit).
    [item] = await mesh.batch_reserve([reserve_request("p1", wallet, bank, 100, "res-a")])
    await mesh.commit("p1")
    assert await mesh.reserve("p1", wallet, bank, 100, request_id="res-a") == item.obligation
    assert (await mesh.reserve("p1", wallet, bank, 100)).state == COMMITTED  # a new request sees the commit
    await expect_error(mesh.reserve("p9", wallet, bank, 100, request_id="res-a"), EXISTS, "REQUEST_ID_REUSED")

    # The single rpc first, then a batch: same answer for that item, the others go on.
    single = await mesh.reserve("p2", wallet, bank, 100, request_id="res-b")
    await mesh.commit("p2")
    replayed, reused, fresh = await mesh.batch_reserve(
        [
            reserve_request("p2", wallet, bank, 100, "res-b"),
            reserve_request("p8", wallet, bank, 100, "res-a"),  # res-a is p1's: another payload
            reserve_request("p3", wallet, bank, 100, "res-c"),
        ]
    )
    assert replayed.obligation == single and replayed.obligation.state == RESERVED
    assert _reason(reused) == "REQUEST_ID_REUSED" and not reused.HasField("obligation")
    assert fresh.obligation.state == RESERVED

    # Commits share their keys the same way.
    [committed] = await mesh.batch_commit([commit_request("p3", "com-a")])
    assert await mesh.commit("p3", request_id="com-a") == committed.obligation
    await expect_error(mesh.commit("p1", request_id="com-a"), EXISTS, "REQUEST_ID_REUSED")
    await mesh.reserve("p4", wallet, bank, 50)
    single_commit = await mesh.commit("p4", request_id="com-b")
    same, other = await mesh.batch_commit([commit_request("p4", "com-b"), commit_request("p1", "com-b2")])
    assert same.obligation == single_commit and other.obligation.state == COMMITTED
    [reused_commit] = await mesh.batch_commit([commit_request("p2", "com-b")])
    assert _reason(reused_commit) == "REQUEST_ID_REUSED"

    # A refused item saves nothing, as a refused single call: its retry is decided afresh.
    [refused] = await mesh.batch_reserve([reserve_request("p5", wallet, bank, 1_000, "res-x")])
    assert _reason(refused) == "NET_DEBIT_CAP_EXCEEDED"
    update = settlement_admin_pb2.UpdateNetDebitCapRequest(request_id=rid(), participant=wallet, cap=eur(5_000))
    await mesh.admin.UpdateNetDebitCap(update, metadata=mesh.operator)
    assert (await mesh.reserve("p5", wallet, bank, 1_000, request_id="res-x")).state == RESERVED
    # Every obligation counted once: p1..p4 committed (350), p5 reserved.
    assert await _position(mesh, wallet) == (-350, 1_000, 5_000 - 350 - 1_000)
