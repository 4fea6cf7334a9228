"""Public reads over real gRPC: a partner sees only its own participant's figures; an
operator sees everything."""

from __future__ import annotations

import json

import grpc

from openbank.settlement.v1 import settlement_admin_pb2, settlement_pb2
from tests.integration.settlement.grpc_support import Mesh, auth, expect_error

NOT_FOUND = grpc.StatusCode.NOT_FOUND


async def _three_party_window(mesh: Mesh) -> tuple[str, str, str, str]:
    """Bank, wallets A and B with obligations A->bank 100, bank->B 70, B->A 20 in one closed window."""
    bank = (await mesh.register(None, cap=10_000)).name
    wallet_a = (await mesh.register("pa", cap=1_000)).name
    wallet_b = (await mesh.register("pb", cap=1_000)).name
    for payment, payer, payee, minor in (
        ("x1", wallet_a, bank, 100),
        ("x2", bank, wallet_b, 70),
        ("x3", wallet_b, wallet_a, 20),
    ):
        await mesh.reserve(payment, payer, payee, minor)
        await mesh.commit(payment)
    window = (await mesh.close()).closed_window.name
    return bank, wallet_a, wallet_b, window


async def test_a_partner_sees_only_its_own_position_and_report_rows(mesh: Mesh) -> None:
    bank, wallet_a, wallet_b, window = await _three_party_window(mesh)
    partner_a = mesh.partner("pa")

    own = await mesh.public.GetPosition(
        settlement_pb2.GetPositionRequest(participant=wallet_a, currency_code="EUR"), metadata=partner_a
    )
    assert own.position.net_position.minor_units == -100 + 20
    assert own.position.headroom.minor_units == 1_000 - 80
    for other in (wallet_b, bank, "participants/nobody"):
        await expect_error(
            mesh.public.GetPosition(
                settlement_pb2.GetPositionRequest(participant=other, currency_code="EUR"), metadata=partner_a
            ),
            NOT_FOUND,
            "RESOURCE_NOT_FOUND",
        )
    await expect_error(
        mesh.public.GetPosition(
            settlement_pb2.GetPositionRequest(participant=wallet_a, currency_code="USD"), metadata=partner_a
        ),
        NOT_FOUND,
        "RESOURCE_NOT_FOUND",
    )

    report = (
        await mesh.public.GetSettlementReport(
            settlement_pb2.GetSettlementReportRequest(window=window), metadata=partner_a
        )
    ).report
    assert [
        (p.participant, p.sent.minor_units, p.received.minor_units, p.net.minor_units) for p in report.net_positions
    ] == [(wallet_a, 100, 20, -80)]
    assert sorted((b.payer, b.payee, b.amount.minor_units) for b in report.bilateral_positions) == sorted(
        [(wallet_a, bank, 100), (wallet_b, wallet_a, 20)]
    )
    # An unregistered partner sees an empty report, never someone else's rows.
    stranger = (
        await mesh.public.GetSettlementReport(
            settlement_pb2.GetSettlementReportRequest(window=window), metadata=mesh.partner("nobody")
        )
    ).report
    assert not stranger.net_positions and not stranger.bilateral_positions

    full = (
        await mesh.public.GetSettlementReport(
            settlement_pb2.GetSettlementReportRequest(window=window), metadata=mesh.operator
        )
    ).report
    nets = {p.participant: p.net.minor_units for p in full.net_positions}
    assert nets == {bank: 100 - 70, wallet_a: -80, wallet_b: 70 - 20}
    assert sum(nets.values()) == 0
    assert len(full.bilateral_positions) == 3
    assert full.window_state == settlement_pb2.SETTLEMENT_WINDOW_STATE_CLOSED


async def test_windows_list_newest_first_with_filters_and_pages(mesh: Mesh) -> None:
    await _three_party_window(mesh)
    await mesh.close()
    await mesh.close("GBP")
    partner_a = mesh.partner("pa")
    listed: list[settlement_pb2.SettlementWindow] = []
    token = ""
    while True:
        page = await mesh.public.ListSettlementWindows(
            settlement_pb2.ListSettlementWindowsRequest(page_size=2, page_token=token, currency_code="EUR"),
            metadata=partner_a,
        )
        listed += page.settlement_windows
        token = page.next_page_token
        if not token:
            break
    assert [w.state for w in listed] == [
        settlement_pb2.SETTLEMENT_WINDOW_STATE_OPEN,
        settlement_pb2.SETTLEMENT_WINDOW_STATE_CLOSED,
        settlement_pb2.SETTLEMENT_WINDOW_STATE_CLOSED,
    ]
    # Totals cover all participants.
    assert (listed[2].obligation_count, listed[2].gross_amount.minor_units) == (3, 190)
    closed_only = await mesh.public.ListSettlementWindows(
        settlement_pb2.ListSettlementWindowsRequest(state=settlement_pb2.SETTLEMENT_WINDOW_STATE_CLOSED),
        metadata=mesh.operator,
    )
    assert {w.currency_code for w in closed_only.settlement_windows} == {"EUR", "GBP"}
    assert len(closed_only.settlement_windows) == 3
    first = await mesh.public.ListSettlementWindows(
        settlement_pb2.ListSettlementWindowsRequest(page_size=1, currency_code="EUR"), metadata=partner_a
    )
    await expect_error(
        mesh.public.ListSettlementWindows(
            settlement_pb2.ListSettlementWindowsRequest(
                page_size=1, currency_code="GBP", page_token=first.next_page_token
            ),
            metadata=partner_a,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "PAGE_TOKEN_INVALID",
    )
    await expect_error(
        mesh.public.ListSettlementWindows(
            settlement_pb2.ListSettlementWindowsRequest(page_size=-1), metadata=partner_a
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )


async def test_partners_cannot_use_internal_rpcs_and_tokens_are_required(mesh: Mesh) -> None:
    partner_a = mesh.partner("pa")
    await expect_error(
        mesh.admin.ListParticipants(settlement_admin_pb2.ListParticipantsRequest(), metadata=partner_a),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )
    await expect_error(
        mesh.public.ListSettlementWindows(settlement_pb2.ListSettlementWindowsRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_MISSING",
    )
    # A token that is neither a partner's nor an operator's reads nothing.
    anonymous_reader = auth(mesh.issuer.token("service:x", scopes=["settlement:read"]))
    await expect_error(
        mesh.public.ListSettlementWindows(settlement_pb2.ListSettlementWindowsRequest(), metadata=anonymous_reader),
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )


async def test_reports_export_as_csv_and_json(mesh: Mesh) -> None:
    _, wallet_a, _, window = await _three_party_window(mesh)
    csv_file = await mesh.admin.ExportSettlementReport(
        settlement_admin_pb2.ExportSettlementReportRequest(name=window, format=settlement_admin_pb2.REPORT_FORMAT_CSV),
        metadata=mesh.operator,
    )
    assert csv_file.content_type == "text/csv" and csv_file.file_name.endswith(".csv")
    lines = csv_file.content.decode().split("\r\n")
    assert lines[0].startswith("record_type,window,currency_code")
    assert sum(1 for line in lines if line.startswith("NET,")) == 3
    assert sum(1 for line in lines if line.startswith("BILATERAL,")) == 3
    # Per kind, payer and payee (here every obligation is a payment's), the kind last.
    kinds = [line for line in lines if line.startswith("KIND,")]
    assert len(kinds) == 3 and all(line.endswith(",PAYMENT") for line in kinds)
    assert f"NET,{window},EUR,CLOSED,{wallet_a},,,100,20,-80,," in lines

    json_file = await mesh.admin.ExportSettlementReport(
        settlement_admin_pb2.ExportSettlementReportRequest(name=window, format=settlement_admin_pb2.REPORT_FORMAT_JSON),
        metadata=mesh.operator,
    )
    assert json_file.content_type == "application/json"
    document = json.loads(json_file.content)
    assert document["window"] == window
    assert sum(int(p["net"]["minorUnits"]) for p in document["netPositions"]) == 0
    await expect_error(
        mesh.admin.ExportSettlementReport(
            settlement_admin_pb2.ExportSettlementReportRequest(name=window), metadata=mesh.operator
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
