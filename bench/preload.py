"""Stores preloaded to about 100x the demo, for the bar's data-growth points.

At scale 1.0: 1,000,000 payments, each with three saga steps, two events and its idempotency
key; as many ledger transfers with their two entries; 100,000 customers, consents and
accounts; 100 partners and settlement participants; a year of daily settlement windows with
an obligation per payment. Rows go straight into the real schema (the services' own
migrations create it), never through the API: one generator writes each service's rows once
into a SQLite file and a PostgreSQL ``COPY`` file, kept under ``--data-dir`` by generator
version and scale, and migrated forward by the services' own migrations (they are written for
stores full of rows) when the schema moves on. A run then copies the
SQLite files into the mesh's data directory, or ``COPY``s the files into each service's
fresh PostgreSQL database.

Timestamps are spread over the past year, except where a background job would otherwise
delete rows during the run: idempotency keys (kept 48 h) fall in the last 47 hours and
payment events (kept 30 days, relayed to identity) in the last 29 days, already relayed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENERATOR_VERSION = "1"
SERVICES = ("identity", "account", "payment", "settlement")
PAYMENTS_AT_SCALE_1 = 1_000_000
CUSTOMERS_AT_SCALE_1 = 100_000
PARTNERS = 100
CHUNK = 20_000
YEAR = dt.timedelta(days=365)

Value = Callable[[int], Any]


@dataclass(frozen=True)
class TableLoad:
    """``count`` rows of ``table``; ``values`` gives a column's value for row ``i``, every other
    column gets a plain value of its type (a unique one where an index asks for it)."""

    table: str
    count: int
    values: dict[str, Value]


def sizes(scale: float) -> tuple[int, int]:
    """(payments, customers) at ``scale``."""
    return max(1, round(PAYMENTS_AT_SCALE_1 * scale)), max(1, round(CUSTOMERS_AT_SCALE_1 * scale))


def spread(start: dt.datetime, span: dt.timedelta, count: int) -> Value:
    """Row ``i`` of ``count`` at its share of ``span`` after ``start`` (to the second: most
    rows then share a timestamp object with their neighbours, which keeps formatting cheap)."""
    step = span.total_seconds() / max(1, count)
    return lambda i: start + dt.timedelta(seconds=int(i * step))


def plans(scale: float, now: dt.datetime) -> dict[str, list[TableLoad]]:
    """What each service's store holds, at ``scale``."""
    payments, customers = sizes(scale)
    year_ago = now - YEAR
    paid_at = spread(year_ago, YEAR - dt.timedelta(days=2), payments)
    evented_at = spread(now - dt.timedelta(days=29), dt.timedelta(days=28), payments)
    keyed_at = spread(now - dt.timedelta(hours=47), dt.timedelta(hours=46), payments)
    opened_at = spread(year_ago - YEAR, YEAR, customers)
    late = now + YEAR

    def customer(i: int) -> str:
        return f"pre-customer-{i % customers}"

    def account(i: int) -> str:
        return f"pre-account-{i % customers}"

    def partner(i: int) -> str:
        return f"pre-partner-{i % PARTNERS}"

    def window(i: int) -> str:
        return f"pre-window-{i}"

    per_day = payments / 365
    return {
        "identity": [
            TableLoad("partners", PARTNERS, {"partner_id": partner, "status": lambda i: "ACTIVE"}),
            TableLoad(
                "customers",
                customers,
                {"customer_id": customer, "username": lambda i: f"pre-user-{i}", "status": lambda i: "ACTIVE"},
            ),
            TableLoad(
                "consents",
                customers,
                {
                    "consent_id": lambda i: f"pre-consent-{i}",
                    "partner_id": partner,
                    "customer_id": customer,
                    "state": lambda i: "AUTHORISED",
                    "paused": lambda i: False,
                    "permissions": lambda i: "READ_BALANCES,INITIATE_PAYMENTS",
                    "account_ids": account,
                    "expires_at": lambda i: late,
                },
            ),
        ],
        "account": [
            TableLoad(
                "accounts",
                customers,
                {
                    "id": account,
                    "number": lambda i: f"PRE{i:012d}",
                    "currency": lambda i: "EUR",
                    "type": lambda i: "CURRENT",
                    "status": lambda i: "ACTIVE",
                    "customer_id": customer,
                    "equity_currency": lambda i: None,
                    "opened_at": opened_at,
                    "updated_at": opened_at,
                },
            ),
            TableLoad(
                "transfers",
                payments,
                {
                    "id": lambda i: f"pre-transfer-{i}",
                    "debit_account_id": account,
                    "credit_account_id": lambda i: account(i + 1),
                    "amount": lambda i: 100 + i % 5000,
                    "currency": lambda i: "EUR",
                    "type": lambda i: "SINGLE_PHASE",
                    "state": lambda i: "POSTED",
                    "reference": lambda i: f"pre-payment-{i}",
                    "created_at": paid_at,
                    "updated_at": paid_at,
                },
            ),
            TableLoad(
                "entries",
                2 * payments,
                {
                    "account_id": lambda i: account(i // 2 + i % 2),
                    "seq": lambda i: i,
                    "transfer_id": lambda i: f"pre-transfer-{i // 2}",
                    "direction": lambda i: "CREDIT" if i % 2 else "DEBIT",
                    "amount": lambda i: 100 + (i // 2) % 5000,
                    "currency": lambda i: "EUR",
                    "status": lambda i: "POSTED",
                    "booking_time": lambda i: paid_at(i // 2),
                    "reference": lambda i: f"pre-payment-{i // 2}",
                },
            ),
        ],
        "payment": [
            TableLoad(
                "payments",
                payments,
                {
                    "payment_id": lambda i: f"pre-payment-{i}",
                    "partner_id": partner,
                    "consent_id": lambda i: f"pre-consent-{i % customers}",
                    "debtor_account_id": account,
                    "creditor_account_id": lambda i: None,
                    "creditor_wallet_partner_id": partner,
                    "currency": lambda i: "EUR",
                    "amount_minor": lambda i: 100 + i % 5000,
                    "payment_type": lambda i: "WALLET_TOP_UP",
                    "state": lambda i: "ACSC",
                    "customer_id": customer,
                    "end_to_end_id": lambda i: f"PRE{i:020d}",
                    "lease_until": lambda i: None,
                    "created_at": paid_at,
                    "updated_at": paid_at,
                },
            ),
            TableLoad(
                "payment_steps",
                3 * payments,
                {
                    "payment_id": lambda i: f"pre-payment-{i // 3}",
                    "step": lambda i: ("reserve", "post", "commit")[i % 3],
                    "outcome": lambda i: "OK",
                    "recorded_at": lambda i: paid_at(i // 3),
                },
            ),
            TableLoad(
                "payment_events",
                2 * payments,
                {
                    "payment_id": lambda i: f"pre-payment-{i // 2}",
                    "partner_id": lambda i: partner(i // 2),
                    "consent_id": lambda i: f"pre-consent-{(i // 2) % customers}",
                    "previous_state": lambda i: ("RCVD", "ACSP")[i % 2],
                    "state": lambda i: ("ACSP", "ACSC")[i % 2],
                    "event_time": lambda i: evented_at(i // 2),
                },
            ),
            TableLoad(
                "idempotency_keys",
                payments,
                {
                    "scope": partner,
                    "method": lambda i: "CreatePayment",
                    "request_id": lambda i: f"pre-request-{i}",
                    "fingerprint": lambda i: f"{i:064x}",
                    "response": lambda i: b"\x0a\x40" + i.to_bytes(8, "big") * 8,
                    "created_at": keyed_at,
                },
            ),
            # The preloaded events count as relayed: the relay starts after them.
            TableLoad("outbox_relays", 1, {"name": lambda i: "partner-events", "position": lambda i: 2 * payments}),
        ],
        "settlement": [
            TableLoad(
                "participants",
                PARTNERS,
                {"id": partner, "type": lambda i: "WALLET", "partner_id": partner, "status": lambda i: "ACTIVE"},
            ),
            TableLoad(
                "settlement_windows",
                365,
                {
                    "id": window,
                    "currency": lambda i: "EUR",
                    "state": lambda i: "SETTLED",
                    "opened_at": lambda i: year_ago + dt.timedelta(days=i),
                    "closed_at": lambda i: year_ago + dt.timedelta(days=i + 1),
                    "settled_at": lambda i: year_ago + dt.timedelta(days=i + 1, hours=1),
                },
            ),
            TableLoad(
                "obligations",
                payments,
                {
                    "id": lambda i: f"pre-obligation-{i}",
                    "payer_id": partner,
                    "payee_id": lambda i: partner(i + 1),
                    "currency": lambda i: "EUR",
                    "amount_minor": lambda i: 100 + i % 5000,
                    "state": lambda i: "COMMITTED",
                    "window_id": lambda i: window(min(364, int(i / per_day))),
                    "created_at": paid_at,
                    "updated_at": paid_at,
                },
            ),
        ],
    }


# ---- values of a column's type, and their two written forms ----


@dataclass(frozen=True)
class Column:
    """One column of the real schema, as SQLite describes it."""

    name: str
    type: str
    not_null: bool
    has_default: bool
    unique: bool


def columns_of(connection: sqlite3.Connection, table: str) -> list[Column]:
    """The table's columns, minus an INTEGER PRIMARY KEY the store numbers itself."""
    info = connection.execute(f"PRAGMA table_info({table})").fetchall()
    if not info:
        raise RuntimeError(f"no table {table}: the schema moved on (GENERATOR_VERSION)")
    unique: set[str] = set()
    for index in connection.execute(f"PRAGMA index_list({table})").fetchall():
        if index[2] and not index[4]:  # unique and not partial
            unique |= {row[2] for row in connection.execute(f"PRAGMA index_info('{index[1]}')")}
    pk = [row for row in info if row[5]]
    numbered = pk[0][1] if len(pk) == 1 and pk[0][2].upper() == "INTEGER" else None
    return [
        Column(name, kind.upper(), bool(not_null), default is not None, name in unique or bool(key))
        for _cid, name, kind, not_null, default, key in info
        if name != numbered
    ]


def filler(table: str, column: Column, now: dt.datetime) -> Value | None:
    """A plain value for a column the plan leaves out; None: leave it to its default."""
    if column.has_default or not column.not_null:
        return None
    kind = column.type
    if column.unique:
        if kind.startswith(("INT", "BIGINT", "SMALLINT")):
            return lambda i: i
        return lambda i: f"pre-{table[:8]}-{column.name[:8]}-{i}"
    if kind.startswith(("INT", "BIGINT", "SMALLINT", "NUMERIC", "FLOAT", "REAL")):
        return lambda i: 0
    if kind.startswith("BOOL"):
        return lambda i: False
    if kind.startswith(("DATETIME", "TIMESTAMP")):
        return lambda i: now
    if kind.startswith("DATE"):
        return lambda i: now.date()
    if kind.startswith(("BLOB", "BYTEA")):
        return lambda i: b"\x00" * 16
    if "JSON" in kind:
        return lambda i: "{}"
    if column.name.endswith("currency"):
        return lambda i: "EUR"
    return lambda i: "pre"


def sqlite_form(value: Any) -> Any:
    """As SQLAlchemy stores it in SQLite."""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def copy_form(value: Any) -> str:
    """PostgreSQL ``COPY ... (FORMAT text)``."""
    if value is None:
        return "\\N"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f+00")
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, bytes):
        return "\\\\x" + value.hex()
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return str(value)


def rows_of(load: TableLoad, columns: list[Column], now: dt.datetime) -> tuple[list[str], Iterator[list[Any]]]:
    """The written columns and the rows of one table, in chunks."""
    makers: list[tuple[str, Value]] = []
    for column in columns:
        maker = load.values.get(column.name) or filler(load.table, column, now)
        if maker is not None:
            makers.append((column.name, maker))
    names = [name for name, _ in makers]
    functions = [maker for _, maker in makers]

    def chunks() -> Iterator[list[Any]]:
        for start in range(0, load.count, CHUNK):
            yield [tuple(f(i) for f in functions) for i in range(start, min(load.count, start + CHUNK))]

    return names, chunks()


# ---- the cache: built once per generator version and scale, migrated forward ----


def revisions() -> list[str]:
    """Every service's migration revisions (file names), in order."""
    return [f"{service}/{path.name}" for service in SERVICES for path in sorted(versions_dir(service).glob("*.py"))]


def cache_dir(data_dir: Path, scale: float) -> Path:
    """Where the generator's stores at ``scale`` are kept (bump GENERATOR_VERSION whenever
    :func:`plans` changes what it writes)."""
    return data_dir / f"preload-v{GENERATOR_VERSION}-x{scale:g}"


def versions_dir(service: str) -> Path:
    """A service's migrations (as its bootstrap's VERSIONS_DIR; without importing the service)."""
    return Path(__file__).resolve().parent.parent / "services" / service / "migrations" / "versions"


async def _migrated_sqlite(path: Path, service: str) -> None:
    from meshlib.storage import Database
    from meshlib.storage.migrations import upgrade_to_head

    database = Database(f"sqlite:///{path}", application_name="bench-preload")
    try:
        await upgrade_to_head(database, versions_dir(service), service)
    finally:
        await database.dispose()


def _fill(path: Path, copies: Path, loads: list[TableLoad], now: dt.datetime) -> list[tuple[str, list[str]]]:
    """Write every load into the SQLite file and a COPY file each; returns (table, columns)."""
    written = []
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=DELETE")
        connection.execute("PRAGMA synchronous=OFF")
        for load in loads:
            names, chunks = rows_of(load, columns_of(connection, load.table), now)
            insert = f"INSERT INTO {load.table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
            with (copies / f"{load.table}.copy").open("w") as out:
                connection.execute("BEGIN")
                for chunk in chunks:
                    connection.executemany(insert, [tuple(sqlite_form(v) for v in row) for row in chunk])
                    out.writelines("\t".join(copy_form(v) for v in row) + "\n" for row in chunk)
                connection.execute("COMMIT")
            written.append((load.table, names))
        connection.execute("ANALYZE")
    finally:
        connection.close()
    return written


async def ensure_cache(data_dir: Path, scale: float, say: Callable[[str], None]) -> Path:
    """Build the preloaded stores unless this schema version's are already there."""
    import json

    where = cache_dir(data_dir, scale)
    done = where / "done.json"
    if done.exists():
        manifest = json.loads(done.read_text())
        if manifest.get("revisions") != revisions():
            # Built at an older schema: the services' own migrations bring it to head (they are
            # written for stores full of rows); PostgreSQL's copies are migrated before the COPY.
            for service in SERVICES:
                await _migrated_sqlite(where / f"{service}.db", service)
            manifest["revisions"] = revisions()
            done.write_text(json.dumps(manifest, indent=1))
            say("    preloaded stores migrated to the current schema")
        return where
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    manifest: dict[str, Any] = {"built": now.isoformat(), "scale": scale, "revisions": revisions(), "tables": {}}
    for service, loads in plans(scale, now).items():
        started = time.monotonic()
        path = where / f"{service}.db"
        await _migrated_sqlite(path, service)
        (where / service).mkdir()
        written = await asyncio.to_thread(_fill, path, where / service, loads, now)
        manifest["tables"][service] = {table: names for table, names in written}
        say(
            f"    preloaded {service}: {sum(load.count for load in loads):,} rows in {time.monotonic() - started:.0f} s"
        )
    done.write_text(json.dumps(manifest, indent=1))
    return where


async def _copy_into_postgres(url: str, service: str, source: Path, tables: dict[str, list[str]]) -> None:
    from meshlib.storage import Database
    from meshlib.storage.migrations import upgrade_to_head

    database = Database(url, pool_size=1, application_name="bench-preload")
    try:
        await upgrade_to_head(database, versions_dir(service), service)
        async with database.engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            for table, names in tables.items():
                await raw.copy_to_table(table, source=str(source / service / f"{table}.copy"), columns=names)
                # A key SQLite numbers itself may be written here (a BIGINT key is not SQLite's
                # rowid): its PostgreSQL sequence must start after the loaded rows.
                for (column,) in await raw.fetch(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = $1"
                    " AND (column_default LIKE 'nextval%' OR is_identity = 'YES')",
                    table,
                ):
                    await raw.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                        f" GREATEST((SELECT max({column}) FROM {table}), 1))"
                    )
            await raw.execute("ANALYZE")
    finally:
        await database.dispose()


async def preloader(
    options: Any, store: str, postgres: Any, say: Callable[[str], None]
) -> Callable[[Path, dict[str, dict[str, str]]], Awaitable[None]]:
    """The ``before_start`` of a mesh on preloaded stores (builds the cache first if needed)."""
    import json

    started = time.monotonic()
    source = await ensure_cache(options.data_dir, options.preload_scale, say)
    tables = json.loads((source / "done.json").read_text())["tables"]
    say(f"    preloaded stores ready in {source} ({time.monotonic() - started:.0f} s)")

    async def fill(data_dir: Path, child_env: dict[str, dict[str, str]]) -> None:
        began = time.monotonic()
        for service in SERVICES:
            if store == "sqlite":
                await asyncio.to_thread(shutil.copyfile, source / f"{service}.db", data_dir / f"{service}.db")
            else:
                await _copy_into_postgres(child_env[service]["OBM_DATABASE_URL"], service, source, tables[service])
        say(f"    stores filled ({store}) in {time.monotonic() - began:.0f} s")

    return fill
