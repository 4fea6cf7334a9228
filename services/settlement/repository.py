"""Settlement repositories: they hide SQL from the service layer.

Row locks (``FOR UPDATE`` / ``FOR SHARE``) matter on PostgreSQL; on SQLite every writer
already holds the database lock from ``BEGIN IMMEDIATE`` and SQLAlchemy renders no lock
clause.

The statements of the obligation paths (reserve, commit, release) are built once, here,
with :func:`sqlalchemy.bindparam` placeholders and run with a parameter dict: building a
Core statement and its cache key on every call cost about a third of the service's Python
CPU per obligation. A prebuilt statement memoizes its cache key, so each call is a
compiled-cache hit. (The idempotency keys' statements are meshlib's.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.idempotency import upsert, upsert_by_dialect
from meshlib.storage import BulkInsert, as_utc
from services.settlement.domain.obligations import Obligation, ObligationState, Position
from services.settlement.domain.participants import (
    NetDebitCap,
    Participant,
    ParticipantStatus,
    ParticipantType,
)
from services.settlement.domain.windows import SettlementWindow, WindowState
from services.settlement.tables import (
    OPEN_WINDOW_PREDICATE,
    net_debit_caps,
    obligations,
    participants,
    positions,
    settlement_windows,
)


def _locking(query: sa.Select) -> dict[str | None, sa.Select]:
    """``query`` as is, ``FOR SHARE`` and ``FOR UPDATE`` (keyed as ``lock`` arguments)."""
    return {None: query, "share": query.with_for_update(read=True), "update": query.with_for_update()}


_IDS = sa.bindparam("ids", expanding=True)

# Participants with their caps, in one round trip (LEFT JOIN: a participant may have none).
_PARTICIPANTS_WITH_CAPS = (
    sa.select(
        participants,
        net_debit_caps.c.currency.label("cap_currency"),
        net_debit_caps.c.cap_minor,
        net_debit_caps.c.alarm_threshold_percent,
    )
    .select_from(participants.outerjoin(net_debit_caps, net_debit_caps.c.participant_id == participants.c.id))
    .where(participants.c.id.in_(_IDS))
)
_CAPS_OF = sa.select(net_debit_caps).where(net_debit_caps.c.participant_id.in_(_IDS))

_POSITION = sa.select(positions).where(
    positions.c.participant_id == sa.bindparam("participant_id"), positions.c.currency == sa.bindparam("currency")
)
_POSITIONS_FOR_UPDATE = (
    sa.select(positions)
    .where(positions.c.currency == sa.bindparam("currency"), positions.c.participant_id.in_(_IDS))
    .order_by(positions.c.participant_id)
    .with_for_update()
)
_POSITION_CREATE = upsert_by_dialect(
    lambda insert: (
        insert(positions)
        .values(
            participant_id=sa.bindparam("participant_id"),
            currency=sa.bindparam("currency"),
            net_minor=0,
            reserved_minor=0,
        )
        .on_conflict_do_nothing(index_elements=["participant_id", "currency"])
    )
)
_POSITION_SAVE = (
    positions.update()
    .where(
        positions.c.participant_id == sa.bindparam("key_participant_id"),
        positions.c.currency == sa.bindparam("key_currency"),
    )
    .values(
        net_minor=sa.bindparam("net_minor"),
        reserved_minor=sa.bindparam("reserved_minor"),
        updated_at=sa.bindparam("updated_at"),
    )
)

_OPEN_WINDOW = _locking(
    sa.select(settlement_windows).where(
        settlement_windows.c.currency == sa.bindparam("currency"),
        settlement_windows.c.state == WindowState.OPEN.value,
    )
)
_WINDOW = _locking(sa.select(settlement_windows).where(settlement_windows.c.id == sa.bindparam("id")))
_WINDOW_TOTALS = (
    sa.select(
        obligations.c.window_id,
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(obligations.c.amount_minor), 0),
    )
    .where(obligations.c.window_id.in_(_IDS))
    .group_by(obligations.c.window_id)
)
_WINDOW_ADD_OPEN = upsert_by_dialect(
    lambda insert: (
        insert(settlement_windows)
        .values(
            id=sa.bindparam("id"),
            currency=sa.bindparam("currency"),
            state=sa.bindparam("state"),
            opened_at=sa.bindparam("opened_at"),
            settlement_reference="",
        )
        .on_conflict_do_nothing(index_elements=["currency"], index_where=OPEN_WINDOW_PREDICATE)
    )
)

_OBLIGATION = _locking(sa.select(obligations).where(obligations.c.id == sa.bindparam("id")))
_OBLIGATION_ADD = obligations.insert().values({column.name: sa.bindparam(column.name) for column in obligations.c})
_OBLIGATION_UPDATE = (
    obligations.update()
    .where(obligations.c.id == sa.bindparam("key_id"))
    .values(
        state=sa.bindparam("state"),
        window_id=sa.bindparam("window_id"),
        updated_at=sa.bindparam("updated_at"),
    )
)
# Batches: lock many in a fixed order (sorted ids), insert many positionally, and update
# many that share their new state, window and time (a batch's commits) in one statement.
_OBLIGATIONS_FOR_UPDATE = (
    sa.select(obligations).where(obligations.c.id.in_(_IDS)).order_by(obligations.c.id).with_for_update()
)
_OBLIGATIONS_ADD = BulkInsert(
    obligations,
    (
        "id",
        "payer_id",
        "payee_id",
        "currency",
        "amount_minor",
        "state",
        "window_id",
        "created_at",
        "updated_at",
        "kind",
    ),
)
_OBLIGATIONS_UPDATE = (
    obligations.update()
    .where(obligations.c.id.in_(_IDS))
    .values(
        state=sa.bindparam("state"),
        window_id=sa.bindparam("window_id"),
        updated_at=sa.bindparam("updated_at"),
    )
)


class ParticipantRepository:
    """Participants with their net debit caps."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def _caps(self, ids: Sequence[str]) -> dict[str, dict[str, NetDebitCap]]:
        caps: dict[str, dict[str, NetDebitCap]] = {i: {} for i in ids}
        if not ids:
            return caps
        rows = await self._connection.execute(_CAPS_OF, {"ids": list(ids)})
        for row in rows:
            caps[row.participant_id][row.currency] = NetDebitCap(
                row.currency, row.cap_minor, row.alarm_threshold_percent
            )
        return caps

    async def _load(self, query: sa.Select) -> list[tuple[int, Participant]]:
        rows = (await self._connection.execute(query)).all()
        caps = await self._caps([row.id for row in rows])
        return [(row.seq, _participant(row, caps[row.id])) for row in rows]

    async def get(self, participant_id: str) -> Participant | None:
        """One participant, None if unknown."""
        found = await self._load(sa.select(participants).where(participants.c.id == participant_id))
        return found[0][1] if found else None

    async def get_many(self, ids: Iterable[str]) -> dict[str, Participant]:
        """Several participants by id (unknown ids are left out), caps joined in one query."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        found: dict[str, Participant] = {}
        for row in await self._connection.execute(_PARTICIPANTS_WITH_CAPS, {"ids": wanted}):
            participant = found.get(row.id)
            if participant is None:
                participant = found[row.id] = _participant(row, {})
            if row.cap_currency is not None:
                participant.caps[row.cap_currency] = NetDebitCap(
                    row.cap_currency, row.cap_minor, row.alarm_threshold_percent
                )
        return found

    async def by_registration_key(self, key: str) -> Participant | None:
        """The participant registered under ``key`` ("bank" or "partner:<id>")."""
        found = await self._load(sa.select(participants).where(participants.c.registration_key == key))
        return found[0][1] if found else None

    async def page(self, after_seq: int | None, limit: int) -> list[tuple[int, Participant]]:
        """Up to ``limit`` participants, oldest first, after the cursor."""
        query = sa.select(participants).order_by(participants.c.seq).limit(limit)
        if after_seq is not None:
            query = query.where(participants.c.seq > after_seq)
        return await self._load(query)

    async def add(self, participant: Participant) -> None:
        """Store a new participant and its caps."""
        await self._connection.execute(
            participants.insert().values(
                id=participant.id,
                type=participant.type.value,
                partner_id=participant.partner_id,
                registration_key=participant.registration_key,
                settlement_account=participant.settlement_account,
                status=participant.status.value,
                created_at=participant.created_at,
                updated_at=participant.updated_at,
            )
        )
        for cap in participant.caps.values():
            await self.save_cap(participant.id, cap)

    async def update(self, participant: Participant) -> None:
        """Persist status and timestamps (caps go through :meth:`save_cap`)."""
        await self._connection.execute(
            participants.update()
            .where(participants.c.id == participant.id)
            .values(status=participant.status.value, updated_at=participant.updated_at)
        )

    async def save_cap(self, participant_id: str, cap: NetDebitCap) -> None:
        """Insert or replace the participant's cap in ``cap.currency``."""
        insert = upsert(self._connection.dialect.name)(net_debit_caps).values(
            participant_id=participant_id,
            currency=cap.currency,
            cap_minor=cap.cap_minor,
            alarm_threshold_percent=cap.alarm_threshold_percent,
        )
        await self._connection.execute(
            insert.on_conflict_do_update(
                index_elements=["participant_id", "currency"],
                set_={"cap_minor": cap.cap_minor, "alarm_threshold_percent": cap.alarm_threshold_percent},
            )
        )


def _participant(row: Any, caps: dict[str, NetDebitCap]) -> Participant:
    """A participant from its row (participants' columns) and its caps by currency."""
    return Participant(
        id=row.id,
        type=ParticipantType(row.type),
        partner_id=row.partner_id,
        settlement_account=row.settlement_account,
        status=ParticipantStatus(row.status),
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        caps=caps,
    )


def _position_values(position: Position) -> dict[str, Any]:
    return {
        "key_participant_id": position.participant_id,
        "key_currency": position.currency,
        "net_minor": position.net_minor,
        "reserved_minor": position.reserved_minor,
        "updated_at": position.updated_at,
    }


def _position(row: sa.Row) -> Position:
    return Position(
        participant_id=row.participant_id,
        currency=row.currency,
        net_minor=row.net_minor,
        reserved_minor=row.reserved_minor,
        updated_at=as_utc(row.updated_at),
    )


class PositionRepository:
    """Positions per participant and currency."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def get(self, participant_id: str, currency: str) -> Position | None:
        """A position without locking it (reads)."""
        row = (
            await self._connection.execute(_POSITION, {"participant_id": participant_id, "currency": currency})
        ).first()
        return _position(row) if row else None

    async def lock(self, currency: str, participant_ids: Iterable[str], *, create: bool = True) -> dict[str, Position]:
        """The positions of ``participant_ids`` in ``currency``, created at zero if missing and
        locked ``FOR UPDATE`` in a fixed order (sorted ids) so concurrent writers never deadlock.

        On PostgreSQL the missing rows are inserted (in that order) before any row is locked:
        a writer then never waits on another's new row while holding a lock. ``create=False``
        says the rows exist already (a reserved obligation's payer and payee), so the lock is
        the only statement; a missing row still falls back to creating it. SQLite has no row
        locks (the writer holds the database), so it only inserts what the lock did not find.
        """
        ids = sorted(set(participant_ids))
        parameters = {"currency": currency, "ids": ids}
        if create and self._connection.dialect.name != "sqlite":
            await self._create(currency, ids)
        found = await self._locked(parameters)
        if len(found) < len(ids):
            await self._create(currency, [i for i in ids if i not in found])
            found = await self._locked(parameters)
        return found

    async def _locked(self, parameters: dict[str, Any]) -> dict[str, Position]:
        rows = await self._connection.execute(_POSITIONS_FOR_UPDATE, parameters)
        return {row.participant_id: _position(row) for row in rows}

    async def _create(self, currency: str, ids: Sequence[str]) -> None:
        """Zero positions for ``ids`` (in order) unless they exist: one executemany."""
        if ids:
            await self._connection.execute(
                _POSITION_CREATE[self._connection.dialect.name],
                [{"participant_id": participant_id, "currency": currency} for participant_id in ids],
            )

    async def save(self, position: Position) -> None:
        """Persist a (locked) position."""
        await self._connection.execute(_POSITION_SAVE, _position_values(position))

    async def save_many(self, changed: Sequence[Position]) -> None:
        """Persist several (locked) positions, in order, in one executemany."""
        if changed:
            await self._connection.execute(_POSITION_SAVE, [_position_values(p) for p in changed])

    async def all(self) -> list[Position]:
        """Every position (reports, checks)."""
        rows = await self._connection.execute(sa.select(positions).order_by(positions.c.participant_id))
        return [_position(row) for row in rows]


def _window(row: sa.Row, count: int = 0, gross: int = 0) -> SettlementWindow:
    return SettlementWindow(
        id=row.id,
        currency=row.currency,
        state=WindowState(row.state),
        opened_at=as_utc(row.opened_at),
        closed_at=as_utc(row.closed_at),
        settled_at=as_utc(row.settled_at),
        settlement_reference=row.settlement_reference or "",
        obligation_count=count,
        gross_minor=gross,
    )


class WindowRepository:
    """Settlement windows; totals are aggregated from their committed obligations."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def _with_totals(self, rows: Sequence[sa.Row]) -> list[SettlementWindow]:
        totals = await self.totals([row.id for row in rows])
        return [_window(row, *totals.get(row.id, (0, 0))) for row in rows]

    async def totals(self, window_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(obligation count, gross amount) per window."""
        if not window_ids:
            return {}
        rows = await self._connection.execute(_WINDOW_TOTALS, {"ids": list(window_ids)})
        return {row[0]: (int(row[1]), int(row[2])) for row in rows}

    async def open_window(
        self, currency: str, *, lock: str | None = None, totals: bool = True
    ) -> SettlementWindow | None:
        """The OPEN window of ``currency``; ``lock`` is "share" (commits) or "update" (close).

        ``totals=False`` skips aggregating the window's obligations (count and gross stay 0)
        for callers that only need its id and state.
        """
        query = _OPEN_WINDOW["update" if lock not in (None, "share") else lock]
        row = (await self._connection.execute(query, {"currency": currency})).first()
        if row is None:
            return None
        return (await self._with_totals([row]))[0] if totals else _window(row)

    async def add_open_if_absent(self, window: SettlementWindow) -> None:
        """Insert an OPEN window unless the currency already has one (a concurrent opener won)."""
        await self._connection.execute(
            _WINDOW_ADD_OPEN[self._connection.dialect.name],
            {"id": window.id, "currency": window.currency, "state": window.state.value, "opened_at": window.opened_at},
        )

    async def add(self, window: SettlementWindow) -> None:
        """Insert a window (the next OPEN one, after a close in the same transaction)."""
        await self._connection.execute(
            settlement_windows.insert().values(
                id=window.id,
                currency=window.currency,
                state=window.state.value,
                opened_at=window.opened_at,
                settlement_reference="",
            )
        )

    async def get(self, window_id: str, *, for_update: bool = False) -> SettlementWindow | None:
        """One window with its totals, optionally locked."""
        query = _WINDOW["update" if for_update else None]
        row = (await self._connection.execute(query, {"id": window_id})).first()
        return (await self._with_totals([row]))[0] if row else None

    async def update(self, window: SettlementWindow) -> None:
        """Persist a state change."""
        await self._connection.execute(
            settlement_windows.update()
            .where(settlement_windows.c.id == window.id)
            .values(
                state=window.state.value,
                closed_at=window.closed_at,
                settled_at=window.settled_at,
                settlement_reference=window.settlement_reference,
            )
        )

    async def page(
        self, currency: str | None, state: WindowState | None, before_seq: int | None, limit: int
    ) -> list[tuple[int, SettlementWindow]]:
        """Up to ``limit`` windows, newest first, before the cursor."""
        query = sa.select(settlement_windows).order_by(settlement_windows.c.seq.desc()).limit(limit)
        if currency:
            query = query.where(settlement_windows.c.currency == currency)
        if state is not None:
            query = query.where(settlement_windows.c.state == state.value)
        if before_seq is not None:
            query = query.where(settlement_windows.c.seq < before_seq)
        rows = (await self._connection.execute(query)).all()
        windows = await self._with_totals(rows)
        return [(row.seq, window) for row, window in zip(rows, windows, strict=True)]


def _obligation(row: sa.Row) -> Obligation:
    return Obligation(
        id=row.id,
        payer_id=row.payer_id,
        payee_id=row.payee_id,
        currency=row.currency,
        amount_minor=row.amount_minor,
        state=ObligationState(row.state),
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        window_id=row.window_id,
        kind=row.kind,
    )


class ObligationRepository:
    """Obligations, one per payment."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def get(self, obligation_id: str, *, for_update: bool = False) -> Obligation | None:
        """One obligation, optionally locked against concurrent commit/release."""
        query = _OBLIGATION["update" if for_update else None]
        row = (await self._connection.execute(query, {"id": obligation_id})).first()
        return _obligation(row) if row else None

    async def get_many(self, ids: Iterable[str]) -> dict[str, Obligation]:
        """Several obligations by id (unknown ids are left out)."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = await self._connection.execute(sa.select(obligations).where(obligations.c.id.in_(wanted)))
        return {row.id: _obligation(row) for row in rows}

    async def lock_many(self, ids: Iterable[str]) -> dict[str, Obligation]:
        """Several obligations by id (unknown ids are left out), locked ``FOR UPDATE`` in sorted
        id order, so two batches sharing obligations never deadlock on them."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = await self._connection.execute(_OBLIGATIONS_FOR_UPDATE, {"ids": wanted})
        return {row.id: _obligation(row) for row in rows}

    async def in_window(self, window_id: str) -> list[Obligation]:
        """The obligations committed in a window."""
        rows = await self._connection.execute(
            sa.select(obligations).where(obligations.c.window_id == window_id).order_by(obligations.c.id)
        )
        return [_obligation(row) for row in rows]

    async def add(self, obligation: Obligation) -> None:
        """Store a new obligation (a duplicate id fails the transaction, which is retried)."""
        await self._connection.execute(
            _OBLIGATION_ADD,
            {
                "id": obligation.id,
                "payer_id": obligation.payer_id,
                "payee_id": obligation.payee_id,
                "currency": obligation.currency,
                "amount_minor": obligation.amount_minor,
                "state": obligation.state.value,
                "window_id": obligation.window_id,
                "created_at": obligation.created_at,
                "updated_at": obligation.updated_at,
                "kind": obligation.kind,
            },
        )

    async def add_many(self, added: Sequence[Obligation]) -> None:
        """Store new obligations in one executemany (a duplicate id fails the transaction)."""
        await _OBLIGATIONS_ADD.execute(
            self._connection,
            [
                (
                    o.id,
                    o.payer_id,
                    o.payee_id,
                    o.currency,
                    o.amount_minor,
                    o.state.value,
                    o.window_id,
                    o.created_at,
                    o.updated_at,
                    o.kind,
                )
                for o in added
            ],
        )

    async def update(self, obligation: Obligation) -> None:
        """Persist a state change (and the window it was committed in)."""
        await self._connection.execute(
            _OBLIGATION_UPDATE,
            {
                "key_id": obligation.id,
                "state": obligation.state.value,
                "window_id": obligation.window_id,
                "updated_at": obligation.updated_at,
            },
        )

    async def update_many(self, changed: Sequence[Obligation]) -> None:
        """Persist state changes: one UPDATE per distinct (state, window, time), which is one
        per currency for a batch of commits."""
        groups: dict[tuple[str, str | None, dt.datetime], list[str]] = {}
        for obligation in changed:
            group = (obligation.state.value, obligation.window_id, obligation.updated_at)
            groups.setdefault(group, []).append(obligation.id)
        for (state, window_id, updated_at), ids in groups.items():
            await self._connection.execute(
                _OBLIGATIONS_UPDATE, {"ids": ids, "state": state, "window_id": window_id, "updated_at": updated_at}
            )

    async def all(self) -> list[Obligation]:
        """Every obligation (consistency checks in tests and tools)."""
        rows = await self._connection.execute(sa.select(obligations).order_by(obligations.c.id))
        return [_obligation(row) for row in rows]
