"""The console's audit trail in one database shared by its replicas: two console "pods"
write interleaved, both seal, and the result is one verified chain that either pod searches;
a record changed afterwards breaks the chain. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import sqlalchemy as sa

from bankweb.console.audit_store import ConsoleAuditTrail
from bankweb.console.ports import AuditQuery
from meshlib.storage.database import Database

T0 = dt.datetime(2026, 12, 7, 18, tzinfo=dt.UTC)


def _action(operator: str, n: int, action: str = "console.window.close") -> dict[str, Any]:
    return {
        "service": "console",
        "occurred_at": T0 + dt.timedelta(seconds=n),
        "action": action,
        "outcome": "OK",
        "resource": f"currencies/EUR/{n}",
        "actor": f"operator:{operator}",
        "actor_kind": "operator",
        "client_id": "console",
        "details": {"role": "operator", "request_id": f"r{n}"},
    }


async def test_two_console_pods_write_one_chain(database_url: str) -> None:
    first_db, second_db = Database(database_url, pool_size=2), Database(database_url, pool_size=2)
    first, second = ConsoleAuditTrail(first_db), ConsoleAuditTrail(second_db)
    await first.start(migrate=True)
    await second.start(migrate=False)  # the schema is there: the second pod only checks it
    try:
        for n in range(20):
            (first if n % 2 else second).append(_action("oscar" if n % 2 else "ada", n))
            if n % 5 == 4:
                await asyncio.gather(first.flush(), second.flush())
        await asyncio.gather(first.flush(), second.flush())
        await asyncio.gather(first.seal(), second.seal(), first.seal())

        report = await second.verify()
        assert report.intact, report.problems
        assert (report.checked, report.unsealed) == (20, 0)

        # Either pod finds what the other wrote, newest first, by operator and action.
        oscar = await second.records(AuditQuery(service="console", actor="operator:oscar", limit=50))
        assert [row.resource for row in oscar] == [f"currencies/EUR/{n}" for n in range(19, 0, -2)]
        assert all(row.details["role"] == "operator" for row in oscar)
        assert len(await first.records(AuditQuery(service="console", action="console.window.", limit=50))) == 20

        # A record changed afterwards breaks the chain at its sequence.
        async with first_db.engine.begin() as connection:
            await connection.execute(sa.text("UPDATE audit_records SET outcome = 'DENIED' WHERE chain_sequence = 7"))
        tampered = await first.verify()
        assert not tampered.intact and tampered.problems
    finally:
        await first.close()
        await second.close()
        await first_db.dispose()
        await second_db.dispose()
