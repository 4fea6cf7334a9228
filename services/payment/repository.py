"""The payments table and its running totals (the limits' sums, the customers' histories)."""

from __future__ import annotations

import datetime as dt
from dataclasses import astuple
from functools import partial
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.idempotency import upsert_by_dialect
from meshlib.money import Amount
from meshlib.storage import BulkInsert, as_utc
from services.payment.domain.payments import EXTERNAL_TRANSFER_TYPE, ExternalCreditor, Payment, PaymentState
from services.payment.tables import customer_totals, payments, spent_days

FINAL_STATES = [s.name for s in PaymentState if s.final]
# The states of payments in flight, matched with IN rather than NOT IN (FINAL_STATES): the
# (state, updated_at) index then reaches just the in-flight rows, not every payment ever made.
# A SCHEDULED payment is waiting for its time, not in a saga.
UNFINISHED_STATES = [s.name for s in PaymentState if not s.final and not s.waiting]
# The partner may cancel a payment until its funds are asked for, and while it waits for the
# customer's step-up or a review (nothing is held then).
CANCELLABLE = [
    PaymentState.RECEIVED,
    PaymentState.ACCEPTED,
    PaymentState.AWAITING_AUTHORISATION,
    PaymentState.PENDING_REVIEW,
]
# Payments that count against limits and history: everything not rejected, cancelled or still
# scheduled (it counts once it executes, on its requested day), and no refund (money coming
# back to the customer is no spending of theirs).
NOT_COUNTED = [PaymentState.REJECTED.name, PaymentState.CANCELLED.name, PaymentState.SCHEDULED.name]


# Statements are built once and run with a parameter dict: SQLAlchemy then neither rebuilds
# the expression nor recomputes its cache key per call (a built statement memoizes it), and
# the compiled form comes straight from the engine's cache. Parameter names avoid the
# ``<name>_<n>`` shape of SQLAlchemy's anonymous parameters and every column name (in an
# UPDATE run with a dict, a key that names a column would be added to its SET clause).


def typed_param(name: str, column: sa.Column[Any], *, expanding: bool = False) -> sa.BindParameter[Any]:
    """A named placeholder typed like ``column`` (so values are processed exactly as literals were)."""
    return sa.bindparam(name, type_=column.type, expanding=expanding)


_c = payments.c
_PAYMENT_ID = typed_param("pid", _c.payment_id)
_NOW = typed_param("now", _c.updated_at)
_LEASE_UNTIL = typed_param("until", _c.lease_until)

_GET = sa.select(payments).where(_c.payment_id == _PAYMENT_ID)
_GET_MANY = sa.select(payments).where(_c.payment_id.in_(typed_param("pids", _c.payment_id, expanding=True)))
# New rows go in as positional tuples through BulkInsert: SQLAlchemy's executemany builds and
# type-processes a parameter dict per row (~10% of the payment service's CPU at c64, for the
# ~10 payment, step and event rows each payment writes).
_PAYMENT_COLUMNS = (
    "payment_id",
    "partner_id",
    "consent_id",
    "debtor_account_id",
    "creditor_account_id",
    "creditor_wallet_partner_id",
    "currency",
    "amount_minor",
    "payment_type",
    "state",
    "status_reason",
    "status_reason_message",
    "remittance_information",
    "end_to_end_id",
    "created_at",
    "updated_at",
    "customer_id",
    "creditor_ledger_account_id",
    "payer_participant_id",
    "payee_participant_id",
    "lease_until",
    "hold_requested",
    "original_payment_id",
    "return_reason",
    "requested_execution_time",
    "standing_order_id",
    "execution_number",
    "fee_minor",
    "fee_debit_account_id",
    "fee_credit_account_id",
    "fee_payer_participant_id",
    "fee_payee_participant_id",
    "creditor_scheme_account",
    "creditor_scheme_account_kind",
    "creditor_name",
    "creditor_agent_bic",
    "obligation_kind",
)
_INSERT_PAYMENTS = BulkInsert(payments, _PAYMENT_COLUMNS)
_MOVE = (
    payments.update()
    .where(_c.payment_id == _PAYMENT_ID, _c.state.in_(typed_param("from_states", _c.state, expanding=True)))
    .values(
        state=typed_param("to_state", _c.state),
        status_reason=typed_param("reason", _c.status_reason),
        status_reason_message=typed_param("message", _c.status_reason_message),
        updated_at=_NOW,
    )
)
_CANCEL = _MOVE.where(_c.hold_requested.is_(False))
_MOVE_MANY = (
    payments.update()
    .where(
        _c.payment_id.in_(typed_param("pids", _c.payment_id, expanding=True)),
        _c.state.in_(typed_param("from_states", _c.state, expanding=True)),
    )
    .values(
        state=typed_param("to_state", _c.state),
        status_reason="",
        status_reason_message="",
        updated_at=_NOW,
        lease_until=sa.func.coalesce(_LEASE_UNTIL, _c.lease_until),
    )
    .returning(_c.payment_id)
)
_REQUEST_HOLD = (
    payments.update()
    .where(_c.payment_id == _PAYMENT_ID, _c.state.in_([PaymentState.RECEIVED.name, PaymentState.ACCEPTED.name]))
    .values(hold_requested=True, updated_at=_NOW)
)
_CLAIM = (
    payments.update()
    .where(
        _c.payment_id == _PAYMENT_ID,
        _c.state.not_in(FINAL_STATES),
        sa.or_(_c.lease_until.is_(None), _c.lease_until < typed_param("now", _c.lease_until)),
    )
    .values(lease_until=_LEASE_UNTIL)
)
_RENEW = payments.update().where(_c.payment_id == _PAYMENT_ID).values(lease_until=_LEASE_UNTIL)
_RENEW_MANY = (
    payments.update()
    .where(_c.payment_id.in_(typed_param("pids", _c.payment_id, expanding=True)))
    .values(lease_until=_LEASE_UNTIL)
)
_HOLD_REQUESTED = sa.select(_c.hold_requested).where(_c.payment_id == _PAYMENT_ID)
_COUNTED_AMOUNT = sa.select(
    _c.customer_id,
    _c.consent_id,
    _c.partner_id,
    _c.currency,
    _c.amount_minor,
    sa.func.coalesce(_c.requested_execution_time, _c.created_at).label("spent_at"),
).where(_c.payment_id == _PAYMENT_ID, _c.original_payment_id == "")
_EXECUTE_SCHEDULED = (
    payments.update()
    .where(_c.payment_id == _PAYMENT_ID, _c.state == PaymentState.SCHEDULED.name)
    .values(state=PaymentState.ACCEPTED.name, updated_at=_NOW, hold_requested=True, lease_until=_LEASE_UNTIL)
)
_t = customer_totals.c
CUSTOMER_TOTALS = _TOTALS = sa.select(_t.payments, _t.amount_minor).where(
    _t.customer_id == typed_param("customer", _t.customer_id), _t.currency == typed_param("cur", _t.currency)
)


def _adding_upsert(table: sa.Table, keys: dict[str, str], sums: dict[str, str], insert: Any) -> sa.Insert:
    """Upsert of a running-sum row: inserted with the ``sums`` given, or the ``sums`` added to the
    row of the same ``keys`` (column -> placeholder name, for both)."""
    c = table.c
    base = insert(table).values(**{column: typed_param(name, c[column]) for column, name in {**keys, **sums}.items()})
    return base.on_conflict_do_update(
        index_elements=[c[column] for column in keys],
        set_={column: c[column] + base.excluded[column] for column in sums},
    )


_ADD_TO_TOTALS = upsert_by_dialect(
    partial(
        _adding_upsert,
        customer_totals,
        {"customer_id": "customer", "currency": "cur"},
        {"payments": "n", "amount_minor": "amount"},
    )
)
_ADD_TO_SPENT = upsert_by_dialect(
    partial(
        _adding_upsert,
        spent_days,
        {"scope": "scope", "scope_id": "value", "currency": "cur", "day": "day"},
        {"amount_minor": "amount"},
    )
)


class _Counted(NamedTuple):
    """What the running totals of one counted payment key on."""

    customer_id: str
    consent_id: str
    partner_id: str
    currency: str
    amount_minor: int
    created_at: dt.datetime


def _payment_row(payment: Payment, lease_until: dt.datetime | None, hold_requested: bool) -> tuple[Any, ...]:
    """A new payment's row, in ``_PAYMENT_COLUMNS`` order."""
    return (
        payment.payment_id,
        payment.partner_id,
        payment.consent_id,
        payment.debtor_account_id,
        payment.creditor_account_id,
        payment.creditor_wallet_partner_id,
        payment.amount.currency,
        payment.amount.minor_units,
        payment.payment_type,
        payment.state.name,
        payment.status_reason,
        payment.status_reason_message,
        payment.remittance_information,
        payment.end_to_end_id,
        payment.created_at,
        payment.updated_at,
        payment.customer_id,
        payment.creditor_ledger_account_id,
        payment.payer_participant_id,
        payment.payee_participant_id,
        lease_until,
        hold_requested,
        payment.original_payment_id,
        payment.return_reason,
        payment.requested_execution_at,
        payment.standing_order_id,
        payment.execution_number,
        payment.fee_minor,
        payment.fee_debit_account_id,
        payment.fee_credit_account_id,
        payment.fee_payer_participant_id,
        payment.fee_payee_participant_id,
        *(astuple(payment.external_creditor) if payment.external_creditor else ("", "", "", "")),
        payment.obligation_kind,
    )


def _payment(row: Any) -> Payment:
    return Payment(
        payment_id=row.payment_id,
        partner_id=row.partner_id,
        consent_id=row.consent_id,
        debtor_account_id=row.debtor_account_id,
        creditor_account_id=row.creditor_account_id,
        creditor_wallet_partner_id=row.creditor_wallet_partner_id,
        amount=Amount(row.currency, int(row.amount_minor)),
        payment_type=row.payment_type,
        state=PaymentState[row.state],
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        status_reason=row.status_reason,
        status_reason_message=row.status_reason_message,
        remittance_information=row.remittance_information,
        end_to_end_id=row.end_to_end_id,
        customer_id=row.customer_id,
        creditor_ledger_account_id=row.creditor_ledger_account_id,
        payer_participant_id=row.payer_participant_id,
        payee_participant_id=row.payee_participant_id,
        original_payment_id=row.original_payment_id,
        return_reason=row.return_reason,
        requested_execution_at=as_utc(row.requested_execution_time) if row.requested_execution_time else None,
        standing_order_id=row.standing_order_id,
        execution_number=int(row.execution_number),
        fee_minor=int(row.fee_minor),
        fee_debit_account_id=row.fee_debit_account_id,
        fee_credit_account_id=row.fee_credit_account_id,
        fee_payer_participant_id=row.fee_payer_participant_id,
        fee_payee_participant_id=row.fee_payee_participant_id,
        external_creditor=ExternalCreditor(
            row.creditor_scheme_account, row.creditor_scheme_account_kind, row.creditor_name, row.creditor_agent_bic
        )
        if row.creditor_scheme_account
        else None,
        obligation_kind=row.obligation_kind,
    )


class PaymentRepository:
    """Payments, one row each."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def get(self, payment_id: str) -> Payment | None:
        """One payment by id."""
        row = (await self._connection.execute(_GET, {"pid": payment_id})).first()
        return _payment(row) if row else None

    async def get_many(self, payment_ids: list[str]) -> dict[str, Payment]:
        """Payments by id (one query); unknown ids are left out."""
        rows = await self._connection.execute(_GET_MANY, {"pids": payment_ids})
        return {row.payment_id: _payment(row) for row in rows}

    async def add(
        self, payment: Payment, *, lease_until: dt.datetime | None = None, hold_requested: bool = False
    ) -> None:
        """Store a new payment (``lease_until``: the creating driver owns its saga until then;
        ``hold_requested``: its hold is about to be sent)."""
        await self.add_many([payment], lease_until=lease_until, hold_requested=hold_requested)

    async def add_many(
        self, new: list[Payment], *, lease_until: dt.datetime | None = None, hold_requested: bool = False
    ) -> None:
        """Store new payments (one executemany), and add the counted ones to their customers'
        totals (one upsert per customer and currency); the flags as :meth:`add`."""
        if not new:
            return
        await _INSERT_PAYMENTS.execute(
            self._connection, [_payment_row(payment, lease_until, hold_requested) for payment in new]
        )
        await self._count(
            [
                _Counted(
                    p.customer_id,
                    p.consent_id,
                    p.partner_id,
                    p.amount.currency,
                    p.amount.minor_units,
                    p.spending_moment,
                )
                for p in new
                if p.state.name not in NOT_COUNTED and not p.is_refund
            ],
            1,
        )

    async def move(
        self,
        payment_id: str,
        from_states: list[PaymentState],
        to_state: PaymentState,
        now: dt.datetime,
        *,
        reason: str = "",
        message: str = "",
        extra_condition: Any = None,
    ) -> bool:
        """Change the state if it is still one of ``from_states`` (a guarded update)."""
        query = _MOVE if extra_condition is None else _MOVE.where(extra_condition)
        return await self._move(query, payment_id, from_states, to_state, now, reason, message)

    async def _move(
        self,
        query: sa.Update,
        payment_id: str,
        from_states: list[PaymentState],
        to_state: PaymentState,
        now: dt.datetime,
        reason: str,
        message: str,
    ) -> bool:
        result = await self._connection.execute(
            query,
            {
                "pid": payment_id,
                "from_states": [s.name for s in from_states],
                "to_state": to_state.name,
                "reason": reason,
                "message": message[:256],
                "now": now,
            },
        )
        moved = bool(result.rowcount)
        if moved:
            await self._uncount_moved([payment_id], from_states, to_state)
        return moved

    async def move_many(
        self,
        payment_ids: list[str],
        from_states: list[PaymentState],
        to_state: PaymentState,
        now: dt.datetime,
        *,
        lease_until: dt.datetime | None = None,
    ) -> set[str]:
        """:meth:`move` for several payments in one guarded update (no status reason); returns
        the ids that moved. With ``lease_until`` the payments that move have their lease renewed
        in the same statement."""
        if not payment_ids:
            return set()
        result = await self._connection.execute(
            _MOVE_MANY,
            {
                "pids": payment_ids,
                "from_states": [s.name for s in from_states],
                "to_state": to_state.name,
                "now": now,
                "until": lease_until,
            },
        )
        moved = set(result.scalars())
        await self._uncount_moved(sorted(moved), from_states, to_state)
        return moved

    async def cancel(self, payment_id: str, now: dt.datetime) -> bool:
        """Cancel unless funds were (maybe) held already; False when not cancellable."""
        if await self.leave_schedule(payment_id, PaymentState.CANCELLED, now):
            return True
        return await self._move(
            _CANCEL, payment_id, CANCELLABLE, PaymentState.CANCELLED, now, "", ""
        )

    async def leave_schedule(
        self, payment_id: str, to_state: PaymentState, now: dt.datetime, reason: str = "", message: str = ""
    ) -> bool:
        """A SCHEDULED payment cancelled or refused before it executed (it was never counted)."""
        result = await self._connection.execute(
            _MOVE,
            {
                "pid": payment_id,
                "from_states": [PaymentState.SCHEDULED.name],
                "to_state": to_state.name,
                "reason": reason,
                "message": message[:256],
                "now": now,
            },
        )
        return bool(result.rowcount)

    async def execute_scheduled(self, payment: Payment, now: dt.datetime, lease: dt.timedelta) -> bool:
        """A SCHEDULED payment goes on: ACCEPTED, its money about to be asked for, counted from now."""
        result = await self._connection.execute(
            _EXECUTE_SCHEDULED, {"pid": payment.payment_id, "now": now, "until": now + lease}
        )
        if not result.rowcount:
            return False
        p = payment
        await self._count(
            [
                _Counted(
                    p.customer_id,
                    p.consent_id,
                    p.partner_id,
                    p.amount.currency,
                    p.amount.minor_units,
                    p.spending_moment,
                )
            ],
            1,
        )
        return True

    async def request_hold(self, payment_id: str, now: dt.datetime) -> bool:
        """Mark that a hold is about to be sent; False when the payment was cancelled meanwhile."""
        result = await self._connection.execute(_REQUEST_HOLD, {"pid": payment_id, "now": now})
        return bool(result.rowcount)

    async def claim(self, payment_id: str, now: dt.datetime, lease: dt.timedelta) -> bool:
        """Take over driving the saga when nobody holds a live lease on it."""
        result = await self._connection.execute(_CLAIM, {"pid": payment_id, "now": now, "until": now + lease})
        return bool(result.rowcount)

    async def renew(self, payment_id: str, now: dt.datetime, lease: dt.timedelta) -> None:
        """Extend the driver's lease (each step renews it)."""
        await self._connection.execute(_RENEW, {"pid": payment_id, "until": now + lease})

    async def renew_many(self, payment_ids: list[str], now: dt.datetime, lease: dt.timedelta) -> None:
        """Extend the driver's lease of several payments (one statement)."""
        await self._connection.execute(_RENEW_MANY, {"pids": payment_ids, "until": now + lease})

    async def hold_requested(self, payment_id: str) -> bool:
        """Whether a hold may have been sent for this payment."""
        value = await self._connection.scalar(_HOLD_REQUESTED, {"pid": payment_id})
        return bool(value)

    async def stuck(self, updated_before: dt.datetime, after_id: str | None, limit: int) -> list[Payment]:
        """Payments in the middle of the saga, not touched since ``updated_before``."""
        query = (
            sa.select(payments)
            .where(payments.c.state.in_(UNFINISHED_STATES), payments.c.updated_at < updated_before)
            .order_by(payments.c.payment_id)
            .limit(limit)
        )
        if after_id:
            query = query.where(payments.c.payment_id > after_id)
        return [_payment(row) for row in await self._connection.execute(query)]

    async def count_unfinished_by_state(self) -> dict[str, int]:
        """How many payments are in each in-flight state (for the business gauges).

        Final states are left out: counting them reads every payment ever made (their totals
        are the ``openbank_payments_total`` counter).
        """
        rows = await self._connection.execute(
            sa.select(payments.c.state, sa.func.count())
            .where(payments.c.state.in_(UNFINISHED_STATES))
            .group_by(payments.c.state)
        )
        return {row[0]: int(row[1]) for row in rows}

    async def oldest_unfinished_update(self) -> dt.datetime | None:
        """When the longest-waiting unfinished payment last changed (None when all are final)."""
        value = (
            await self._connection.execute(
                sa.select(sa.func.min(payments.c.updated_at)).where(payments.c.state.in_(UNFINISHED_STATES))
            )
        ).scalar()
        return as_utc(value) if value is not None else None

    async def unfinished_with_expired_lease(self, now: dt.datetime, limit: int) -> list[str]:
        """Ids of non-final payments whose driver's lease has run out (the recovery loop's work)."""
        query = (
            sa.select(payments.c.payment_id)
            .where(
                payments.c.state.in_(UNFINISHED_STATES),
                sa.or_(payments.c.lease_until.is_(None), payments.c.lease_until < now),
            )
            .order_by(payments.c.updated_at)
            .limit(limit)
        )
        return list((await self._connection.execute(query)).scalars())

    async def awaiting_clearing(self, now: dt.datetime, limit: int) -> list[str]:
        """Ids of payments to other banks in flight whose lease has run out (the status poller's work)."""
        query = (
            sa.select(payments.c.payment_id)
            .where(
                payments.c.payment_type == EXTERNAL_TRANSFER_TYPE,
                payments.c.state.in_(UNFINISHED_STATES),
                sa.or_(payments.c.lease_until.is_(None), payments.c.lease_until < now),
            )
            .order_by(payments.c.updated_at)
            .limit(limit)
        )
        return list((await self._connection.execute(query)).scalars())

    async def _add_to_totals(self, customer_id: str, currency: str, payments_delta: int, amount_delta: int) -> None:
        await self._connection.execute(
            _ADD_TO_TOTALS[self._connection.dialect.name],
            {"customer": customer_id, "cur": currency, "n": payments_delta, "amount": amount_delta},
        )

    async def _count(self, counted: list[_Counted], sign: int) -> None:
        """Add (``sign`` 1) or take out (-1) counted payments to or from the running totals: their
        customers' totals, and their consents', partners' and customers' sums of the day they were made."""
        totals: dict[tuple[str, str], list[int]] = {}
        spent: dict[tuple[str, str, str, dt.date], int] = {}
        for payment in counted:
            amount = sign * payment.amount_minor
            customer = totals.setdefault((payment.customer_id, payment.currency), [0, 0])
            customer[0] += sign
            customer[1] += amount
            day = payment.created_at.astimezone(dt.UTC).date()
            scopes = [("consent_id", payment.consent_id), ("partner_id", payment.partner_id)]
            if payment.customer_id:  # a customer's daily sums: dynamic isolation's daily limit
                scopes.append(("customer_id", payment.customer_id))
            for scope, scope_id in scopes:
                key = (scope, scope_id, payment.currency, day)
                spent[key] = spent.get(key, 0) + amount
        for (customer_id, currency), (count, amount) in totals.items():
            await self._add_to_totals(customer_id, currency, count, amount)
        if spent:
            await self._connection.execute(
                _ADD_TO_SPENT[self._connection.dialect.name],
                [
                    {"scope": scope, "value": value, "cur": currency, "day": day, "amount": amount}
                    for (scope, value, currency, day), amount in spent.items()
                ],
            )

    async def _uncount_moved(
        self, payment_ids: list[str], from_states: list[PaymentState], to_state: PaymentState
    ) -> None:
        """After a move: payments that became REJECTED or CANCELLED leave the running totals."""
        if not payment_ids or to_state.name not in NOT_COUNTED:
            return
        # Every state a payment can leave for REJECTED or CANCELLED is a counted one.
        assert not {state.name for state in from_states} & set(NOT_COUNTED), from_states
        for payment_id in payment_ids:
            await self._uncount(payment_id)

    async def _uncount(self, payment_id: str) -> None:
        """A counted payment became REJECTED or CANCELLED: take it out of the running totals."""
        row = (await self._connection.execute(_COUNTED_AMOUNT, {"pid": payment_id})).first()
        if row is None:
            return  # a refund: never counted
        counted = _Counted(
            row.customer_id, row.consent_id, row.partner_id, row.currency, int(row.amount_minor), as_utc(row.spent_at)
        )
        await self._count([counted], -1)
