"""Settlement's audit trail: an operator's cap change and the money reserved and committed are
recorded with who did them, in the transaction of the change; the chain verifies."""

from __future__ import annotations

import datetime as dt
import json

from meshlib.audit import AuditFilter, AuditStore
from meshlib.auth.context import Caller, reset_caller, set_caller
from services.settlement.domain.participants import NetDebitCap
from services.settlement.tables import audit
from tests.integration.settlement.support import Layer, key


def caller(subject: str) -> Caller:
    return Caller(
        subject=subject,
        client_id=subject.removeprefix("service:"),
        scopes=frozenset({"settlement:admin"}),
        token_id="t",
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5),
    )


async def test_caps_and_obligations_are_recorded_with_who(layer: Layer) -> None:
    bank, wallet = await layer.bank(), await layer.wallet("partner-1")
    token = set_caller(caller("service:operator"))
    try:
        await layer.participants.update_cap(key(), wallet.id, NetDebitCap("EUR", 5_000, 80))
    finally:
        reset_caller(token)
    token = set_caller(caller("service:payment"))
    try:
        await layer.pay("pay-1", bank.id, wallet.id, 700)
    finally:
        reset_caller(token)

    store = AuditStore(layer.database, audit, "settlement")
    (cap,) = await store.page(AuditFilter(action_prefix="participant.cap"), before_id=None, limit=10)
    assert (cap["actor"], cap["actor_kind"], cap["partner_id"]) == ("service:operator", "operator", "partner-1")
    assert json.loads(cap["details"])["caps"] == {"EUR": 5_000}
    moved = await store.page(AuditFilter(payment_id="pay-1"), before_id=None, limit=10)
    assert [(r["action"], r["actor_kind"]) for r in moved] == [
        ("obligation.commit", "service"),
        ("obligation.reserve", "service"),
    ]
    await store.seal()
    assert (await store.verify()).intact
