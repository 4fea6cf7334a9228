"""Operator tiers enforced by the service itself (meshlib's auth interceptor, the contract's
policy): a read-only operator's token reads every participant but cannot close a window; an
operator's closes windows but cannot change a cap; ``settlement:admin`` includes both."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from meshlib.grpc_errors import decode_status, error_info
from openbank.settlement.v1 import settlement_admin_pb2
from tests.integration.settlement.grpc_support import Mesh, auth, eur, rid

TIERS = {
    "read-only": ["settlement:monitor", "settlement:read"],
    "operator": ["settlement:operate", "settlement:read"],
    "admin": ["settlement:admin", "settlement:read"],
}


async def _refused(call: Any, scope: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = raised.value
    info = error_info(decode_status(error.trailing_metadata()))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
    assert info is not None and info.reason == "INSUFFICIENT_SCOPE"
    assert info.metadata["missing_scopes"] == scope
    assert scope in (error.details() or "")


async def test_each_tier_reaches_its_rpcs_and_no_more(mesh: Mesh) -> None:
    token = {name: auth(mesh.issuer.token(f"service:console-{name}", scopes=s)) for name, s in TIERS.items()}
    registered = await mesh.register("tiers", cap=50_000)

    # Read-only: every participant, but no window action and no cap.
    listed = await mesh.admin.ListParticipants(
        settlement_admin_pb2.ListParticipantsRequest(page_size=50), metadata=token["read-only"], timeout=10
    )
    assert registered.name in {p.name for p in listed.participants}
    close = settlement_admin_pb2.CloseSettlementWindowRequest(request_id=rid("close"), currency_code="EUR")
    await _refused(
        mesh.admin.CloseSettlementWindow(close, metadata=token["read-only"], timeout=10), "settlement:operate"
    )

    # Operator: closes the window; the cap stays an admin's.
    closed = await mesh.admin.CloseSettlementWindow(close, metadata=token["operator"], timeout=30)
    assert closed.closed_window.name
    cap = settlement_admin_pb2.UpdateNetDebitCapRequest(
        request_id=rid("cap"), participant=registered.name, cap=eur(60_000)
    )
    await _refused(mesh.admin.UpdateNetDebitCap(cap, metadata=token["operator"], timeout=10), "settlement:admin")

    # Admin: the cap, and the operator's action too (a higher tier includes the lower).
    await mesh.admin.UpdateNetDebitCap(cap, metadata=token["admin"], timeout=10)
    again = settlement_admin_pb2.CloseSettlementWindowRequest(request_id=rid("close"), currency_code="EUR")
    assert (await mesh.admin.CloseSettlementWindow(again, metadata=token["admin"], timeout=30)).closed_window.name
